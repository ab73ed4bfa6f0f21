//! The Docker backend as a [`Deployer`]: an environment is a set of containers (its services) on
//! a network of its own, every object labelled `gitops.environment=<name>`, ports published on
//! 127.0.0.1.
//!
//! `with` of a deploy names one service directly, or several under `services`:
//!
//! ```yaml
//! deploy:
//!   backend: docker
//!   environment: preview
//!   with:
//!     primary: web                 # whose address is the `url` output (default: the first with a port)
//!     ready_timeout: 60            # seconds for every service to be ready (default 30, at most 7 days)
//!     services:
//!       web: { image: "app:${{ event.sha }}", port: 8080, env: { DB: "db:5432" } }
//!       db:  { image: "db:16", volumes: ["data:/var/lib/db"] }
//! ```
//!
//! A service: `image` (required), `port` (the container port to publish; one service given directly
//! publishes 80 by default), `host_port` (default: a free one), `command` (argv), `env` (a map),
//! `health_path` (default `/`), `volumes` (`name:/path`, named volumes of the environment, kept
//! across deploys). Services reach each other by name on the environment's network.
//!
//! A service is ready once its HEALTHCHECK says healthy, or, without one, once an HTTP GET of
//! `health_path` on its published port answers below 500 (a service with neither is ready once
//! it runs). Outputs: `url` (`http://127.0.0.1:<port>/` of the primary service), `url_<service>`
//! and `container_<service>`.
//!
//! A redeploy starts the new containers next to the old ones and removes the old ones once the new
//! ones are ready, so a release that never comes up leaves the previous one serving (when a service
//! asks for a fixed `host_port`, the old containers go first, since they hold it). Stopping removes
//! every container, network and volume with the environment's label, so it also cleans up after a
//! crashed run.

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HostConfig, NetworkCreateRequest, NetworkingConfig,
    PortBinding, VolumeCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, ListContainersOptionsBuilder, ListNetworksOptionsBuilder,
    ListVolumesOptionsBuilder,
};
use gitops_core::backend::{BackendError, Completion, Deployer, Params, StageContext};
use serde_json::Value;

use crate::DockerBackend;
use crate::executor::{Cleanup, create_error, remove};

const LABEL: &str = "gitops.environment";
const SERVICE_LABEL: &str = "gitops.service";

/// What a service may set.
pub(crate) const SERVICE_KEYS: [&str; 7] = [
    "image",
    "port",
    "host_port",
    "command",
    "env",
    "health_path",
    "volumes",
];

/// What `with` may set besides one service's keys.
pub(crate) const DEPLOY_KEYS: [&str; 3] = ["services", "primary", "ready_timeout"];

fn failed(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{what}: {e}"))
}

/// The environment a deploy or stop stage acts on.
fn environment(ctx: &StageContext) -> Result<String, BackendError> {
    ctx.environment
        .as_ref()
        .map(|e| e.name.clone())
        .ok_or_else(|| InvalidParameters(format!("stage \"{}\" names no environment", ctx.stage)))
}

/// One container of an environment.
#[derive(Debug)]
struct Service {
    name: String,
    image: String,
    /// The container port published on 127.0.0.1.
    port: Option<u16>,
    /// The host port asked for (`None`: any free one).
    host_port: Option<u16>,
    command: Option<Vec<String>>,
    env: BTreeMap<String, String>,
    health_path: String,
    /// (volume name without the environment's prefix, path in the container)
    volumes: Vec<(String, String)>,
}

/// A name Docker accepts as a network alias and we use in container, volume and output names.
fn plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && name.len() <= 63
}

fn unknown_keys(params: Params<'_>, known: &[&str]) -> Result<(), BackendError> {
    if let Some(key) = params.keys().find(|k| !known.contains(k)) {
        return Err(InvalidParameters(format!(
            "unknown parameter `{}.{key}` (a docker deployment knows {})",
            params.path(),
            known.join(", ")
        )));
    }
    Ok(())
}

