//! The local backend as a [`Deployer`]: an environment is a directory under the environments
//! dir, holding the release; a deployment may also start a process that serves it on a
//! loopback port.
//!
//! `with` parameters of a deploy:
//! - `files`: a path or a list of paths in the checkout to put into the release (default: the
//!   whole checkout, without `.git`), opened through [`Checkout`]: a named link is copied as what
//!   it leads to, links below a named directory are kept as links when they lead inside it, and
//!   anything leading out of the checkout, or a FIFO, device or socket, fails the deploy;
//! - `build`: a shell command run in the new release directory before it goes live;
//! - `serve`: a shell command started in the release directory that serves it, with `$PORT` set
//!   to a free loopback port (or `port`); the deploy succeeds once the port accepts connections
//!   (within `ready_timeout` seconds, default 10, at most 7 days), and `url` is
//!   `http://127.0.0.1:PORT/`.
//!
//! Outputs: `url` (the server's, else a `file://` URL of the release), `path`, and `version`
//! when the deployment has one. Redeploying swaps the release and restarts the server; stopping
//! stops the server and removes the directory.

use crate::backend::BackendError::InvalidParameters;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use super::{LocalBackend, process};
use crate::backend::{BackendError, Checkout, Completion, Deployer, StageContext};
use crate::config::ParamSchema;

const SERVER_PID: &str = "server.pid";
const SERVER_LOG: &str = "server.log";

fn io(what: &str, path: &Path, e: std::io::Error) -> BackendError {
    BackendError::Failed(format!("{what} {}: {e}", path.display()))
}

impl LocalBackend {
    fn environment_dir(&self, ctx: &StageContext) -> Result<PathBuf, BackendError> {
        let env = ctx.environment.as_ref().ok_or_else(|| {
            InvalidParameters(format!(
                "stage \"{}\" names no environment to deploy to",
                ctx.stage
            ))
        })?;
        let root = self.environments.as_ref().ok_or_else(|| {
            InvalidParameters(
                "the local backend has no environments directory (LocalBackendBuilder::with_environments_dir)"
                    .to_owned(),
            )
        })?;
        Ok(root.join(&env.name))
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

/// Stops the server a deployment of `dir` started, if it still runs, and returns once it has
/// ended (so that its port is free again).
async fn stop_server(dir: &Path) {
    let pid_file = dir.join(SERVER_PID);
    if let Ok(text) = std::fs::read_to_string(&pid_file) {
        if let Ok(pgid) = text.trim().parse::<i32>() {
            crate::backend::process::kill_group(Some(Pid::from_raw(pgid)), Signal::SIGKILL);
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while running(pgid) && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let _ = std::fs::remove_file(pid_file);
    }
}

/// Copies what `name` (from `files`) leads to in `checkout` into the release `next`, at `name`
/// (`.` and `..` taken as written), leaving out `.git` and `skip` (the environments directory,
/// when it lies inside the checkout).
fn copy_files(
    checkout: &Checkout,
    name: &str,
    next: &Path,
    skip: Option<&Path>,
) -> Result<(), BackendError> {
    let Some(found) = checkout.find("files", name)? else {
        return Err(InvalidParameters(format!(
            "`with.files`: {name} is not in the checkout"
        )));
    };
    let mut at = PathBuf::new();
    for c in Path::new(name).components() {
        match c {
            Component::Normal(s) => at.push(s),
            Component::CurDir => {}
            Component::ParentDir if at.pop() => {}
            _ => {
                return Err(InvalidParameters(format!(
                    "`with.files`: \"{name}\" is not a path inside the checkout"
                )));
            }
        }
    }
    checkout.copy_tree("files", name, &next.join(at), |p| {
        p.file_name() != Some(".git".as_ref()) && skip != Some(found.path.join(p).as_path())
    })
}

/// The paths named by `files` (the whole checkout when there are none).
fn files(ctx: &StageContext) -> Result<Vec<String>, BackendError> {
    let names: Vec<String> = match ctx.with.get("files") {
        None => return Ok(vec![String::new()]),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str().map(str::to_owned).ok_or_else(|| {
                    InvalidParameters(format!("`with.files` must list paths, found {v}"))
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(InvalidParameters(format!(
                "`with.files` must be a path or a list of paths, found {other}"
            )));
        }
    };
    Ok(names)
}

/// A free port on 127.0.0.1.
fn free_port() -> Result<u16, BackendError> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| BackendError::Failed(format!("cannot find a free loopback port: {e}")))
}

impl LocalBackend {
    /// Starts `command` serving `release` on `port`; returns once the port accepts connections.
    async fn serve(
        &self,
        ctx: &StageContext,
        root: &Path,
        release: &Path,
        command: &str,
        port: u16,
        timeout: Duration,
    ) -> Result<(), BackendError> {
        // Before anything starts: nothing is left running when the time cannot be a deadline.
        let deadline = tokio::time::Instant::now()
            .checked_add(timeout)
            .ok_or_else(|| ctx.params().invalid("ready_timeout", "a shorter time"))?;
        let log_path = root.join(SERVER_LOG);
        let log =
            std::fs::File::create(&log_path).map_err(|e| io("cannot create", &log_path, e))?;
        let err_log = log
            .try_clone()
            .map_err(|e| io("cannot open", &log_path, e))?;
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
            BackendError::Unavailable(format!("cannot start {}: {e}", self.shell.display()))
        })?;
        let pgid = child.id().map(|id| Pid::from_raw(id as i32));
        if let Some(pid) = child.id() {
            let pid_file = root.join(SERVER_PID);
            if let Err(e) = std::fs::write(&pid_file, pid.to_string()) {
                crate::backend::process::kill_group(pgid, Signal::SIGKILL);
                return Err(io("cannot write", &pid_file, e));
            }
        }
        let failed = |message: String| {
            crate::backend::process::kill_group(pgid, Signal::SIGKILL);
            let _ = std::fs::remove_file(root.join(SERVER_PID));
            // The server is gone and its log stays: without the secrets it printed.
            let masker = crate::secret::Masker::new(ctx.secrets.values());
            if let Ok(mut text) = std::fs::read_to_string(&log_path) {
                if masker.mask_in_place(&mut text) {
                    let _ = std::fs::write(&log_path, text);
                }
            }
            message
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
                let tail = std::fs::read_to_string(&log_path).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                return Err(BackendError::Failed(failed(format!(
                    "the `serve` command exited ({status}) before port {port} accepted connections{}",
                    if tail.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", tail.join(" | "))
                    }
                ))));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Failed(failed(format!(
                    "port {port} did not accept connections within {}s of starting `serve`",
                    timeout.as_secs()
                ))));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = ctx.cancel.cancelled() => {
                    failed(String::new());
                    let _ = child.wait().await;
                    return Err(BackendError::Cancelled);
                }
            }
        }
    }
}

