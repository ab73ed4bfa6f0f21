//! [`LocalBackend`]: the embedded default. A stage's `run` is `sh -c` in the run's checkout, a
//! process group of its own on this machine; an environment is a directory (see [`Deployer`]
//! for deploys); nothing to install.
//!
//! [`Deployer`]: super::Deployer

mod deploy;
mod params;
mod process;
mod server;

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{BackendError, Completion, Executor, StageContext};
use crate::backend::ParamSchema;

/// Runs stages as local processes.
#[derive(Debug, Clone)]
pub struct LocalBackend {
    shell: PathBuf,
    kill_grace: Duration,
    environments: Option<PathBuf>,
}

/// Builds a [`LocalBackend`].
#[derive(Debug, Clone)]
pub struct LocalBackendBuilder {
    backend: LocalBackend,
}

impl Default for LocalBackend {
    fn default() -> Self {
        LocalBackend {
            shell: PathBuf::from("sh"),
            kill_grace: Duration::from_secs(5),
            environments: None,
        }
    }
}

impl LocalBackend {
    /// A backend with the defaults: `sh`, 5 seconds between SIGTERM and SIGKILL.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder.
    pub fn builder() -> LocalBackendBuilder {
        LocalBackendBuilder {
            backend: Self::default(),
        }
    }
}

impl LocalBackendBuilder {
    /// The shell that runs `run` commands with `-c` (default `sh`).
    pub fn with_shell(mut self, shell: impl Into<PathBuf>) -> Self {
        self.backend.shell = shell.into();
        self
    }

    /// How long a cancelled stage's processes get between SIGTERM and SIGKILL (default 5s).
    pub fn with_kill_grace(mut self, grace: Duration) -> Self {
        self.backend.kill_grace = grace;
        self
    }

    /// Where environments live, one directory each (needed to deploy; the engine uses
    /// `<state>/environments`).
    pub fn with_environments_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.backend.environments = Some(dir.into());
        self
    }

    /// The backend.
    pub fn build(self) -> LocalBackend {
        self.backend
    }
}

#[async_trait]
impl Executor for LocalBackend {
    /// Runs `ctx.command` with `sh -c` in the checkout, with the `GITOPS_*` variables and the
    /// stage's `env`; `$GITOPS_OUTPUT` names a file whose `key=value` lines become outputs.
    /// On cancellation the whole process group gets SIGTERM, then SIGKILL after the grace
    /// period; when the command ends, whatever it left running in its group is killed.
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let Some(command) = ctx.command.clone() else {
            return Err(BackendError::InvalidParameters(format!(
                "stage \"{}\" has no `run` command, which the local backend needs",
                ctx.stage
            )));
        };
        if !ctx.run.workdir.is_dir() {
            return Err(BackendError::InvalidParameters(format!(
                "working directory {} does not exist",
                ctx.run.workdir.display()
            )));
        }
        let output_file = tempfile::Builder::new()
            .prefix("gitops-output-")
            .tempfile()
            .map_err(|e| BackendError::failed_with("cannot create the output file", e))?;
        let status =
            process::run(self, &ctx, &command, &ctx.run.workdir, output_file.path()).await?;
        let outputs = super::read_outputs(output_file.path())
            .map_err(|e| BackendError::failed_with("cannot read $GITOPS_OUTPUT", e))?;
        status.into_completion(outputs)
    }

    /// None: the command is the stage's `run`.
    fn params(&self) -> ParamSchema {
        params::run()
    }
}