fn port(params: Params<'_>, key: &str) -> Result<Option<u16>, BackendError> {
    match params.u64(key)? {
        None => Ok(None),
        Some(p) => u16::try_from(p)
            .ok()
            .filter(|p| *p > 0)
            .map(Some)
            .ok_or_else(|| params.invalid(key, "a port number (1 to 65535)")),
    }
}

impl Service {
    fn parse(
        name: &str,
        params: Params<'_>,
        default_port: Option<u16>,
    ) -> Result<Service, BackendError> {
        let image = match params.str("image")? {
            Some(i) if !i.is_empty() => i.to_owned(),
            _ => return Err(params.invalid("image", "an image name")),
        };
        let health_path = match params.str("health_path")? {
            None => "/".to_owned(),
            Some(p) if p.starts_with('/') => p.to_owned(),
            Some(_) => return Err(params.invalid("health_path", "a path starting with /")),
        };
        let command = params.strings("command")?;
        if command.as_ref().is_some_and(Vec::is_empty) {
            return Err(params.invalid("command", "a non-empty list of strings"));
        }
        let volumes = params
            .strings("volumes")?
            .unwrap_or_default()
            .into_iter()
            .map(|v| match v.split_once(':') {
                Some((name, path)) if plain_name(name) && path.starts_with('/') => {
                    Ok((name.to_owned(), path.to_owned()))
                }
                _ => Err(params.invalid(
                    "volumes",
                    "a list of `name:/path` (name: letters, digits, - and _)",
                )),
            })
            .collect::<Result<_, _>>()?;
        Ok(Service {
            name: name.to_owned(),
            image,
            port: port(params, "port")?.or(default_port),
            host_port: port(params, "host_port")?,
            command,
            env: params.string_map("env")?.unwrap_or_default(),
            health_path,
            volumes,
        })
    }
}

/// The services `with` describes, in order, and the primary one's index.
fn services(ctx: &StageContext) -> Result<(Vec<Service>, Option<usize>), BackendError> {
    let with = ctx.params();
    let list = match with.get("services") {
        None => {
            let known: Vec<&str> = SERVICE_KEYS.iter().chain(&DEPLOY_KEYS).copied().collect();
            unknown_keys(with, &known)?;
            vec![Service::parse("app", with, Some(80))?]
        }
        Some(Value::Object(map)) if !map.is_empty() => {
            unknown_keys(with, &DEPLOY_KEYS)?;
            let mut list = Vec::new();
            for (name, spec) in map {
                let path = format!("with.services.{name}");
                if !plain_name(name) {
                    return Err(InvalidParameters(format!(
                        "`{path}`: a service name has letters, digits, - and _ only"
                    )));
                }
                let Value::Object(spec) = spec else {
                    return Err(InvalidParameters(format!(
                        "`{path}` must be a map (image, port, ...), found {spec}"
                    )));
                };
                let params = Params::new(spec, &path);
                unknown_keys(params, &SERVICE_KEYS)?;
                list.push(Service::parse(name, params, None)?);
            }
            list
        }
        Some(_) => return Err(with.invalid("services", "a map of service names to services")),
    };
    let primary = match with.str("primary")? {
        Some(name) => match list.iter().position(|s| s.name == name) {
            Some(i) if list[i].port.is_some() => Some(i),
            Some(_) => {
                return Err(InvalidParameters(format!(
                    "`with.primary`: service {name} publishes no port"
                )));
            }
            None => {
                return Err(InvalidParameters(format!(
                    "`with.primary`: there is no service {name}"
                )));
            }
        },
        None => list.iter().position(|s| s.port.is_some()),
    };
    Ok((list, primary))
}

impl DockerBackend {
    fn label_filter(env: &str) -> HashMap<String, Vec<String>> {
        HashMap::from([("label".to_owned(), vec![format!("{LABEL}={env}")])])
    }

