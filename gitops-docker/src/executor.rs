//! A stage in a container: created with the checkout and an output directory mounted, started,
//! its output streamed as log lines, waited for, and removed whatever happens.

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::HashMap;

use async_trait::async_trait;
use bollard::container::LogOutput;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use gitops_core::backend::{
    BackendError, Completion, Executor, LogSink, LogStream, StageContext, read_outputs,
};
use serde_json::Value;

use crate::DockerBackend;

/// Where the output directory is mounted in the container.
const OUTPUT_DIR: &str = "/gitops-output";

/// The container's command: `with.command` as given, else the stage's `run` with `sh -c`.
fn command(ctx: &StageContext) -> Result<Vec<String>, BackendError> {
    match ctx.params().strings("command")? {
        Some(argv) if argv.is_empty() => Err(InvalidParameters(
            "`with.command` must be a non-empty list of strings, found []".to_owned(),
        )),
        Some(argv) => Ok(argv),
        None => match &ctx.command {
            Some(run) => Ok(vec!["sh".into(), "-c".into(), run.to_string()]),
            None => Err(InvalidParameters(format!(
                "stage \"{}\" has neither `run` nor `with.command`",
                ctx.stage
            ))),
        },
    }
}

/// Removes the containers when dropped unless `done`: a future dropped mid-stage (its runtime
/// shutting down) leaves nothing behind either.
pub(crate) struct Cleanup {
    pub(crate) docker: bollard::Docker,
    pub(crate) names: Vec<String>,
    pub(crate) done: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (docker, names) = (self.docker.clone(), std::mem::take(&mut self.names));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for name in names {
                    remove(&docker, &name).await;
                }
            });
        }
    }
}

/// The error of creating a container from `image`: a missing image says so.
pub(crate) fn create_error(image: &str, e: ApiError) -> BackendError {
    match e {
        ApiError::DockerResponseServerError {
            status_code: 404,
            message,
        } => BackendError::Failed(format!(
            "image \"{image}\" is not on the Docker engine (build or pull it first): {message}"
        )),
        e => BackendError::Failed(format!("cannot create a container of {image}: {e}")),
    }
}

/// Removes a container and its anonymous volumes, if it is there.
pub(crate) async fn remove(docker: &bollard::Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(name, Some(options)).await;
}

/// A container's output turned into log lines: chunks are joined until a newline, and bytes
/// already forwarded are counted per stream, so that a second read of the log (after the
/// container ended) forwards only what the first missed.
struct Lines {
    sink: LogSink,
    partial: [Vec<u8>; 2],
    /// Bytes forwarded (or held in `partial`) per stream.
    seen: [usize; 2],
}

impl Lines {
    fn new(sink: LogSink) -> Lines {
        Lines {
            sink,
            partial: [Vec::new(), Vec::new()],
            seen: [0, 0],
        }
    }

    fn split(chunk: LogOutput) -> Option<(usize, LogStream, bytes::Bytes)> {
        match chunk {
            LogOutput::StdErr { message } => Some((1, LogStream::Stderr, message)),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                Some((0, LogStream::Stdout, message))
            }
            LogOutput::StdIn { .. } => None,
        }
    }

    /// Takes the bytes of stream `i` from `offset` on (earlier ones were forwarded already).
    fn feed(&mut self, i: usize, stream: LogStream, bytes: &[u8], offset: usize) {
        let skip = self.seen[i].saturating_sub(offset).min(bytes.len());
        let new = &bytes[skip..];
        self.seen[i] += new.len();
        self.partial[i].extend_from_slice(new);
        while let Some(end) = self.partial[i].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[i].drain(..=end).collect();
            self.sink.line(stream, &String::from_utf8_lossy(&line));
        }
    }

    /// Forwards a log stream; `replay` when it starts from the beginning again.
    async fn read(
        &mut self,
        mut logs: impl futures_util::Stream<Item = Result<LogOutput, ApiError>> + Unpin,
        replay: bool,
    ) {
        let mut offsets = [0usize; 2];
        while let Some(Ok(chunk)) = logs.next().await {
            let Some((i, stream, bytes)) = Self::split(chunk) else {
                continue;
            };
            let offset = if replay { offsets[i] } else { self.seen[i] };
            self.feed(i, stream, &bytes, offset);
            offsets[i] += bytes.len();
        }
    }

    /// Forwards what is left of unfinished lines.
    fn finish(self) {
        for (i, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            if !self.partial[i].is_empty() {
                self.sink
                    .line(stream, &String::from_utf8_lossy(&self.partial[i]));
            }
        }
    }
}

