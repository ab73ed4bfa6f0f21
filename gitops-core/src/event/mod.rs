//! The normalised [`GitEvent`]: what every source (webhooks, the repository watcher) produces.
//!
//! The JSON form is the one `gitops event` prints: every event has `kind`, `repo` and `sha`, plus
//! the fields of its kind (see `DESIGN.md`).

use semver::Version;
use serde::{Deserialize, Serialize};

/// A Git event, normalised across forges and sources.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GitEvent {
    /// What happened, with the fields of that kind of event (serialised flat, tagged by `kind`).
    #[serde(flatten)]
    pub payload: EventPayload,
    /// `owner/name` on GitHub, `path_with_namespace` on GitLab.
    pub repo: String,
    /// The commit to build; `None` for deletions and where the payload does not carry one.
    pub sha: Option<String>,
    /// The forge user who caused the event (GitHub `sender.login`, GitLab `user_username` or
    /// `user.username`); `None` where the source has none (the repository watcher).
    #[serde(default)]
    pub actor: Option<String>,
}

/// The kind of an event and its fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EventPayload {
    /// Commits pushed to a branch (also its creation or deletion by push).
    Push(PushEvent),
    /// A pull request (GitLab: merge request) changed.
    PullRequest(PullRequestEvent),
    /// A tag was created, deleted or moved.
    Tag(TagEvent),
    /// A branch was created or deleted (GitHub `create`/`delete`).
    Branch(BranchEvent),
    /// A forge release was published, created, ...
    Release(ReleaseEvent),
    /// A forge checking that the hook works; accepted and ignored.
    Ping,
}

/// The fields of a `push` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushEvent {
    /// The full ref, `refs/heads/<branch>`.
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The branch name.
    pub branch: String,
    /// The old tip; `None` when the push created the branch.
    pub before: Option<String>,
    /// The new tip; `None` when the push deleted the branch.
    pub after: Option<String>,
    /// The push created the branch.
    pub created: bool,
    /// The push deleted the branch.
    pub deleted: bool,
    /// The push was forced (the old tip is not an ancestor of the new one).
    pub forced: bool,
}

/// The fields of a `pull_request` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestEvent {
    /// `opened`, `synchronize`, `reopened`, `closed`, or the forge's own word for other actions.
    pub action: String,
    /// The pull request number (GitLab: the merge request `iid`).
    pub number: u64,
    /// The title, as typed by whoever opened it: untrusted.
    pub title: String,
    /// The pull request is a draft.
    pub draft: bool,
    /// The pull request was merged (only ever true with action `closed`).
    pub merged: bool,
    /// The source branch and its tip, and the repository it is in.
    pub head: RefTip,
    /// The target branch and, where the forge sends it, its tip.
    pub base: RefTip,
    /// The head branch is in another repository than the base (GitHub `head.repo` differs from
    /// `base.repo`, GitLab `source_project_id` from `target_project_id`), or where it is not
    /// known (a deleted fork, a pull request ref seen by the watcher): the engine then treats
    /// the pull request as coming from a stranger.
    #[serde(default)]
    pub fork: bool,
    /// The labels on the pull request, by name.
    #[serde(default)]
    pub labels: Vec<String>,
    /// Who opened the pull request, where the forge says.
    #[serde(default)]
    pub author: Option<String>,
}

/// A branch and the commit at its tip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefTip {
    /// The branch name (without `refs/heads/`).
    #[serde(rename = "ref")]
    pub git_ref: String,
    /// The commit at its tip, when known.
    pub sha: Option<String>,
    /// The repository the branch is in (`owner/name`), when known.
    #[serde(default)]
    pub repo: Option<String>,
}

/// The fields of a `tag` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TagEvent {
    /// What happened to the tag.
    pub action: TagAction,
    /// The tag name, without `refs/tags/`.
    pub name: String,
    /// The tag as a semantic version (an optional leading `v`), when it is one.
    pub version: Option<Version>,
}

/// What happened to a tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TagAction {
    /// The tag is new.
    Created,
    /// The tag was removed.
    Deleted,
    /// The tag now points to another commit.
    Moved,
}

impl TagAction {
    /// The word used in JSON and config (`created`, `deleted`, `moved`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Deleted => "deleted",
            Self::Moved => "moved",
        }
    }
}

/// The fields of a `branch` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BranchEvent {
    /// What happened to the branch.
    pub action: BranchAction,
    /// The branch name.
    pub name: String,
}

