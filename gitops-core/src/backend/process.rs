//! Running a program for a backend: in a process group of its own, its output read line by line
//! as it comes, the whole group stopped on cancellation (a chosen signal first, SIGKILL after a
//! grace period) and killed when the program ends, so nothing it started is left running.
//!
//! The local backend runs its stages with it; backends driving a CLI (terraform) use it to
//! parse that CLI's streaming output.

use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;

use super::{Cancellation, LogStream};

/// The variables of this process that a stage's process keeps (besides those the stage is
/// given): nothing else of the host's environment (a server's webhook secret, say) reaches
/// what a pull request runs.
pub const HOST_VARIABLES: &[&str] = &["PATH", "HOME", "LANG", "TZ"];

/// Clears `cmd`'s environment but for [`HOST_VARIABLES`], then sets `vars` (see
/// [`StageContext::variables`](super::StageContext::variables)).
pub fn stage_environment(cmd: &mut Command, vars: impl IntoIterator<Item = (String, String)>) {
    cmd.env_clear();
    for name in HOST_VARIABLES {
        if let Some(value) = std::env::var_os(name) {
            cmd.env(name, value);
        }
    }
    cmd.envs(vars);
}

/// How a program ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It was cancelled and stopped.
    Cancelled,
}

impl Exit {
    /// A stage's completion for this exit, with `outputs`: success on 0, a failure naming the
    /// code or signal, and [`BackendError::Cancelled`](super::BackendError::Cancelled) when it was
    /// cancelled.
    pub fn into_completion(
        self,
        outputs: std::collections::BTreeMap<String, String>,
    ) -> Result<super::Completion, super::BackendError> {
        let mut completion = match self {
            Exit::Code(0) => super::Completion::success(),
            Exit::Code(code) => super::Completion::failure(Some(code), format!("exit code {code}")),
            Exit::Signal(sig) => {
                super::Completion::failure(None, format!("killed by signal {sig}"))
            }
            Exit::Cancelled => return Err(super::BackendError::Cancelled),
        };
        completion.outputs = outputs;
        Ok(completion)
    }
}

/// The signal a cancelled program gets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopSignal {
    /// SIGTERM (most programs).
    Terminate,
    /// SIGINT, as a terminal's Ctrl-C (terraform stops cleanly on it, releasing its state lock).
    Interrupt,
}

/// How a cancelled program is stopped.
#[derive(Debug, Clone, Copy)]
pub struct StopPolicy {
    /// The first signal, to its whole process group.
    pub signal: StopSignal,
    /// How long it gets before SIGKILL.
    pub grace: Duration,
}

