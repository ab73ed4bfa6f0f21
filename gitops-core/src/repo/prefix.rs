//! Completing abbreviated commit ids (Bitbucket's pull request payloads name commits by 12-digit
//! prefixes) against the objects of the repository.

use std::collections::HashSet;

use gix::hash::Prefix;

use super::{RepoError, Repository};
use crate::event::{EventPayload, GitEvent};

/// Hexadecimal digits of a full commit id (SHA-1).
const FULL: usize = 40;

impl Repository {
    /// The full id of the one commit whose id begins with `prefix` (at least 4 hexadecimal
    /// digits). Unlike [`resolve_commit`](Self::resolve_commit), it reads nothing but an id
    /// (never a ref or a revision such as `HEAD~1`), and an ambiguous prefix is an error, not a
    /// guess. Other objects (trees, blobs) that share the prefix do not make it ambiguous.
    pub fn complete_commit_id(&self, prefix: &str) -> Result<String, RepoError> {
        let unknown = |message: String| RepoError::UnknownRevision {
            rev: prefix.to_owned(),
            path: self.path.clone(),
            message,
        };
        let parsed = Prefix::from_hex(prefix).map_err(|e| unknown(e.to_string()))?;
        let repo = self.local();
        let mut candidates = HashSet::new();
        repo.objects
            .lookup_prefix(parsed, Some(&mut candidates))
            .map_err(|e| self.read_err(format!("objects prefixed {prefix}"), e))?;
        let mut commits: Vec<String> = candidates
            .into_iter()
            .filter(|id| {
                repo.find_header(*id)
                    .is_ok_and(|h| h.kind() == gix::object::Kind::Commit)
            })
            .map(|id| id.to_string())
            .collect();
        commits.sort();
        match commits.len() {
            0 => Err(unknown("no commit has this prefix".to_owned())),
            1 => Ok(commits.swap_remove(0)),
            _ => Err(RepoError::AmbiguousCommit {
                prefix: prefix.to_owned(),
                path: self.path.clone(),
                candidates: commits,
            }),
        }
    }

    /// The event with every abbreviated commit id it names (its `sha`, a push's `before` and
    /// `after`, a pull request's head and base) replaced by the full one; full ids are left
    /// alone. An id that names no commit here, or more than one, is an error.
    pub fn complete_ids(&self, event: &GitEvent) -> Result<GitEvent, RepoError> {
        let mut event = event.clone();
        let mut ids: Vec<&mut Option<String>> = vec![&mut event.sha];
        match &mut event.payload {
            EventPayload::Push(p) => ids.extend([&mut p.before, &mut p.after]),
            EventPayload::PullRequest(pr) => ids.extend([&mut pr.head.sha, &mut pr.base.sha]),
            _ => {}
        }
        for id in ids {
            if let Some(short) = id.as_deref().filter(|s| s.len() < FULL) {
                *id = Some(self.complete_commit_id(short)?);
            }
        }
        Ok(event)
    }

    /// Whether the event names a commit by an abbreviated id.
    pub fn has_short_ids(event: &GitEvent) -> bool {
        let short = |id: &Option<String>| id.as_ref().is_some_and(|s| s.len() < FULL);
        short(&event.sha)
            || match &event.payload {
                EventPayload::Push(p) => short(&p.before) || short(&p.after),
                EventPayload::PullRequest(pr) => short(&pr.head.sha) || short(&pr.base.sha),
                _ => false,
            }
    }
}
