//! Which pipelines an event triggers.

use super::Changes;
use crate::config::{Globs, Pipeline};
use crate::event::{EventPayload, GitEvent, TagAction};
use crate::release::matches_requirement;

/// The outcome of matching one pipeline.
pub(super) enum Match {
    /// The pipeline does not run.
    No,
    /// The pipeline runs; `paths_checked` is `None` without a `paths` filter, `Some(false)` when
    /// the filter could not be checked because the changed paths are unknown.
    Yes { paths_checked: Option<bool> },
}

const DEFAULT_PR_TYPES: &[&str] = &["opened", "synchronize", "reopened"];

pub(super) fn matches(pipeline: &Pipeline, event: &GitEvent, changes: &Changes) -> Match {
    let on = &pipeline.on;
    match &event.payload {
        EventPayload::PullRequest(pr) => {
            let Some(t) = &on.pull_request else {
                return Match::No;
            };
            let type_ok = match &t.types {
                Some(types) => types.iter().any(|ty| ty.0 == pr.action),
                None => DEFAULT_PR_TYPES.contains(&pr.action.as_str()),
            };
            if !type_ok || !globs_ok(&t.branches, &pr.base.git_ref) {
                return Match::No;
            }
            paths(&t.paths, changes)
        }
        EventPayload::Push(push) => {
            let Some(t) = &on.push else { return Match::No };
            // A deleted branch has nothing to build.
            if push.deleted || !globs_ok(&t.branches, &push.branch) {
                return Match::No;
            }
            paths(&t.paths, changes)
        }
        EventPayload::Tag(tag) => {
            let Some(t) = &on.tag else { return Match::No };
            let type_ok = match &t.types {
                Some(types) => types.contains(&tag.action),
                None => tag.action == TagAction::Created,
            };
            let version_ok = match (&t.semver, &tag.version) {
                (Some(req), Some(v)) => matches_requirement(req.requirement(), t.prerelease, v),
                (Some(_), None) => false,
                (None, Some(v)) => t.prerelease || v.pre.is_empty(),
                (None, None) => true,
            };
            if type_ok && version_ok && globs_ok(&t.names, &tag.name) {
                Match::Yes {
                    paths_checked: None,
                }
            } else {
                Match::No
            }
        }
        EventPayload::Release(rel) => {
            let Some(t) = &on.release else {
                return Match::No;
            };
            let type_ok = match &t.types {
                Some(types) => types.contains(&rel.action),
                None => rel.action == "published",
            };
            let pre_ok = t.prerelease || !rel.prerelease;
            let version_ok = match (&t.semver, &rel.version) {
                (Some(req), Some(v)) => matches_requirement(req.requirement(), t.prerelease, v),
                (Some(_), None) => false,
                (None, _) => true,
            };
            if type_ok && pre_ok && version_ok && !rel.draft {
                Match::Yes {
                    paths_checked: None,
                }
            } else {
                Match::No
            }
        }
        // GitHub sends a push alongside every branch creation; matching both would run twice.
        EventPayload::Branch(_) | EventPayload::Ping => Match::No,
    }
}

fn globs_ok(globs: &Option<Globs>, name: &str) -> bool {
    globs.as_ref().is_none_or(|g| g.matches(name))
}

fn paths(filter: &Option<Globs>, changes: &Changes) -> Match {
    match (filter, changes) {
        (None, _) => Match::Yes {
            paths_checked: None,
        },
        (Some(_), Changes::Unknown) => Match::Yes {
            paths_checked: Some(false),
        },
        (Some(g), Changes::Paths(list)) => {
            if g.matches_any(list.iter().map(String::as_str)) {
                Match::Yes {
                    paths_checked: Some(true),
                }
            } else {
                Match::No
            }
        }
    }
}