    /// The ids of the environment's containers, running or not.
    async fn container_ids(&self, env: &str) -> Result<Vec<String>, BackendError> {
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&Self::label_filter(env))
            .build();
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| failed("listing the environment's containers", e))?;
        Ok(list.into_iter().filter_map(|c| c.id).collect())
    }

    /// Removes containers (and their anonymous volumes).
    async fn remove_all(&self, ids: &[String]) -> Result<(), BackendError> {
        for id in ids {
            let options = bollard::query_parameters::RemoveContainerOptionsBuilder::default()
                .force(true)
                .v(true)
                .build();
            match self.docker.remove_container(id, Some(options)).await {
                Ok(()) => {}
                // Already gone (removed by a concurrent stop, or `--rm`).
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 404, ..
                }) => {}
                Err(e) => return Err(failed("removing a container of the environment", e)),
            }
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

    /// The environment's volume `name` (created, labelled, when missing): its Docker name.
    async fn volume(&self, env: &str, name: &str) -> Result<String, BackendError> {
        let full = format!("gitops-{}-{name}", crate::docker_name(env, 128));
        // Creating an existing volume returns it unchanged.
        let request = VolumeCreateRequest {
            name: Some(full.clone()),
            labels: Some(HashMap::from([(LABEL.to_owned(), env.to_owned())])),
            ..Default::default()
        };
        self.docker
            .create_volume(request)
            .await
            .map_err(|e| failed(&format!("creating volume {full}"), e))?;
        Ok(full)
    }

    /// Creates and starts a service's container: its name, and whether that worked (the name is
    /// returned either way, so that a container created but not started is removed too).
    async fn start_service(
        &self,
        env: &str,
        network: &str,
        service: &Service,
        ctx: &StageContext,
    ) -> (String, Result<(), BackendError>) {
        let name = format!(
            "gitops-{}-{}-{:08x}",
            crate::docker_name(env, 100),
            service.name,
            crate::executor::rand_suffix()
        );
        let result = async {
            let mut binds = Vec::new();
            for (volume, path) in &service.volumes {
                binds.push(format!("{}:{path}", self.volume(env, volume).await?));
            }
            let vars: Vec<String> = ctx
                .variables()
                .into_iter()
                .chain(service.env.iter().map(|(k, v)| (k.clone(), v.clone())))
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let labels = HashMap::from([
                (LABEL.to_owned(), env.to_owned()),
                (SERVICE_LABEL.to_owned(), service.name.clone()),
                ("gitops.managed".to_owned(), "true".to_owned()),
                ("gitops.run".to_owned(), ctx.run.id.clone()),
            ]);
            let exposed = service.port.map(|p| format!("{p}/tcp"));
            let bindings = exposed.clone().map(|exposed| {
                HashMap::from([(
                    exposed,
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".to_owned()),
                        host_port: Some(service.host_port.map_or(String::new(), |p| p.to_string())),
                    }]),
                )])
            });
            let body = ContainerCreateBody {
                image: Some(service.image.clone()),
                cmd: service.command.clone(),
                env: Some(vars),
                labels: Some(labels),
                exposed_ports: exposed.map(|e| vec![e]),
                host_config: Some(HostConfig {
                    network_mode: Some(network.to_owned()),
                    port_bindings: bindings,
                    binds: Some(binds),
                    ..Default::default()
                }),
                networking_config: Some(NetworkingConfig {
                    endpoints_config: Some(HashMap::from([(
                        network.to_owned(),
                        EndpointSettings {
                            aliases: Some(vec![service.name.clone()]),
                            ..Default::default()
                        },
                    )])),
                }),
                ..Default::default()
            };
            self.docker
                .create_container(
                    Some(CreateContainerOptionsBuilder::default().name(&name).build()),
                    body,
                )
                .await
                .map_err(|e| create_error(&service.image, e))?;
            self.docker
                .start_container(&name, None)
                .await
                .map_err(|e| failed(&format!("starting service {}", service.name), e))
        }
        .await;
        (name, result)
    }

    /// The host port the service's port was published on.
    async fn published(&self, name: &str, service: &Service) -> Result<Option<u16>, BackendError> {
        let Some(port) = service.port else {
            return Ok(None);
        };
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| failed("inspecting the container", e))?;
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        let ports = info.network_settings.and_then(|n| n.ports);
        let published = ports
            .as_ref()
            .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok());
        match published {
            Some(p) => Ok(Some(p)),
            None if !running => Err(BackendError::Failed(format!(
                "service {}: the container exited before it was ready{}",
                service.name,
                self.tail(name).await
            ))),
            None => Err(BackendError::Failed(format!(
                "service {}: port {port} of the container was not published: {ports:?}",
                service.name
            ))),
        }
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

    /// Waits until the container is healthy (its HEALTHCHECK), answers HTTP on its published
    /// port, or, with neither, runs.
    async fn ready(
        &self,
        id: &str,
        published: Option<u16>,
        service: &Service,
        deadline: tokio::time::Instant,
        timeout: Duration,
        ctx: &StageContext,
    ) -> Result<(), BackendError> {
        let path = &service.health_path;
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
                .map(|s| s.to_string())
                .filter(|h| !h.is_empty() && h != "none");
            let ok = match (health.as_deref(), published) {
                (Some(h), _) => h == "healthy",
                (None, Some(port)) => http_ok(port, path).await,
                (None, None) => true,
            };
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::Failed(format!(
                    "not ready within {}s: {}",
                    timeout.as_secs(),
                    match (health, published) {
                        (Some(h), _) => format!("its health check says {h}"),
                        (None, port) => format!(
                            "http://127.0.0.1:{}{path} did not answer",
                            port.unwrap_or_default()
                        ),
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
    /// Starts the release's services and waits until they are ready (see the module docs).
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let env = environment(&ctx)?;
        let (services, primary) = services(&ctx)?;
        let timeout = ctx
            .param_seconds("ready_timeout")?
            .unwrap_or(Duration::from_secs(30));
        let mut old = self.container_ids(&env).await?;
        if services.iter().any(|s| s.host_port.is_some()) {
            // The old release holds the fixed port: it goes first (and is not removed again
            // once the new one is ready).
            self.remove_all(&old).await?;
            old.clear();
        }
        let network = self.network(&env).await?;
        let mut cleanup = Cleanup {
            docker: self.docker.clone(),
            names: Vec::new(),
            done: false,
        };
        let outcome = async {
            for service in &services {
                let name = self.start_service(&env, &network, service, &ctx).await;
                cleanup.names.push(name.0);
                name.1?;
            }
            let deadline = tokio::time::Instant::now()
                .checked_add(timeout)
                .ok_or_else(|| ctx.params().invalid("ready_timeout", "a shorter time"))?;
            let mut urls = Vec::new();
            for (service, name) in services.iter().zip(&cleanup.names) {
                let published = self.published(name, service).await?;
                self.ready(name, published, service, deadline, timeout, &ctx)
                    .await
                    .map_err(|e| match e {
                        BackendError::Failed(m) => {
                            BackendError::Failed(format!("service {}: {m}", service.name))
                        }
                        e => e,
                    })?;
                urls.push(published.map(|p| format!("http://127.0.0.1:{p}/")));
            }
            Ok::<_, BackendError>(urls)
        }
        .await;
        let urls = match outcome {
            Ok(urls) => urls,
            Err(e) => {
                // A release that did not come up is not left half running.
                for name in &cleanup.names {
                    remove(&self.docker, name).await;
                }
                cleanup.done = true;
                return Err(e);
            }
        };
        cleanup.done = true;
        self.remove_all(&old).await?;
        let mut completion = Completion::success();
        if let Some(url) = primary.and_then(|i| urls[i].clone()) {
            completion = completion.with_output("url", url);
        }
        for ((service, name), url) in services.iter().zip(&cleanup.names).zip(urls) {
            if let Some(url) = url {
                completion = completion.with_output(format!("url_{}", service.name), url);
            }
            completion =
                completion.with_output(format!("container_{}", service.name), name.clone());
        }
        Ok(completion)
    }

    /// Removes the environment's containers, networks and volumes (found by label).
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let env = environment(&ctx)?;
        let ids = self.container_ids(&env).await?;
        self.remove_all(&ids).await?;
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
            self.docker
                .remove_volume(
                    &v.name,
                    None::<bollard::query_parameters::RemoveVolumeOptions>,
                )
                .await
                .map_err(|e| failed(&format!("removing volume {}", v.name), e))?;
        }
        Ok(Completion::success())
    }

    /// One service's keys, or `services`, with `primary` and `ready_timeout`.
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::deployer()
    }
}