#[async_trait]
impl Deployer for LocalBackend {
    /// Puts the release into the environment's directory (see the module docs) and, with
    /// `serve`, starts the process that serves it.
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        refuse_templates(&ctx)?;
        let root = self.environment_dir(&ctx)?;
        let files = files(&ctx)?;
        let build = ctx.param_str("build")?;
        let serve = ctx.param_str("serve")?;
        let port = match ctx.param_u64("port")? {
            Some(p) => Some(
                u16::try_from(p)
                    .map_err(|_| InvalidParameters(format!("`with.port`: {p} is not a port")))?,
            ),
            None => None,
        };
        let ready_timeout = ctx
            .param_seconds("ready_timeout")?
            .unwrap_or(Duration::from_secs(10));
        let next = root.join("release.next");
        let release = root.join("release");
        let old = root.join("release.old");
        for dir in [&next, &old] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| io("cannot remove", dir, e))?;
            }
        }
        std::fs::create_dir_all(&next).map_err(|e| io("cannot create", &next, e))?;
        let checkout = Checkout::open(&ctx.run.workdir)?;
        let skip = root
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .zip(ctx.run.workdir.canonicalize().ok())
            .and_then(|(envs, workdir)| envs.strip_prefix(workdir).ok().map(Path::to_owned));
        for name in &files {
            copy_files(&checkout, name, &next, skip.as_deref())?;
        }
        if let Some(build) = build {
            let output = root.join("build.output");
            let exit = process::run(self, &ctx, build, &next, &output).await?;
            let _ = std::fs::remove_file(&output);
            match exit {
                crate::backend::process::Exit::Code(0) => {}
                crate::backend::process::Exit::Code(code) => {
                    return Ok(Completion::failure(
                        Some(code),
                        format!("`build` failed with exit code {code}"),
                    ));
                }
                crate::backend::process::Exit::Signal(sig) => {
                    return Ok(Completion::failure(
                        None,
                        format!("`build` was killed by signal {sig}"),
                    ));
                }
                crate::backend::process::Exit::Cancelled => return Err(BackendError::Cancelled),
            }
        }
        // The new release goes live: the old server stops, the directories swap.
        stop_server(&root).await;
        if release.exists() {
            std::fs::rename(&release, &old).map_err(|e| io("cannot move", &release, e))?;
        }
        std::fs::rename(&next, &release).map_err(|e| io("cannot move", &next, e))?;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        let mut completion =
            Completion::success().with_output("path", release.display().to_string());
        if let Some(version) = ctx.environment.as_ref().and_then(|e| e.version.clone()) {
            completion = completion.with_output("version", version);
        }
        let url = match serve {
            Some(command) => {
                let port = match port {
                    Some(p) => p,
                    None => free_port()?,
                };
                self.serve(&ctx, &root, &release, command, port, ready_timeout)
                    .await?;
                format!("http://127.0.0.1:{port}/")
            }
            None => format!("file://{}/", release.display()),
        };
        Ok(completion.with_output("url", url))
    }

    /// Stops the environment's server and removes its directory.
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let root = self.environment_dir(&ctx)?;
        stop_server(&root).await;
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|e| io("cannot remove", &root, e))?;
        }
        Ok(Completion::success())
    }

    /// `files`, `build`, `serve`, `port` and `ready_timeout` (see the module docs).
    fn params(&self) -> ParamSchema {
        super::params::deploy()
    }
}

/// Refuses `build` and `serve` holding `${{ }}`: config validation refuses them at load time, and
/// this catches a context made in code that skipped it. (The scheduler hands backends `with`
/// already rendered, so a template it expanded cannot be seen here.)
fn refuse_templates(ctx: &StageContext) -> Result<(), BackendError> {
    for key in ["build", "serve"] {
        if ctx.param_str(key)?.is_some_and(|c| c.contains("${{")) {
            return Err(InvalidParameters(format!(
                "`with.{key}` is a command, and commands are never template-expanded, so that event data cannot inject commands; pass values through `env` and read $NAME"
            )));
        }
    }
    Ok(())
}
