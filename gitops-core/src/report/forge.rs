//! The contract of a forge client: send one update, and say whether a failure is worth a retry.

use std::time::Duration;

use async_trait::async_trait;

use super::ForgeUpdate;
use crate::ledger::Ledger;

/// Why a forge did not take an update.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// Worth trying again: the forge is unreachable, failed (5xx) or limits the rate.
    #[error("{message}")]
    Retry {
        /// What the forge said, or why it could not be reached.
        message: String,
        /// How long the forge asked to wait (`Retry-After`, a rate limit's reset), if it said.
        after: Option<Duration>,
    },
    /// The forge refused it for good (401, 404, 422, ...): sending it again would not help.
    #[error("{message}")]
    Final {
        /// The HTTP status; `None` when the update was not sent (it cannot be a valid request).
        status: Option<u16>,
        /// What the forge said.
        message: String,
    },
}

/// A forge the [`Sender`](super::Sender) delivers updates to.
///
/// An implementation sends one update per call, with its own time limit, and maps each failure
/// to [`SendError::Retry`] or [`SendError::Final`]; it never retries itself (the sender does, in
/// order and with backoff). Dropping the future abandons the request: the update stays in the
/// outbox and is sent again.
#[async_trait]
pub trait Forge: Send + Sync + 'static {
    /// The forge's name in the outbox (`github`).
    fn name(&self) -> &str;

    /// Sends one update; `refs` keeps what the forge calls what it made (a deployment's id).
    async fn send(&self, update: &ForgeUpdate, refs: &ForgeRefs) -> Result<(), SendError>;
}

/// What a forge calls the things gitops made there, kept in the ledger: the second update of a
/// deployment finds the deployment the first created, after a restart too.
#[derive(Debug, Clone)]
pub struct ForgeRefs {
    ledger: Ledger,
    forge: String,
}

impl ForgeRefs {
    /// The references of `forge`, in `ledger`.
    pub fn new(ledger: Ledger, forge: &str) -> Self {
        ForgeRefs {
            ledger,
            forge: forge.to_owned(),
        }
    }

    /// What the forge calls `key`, if it was recorded. A ledger that cannot be read is worth a
    /// retry.
    pub fn get(&self, key: &str) -> Result<Option<String>, SendError> {
        self.ledger
            .forge_ref(&self.forge, key)
            .map_err(|e| ledger_error(&e))
    }

    /// Records what the forge calls `key`.
    pub fn set(&self, key: &str, remote: &str) -> Result<(), SendError> {
        self.ledger
            .set_forge_ref(&self.forge, key, remote)
            .map_err(|e| ledger_error(&e))
    }
}

fn ledger_error(e: &crate::ledger::LedgerError) -> SendError {
    SendError::Retry {
        message: format!("the ledger: {}", crate::ErrorChain(e)),
        after: None,
    }
}
