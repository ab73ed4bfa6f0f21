//! The Docker backend as a [`Deployer`]: an environment is a container on a network of its own,
//! both labelled `gitops.environment=<name>`, its port published on 127.0.0.1.
//!
//! `with` of a deploy: `image` (required), `port` (the container's port to publish, default
//! 80), `host_port` (default: a free one), `command` (argv), `env` (a map), `health_path`
//! (default `/`), `ready_timeout` (seconds, default 30). The deploy succeeds once the container's
//! HEALTHCHECK says healthy, or, without one, once an HTTP GET of `health_path` on the published
//! port answers below 500; `url` is `http://127.0.0.1:<port>/`. Redeploying replaces the
//! container; stopping removes every container, network and volume with the environment's label,
//! so it also cleans up after a crashed run.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder, RemoveContainerOptionsBuilder,
};
use gitops_core::backend::{BackendError, Completion, Deployer, StageContext};
use serde_json::Value;

use crate::DockerBackend;

const LABEL: &str = "gitops.environment";

fn invalid(message: String) -> BackendError {
    BackendError::InvalidParameters(message)
}

fn failed(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{what}: {e}"))
}

/// The environment a deploy or stop stage acts on.
fn environment(ctx: &StageContext) -> Result<String, BackendError> {
    ctx.environment
        .as_ref()
        .map(|e| e.name.clone())
        .ok_or_else(|| invalid(format!("stage \"{}\" names no environment", ctx.stage)))
}

impl DockerBackend {
    fn label_filter(env: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_owned(), vec![format!("{LABEL}={env}")])])
    }

    /// Removes the environment's containers.
    async fn remove_containers(&self, env: &str) -> Result<(), BackendError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&Self::label_filter(env))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing the environment's containers", e))?;
        for c in list {
            let Some(id) = c.id else { continue };
            let options = RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            self.docker
                .remove_container(&id, Some(options))
                .await
                .map_err(|e| failed("removing a container of the environment", e))?;
        }
        Ok(())
    }

    /// The environment's network, created when missing.
    async fn network(&self, env: &str) -> Result<String, BackendError> {
        let name = format!("gitops-{}", crate::docker_name(env, 128));
        let options = ListNetworksOptionsBuilder::default()
            .filters(&Self::label_filter(env))
            .build();
        let existing = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| failed("listing networks", e))?;
        if existing
            .iter()
            .any(|n| n.name.as_deref() == Some(name.as_str()))
        {
            return Ok(name);
        }
        let request = NetworkCreateRequest {
            name: name.clone(),
            labels: Some(HashMap::from([(LABEL.to_owned(), env.to_owned())])),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(|e| failed(&format!("creating network {name}"), e))?;
        Ok(name)
    }

    /// The container's exit code and last lines of output, for an error message.
    async fn tail(&self, id: &str) -> String {
        use futures_util::StreamExt;
        let code = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.exit_code)
            .unwrap_or(-1);
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut out = String::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&chunk.to_string());
        }
        let out = out.trim().replace('\n', " | ");
        if out.is_empty() {
            format!(" (exit code {code})")
        } else {
            format!(" (exit code {code}): {out}")
        }
    }

    /// Waits until the container is healthy (its HEALTHCHECK) or answers HTTP on `host_port`.
    async fn ready(
        &self,
        id: &str,
        host_port: u16,
        path: &str,
        timeout: Duration,
        ctx: &StageContext,
    ) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let state = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| failed("inspecting the container", e))?
                .state;
            let running = state.as_ref().and_then(|s| s.running).unwrap_or(false);
            if !running {
                return Err(BackendError::Failed(format!(
                    "the container exited before it was ready{}",
                    self.tail(id).await
                )));
            }
            let health = state
                .and_then(|s| s.health)
                .and_then(|h| h.status)
                .map(|s| s.to_string());
            let ok = match health.as_deref() {
                Some("healthy") => true,
                Some("starting") | Some("unhealthy") => false,
                _ => http_ok(host_port, path).await,
            };
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Failed(format!(
                    "not ready within {}s: {}",
                    timeout.as_secs(),
                    match health {
                        Some(h) if h != "none" && !h.is_empty() =>
                            format!("its health check says {h}"),
                        _ => format!("http://127.0.0.1:{host_port}{path} did not answer"),
                    }
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = ctx.cancel.cancelled() => return Err(BackendError::Cancelled),
            }
        }
    }
}

/// Whether an HTTP GET of `path` on 127.0.0.1:`port` answers with a status below 500.
async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some(status < 500)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

