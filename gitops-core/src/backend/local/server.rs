//! The process that serves a local environment's release: started with `$PORT`, ready once the
//! port accepts connections, stopped by its process group, its pid and log kept beside the
//! release.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::LocalBackend;
use crate::backend::process::kill_group;
use crate::backend::{BackendError, StageContext, io_failed};

/// Where a server's pid and log are kept.
#[derive(Debug, Clone)]
pub(super) struct ServerFiles {
    pub(super) pid: PathBuf,
    pub(super) log: PathBuf,
}

impl ServerFiles {
    /// The files `name.pid` and `name.log` in `dir`.
    pub(super) fn in_dir(dir: &Path, name: &str) -> ServerFiles {
        ServerFiles {
            pid: dir.join(format!("{name}.pid")),
            log: dir.join(format!("{name}.log")),
        }
    }

    /// Moves the files to `to`'s names.
    pub(super) fn rename(&self, to: &ServerFiles) {
        let _ = std::fs::rename(&self.pid, &to.pid);
        let _ = std::fs::rename(&self.log, &to.log);
    }
}

/// Whether `pid` still runs (a zombie has ended; it only waits to be reaped).
fn running(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .is_some_and(|rest| !rest.trim_start().starts_with(['Z', 'X']))
    })
}

/// Stops the server whose pid `files` keep, if it still runs, and returns once it has ended (so
/// that its port is free again).
pub(super) async fn stop(files: &ServerFiles) {
    if let Ok(text) = std::fs::read_to_string(&files.pid) {
        if let Ok(pgid) = text.trim().parse::<i32>() {
            kill_group(Some(Pid::from_raw(pgid)), Signal::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while running(pgid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let _ = std::fs::remove_file(&files.pid);
    }
}

/// A free port on 127.0.0.1.
pub(super) fn free_port() -> Result<u16, BackendError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BackendError::failed_with("cannot find a free loopback port", e))
}

/// Why a server did not come up.
pub(super) enum NotServing {
    /// It failed (its log, masked, is kept at the log path).
    Failed(BackendError),
    /// The stage was cancelled (the server is stopped).
    Cancelled,
}

impl LocalBackend {
    /// Starts `command` serving `release` on `port`, its pid and log in `files`; returns once the
    /// port accepts connections. Whatever happens otherwise, the server is stopped.
    pub(super) async fn serve(
        &self,
        ctx: &StageContext,
        release: &Path,
        files: &ServerFiles,
        command: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), NotServing> {
        let failed = |e| NotServing::Failed(e);
        // Before anything starts: nothing is left running when the time cannot be a deadline.
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .ok_or_else(|| failed(ctx.params().invalid("ready_timeout", "a shorter time")))?;
        let log = std::fs::File::create(&files.log)
            .map_err(|e| failed(io_failed("cannot create", &files.log, e)))?;
        let err_log = log
            .try_clone()
            .map_err(|e| failed(io_failed("cannot open", &files.log, e)))?;
        let mut cmd = tokio::process::Command::new(&self.shell);
        cmd.arg("-c")
            .arg(command)
            .current_dir(release)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err_log)
            .process_group(0);
        crate::backend::process::stage_environment(&mut cmd, ctx.variables());
        cmd.env("PORT", port.to_string());
        let mut child = cmd.spawn().map_err(|e| {
            failed(BackendError::unavailable_with(
                format!("cannot start {}", self.shell.display()),
                e,
            ))
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        if let Some(pid) = child.id() {
            if let Err(e) = std::fs::write(&files.pid, pid.to_string()) {
                kill_group(pgid, Signal::SIGKILL);
                return Err(failed(io_failed("cannot write", &files.pid, e)));
            }
        }
        let give_up = |message: String| {
            kill_group(pgid, Signal::SIGKILL);
            let _ = std::fs::remove_file(&files.pid);
            // The server is gone and its log stays: without the secrets it printed.
            let masker = crate::secret::Masker::new(ctx.secrets.values());
            if let Ok(mut text) = std::fs::read_to_string(&files.log) {
                if masker.mask_in_place(&mut text) {
                    let _ = std::fs::write(&files.log, text);
                }
            }
            NotServing::Failed(BackendError::failed(message))
        };
        loop {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                // The server outlives this call: it is the environment. Reap it in the
                // background so that it never lingers as a zombie of ours.
                tokio::spawn(async move {
                    let _ = child.wait().await;
                });
                return Ok(());
            }
            if let Ok(Some(status)) = child.try_wait() {
                let tail = std::fs::read_to_string(&files.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(give_up(format!(
                    "the `serve` command exited ({status}) before port {port} accepted connections{}",
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", tail.join(" | "))
                    }
                )));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(give_up(format!(
                    "port {port} did not accept connections within {}s of starting `serve`",
                    timeout.as_secs()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = ctx.cancelled() => {
                    give_up(String::new());
                    let _ = child.wait().await;
                    return Err(NotServing::Cancelled);
                }
            }
        }
    }
}
