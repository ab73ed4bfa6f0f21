//! The backend contract: [`Executor`] runs a stage, [`Deployer`] deploys to and stops
//! environments. A backend crate implements one or both; [`BackendRegistry`] maps the names used
//! in config (`local`, `docker`, ...) to implementations.
//!
//! Every call gets a [`StageContext`]: the resolved `env` and `with` of the stage, the checkout
//! directory, a [`Cancellation`], a sink for log lines. Outputs are returned in the
//! [`Completion`].
//!
//! # Cancellation
//!
//! When `ctx.cancelled()` completes (the stage timed out, or its run was cancelled), an
//! implementation must stop everything it started for the stage (processes, containers, jobs)
//! and return promptly; what it returns then is recorded as cancelled or timed out, whatever it
//! is. Nothing may be left running after the call returns.

mod cancel;
mod context;
mod environment;
mod error;
mod lazy;
pub mod local;
mod log;
pub mod memory;
pub mod names;
mod outputs;
pub mod params;
pub mod paths;
pub mod process;
mod registry;

use std::collections::BTreeMap;

use async_trait::async_trait;

pub use cancel::Cancellation;
pub use context::{RunInfo, StageContext, TrustLevel};
pub use environment::{Approval, EnvironmentPolicy, EnvironmentTarget, OnBusy};
pub(crate) use error::io_failed;
pub use error::{BackendError, BoxError, ErrorChain};
pub use lazy::Lazy;
pub(crate) use log::LogTarget;
pub use log::{LogLine, LogSink, LogStream};
pub use outputs::read_outputs;
pub use params::{ParamKind, ParamSchema, Params, checkout_path};
pub use paths::Checkout;
pub use registry::BackendRegistry;

/// How a stage ended, from the backend's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It did what it was asked.
    Success,
    /// It failed: a non-zero exit, a failed build, an unhealthy deployment.
    Failure {
        /// The exit code, where there is one.
        exit_code: Option<i32>,
        /// What failed, for people.
        message: String,
    },
}

/// The result of an [`Executor`] or [`Deployer`] call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// Success or failure.
    pub outcome: Outcome,
    /// Outputs for dependent stages (`${{ stages.<id>.outputs.<key> }}`).
    pub outputs: BTreeMap<String, String>,
}

impl Completion {
    /// A success with no outputs.
    pub fn success() -> Self {
        Completion {
            outcome: Outcome::Success,
            outputs: BTreeMap::new(),
        }
    }

    /// A failure with a message.
    pub fn failure(exit_code: Option<i32>, message: impl Into<String>) -> Self {
        Completion {
            outcome: Outcome::Failure {
                exit_code,
                message: message.into(),
            },
            outputs: BTreeMap::new(),
        }
    }

    /// Adds an output.
    pub fn with_output(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.outputs.insert(key.into(), value.into());
        self
    }
}

/// Runs one stage.
///
/// Implementations are shared between runs and stages (`Send + Sync`), and must honour the
/// cancellation contract of this module.
#[async_trait]
pub trait Executor: Send + Sync + 'static {
    /// Runs the stage described by `ctx` to its end.
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError>;

    /// Stops and removes what the stages of run `run_id` left behind when the process running
    /// them died mid-stage (containers, Jobs): the engine calls it before it resumes the run.
    /// Returns how many things it removed. The default has nothing to remove (a local stage's
    /// processes are found by the engine itself).
    async fn abandon(&self, run_id: &str) -> Result<usize, BackendError> {
        let _ = run_id;
        Ok(0)
    }

    /// What a `run` stage on this backend may set in `with`, checked when a config loads. A
    /// parameter that is a command must be declared as one
    /// ([`ParamKind::Command`]), so that `${{ }}` is
    /// refused in it. The default accepts anything and declares no command.
    fn params(&self) -> ParamSchema {
        ParamSchema::open()
    }
}

/// Deploys releases to environments and stops (tears down) environments.
///
/// `ctx.environment` is always set. An implementation must (each clause is checked by
/// `gitops_core::testing::deployer`, feature `testing`):
///
/// - replace the release an environment runs when deploying to it again;
/// - succeed when stopping an environment that does not exist;
/// - leave nothing of an environment behind when stopping it;
/// - when a deploy is cancelled, return leaving no half-made release, the previous release
///   still serving;
/// - output `url` when it serves releases at a URL;
/// - refuse bad `with` parameters with [`BackendError::InvalidParameters`] before it creates
///   anything.
#[async_trait]
pub trait Deployer: Send + Sync + 'static {
    /// Deploys the release described by `ctx` to `ctx.environment`.
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError>;

    /// Removes everything `ctx.environment` runs.
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError>;

    /// What deploy and stop stages on this backend, and environments deployed by it, may set in
    /// `with`, checked when a config loads. A parameter that is a command must be declared as one
    /// ([`ParamKind::Command`]), so that `${{ }}` is
    /// refused in it. The default accepts anything and declares no command.
    fn params(&self) -> ParamSchema {
        ParamSchema::open()
    }
}