/// What happened to a branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BranchAction {
    /// The branch is new.
    Created,
    /// The branch was removed.
    Deleted,
}

impl BranchAction {
    /// The word used in JSON (`created`, `deleted`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Deleted => "deleted",
        }
    }
}

/// The fields of a `release` event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseEvent {
    /// GitHub's word (`published`, `prereleased`, `created`, `edited`, `deleted`, ...); GitLab's
    /// `create`, `update` and `delete` become `published`, `edited` and `deleted`.
    pub action: String,
    /// The release's tag name.
    pub tag: String,
    /// The tag as a semantic version, when it is one.
    pub version: Option<Version>,
    /// The release is marked as a pre-release (or its version is one).
    pub prerelease: bool,
    /// The release is a draft.
    pub draft: bool,
}

/// The kind of an event, without its fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// See [`EventPayload::Push`].
    Push,
    /// See [`EventPayload::PullRequest`].
    PullRequest,
    /// See [`EventPayload::Tag`].
    Tag,
    /// See [`EventPayload::Branch`].
    Branch,
    /// See [`EventPayload::Release`].
    Release,
    /// See [`EventPayload::Ping`].
    Ping,
}

impl EventKind {
    /// The word used for `kind` in JSON and for `event.kind` in expressions.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Push => "push",
            Self::PullRequest => "pull_request",
            Self::Tag => "tag",
            Self::Branch => "branch",
            Self::Release => "release",
            Self::Ping => "ping",
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl GitEvent {
    /// A push of `branch` from `before` (none: a new branch) to `after`.
    pub fn push(repo: &str, branch: &str, before: Option<&str>, after: &str) -> GitEvent {
        GitEvent {
            payload: EventPayload::Push(PushEvent {
                git_ref: format!("refs/heads/{branch}"),
                branch: branch.to_owned(),
                before: before.map(str::to_owned),
                after: Some(after.to_owned()),
                created: before.is_none(),
                deleted: false,
                forced: false,
            }),
            repo: repo.to_owned(),
            sha: Some(after.to_owned()),
            actor: None,
        }
    }

    /// Tag `name` created at `sha` (its version parsed from the name).
    pub fn tag_created(repo: &str, name: &str, sha: &str) -> GitEvent {
        GitEvent {
            payload: EventPayload::Tag(TagEvent {
                action: TagAction::Created,
                name: name.to_owned(),
                version: crate::release::parse_tag(name),
            }),
            repo: repo.to_owned(),
            sha: Some(sha.to_owned()),
            actor: None,
        }
    }

    /// Pull request `number` from `head` (branch, commit) into `base` (branch, commit) with
    /// `action` (`opened`, `synchronize`, `closed`, ...).
    pub fn pull_request_event(
        repo: &str,
        action: &str,
        number: u64,
        head: (&str, &str),
        base: (&str, &str),
    ) -> GitEvent {
        GitEvent {
            payload: EventPayload::PullRequest(PullRequestEvent {
                action: action.to_owned(),
                number,
                title: format!("Pull request #{number}"),
                draft: false,
                merged: false,
                head: RefTip {
                    git_ref: head.0.to_owned(),
                    sha: Some(head.1.to_owned()),
                    repo: Some(repo.to_owned()),
                },
                base: RefTip {
                    git_ref: base.0.to_owned(),
                    sha: Some(base.1.to_owned()),
                    repo: Some(repo.to_owned()),
                },
                fork: false,
                labels: Vec::new(),
                author: None,
            }),
            repo: repo.to_owned(),
            sha: Some(head.1.to_owned()),
            actor: None,
        }
    }

    /// The same pull request event, from a fork: its head branch is in `head_repo`.
    pub fn from_fork(mut self, head_repo: &str) -> GitEvent {
        if let EventPayload::PullRequest(pr) = &mut self.payload {
            pr.fork = true;
            pr.head.repo = Some(head_repo.to_owned());
        }
        self
    }

    /// The same event, caused by forge user `actor`.
    pub fn with_actor(mut self, actor: &str) -> GitEvent {
        self.actor = Some(actor.to_owned());
        self
    }

    /// The same pull request event, with `labels`.
    pub fn with_labels<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        labels: I,
    ) -> GitEvent {
        if let EventPayload::PullRequest(pr) = &mut self.payload {
            pr.labels = labels.into_iter().map(Into::into).collect();
        }
        self
    }