impl StopPolicy {
    /// `signal` first, SIGKILL after `grace`.
    pub fn new(signal: StopSignal, grace: Duration) -> Self {
        StopPolicy { signal, grace }
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr piped, a process group of its own) to its end,
/// calling `on_line` with each line of its output as it comes (in order within each stream; the
/// line ending removed). When `cancel` fires, the group gets `stop.signal`, then SIGKILL after
/// `stop.grace`, and the result is [`Exit::Cancelled`]. When the program ends, whatever it left
/// running in its group is killed; so is the whole group when the future is dropped before
/// the end. Errors are those of starting or waiting for it.
///
/// Lines of different streams may trade places: two pipes do not say which was written first.
/// Where that order matters more than which stream a line came from, use [`run_merged`].
pub async fn run_streaming(
    cmd: Command,
    cancel: &Cancellation,
    stop: StopPolicy,
    on_line: impl FnMut(LogStream, &str),
) -> std::io::Result<Exit> {
    run(cmd, Pipes::Apart, cancel, stop, on_line).await
}

/// [`run_streaming`] with stdout and stderr as one pipe, as a shell's `2>&1` makes them: every
/// line reaches `on_line` in the order the program wrote it, as [`LogStream::Stdout`] (which
/// stream it was written to cannot be told apart any more).
pub async fn run_merged(
    cmd: Command,
    cancel: &Cancellation,
    stop: StopPolicy,
    on_line: impl FnMut(LogStream, &str),
) -> std::io::Result<Exit> {
    run(cmd, Pipes::Merged, cancel, stop, on_line).await
}

/// How a program's stdout and stderr reach us.
#[derive(Clone, Copy)]
enum Pipes {
    /// A pipe each.
    Apart,
    /// One pipe for both.
    Merged,
}

async fn run(
    mut cmd: Command,
    pipes: Pipes,
    cancel: &Cancellation,
    stop: StopPolicy,
    mut on_line: impl FnMut(LogStream, &str),
) -> std::io::Result<Exit> {
    cmd.stdin(Stdio::null()).process_group(0).kill_on_drop(true);
    let merged = match pipes {
        Pipes::Apart => {
            cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
            None
        }
        Pipes::Merged => {
            // Close-on-exec, so that no other program started meanwhile keeps the pipe open.
            let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            cmd.stdout(writer.try_clone()?).stderr(writer);
            Some(reader)
        }
    };
    let mut child = cmd.spawn()?;
    // The command holds our copies of the pipe's write end: gone, the reader sees the end of
    // the output when the program (and what it started) closes theirs.
    drop(cmd);
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // Dropped before the end (its task aborted, the runtime shut down), the future still
    // takes the whole group with it: `kill_on_drop` alone would kill the program only, and
    // leave what it started running.
    let group = GroupGuard(pgid);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    if let Some(fd) = merged {
        let reader = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
        tokio::spawn(pump(reader, tx.clone(), LogStream::Stdout));
    }
    if let Some(s) = child.stdout.take() {
        tokio::spawn(pump(s, tx.clone(), LogStream::Stdout));
    }
    if let Some(s) = child.stderr.take() {
        tokio::spawn(pump(s, tx.clone(), LogStream::Stderr));
    }
    // The pumps hold the only senders: the channel ends when the output does.
    drop(tx);
    // Lines are handed on while the program runs; the wait ends with its exit or cancellation.
    let status = loop {
        tokio::select! {
            status = child.wait() => break Some(status),
            _ = cancel.cancelled() => break None,
            Some((stream, line)) = rx.recv() => on_line(stream, &line),
        }
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
        // The group goes with `group`.
        Some(Err(e)) => return Err(e),
        None => {
            let first = match stop.signal {
                StopSignal::Terminate => Signal::SIGTERM,
                StopSignal::Interrupt => Signal::SIGINT,
            };
            kill_group(pgid, first);
            // What it prints while stopping still counts.
            let wait = async {
                loop {
                    tokio::select! {
                        status = child.wait() => break status,
                        Some((stream, line)) = rx.recv() => on_line(stream, &line),
                    }
                }
            };
            if tokio::time::timeout(stop.grace, wait).await.is_err() {
                kill_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            Exit::Cancelled
        }
    };
    // Whatever it left behind in its group (background jobs) goes with it; that also closes the
    // pipes, so the readers end and the channel drains.
    drop(group);
    while let Some((stream, line)) = rx.recv().await {
        on_line(stream, &line);
    }
    Ok(exit)
}

/// Kills its process group (SIGKILL) when dropped.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        kill_group(self.0, Signal::SIGKILL);
    }
}

/// Sends `signal` to process group `pgid`, never to our own group or to every process.
pub(crate) fn kill_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid.filter(|p| p.as_raw() > 1) {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(pgid, signal);
    }
}

async fn pump(
    reader: impl AsyncRead + Unpin,
    tx: tokio::sync::mpsc::UnboundedSender<(LogStream, String)>,
    stream: LogStream,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                let text = String::from_utf8_lossy(&buf);
                let text = text.strip_suffix('\n').unwrap_or(&text);
                let text = text.strip_suffix('\r').unwrap_or(text);
                if tx.send((stream, text.to_owned())).is_err() {
                    break;
                }
            }
        }
    }
}
