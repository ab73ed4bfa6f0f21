//! A Git repository, read with gix: resolving revisions, reading `.gitops.yml` from the event's
//! commit (never from a working tree), the paths an event changed, its refs; checking a commit
//! out for stages to run in ([`checkout`](Repository::checkout)), and fetching from remotes and
//! mirrors ([`fetch_mirror`]); completing abbreviated commit ids
//! ([`complete_ids`](Repository::complete_ids)).

mod checkout;
mod error;
mod fetch;
mod prefix;
pub mod worktree;

use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::diff::tree::{Recorder, State, recorder::Change};
use gix::objs::TreeRefIter;

use crate::config::{CONFIG_FILE, Config, ConfigError, Diagnostic, LoadOptions, Position};
use crate::event::{EventPayload, GitEvent};
use crate::plan::Changes;

pub use error::RepoError;
pub use fetch::{fetch_into, fetch_mirror};

/// A Git repository on disk (bare or with a work tree). Cheap to clone; shared between threads.
#[derive(Debug, Clone)]
pub struct Repository {
    repo: gix::ThreadSafeRepository,
    path: PathBuf,
}

impl Repository {
    /// Opens the repository at `path` (its work tree or its git dir). A relative path is made
    /// absolute: runs record where their repository is, for rollbacks made from anywhere.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, RepoError> {
        let path = path.as_ref();
        let path = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let repo = gix::ThreadSafeRepository::open(&path).map_err(|e| RepoError::Open {
            path: path.clone(),
            message: e.to_string(),
        })?;
        Ok(Repository { repo, path })
    }

    /// The path it was opened at, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn local(&self) -> gix::Repository {
        self.repo.to_thread_local()
    }

    fn read_err(&self, what: impl Into<String>, e: impl std::fmt::Display) -> RepoError {
        RepoError::Read {
            what: what.into(),
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Resolves a revision (a sha, `main`, `refs/tags/v1.0.0`, `v1.0.0`, ...) to a commit id.
    pub fn resolve_commit(&self, rev: &str) -> Result<String, RepoError> {
        let repo = self.local();
        let unknown = |message: String| RepoError::UnknownRevision {
            rev: rev.to_owned(),
            path: self.path.clone(),
            message,
        };
        let id = repo
            .rev_parse_single(rev)
            .map_err(|e| unknown(e.to_string()))?;
        let commit = id
            .object()
            .and_then(|o| o.peel_to_commit())
            .map_err(|e| unknown(format!("not a commit: {e}")))?;
        Ok(commit.id.to_string())
    }

    fn commit_tree<'r>(
        &self,
        repo: &'r gix::Repository,
        commit: &str,
    ) -> Result<gix::Tree<'r>, RepoError> {
        let id = ObjectId::from_hex(commit.as_bytes()).or_else(|_| {
            let resolved = self.resolve_commit(commit)?;
            ObjectId::from_hex(resolved.as_bytes()).map_err(|e| self.read_err(commit, e))
        })?;
        let commit_obj = repo
            .find_commit(id)
            .map_err(|e| RepoError::UnknownRevision {
                rev: commit.to_owned(),
                path: self.path.clone(),
                message: e.to_string(),
            })?;
        commit_obj
            .tree()
            .map_err(|e| self.read_err(format!("tree of {commit}"), e))
    }

    /// The content of the file at `path` (slash-separated, from the root) in `commit`, or
    /// `None` when the commit has no such file.
    pub fn read_file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, RepoError> {
        self.read_file_at_most(commit, path, u64::MAX)
    }

    /// [`read_file`](Self::read_file), refusing (before reading it) a file of more than
    /// `limit` bytes.
    pub fn read_file_at_most(
        &self,
        commit: &str,
        path: &str,
        limit: u64,
    ) -> Result<Option<Vec<u8>>, RepoError> {
        let repo = self.local();
        let tree = self.commit_tree(&repo, commit)?;
        let entry = tree
            .lookup_entry_by_path(path)
            .map_err(|e| self.read_err(format!("{path} at {commit}"), e))?;
        let Some(entry) = entry else { return Ok(None) };
        if !entry.mode().is_blob() {
            return Ok(None);
        }
        if limit < u64::MAX {
            let size = repo
                .find_header(entry.oid())
                .map_err(|e| self.read_err(format!("{path} at {commit}"), e))?
                .size();
            if size > limit {
                return Err(self.read_err(
                    format!("{path} at {commit}"),
                    format!("it is {size} bytes, more than the {limit} allowed"),
                ));
            }
        }
        let object = entry
            .object()
            .map_err(|e| self.read_err(format!("{path} at {commit}"), e))?;
        Ok(Some(object.detach().data))
    }

    /// Reads and validates `.gitops.yml` from `commit`.
    pub fn config_at(&self, commit: &str, options: &LoadOptions) -> Result<Config, RepoError> {
        let text = self.config_text_at(commit)?;
        Ok(Config::parse_with(CONFIG_FILE, &text, options)?)
    }

    /// The text of `.gitops.yml` at `commit`; a file that is not UTF-8 is a config error.
    pub fn config_text_at(&self, commit: &str) -> Result<String, RepoError> {
        let bytes = self
            .read_file_at_most(commit, CONFIG_FILE, crate::config::MAX_CONFIG_BYTES as u64)?
            .ok_or_else(|| RepoError::NoConfig {
                file: CONFIG_FILE,
                commit: commit.to_owned(),
                path: self.path.clone(),
            })?;
        Ok(String::from_utf8(bytes).map_err(|e| ConfigError {
            diagnostics: vec![Diagnostic {
                file: CONFIG_FILE.to_owned(),
                position: Position { line: 1, column: 1 },
                message: format!("not UTF-8: {e}"),
            }],
        })?)
    }

    /// What differs between two commits' trees (trees included), by gix's tree diff.
    fn tree_changes(
        &self,
        repo: &gix::Repository,
        from: &str,
        to: &str,
    ) -> Result<Vec<Change>, RepoError> {
        let old = self.commit_tree(repo, from)?;
        let new = self.commit_tree(repo, to)?;
        if old.id == new.id {
            return Ok(Vec::new());
        }
        let mut recorder = Recorder::default();
        gix::diff::tree(
            TreeRefIter::from_bytes(&old.data, old.id.kind()),
            TreeRefIter::from_bytes(&new.data, new.id.kind()),
            &mut State::default(),
            &repo.objects,
            &mut recorder,
        )
        .map_err(|e| self.read_err(format!("diff {from}..{to}"), e))?;
        Ok(recorder.records)
    }

    /// The paths of the files that differ between two commits' trees.
    pub fn changed_paths(&self, from: &str, to: &str) -> Result<Vec<String>, RepoError> {
        let repo = self.local();
        let mut paths: Vec<String> = self
            .tree_changes(&repo, from, to)?
            .into_iter()
            .filter_map(|c| {
                let (mode, path) = match c {
                    Change::Addition {
                        entry_mode, path, ..
                    }
                    | Change::Deletion {
                        entry_mode, path, ..
                    }
                    | Change::Modification {
                        entry_mode, path, ..
                    } => (entry_mode, path),
                };
                (!mode.is_tree()).then(|| path.to_string())
            })
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// The best common ancestor of two commits, if they have one.
    pub fn merge_base(&self, a: &str, b: &str) -> Result<Option<String>, RepoError> {
        let repo = self.local();
        // A full object id needs no revision parsing.
        let id = |rev: &str| match ObjectId::from_hex(rev.as_bytes()) {
            Ok(id) => Ok(id),
            Err(_) => ObjectId::from_hex(self.resolve_commit(rev)?.as_bytes())
                .map_err(|e| self.read_err(rev, e)),
        };
        let (a, b) = (id(a)?, id(b)?);
        repo.merge_base(a, b)
            .map(|id| id.map(|id| id.to_string()))
            .map_err(|e| self.read_err("merge base", e))
    }

    /// Whether `ancestor` is `descendant` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, RepoError> {
        let a = match ObjectId::from_hex(ancestor.as_bytes()) {
            Ok(id) => id.to_string(),
            Err(_) => self.resolve_commit(ancestor)?,
        };
        Ok(self.merge_base(&a, descendant)?.as_deref() == Some(a.as_str()))
    }

    /// Every ref (branches, tags, pull request heads, ...) with the commit it points to;
    /// annotated tags are peeled to their commit, refs to other objects left out.
    pub fn refs(&self) -> Result<std::collections::BTreeMap<String, String>, RepoError> {
        let repo = self.local();
        let platform = repo
            .references()
            .map_err(|e| self.read_err("references", e))?;
        let all = platform.all().map_err(|e| self.read_err("references", e))?;
        let mut out = Vec::new();
        // Many tags share a target: each is peeled once.
        let mut peeled: std::collections::HashMap<ObjectId, Option<String>> =
            std::collections::HashMap::new();
        for reference in all {
            let mut reference = reference.map_err(|e| self.read_err("references", e))?;
            let Ok(name) = std::str::from_utf8(reference.name().as_bstr()) else {
                continue;
            };
            let name = name.to_owned();
            if !name.starts_with("refs/") {
                continue;
            }
            // Symbolic refs (refs/remotes/origin/HEAD) name another ref: that one is listed.
            let Some(target) = reference.target().try_id().map(|id| id.to_owned()) else {
                continue;
            };
            // Only a tag may point to an annotated tag object; other refs point to commits.
            if !name.starts_with("refs/tags/") {
                out.push((name, hex(&target)));
                continue;
            }
            let commit = peeled
                .entry(target)
                .or_insert_with(|| reference.peel_to_commit().ok().map(|c| hex(&c.id)));
            if let Some(commit) = commit {
                out.push((name, commit.clone()));
            }
        }
        // Built in one go (the refs come sorted), not by 10,000 inserts.
        Ok(out.into_iter().collect())
    }

    /// The git dir and the common dir (where `packed-refs` and `refs/` are), when the refs are
    /// kept in files; `None` for another ref storage (reftable).
    pub(crate) fn ref_dirs(&self) -> Option<(PathBuf, PathBuf)> {
        let repo = self.local();
        let storage = repo.config_snapshot().string("extensions.refStorage");
        if storage.is_some_and(|s| !s.eq_ignore_ascii_case(b"files")) {
            return None;
        }
        Some((
            repo.git_dir().to_path_buf(),
            repo.common_dir().to_path_buf(),
        ))
    }

    /// The branch `HEAD` names (`main`), if it names one.
    pub fn head_branch(&self) -> Option<String> {
        let repo = self.local();
        let head = repo.head_name().ok()??;
        head.as_bstr()
            .to_string()
            .strip_prefix("refs/heads/")
            .map(str::to_owned)
    }

    /// The fetch URL of remote `name` (`origin`), when the repository has that remote.
    pub fn remote_url(&self, name: &str) -> Option<String> {
        let repo = self.local();
        let remote = repo.find_remote(name).ok()?;
        remote
            .url(gix::remote::Direction::Fetch)
            .map(|u| u.to_bstring().to_string())
    }

    /// The forge's name of the repository remote `name` points at (`owner/name`, or GitLab's
    /// `group/subgroup/name`), read from its URL; `None` for a local path or no such remote.
    pub fn remote_repo_name(&self, name: &str) -> Option<String> {
        name_from_url(&self.remote_url(name)?)
    }

    /// The commit an event builds: its `sha`, or the commit its tag or branch points to.
    pub fn commit_for(&self, event: &GitEvent) -> Result<String, RepoError> {
        if let Some(sha) = &event.sha {
            return self.resolve_commit(sha);
        }
        match event.git_ref() {
            Some(r) => self.resolve_commit(&r),
            None => Err(RepoError::NoCommit {
                kind: event.kind().to_string(),
            }),
        }
    }

    /// What an event changed, for `paths:` filters: a push's `before..after`; a pull request's
    /// merge base with the base branch `..head`. Unknown when the history needed is missing.
    pub fn changes_for(&self, event: &GitEvent) -> Changes {
        let (from, to) = match &event.payload {
            EventPayload::Push(p) => match (&p.before, &p.after) {
                (Some(b), Some(a)) => (b.clone(), a.clone()),
                _ => return Changes::Unknown,
            },
            EventPayload::PullRequest(pr) => {
                let Some(head) = pr.head.sha.clone().or_else(|| event.sha.clone()) else {
                    return Changes::Unknown;
                };
                let base = pr
                    .base
                    .sha
                    .clone()
                    .unwrap_or_else(|| pr.base.git_ref.clone());
                match self.merge_base(&base, &head) {
                    Ok(Some(mb)) => (mb, head),
                    _ => return Changes::Unknown,
                }
            }
            _ => return Changes::Unknown,
        };
        self.changed_paths(&from, &to)
            .map_or(Changes::Unknown, Changes::Paths)
    }
}

