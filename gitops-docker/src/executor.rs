//! A stage in a container: created with the checkout and an output directory mounted, started,
//! its output streamed as log lines, waited for, and removed whatever happens.

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use bollard::errors::Error as ApiError;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, LogsOptionsBuilder, StopContainerOptionsBuilder,
};
use futures_util::StreamExt;
use gitops_core::backend::{BackendError, Completion, Executor, StageContext, read_outputs};
use serde_json::Value;

use crate::DockerBackend;
use crate::container::{Cleanup, create_error, rand_suffix, remove};
use crate::lines::Lines;

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

/// What a stage's container is made of, read from its context before anything is created.
struct StageContainer {
    image: String,
    cmd: Vec<String>,
    /// The checkout, mounted at the backend's working directory.
    checkout: PathBuf,
}

impl StageContainer {
    fn read(ctx: &StageContext) -> Result<StageContainer, BackendError> {
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
        let cmd = command(ctx)?;
        let checkout = ctx.run.workdir.canonicalize().map_err(|e| {
            InvalidParameters(format!(
                "working directory {}: {e}",
                ctx.run.workdir.display()
            ))
        })?;
        Ok(StageContainer {
            image,
            cmd,
            checkout,
        })
    }
}

/// A directory the container writes `$GITOPS_OUTPUT` into.
fn output_dir() -> Result<tempfile::TempDir, BackendError> {
    let outputs = tempfile::Builder::new()
        .prefix("gitops-docker-output-")
        .tempdir()
        .map_err(|e| BackendError::failed_with("cannot create the output directory", e))?;
    // The container's user may not be ours.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(outputs.path(), std::fs::Permissions::from_mode(0o777));
    Ok(outputs)
}

/// The stage's outputs, from the file the container wrote (none when it wrote nothing).
fn stage_outputs(dir: &Path) -> Result<BTreeMap<String, String>, BackendError> {
    match read_outputs(&dir.join("outputs")) {
        Ok(o) => Ok(o),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
        Err(e) => Err(BackendError::failed_with("cannot read $GITOPS_OUTPUT", e)),
    }
}

impl DockerBackend {
    /// Creates the stage's container (not started); returns its name.
    async fn create_stage_container(
        &self,
        ctx: &StageContext,
        spec: StageContainer,
        outputs: &Path,
    ) -> Result<String, BackendError> {
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
            image: Some(spec.image.clone()),
            cmd: Some(spec.cmd),
            env: Some(env),
            working_dir: Some(self.workdir.clone()),
            labels: Some(labels),
            host_config: Some(HostConfig {
                binds: Some(vec![
                    format!("{}:{}", spec.checkout.display(), self.workdir),
                    format!("{}:{OUTPUT_DIR}", outputs.display()),
                ]),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        self.docker
            .create_container(Some(options), body)
            .await
            .map_err(|e| create_error(&spec.image, e))?;
        Ok(name)
    }

    /// Streams the started container's output to the stage's log until it ends (its exit code)
    /// or the stage is cancelled (`None`: the container is stopped).
    async fn follow(&self, ctx: &StageContext, name: &str) -> Result<Option<i64>, BackendError> {
        let follow = LogsOptionsBuilder::default()
            .follow(true)
            .stdout(true)
            .stderr(true)
            .build();
        let logs = self.docker.logs(name, Some(follow));
        let sink = ctx.log.clone();
        let logs = tokio::spawn(async move {
            let mut lines = Lines::new(sink);
            lines.read(Box::pin(logs), false).await;
            lines
        });
        let mut wait = self.docker.wait_container(name, None);
        let exit = tokio::select! {
            waited = wait.next() => match waited {
                Some(Ok(r)) => Some(r.status_code),
                Some(Err(ApiError::DockerContainerWaitError { code, .. })) => Some(code),
                Some(Err(e)) => {
                    let _ = logs.await;
                    return Err(BackendError::failed_with("waiting for the stage's container failed", e));
                }
                None => Some(-1),
            },
            _ = ctx.cancelled() => None,
        };
        if exit.is_none() {
            let stop = StopContainerOptionsBuilder::default()
                .t(self.stop_grace_secs)
                .build();
            let _ = self.docker.stop_container(name, Some(stop)).await;
        }
        // The followed log may end before the engine has copied the container's last output:
        // read the whole log again and forward what the first read missed.
        if let Ok(mut lines) = logs.await {
            let all = LogsOptionsBuilder::default()
                .stdout(true)
                .stderr(true)
                .build();
            lines
                .read(Box::pin(self.docker.logs(name, Some(all))), true)
                .await;
            lines.finish();
        }
        Ok(exit)
    }
}

#[async_trait]
impl Executor for DockerBackend {
    /// Runs the stage in a container of `with.image` (see the crate docs).
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        if crate::build::is_build(&ctx) {
            return crate::build::build(self, &ctx).await;
        }
        let spec = StageContainer::read(&ctx)?;
        let outputs = output_dir()?;
        let name = self
            .create_stage_container(&ctx, spec, outputs.path())
            .await?;
        let mut cleanup = Cleanup {
            docker: self.docker.clone(),
            names: vec![name.clone()],
            done: false,
        };
        let exit = match self.docker.start_container(&name, None).await {
            Ok(()) => self.follow(&ctx, &name).await,
            Err(e) => Err(BackendError::failed_with(
                "cannot start the stage's container",
                e,
            )),
        };
        remove(&self.docker, &name).await;
        cleanup.done = true;
        let Some(code) = exit? else {
            return Err(BackendError::Cancelled);
        };
        let mut completion = if code == 0 {
            Completion::success()
        } else {
            let code = i32::try_from(code).unwrap_or(-1);
            Completion::failure(Some(code), format!("exit code {code}"))
        };
        completion.outputs = stage_outputs(outputs.path())?;
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
            .map_err(|e| BackendError::unavailable_with("listing containers", e))?;
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
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::executor()
    }
}
