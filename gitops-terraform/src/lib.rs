//! The Terraform backend of gitops: `plan` stages on pull requests, `apply` of exactly that plan
//! on deploy, one workspace per environment, driven through the `terraform` (or OpenTofu's `tofu`)
//! CLI's JSON interfaces.
//!
//! ```yaml
//! environments:
//!   staging:
//!     backend: terraform
//!     with: { dir: infra, vars: { size: small }, backend_config: { bucket: tf-state } }
//! pipelines:
//!   pr:
//!     on: { pull_request: {} }
//!     stages:
//!       plan: { backend: terraform, with: { dir: infra, workspace: staging } }
//!   main:
//!     on: { push: { branches: [main] } }
//!     stages:
//!       apply: { deploy: staging }
//! ```
//!
//! `with` (of a stage, or of an environment for every deployment to it):
//! - `dir`: the configuration's directory in the checkout (default `.`);
//! - `binary`: `terraform`, `tofu` or a path (default: the backend's, `terraform`);
//! - `workspace`: default the environment's name for deploys and stops, `default` for stages;
//! - `vars`: variables, written to a generated `*.tfvars.json` passed with `-var-file`;
//!   `var_files`: more files, relative to `dir`;
//! - `backend_config`: `-backend-config` pairs for `init`;
//! - `lock_timeout`: seconds `plan`, `apply` and `destroy` wait for the state lock (default 0:
//!   a held lock fails at once, saying who holds it; at most 7 days);
//! - `expose_sensitive`: sensitive outputs to pass on as outputs (others read `(sensitive)`);
//! - `action`: what a stage without `run` does, `plan` (default) or `validate`.
//!
//! A stage with `run` runs that command (`sh -c`) in the initialised directory with the workspace
//! selected: `$GITOPS_TF_VAR_ARGS` holds the `-var-file` arguments, `$GITOPS_TF_WORKSPACE` the
//! workspace and `$GITOPS_TF_BINARY` the CLI (`run: $GITOPS_TF_BINARY plan $GITOPS_TF_VAR_ARGS`),
//! with `$GITOPS_OUTPUT` and the `GITOPS_*` variables as on the local backend. A configuration that declares
//! no `backend` keeps its state in the backend's state dir (one directory per repository and
//! configuration, a workspace per environment), through a generated `gitops_backend_override.tf`
//! removed after the stage, so state outlives the run's checkout. Cancellation sends terraform
//! SIGINT, so it stops cleanly and releases its lock, then SIGKILL after the grace period; a
//! cancelled deploy then puts the environment back as its last deploy left it (that deploy's
//! variables applied again; an environment never deployed before is destroyed), since terraform,
//! interrupted, leaves what it was creating half made.
//!
//! [`Terraform`] is the CLI wrapper on its own, for tools that drive terraform directly.
#![warn(missing_docs)]

mod backend;
mod cli;
mod params;
mod plan;
mod ui;

use std::path::PathBuf;
use std::time::Duration;

pub use cli::{LockInfo, OutputValue, Terraform, TerraformError};
pub use plan::{Action, PlanSummary, ResourceChange};
pub use ui::{ChangeSummary, Diagnostic, Pos, Range};

/// Runs stages and deploys environments with the terraform CLI.
#[derive(Debug, Clone)]
pub struct TerraformBackend {
    binary: PathBuf,
    state_dir: PathBuf,
    grace: Duration,
    lock_timeout: Duration,
}

/// Builds a [`TerraformBackend`].
#[derive(Debug, Clone)]
pub struct TerraformBackendBuilder {
    backend: TerraformBackend,
}

impl TerraformBackend {
    /// A backend keeping local state and the provider cache under `state_dir` (the engine's
    /// `<state>/terraform`), with the defaults of [`builder`](Self::builder).
    pub fn new(state_dir: impl Into<PathBuf>) -> Self {
        Self::builder(state_dir).build()
    }

    /// A builder: binary `terraform`, 30 seconds between SIGINT and SIGKILL, lock timeout 0.
    pub fn builder(state_dir: impl Into<PathBuf>) -> TerraformBackendBuilder {
        TerraformBackendBuilder {
            backend: TerraformBackend {
                binary: PathBuf::from("terraform"),
                state_dir: state_dir.into(),
                grace: Duration::from_secs(30),
                lock_timeout: Duration::ZERO,
            },
        }
    }
}

impl TerraformBackendBuilder {
    /// The CLI (`terraform`, `tofu`, or a path); a stage's `with.binary` overrides it.
    pub fn with_binary(mut self, binary: impl Into<PathBuf>) -> Self {
        self.backend.binary = binary.into();
        self
    }

    /// How long a cancelled command gets between SIGINT and SIGKILL.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.backend.grace = grace;
        self
    }

    /// How long commands wait for a state lock by default.
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.backend.lock_timeout = timeout;
        self
    }

    /// The backend.
    pub fn build(self) -> TerraformBackend {
        self.backend
    }
}