    /// The same pull request event, merged (for `closed`).
    pub fn merged(mut self) -> GitEvent {
        if let EventPayload::PullRequest(pr) = &mut self.payload {
            pr.merged = true;
        }
        self
    }

    /// The kind of this event.
    pub fn kind(&self) -> EventKind {
        match self.payload {
            EventPayload::Push(_) => EventKind::Push,
            EventPayload::PullRequest(_) => EventKind::PullRequest,
            EventPayload::Tag(_) => EventKind::Tag,
            EventPayload::Branch(_) => EventKind::Branch,
            EventPayload::Release(_) => EventKind::Release,
            EventPayload::Ping => EventKind::Ping,
        }
    }

    /// The action of the event: the pull request, tag, branch or release action; `None` for
    /// pushes and pings.
    pub fn action(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::PullRequest(pr) => Some(&pr.action),
            EventPayload::Tag(t) => Some(t.action.as_str()),
            EventPayload::Branch(b) => Some(b.action.as_str()),
            EventPayload::Release(r) => Some(&r.action),
            EventPayload::Push(_) | EventPayload::Ping => None,
        }
    }

    /// The full ref the event is about: the pushed ref, `refs/heads/<head>` of a pull request,
    /// `refs/tags/<name>` of a tag or release, `refs/heads/<name>` of a branch.
    pub fn git_ref(&self) -> Option<String> {
        match &self.payload {
            EventPayload::Push(p) => Some(p.git_ref.clone()),
            EventPayload::PullRequest(pr) => Some(format!("refs/heads/{}", pr.head.git_ref)),
            EventPayload::Tag(t) => Some(format!("refs/tags/{}", t.name)),
            EventPayload::Branch(b) => Some(format!("refs/heads/{}", b.name)),
            EventPayload::Release(r) => Some(format!("refs/tags/{}", r.tag)),
            EventPayload::Ping => None,
        }
    }

    /// Whether the event removed its ref (a deleted branch or tag, a push deleting its branch):
    /// no commit of it is left to run. A release names its tag, and is never one.
    pub fn is_deletion(&self) -> bool {
        match &self.payload {
            EventPayload::Push(p) => p.deleted,
            EventPayload::Tag(t) => t.action == TagAction::Deleted,
            EventPayload::Branch(b) => b.action == BranchAction::Deleted,
            EventPayload::PullRequest(_) | EventPayload::Release(_) | EventPayload::Ping => false,
        }
    }

    /// The branch the event is about: the pushed branch, the head branch of a pull request, the
    /// created or deleted branch.
    pub fn branch(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::Push(p) => Some(&p.branch),
            EventPayload::PullRequest(pr) => Some(&pr.head.git_ref),
            EventPayload::Branch(b) => Some(&b.name),
            _ => None,
        }
    }

    /// The tag of a tag or release event.
    pub fn tag(&self) -> Option<&str> {
        match &self.payload {
            EventPayload::Tag(t) => Some(&t.name),
            EventPayload::Release(r) => Some(&r.tag),
            _ => None,
        }
    }

    /// The semantic version of a tag or release event, when its tag is one.
    pub fn version(&self) -> Option<&Version> {
        match &self.payload {
            EventPayload::Tag(t) => t.version.as_ref(),
            EventPayload::Release(r) => r.version.as_ref(),
            _ => None,
        }
    }

    /// The pull request of a `pull_request` event.
    pub fn pull_request(&self) -> Option<&PullRequestEvent> {
        match &self.payload {
            EventPayload::PullRequest(pr) => Some(pr),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_is_flat_and_tagged_by_kind() {
        let event = GitEvent {
            payload: EventPayload::Tag(TagEvent {
                action: TagAction::Created,
                name: "v1.2.0".into(),
                version: Some(Version::new(1, 2, 0)),
            }),
            repo: "o/r".into(),
            sha: Some("abc".into()),
            actor: Some("alice".into()),
        };
        let json = serde_json::to_value(&event).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"kind": "tag", "action": "created", "name": "v1.2.0",
                "version": "1.2.0", "repo": "o/r", "sha": "abc", "actor": "alice"})
        );
        let back: GitEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, event);
        let ping: GitEvent =
            serde_json::from_str(r#"{"kind":"ping","repo":"o/r","sha":null}"#).unwrap();
        assert_eq!(ping.kind(), EventKind::Ping);
    }
}
