//! Reporting back to the forge: a run's events become forge updates (commit statuses), stored
//! in the ledger's outbox and sent by a background [`Sender`] through a [`Forge`].
//!
//! The run never waits for the forge: the [`Reporter`] only writes to the outbox, and the sender
//! retries with backoff until the forge takes the update, refuses it for good, or a newer update
//! of the same commit status replaces it (the last state wins).

mod bitbucket;
mod comment;
mod forge;
mod gitea;
mod github;
mod github_app;
mod gitlab;
mod http;
mod reporter;
mod sender;

pub use bitbucket::{BITBUCKET_API_URL, Bitbucket, BitbucketAuth};
pub use comment::{COMMENT_MARKER, MAX_COMMENT_CHARS};
pub use forge::{Forge, ForgeRefs, SendError};
pub use gitea::Gitea;
pub use github::{GitHub, GitHubBuilder};
pub use github_app::{GitHubApp, MAX_KEY_FILE_BYTES, TOKEN_REFRESH_MARGIN};
pub use gitlab::{GitLab, GitLabBuilder};
pub use http::tagged_marker;
pub use reporter::{ReportTarget, Reporter, RunReporter};
pub use sender::{Sender, SenderOptions};

use serde::{Deserialize, Serialize};

/// The longest description a commit status may have (GitHub's limit).
pub const MAX_DESCRIPTION_CHARS: usize = 140;

/// The state of a commit status, in the forge's words (GitHub's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatusState {
    /// The run is queued or running.
    Pending,
    /// Every stage succeeded.
    Success,
    /// A stage failed.
    Failure,
    /// The run could not finish (cancelled, superseded, or failed outside any stage).
    Error,
}

/// A commit status: one per commit and context (`gitops/<pipeline>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommitStatus {
    /// `owner/name`.
    pub repo: String,
    /// The commit.
    pub sha: String,
    /// `gitops/<pipeline>`.
    pub context: String,
    /// Its state.
    pub state: StatusState,
    /// At most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: String,
    /// The run's page, when there is a public URL.
    pub target_url: Option<String>,
}

/// The state of a deployment, in the forge's words (GitHub's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentState {
    /// Its backend is deploying it.
    InProgress,
    /// It is deployed.
    Success,
    /// Its backend failed.
    Failure,
    /// It did not finish (cancelled).
    Error,
    /// It is deployed no more: the environment was stopped.
    Inactive,
}

/// A deployment and its latest state: one forge deployment per deployment in the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentUpdate {
    /// `owner/name`.
    pub repo: String,
    /// The commit deployed.
    pub sha: String,
    /// The deployment's id in the ledger.
    pub deployment: i64,
    /// The environment instance (`preview-pr-7`, `staging`).
    pub environment: String,
    /// A per-pull-request instance, gone when its pull request closes.
    pub transient: bool,
    /// The config or policy marks the environment `production`.
    pub production: bool,
    /// Its state.
    pub state: DeploymentState,
    /// At most [`MAX_DESCRIPTION_CHARS`] characters (a rollback says so here).
    pub description: String,
    /// Where the deployed environment answers (the deploy's `url` output).
    pub environment_url: Option<String>,
    /// The run's page, when there is a public URL.
    pub log_url: Option<String>,
    /// The branch or tag deployed (GitLab's deployments name it).
    #[serde(default)]
    pub git_ref: Option<String>,
    /// `git_ref` is a tag.
    #[serde(default)]
    pub tag: bool,
}

/// The one comment gitops keeps on a pull request, edited in place.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequestComment {
    /// `owner/name`.
    pub repo: String,
    /// The pull request's number.
    pub number: u64,
    /// Markdown, starting with [`COMMENT_MARKER`], at most [`MAX_COMMENT_CHARS`] characters.
    pub body: String,
}

/// An update for a forge, as stored in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ForgeUpdate {
    /// Set a commit status.
    Status(CommitStatus),
    /// Create a deployment (when the forge has none for it yet) and set its state.
    Deployment(DeploymentUpdate),
    /// Create or edit the pull request's comment.
    Comment(PullRequestComment),
}

impl ForgeUpdate {
    /// The outbox target it updates: the last update stored for a target wins.
    pub fn target(&self) -> String {
        match self {
            ForgeUpdate::Status(s) => format!("status:{}:{}:{}", s.repo, s.sha, s.context),
            ForgeUpdate::Deployment(d) => format!("deployment:{}:{}", d.repo, d.deployment),
            ForgeUpdate::Comment(c) => format!("comment:{}:{}", c.repo, c.number),
        }
    }
}

/// `text` cut to at most `max` characters, ending with `…` when cut.
pub(crate) fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut cut: String = text.chars().take(max.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_at_most_the_limit_in_characters() {
        assert_eq!(truncate_chars("abc", 3), "abc");
        assert_eq!(truncate_chars("abcd", 3), "ab…");
        let long = "é".repeat(MAX_DESCRIPTION_CHARS + 1);
        let cut = truncate_chars(&long, MAX_DESCRIPTION_CHARS);
        assert_eq!(cut.chars().count(), MAX_DESCRIPTION_CHARS);
    }

    #[test]
    fn a_status_target_names_repo_commit_and_context() {
        let update = ForgeUpdate::Status(CommitStatus {
            repo: "o/r".into(),
            sha: "abc".into(),
            context: "gitops/ci".into(),
            state: StatusState::Pending,
            description: String::new(),
            target_url: None,
        });
        assert_eq!(update.target(), "status:o/r:abc:gitops/ci");
    }
}
