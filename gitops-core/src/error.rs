//! The crate's error type: one variant per thing a caller may want to tell apart.

use crate::backend::BoxError;
use crate::config::ConfigError;
use crate::ledger::LedgerError;
use crate::logs::LogError;
use crate::plan::PlanError;
use crate::repo::RepoError;
use crate::source::watch::WatchError;
use crate::source::webhook::{SignatureError, WebhookError};

/// Everything that can go wrong in gitops-core. The error that caused one, when there is one
/// (SQLite's, the file system's, a backend's), is its [`source`](std::error::Error::source):
/// show the whole chain with [`ErrorChain`](crate::ErrorChain).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A webhook payload could not be turned into an event.
    #[error(transparent)]
    Webhook(#[from] WebhookError),
    /// A webhook's signature or token is wrong or missing.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The repository could not be read.
    #[error(transparent)]
    Repo(RepoError),
    /// The ledger could not be read or written.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// A stage log could not be read or written.
    #[error(transparent)]
    Logs(#[from] LogError),
    /// The run cannot be resumed: it is not one a crash interrupted.
    #[error("run \"{run}\" cannot be resumed: it is {status}")]
    NotResumable {
        /// The run.
        run: String,
        /// Its status.
        status: String,
    },
    /// An environment operation (rollback, stop, unpin) cannot be done.
    #[error("environment \"{environment}\": {message}")]
    Environment {
        /// The environment.
        environment: String,
        /// What is wrong.
        message: String,
    },
    /// A repository watcher cannot keep its state.
    #[error("watching {repo}: {message}")]
    Watch {
        /// The repository watched.
        repo: String,
        /// What is wrong.
        message: String,
        /// Why.
        #[source]
        source: BoxError,
    },
    /// There is no pending approval request for this stage of this run.
    #[error("run \"{run}\" has no deployment waiting for approval at stage \"{stage}\"")]
    NoPendingApproval {
        /// The run.
        run: String,
        /// The stage.
        stage: String,
    },
    /// The event cannot be planned with this config.
    #[error(transparent)]
    Plan(#[from] PlanError),
    /// The event may not run: its repository is not served, or it is a pull request from a
    /// fork that no maintainer approved (the reason says which, and what would let it).
    #[error("{reason}")]
    Refused {
        /// Why, for people.
        reason: String,
    },
    /// A secret of the policy could not be read from the host.
    #[error("{message}")]
    Secret {
        /// What is missing.
        message: String,
    },
    /// A forge client could not be set up (its URL, its token, the system's certificates).
    #[error("cannot report to {forge}: {message}")]
    Forge {
        /// The forge (`github`).
        forge: String,
        /// What is wrong.
        message: String,
    },
}

impl From<RepoError> for Error {
    /// A config read from a commit that is invalid is a config error, as one read from a file.
    fn from(e: RepoError) -> Self {
        match e {
            RepoError::Config(e) => Error::Config(e),
            e => Error::Repo(e),
        }
    }
}

impl From<WatchError> for Error {
    fn from(e: WatchError) -> Self {
        match e {
            WatchError::Repo(e) => e.into(),
            WatchError::Snapshot {
                repo,
                message,
                source,
            } => Error::Watch {
                repo,
                message,
                source,
            },
        }
    }
}

/// `Result` with [`Error`] as the default error.
pub type Result<T, E = Error> = std::result::Result<T, E>;
