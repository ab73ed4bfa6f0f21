//! The contract of what deploy and stop stages pass through before their backend is called
//! (the engine's environments implement it): one deployment per environment at a time,
//! approvals, pins, and the record of every deployment.

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;

use crate::backend::{BackendError, Cancellation, Completion, StageContext};
use crate::config::Action;

/// Why a deploy or stop stage waits before its backend is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "for", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WaitReason {
    /// Someone has to approve the deployment (`gitops approve RUN STAGE`).
    Approval {
        /// The environment.
        environment: String,
    },
    /// Another deployment holds the environment's lock.
    Lock {
        /// The environment.
        environment: String,
        /// Who holds it (`run <id> stage <stage>`).
        holder: String,
    },
    /// A rollback pinned the environment (`gitops unpin ENV` releases it).
    Pin {
        /// The environment.
        environment: String,
    },
}

/// The failure a deployment is recorded with when its backend panicked.
pub const DEPLOYER_PANICKED: &str = "the deployer panicked (a bug in its backend)";

/// Why a deploy or stop stage may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateRefusal {
    /// The stage was cancelled while it waited.
    Cancelled,
    /// It must not go ahead (rejected, locked or pinned with `fail`, the ledger failed).
    Refused(String),
}

/// An entered gate, handed back when the backend returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct GateTicket {
    /// The deployment's id in the gate's records.
    pub deployment: i64,
    /// How the gate may stop the deployment while the backend works (when it loses the
    /// environment's lock): the backend is then given this token instead of the stage's, and a
    /// revoked deployment fails with the revocation's reason.
    pub revocation: Option<Revocation>,
}

impl GateTicket {
    /// A ticket for `deployment`.
    pub fn new(deployment: i64) -> Self {
        GateTicket {
            deployment,
            revocation: None,
        }
    }

    /// Lets the gate stop the deployment through `revocation`.
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }
}

/// How a gate stops a deployment it let in while the backend works: it cancels the
/// [`Cancellation`] the backend was given (a child of the stage's), saying why. Cheap to clone;
/// clones share it.
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    cancel: Cancellation,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl Revocation {
    /// A revocation whose cancellation is a child of `parent` (the stage's): it fires with the
    /// stage, and revoking it cancels only the deployment.
    pub fn child_of(parent: &Cancellation) -> Self {
        Revocation {
            cancel: parent.child(),
            reason: Arc::default(),
        }
    }

    /// What to give the backend.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancel
    }

    /// Records why (the first reason given stays) and cancels the token.
    pub fn revoke(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.cancel.cancel();
    }

    /// Why it was revoked; `None` while it was not.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// Guards deploy and stop stages (the engine's `Environments` implement it): one deployment
/// per environment at a time, approvals, pins, and the record of every deployment.
#[async_trait]
pub trait DeploymentGate: Send + Sync + 'static {
    /// Called before the backend is: returns when the stage may go ahead, telling `waiting` why
    /// it waits meanwhile; gives up when `ctx.cancelled()` completes.
    async fn enter(
        &self,
        ctx: &StageContext,
        action: Action,
        backend: &str,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<GateTicket, GateRefusal>;

    /// Called when the backend returned; `cancelled` when the stage was stopped. Called once for
    /// every ticket that `enter` handed out, whatever happens to the backend: when it panics,
    /// `returned` is an error saying so; when the stage's future is dropped before it returned,
    /// `cancelled` is true. (Those two calls come from a task of their own.)
    async fn leave(
        &self,
        ticket: GateTicket,
        returned: &Result<Completion, BackendError>,
        cancelled: bool,
    );
}
