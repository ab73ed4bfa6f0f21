//! Why a repository could not be read.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why the repository could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RepoError {
    /// The path is not a Git repository.
    #[error("cannot open git repository at {path}: {message}")]
    Open {
        /// The path tried.
        path: PathBuf,
        /// What gix said.
        message: String,
    },
    /// A revision (sha, branch, tag) does not name a commit here.
    #[error("revision \"{rev}\" not found in {path}: {message}")]
    UnknownRevision {
        /// The revision.
        rev: String,
        /// The repository.
        path: PathBuf,
        /// What gix said.
        message: String,
    },
    /// An abbreviated commit id names more than one commit.
    #[error("commit id \"{prefix}\" is ambiguous in {path}: it begins {}", candidates.join(", "))]
    AmbiguousCommit {
        /// The abbreviated id.
        prefix: String,
        /// The repository.
        path: PathBuf,
        /// The commits it could be.
        candidates: Vec<String>,
    },
    /// Reading objects failed.
    #[error("cannot read {what} in {path}: {message}")]
    Read {
        /// What was being read.
        what: String,
        /// The repository.
        path: PathBuf,
        /// What gix said.
        message: String,
    },
    /// The commit has no `.gitops.yml`.
    #[error("no {file} at commit {commit} in {path}")]
    NoConfig {
        /// The file looked for.
        file: &'static str,
        /// The commit.
        commit: String,
        /// The repository.
        path: PathBuf,
    },
    /// Fetching from a remote failed.
    #[error("cannot fetch from {url}: {message}")]
    Fetch {
        /// The remote.
        url: String,
        /// What gix said.
        message: String,
    },
    /// The event names no commit and no ref to find one by.
    #[error("the {kind} event names no commit")]
    NoCommit {
        /// The event's kind.
        kind: String,
    },
    /// The commit's `.gitops.yml` is invalid (or not UTF-8); the crate's `Error` makes it a
    /// config error.
    #[error(transparent)]
    Config(#[from] ConfigError),
}
