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
//! when the deployment has one.
//!
//! A redeploy prepares the new release beside the live one (`release.next`), builds it, starts
//! its server on a port of its own, and only once that server is ready stops the old one and
//! swaps the directories; so a release that fails or is cancelled on the way leaves nothing of
//! itself and the previous one serving (with a fixed `port`, the old server goes first, since
//! it holds the port). Stopping stops the server and removes the directory.

use crate::backend::BackendError::InvalidParameters;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;

use super::server::{self, NotServing, ServerFiles};
use super::{LocalBackend, process};
use crate::backend::ParamSchema;
use crate::backend::process::Exit;
use crate::backend::{BackendError, Checkout, Completion, Deployer, StageContext, io_failed};

/// The live release, and the one being made.
const RELEASE: &str = "release";
const NEXT: &str = "release.next";
const OLD: &str = "release.old";
/// The build's `$GITOPS_OUTPUT`, while it runs.
const BUILD_OUTPUT: &str = "build.output";

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

/// What a deploy's `with` asks for, read before anything is made.
struct Spec<'a> {
    files: Vec<String>,
    build: Option<&'a str>,
    serve: Option<&'a str>,
    port: Option<u16>,
    ready_timeout: Duration,
}

impl<'a> Spec<'a> {
    fn read(ctx: &'a StageContext, checkout: &Checkout) -> Result<Spec<'a>, BackendError> {
        refuse_templates(ctx)?;
        let files = files(ctx)?;
        for name in &files {
            if checkout.find("files", name)?.is_none() {
                return Err(InvalidParameters(format!(
                    "`with.files`: {name} is not in the checkout"
                )));
            }
        }
        let port = match ctx.param_u64("port")? {
            Some(p) => Some(
                u16::try_from(p)
                    .map_err(|_| InvalidParameters(format!("`with.port`: {p} is not a port")))?,
            ),
            None => None,
        };
        Ok(Spec {
            files,
            build: ctx.param_str("build")?,
            serve: ctx.param_str("serve")?,
            port,
            ready_timeout: ctx
                .param_seconds("ready_timeout")?
                .unwrap_or(Duration::from_secs(10)),
        })
    }
}

/// Removes what a deploy that did not go live made: the next release, its build's output, its
/// server's pid (its log stays, for what went wrong); the environment's directory too when the
/// deploy made it and nothing else is in it.
fn discard(root: &Path, made_root: bool) {
    let _ = std::fs::remove_dir_all(root.join(NEXT));
    let _ = std::fs::remove_file(root.join(BUILD_OUTPUT));
    let _ = std::fs::remove_file(ServerFiles::in_dir(root, "server.next").pid);
    if made_root {
        let _ = std::fs::remove_dir(root);
    }
}

impl LocalBackend {
    /// Makes the next release beside the live one: its files, then its build. `Ok(None)` when
    /// it is ready, `Ok(Some(failure))` when the build failed.
    async fn prepare(
        &self,
        ctx: &StageContext,
        spec: &Spec<'_>,
        checkout: &Checkout,
        root: &Path,
    ) -> Result<Option<Completion>, BackendError> {
        let next = root.join(NEXT);
        for dir in [&next, &root.join(OLD)] {
            if dir.exists() {
                std::fs::remove_dir_all(dir).map_err(|e| io_failed("cannot remove", dir, e))?;
            }
        }
        std::fs::create_dir_all(&next).map_err(|e| io_failed("cannot create", &next, e))?;
        let skip = root
            .parent()
            .and_then(|p| p.canonicalize().ok())
            .zip(ctx.run.workdir.canonicalize().ok())
            .and_then(|(envs, workdir)| envs.strip_prefix(workdir).ok().map(Path::to_owned));
        for name in &spec.files {
            copy_files(checkout, name, &next, skip.as_deref())?;
        }
        let Some(build) = spec.build else {
            return Ok(None);
        };
        let output = root.join(BUILD_OUTPUT);
        let exit = process::run(self, ctx, build, &next, &output).await?;
        let _ = std::fs::remove_file(&output);
        match exit {
            Exit::Code(0) => Ok(None),
            Exit::Code(code) => Ok(Some(Completion::failure(
                Some(code),
                format!("`build` failed with exit code {code}"),
            ))),
            Exit::Signal(sig) => Ok(Some(Completion::failure(
                None,
                format!("`build` was killed by signal {sig}"),
            ))),
            Exit::Cancelled => Err(BackendError::Cancelled),
        }
    }

    /// Makes the next release and puts it live (see the module docs).
    async fn release(
        &self,
        ctx: &StageContext,
        spec: &Spec<'_>,
        checkout: &Checkout,
        root: &Path,
    ) -> Result<Completion, BackendError> {
        if let Some(failure) = self.prepare(ctx, spec, checkout, root).await? {
            return Ok(failure);
        }
        let (next, release) = (root.join(NEXT), root.join(RELEASE));
        let live = ServerFiles::in_dir(root, "server");
        let url = match spec.serve {
            Some(command) => {
                let port = match spec.port {
                    Some(p) => {
                        // The old server holds the port.
                        server::stop(&live).await;
                        p
                    }
                    None => server::free_port()?,
                };
                let starting = ServerFiles::in_dir(root, "server.next");
                match self
                    .serve(ctx, &next, &starting, command, port, spec.ready_timeout)
                    .await
                {
                    Ok(()) => {}
                    Err(NotServing::Cancelled) => {
                        let _ = std::fs::remove_file(&starting.log);
                        return Err(BackendError::Cancelled);
                    }
                    Err(NotServing::Failed(e)) => {
                        starting.rename(&ServerFiles::in_dir(root, "server.failed"));
                        return Err(e);
                    }
                }
                server::stop(&live).await;
                starting.rename(&live);
                format!("http://127.0.0.1:{port}/")
            }
            None => {
                server::stop(&live).await;
                format!("file://{}/", release.display())
            }
        };
        // The new release goes live.
        let old = root.join(OLD);
        if release.exists() {
            std::fs::rename(&release, &old).map_err(|e| io_failed("cannot move", &release, e))?;
        }
        std::fs::rename(&next, &release).map_err(|e| io_failed("cannot move", &next, e))?;
        if old.exists() {
            let _ = std::fs::remove_dir_all(&old);
        }
        let mut completion = Completion::success()
            .with_output("path", release.display().to_string())
            .with_output("url", url);
        if let Some(version) = ctx.environment.as_ref().and_then(|e| e.version.clone()) {
            completion = completion.with_output("version", version);
        }
        Ok(completion)
    }
}

#[async_trait]
impl Deployer for LocalBackend {
    /// Puts the release into the environment's directory (see the module docs) and, with
    /// `serve`, starts the process that serves it.
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let root = self.environment_dir(&ctx)?;
        let checkout = Checkout::open(&ctx.run.workdir)?;
        let spec = Spec::read(&ctx, &checkout)?;
        let made_root = !root.exists();
        let done = self.release(&ctx, &spec, &checkout, &root).await;
        if !matches!(&done, Ok(c) if c.outcome == crate::backend::Outcome::Success) {
            discard(&root, made_root);
        }
        done
    }

    /// Stops the environment's server and removes its directory.
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let root = self.environment_dir(&ctx)?;
        server::stop(&ServerFiles::in_dir(&root, "server")).await;
        server::stop(&ServerFiles::in_dir(&root, "server.next")).await;
        if root.exists() {
            std::fs::remove_dir_all(&root).map_err(|e| io_failed("cannot remove", &root, e))?;
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