#[async_trait]
impl Executor for DockerBackend {
    /// Runs the stage in a container of `with.image` (see the crate docs).
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        if crate::build::is_build(&ctx) {
            return crate::build::build(self, &ctx).await;
        }
        let image = match ctx.with.get("image") {
            Some(Value::String(i)) if !i.is_empty() => i.clone(),
            Some(other) => {
                return Err(InvalidParameters(format!(
                    "`with.image` must be an image name, found {other}"
                )));
            }
            None => {
                return Err(InvalidParameters(format!(
                    "stage \"{}\" has no `with.image`, which the docker backend needs",
                    ctx.stage
                )));
            }
        };
        let cmd = command(&ctx)?;
        let checkout = ctx.run.workdir.canonicalize().map_err(|e| {
            InvalidParameters(format!(
                "working directory {}: {e}",
                ctx.run.workdir.display()
            ))
        })?;
        let outputs = tempfile::Builder::new()
            .prefix("gitops-docker-output-")
            .tempdir()
            .map_err(|e| {
                BackendError::Failed(format!("cannot create the output directory: {e}"))
            })?;
        {
            // The container's user may not be ours.
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(outputs.path(), std::fs::Permissions::from_mode(0o777));
        }
        let mut env: Vec<String> = ctx
            .variables()
            .into_iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        env.push(format!("GITOPS_OUTPUT={OUTPUT_DIR}/outputs"));
        let labels = HashMap::from([
            ("gitops.managed".to_owned(), "true".to_owned()),
            ("gitops.run".to_owned(), ctx.run.id.clone()),
            ("gitops.stage".to_owned(), ctx.stage.to_string()),
        ]);
        let name = format!(
            "gitops-{}-{}-{}-{:08x}",
            crate::docker_name(&ctx.run.id, 40),
            crate::docker_name(&ctx.stage, 40),
            ctx.attempt,
            rand_suffix()
        );
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd: Some(cmd),
            env: Some(env),
            working_dir: Some(self.workdir.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:{}", checkout.display(), self.workdir),
                    format!("{}:{OUTPUT_DIR}", outputs.path().display()),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| create_error(&image, e))?;
        let mut cleanup = Cleanup {
            docker: self.docker.clone(),
            names: vec![name.clone()],
            done: false,
        };
        if let Err(e) = self.docker.start_container(&name, None).await {
            remove(&self.docker, &name).await;
            cleanup.done = true;
            return Err(BackendError::Failed(format!(
                "cannot start the stage's container: {e}"
            )));
        }
        let ctx_log = ctx.log.clone();
        let logs = self.docker.logs(
            &name,
            Some(
                LogsOptionsBuilder::default()
                    .follow(true)
                    .stdout(true)
                    .stderr(true)
                    .build(),
            ),
        );
        let logs = tokio::spawn(async move {
            let mut lines = Lines::new(ctx_log);
            lines.read(Box::pin(logs), false).await;
            lines
        });
        let mut wait = self.docker.wait_container(&name, None);
        let exit = tokio::select! {
            waited = wait.next() => match waited {
                Some(Ok(r)) => Some(r.status_code),
                Some(Err(ApiError::DockerContainerWaitError { code, .. })) => Some(code),
                Some(Err(e)) => {
                    remove(&self.docker, &name).await;
                    cleanup.done = true;
                    let _ = logs.await;
                    return Err(BackendError::Failed(format!("waiting for the stage's container failed: {e}")));
                }
                None => Some(-1),
            },
            _ = ctx.cancel.cancelled() => None,
        };
        if exit.is_none() {
            let stop = StopContainerOptionsBuilder::default()
                .t(self.stop_grace_secs)
                .build();
            let _ = self.docker.stop_container(&name, Some(stop)).await;
        }
        // The followed log may end before the engine has copied the container's last output:
        // read the whole log again and forward what the first read missed.
        if let Ok(mut lines) = logs.await {
            let all = self.docker.logs(
                &name,
                Some(
                    LogsOptionsBuilder::default()
                        .stdout(true)
                        .stderr(true)
                        .build(),
                ),
            );
            lines.read(Box::pin(all), true).await;
            lines.finish();
        }
        remove(&self.docker, &name).await;
        cleanup.done = true;
        let Some(code) = exit else {
            return Err(BackendError::Cancelled);
        };
        let outputs = match read_outputs(&outputs.path().join("outputs")) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
            Err(e) => {
                return Err(BackendError::Failed(format!(
                    "cannot read $GITOPS_OUTPUT: {e}"
                )));
            }
        };
        let mut completion = if code == 0 {
            Completion::success()
        } else {
            let code = i32::try_from(code).unwrap_or(-1);
            Completion::failure(Some(code), format!("exit code {code}"))
        };
        completion.outputs = outputs;
        Ok(completion)
    }

    /// Removes the stage containers of `run_id` (labelled `gitops.run` and `gitops.stage`) that a
    /// crashed process left; environment containers are not stage containers and stay.
    async fn abandon(&self, run_id: &str) -> Result<usize, BackendError> {
        let filters = HashMap::from([(
            "label".to_owned(),
            vec![format!("gitops.run={run_id}"), "gitops.stage".to_owned()],
        )]);
        let options = bollard::query_parameters::ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let left = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| BackendError::Unavailable(format!("listing containers: {e}")))?;
        let mut removed = 0;
        for c in left {
            if let Some(id) = c.id {
                remove(&self.docker, &id).await;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// `image` and `command`, or the build's `dockerfile`, `context` and `tag`.
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::executor()
    }
}

/// A few random bits for container names (two attempts of one stage never collide).
pub(crate) fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}
