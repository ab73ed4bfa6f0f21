//! Spawning a stage's shell in a process group of its own, streaming its output line by line,
//! and killing the whole group on cancellation or when the shell is done.

use std::path::Path;
use std::process::Stdio;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::LocalBackend;
use crate::backend::{BackendError, LogSink, LogStream, StageContext};

pub(super) enum Exit {
    Code(i32),
    Signal(i32),
    Cancelled,
}

pub(super) async fn run(
    backend: &LocalBackend,
    ctx: &StageContext,
    command: &str,
    dir: &Path,
    output: &Path,
) -> Result<Exit, BackendError> {
    let mut cmd = Command::new(&backend.shell);
    cmd.arg("-c")
        .arg(command)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    for (k, v) in ctx.gitops_env() {
        cmd.env(k, v);
    }
    cmd.env("GITOPS_OUTPUT", output);
    cmd.envs(&ctx.env);
    let mut child = cmd.spawn().map_err(|e| {
        BackendError::Unavailable(format!("cannot start {}: {e}", backend.shell.display()))
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    let stdout = child
        .stdout
        .take()
        .map(|s| tokio::spawn(pump(s, ctx.log.clone(), LogStream::Stdout)));
    let stderr = child
        .stderr
        .take()
        .map(|s| tokio::spawn(pump(s, ctx.log.clone(), LogStream::Stderr)));

    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = ctx.cancel.cancelled() => None,
    };
    let exit = match status {
        Some(Ok(status)) => {
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => Exit::Code(code),
                (None, Some(sig)) => Exit::Signal(sig),
                (None, None) => Exit::Code(-1),
            }
        }
        Some(Err(e)) => {
            kill_group(pgid, Signal::SIGKILL);
            return Err(BackendError::Failed(format!(
                "cannot wait for the stage's shell: {e}"
            )));
        }
        None => {
            kill_group(pgid, Signal::SIGTERM);
            if tokio::time::timeout(backend.kill_grace, child.wait())
                .await
                .is_err()
            {
                kill_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Exit::Cancelled
        }
    };
    // Whatever the shell left behind in its group (background jobs) goes with it; that also
    // closes the pipes, so the readers below end.
    kill_group(pgid, Signal::SIGKILL);
    for reader in [stdout, stderr].into_iter().flatten() {
        let _ = reader.await;
    }
    Ok(exit)
}

pub(super) fn kill_group(pgid: Option<Pid>, signal: Signal) {
    // Group 0 is our own and -1 every process: only ever signal a real child's group.
    if let Some(pgid) = pgid.filter(|p| p.as_raw() > 1) {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(pgid, signal);
    }
}

async fn pump(reader: impl AsyncRead + Unpin, log: LogSink, stream: LogStream) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => log.line(stream, &String::from_utf8_lossy(&buf)),
        }
    }
}