/// An object id in hex, without going through `fmt`.
fn hex(id: &gix::oid) -> String {
    let mut buf = [0u8; 64];
    id.hex_to_buf(&mut buf).to_owned()
}

// Servers and watchers share a repository between tasks.
const _: fn() = || {
    fn shared<T: Send + Sync>() {}
    shared::<Repository>();
};

/// The forge's name of a repository (`owner/name`, GitLab's `group/subgroup/name`) from a clone
/// URL: `https://host/owner/name.git`, `ssh://git@host:22/owner/name`, `git@host:owner/name.git`.
/// `None` for a local path, or a URL naming no owner.
///
/// ```
/// use gitops_core::repo::name_from_url;
/// assert_eq!(name_from_url("https://github.com/acme/app.git").as_deref(), Some("acme/app"));
/// assert_eq!(name_from_url("git@gitlab.com:grp/sub/app.git").as_deref(), Some("grp/sub/app"));
/// assert_eq!(name_from_url("ssh://git@host:2222/acme/app/").as_deref(), Some("acme/app"));
/// assert_eq!(name_from_url("/srv/git/app.git"), None);
/// ```
pub fn name_from_url(url: &str) -> Option<String> {
    let path = if let Some((_, rest)) = url.split_once("://") {
        if url.starts_with("file://") {
            return None;
        }
        rest.split_once('/')?.1
    } else {
        // scp-like `user@host:path`; a local path has no `:` before its first `/`.
        let (host, path) = url.split_once(':')?;
        if host.contains('/') || host.is_empty() {
            return None;
        }
        path
    };
    let name = path
        .trim_matches('/')
        .trim_end_matches(".git")
        .trim_matches('/');
    (name.contains('/') && !name.split('/').any(str::is_empty)).then(|| name.to_owned())
}
