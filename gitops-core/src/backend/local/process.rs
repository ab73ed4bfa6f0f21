//! A stage's shell, run with [`run_merged`](crate::backend::process::run_merged): its output
//! streamed to the stage's log in the order it was written (stdout and stderr are one pipe, as
//! in a terminal), its group stopped with SIGTERM on cancellation.

use std::path::Path;

use tokio::process::Command;

use super::LocalBackend;
use crate::backend::process::{Exit, StopPolicy, StopSignal, run_merged, stage_environment};
use crate::backend::{BackendError, StageContext};

pub(super) async fn run(
    backend: &LocalBackend,
    ctx: &StageContext,
    command: &str,
    dir: &Path,
    output: &Path,
) -> Result<Exit, BackendError> {
    let mut cmd = Command::new(&backend.shell);
    cmd.arg("-c").arg(command).current_dir(dir);
    stage_environment(&mut cmd, ctx.variables());
    cmd.env("GITOPS_OUTPUT", output);
    let stop = StopPolicy::new(StopSignal::Terminate, backend.kill_grace);
    run_merged(cmd, ctx.cancellation(), stop, |stream, line| {
        ctx.log.line(stream, line)
    })
    .await
    .map_err(|e| {
        BackendError::unavailable_with(format!("cannot run {}", backend.shell.display()), e)
    })
}