#[async_trait]
impl Deployer for DockerBackend {
    /// Starts the release's container and waits until it is ready (see the module docs).
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let env = environment(&ctx)?;
        let image = match ctx.with.get("image") {
            Some(Value::String(i)) if !i.is_empty() => i.clone(),
            _ => return Err(invalid("a docker deployment needs `with.image`".to_owned())),
        };
        let port = ctx.param_u64("port")?.unwrap_or(80);
        let host_port = ctx.param_u64("host_port")?.unwrap_or(0);
        let timeout = Duration::from_secs(ctx.param_u64("ready_timeout")?.unwrap_or(30));
        let health_path = match ctx.with.get("health_path") {
            Some(Value::String(p)) if p.starts_with('/') => p.clone(),
            None => "/".to_owned(),
            Some(other) => {
                return Err(invalid(format!(
                    "`with.health_path` must be a path starting with /, found {other}"
                )));
            }
        };
        let cmd = crate::executor::argv(&ctx)?;
        let mut vars: Vec<String> = ctx.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        if let Some(Value::Object(map)) = ctx.with.get("env") {
            for (k, v) in map {
                let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                vars.push(format!("{k}={v}"));
            }
        }
        // One release at a time: the old container goes first (it may hold a fixed port).
        self.remove_containers(&env).await?;
        let network = self.network(&env).await?;
        let exposed = format!("{port}/tcp");
        let labels = HashMap::from([
            (LABEL.to_owned(), env.clone()),
            ("gitops.managed".to_owned(), "true".to_owned()),
            ("gitops.run".to_owned(), ctx.run.id.clone()),
        ]);
        let body = ContainerCreateBody {
            image: Some(image.clone()),
            cmd,
            env: Some(vars),
            labels: Some(labels),
            exposed_ports: Some(vec![exposed.clone()]),
            host_config: Some(HostConfig {
                network_mode: Some(network.clone()),
                port_bindings: Some(HashMap::from([(
                    exposed.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(if host_port == 0 {
                            String::new()
                        } else {
                            host_port.to_string()
                        }),
                    }]),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        };
        let name = format!(
            "gitops-{}-{:08x}",
            crate::docker_name(&env, 128),
            crate::executor::rand_suffix()
        );
        let created = self
            .docker
            .create_container(
                Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                body,
            )
            .await
            .map_err(|e| failed(&format!("creating the container of {env} from {image}"), e))?;
        let id = created.id;
        let started = self.docker.start_container(&id, None).await;
        let outcome = async {
            started.map_err(|e| failed("starting the container", e))?;
            let info = self
                .docker
                .inspect_container(&id, None)
                .await
                .map_err(|e| failed("inspecting the container", e))?;
            let ports = info.network_settings.and_then(|n| n.ports);
            let state = info.state.as_ref().and_then(|s| s.running);
            let published = ports
                .clone()
                .and_then(|p| p.get(&exposed).cloned().flatten())
                .and_then(|b| b.into_iter().find_map(|b| b.host_port))
                .and_then(|p| p.parse::<u16>().ok())
                .ok_or(port);
            let published = match published {
                Ok(p) => p,
                Err(_) if state != Some(true) => {
                    return Err(BackendError::Failed(format!(
                        "the container exited before it was ready{}",
                        self.tail(&id).await
                    )));
                }
                Err(port) => {
                    return Err(BackendError::Failed(format!(
                        "port {port} of the container was not published: {ports:?}"
                    )));
                }
            };
            self.ready(&id, published, &health_path, timeout, &ctx)
                .await?;
            Ok::<u16, BackendError>(published)
        }
        .await;
        match outcome {
            Ok(published) => Ok(Completion::success()
                .with_output("url", format!("http://127.0.0.1:{published}/"))
                .with_output("container", name)),
            Err(e) => {
                // A release that did not come up is not left half running.
                let _ = self.remove_containers(&env).await;
                Err(e)
            }
        }
    }

    /// Removes the environment's containers, networks and volumes (found by label).
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let env = environment(&ctx)?;
        self.remove_containers(&env).await?;
        let filter = Self::label_filter(&env);
        let networks = self
            .docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| failed("listing networks", e))?;
        for n in networks {
            if let Some(id) = n.id {
                self.docker
                    .remove_network(&id)
                    .await
                    .map_err(|e| failed("removing the environment's network", e))?;
            }
        }
        let volumes = self
            .docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filter)
                    .build(),
            ))
            .await
            .map_err(|e| failed("listing volumes", e))?;
        for v in volumes.volumes.unwrap_or_default() {
            let _ = self
                .docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await;
        }
        Ok(Completion::success())
    }
}
