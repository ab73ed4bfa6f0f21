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

mod objects;
mod ready;
mod service;

use bollard::errors::Error as ApiError;
use gitops_core::backend::BackendError::InvalidParameters;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::{BackendError, Completion, Deployer, StageContext};

use crate::DockerBackend;
use crate::container::{Cleanup, remove};
use service::services;
#[cfg(test)]
pub(crate) use service::{DEPLOY_KEYS, SERVICE_KEYS};

const LABEL: &str = "gitops.environment";
const SERVICE_LABEL: &str = "gitops.service";

fn failed(what: &str, e: ApiError) -> BackendError {
    BackendError::failed_with(what, e)
}

/// The environment a deploy or stop stage acts on.
fn environment(ctx: &StageContext) -> Result<String, BackendError> {
    ctx.environment
        .as_ref()
        .map(|e| e.name.clone())
        .ok_or_else(|| InvalidParameters(format!("stage \"{}\" names no environment", ctx.stage)))
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
        // The engine never pulls: a missing image fails the deploy before anything is made.
        for service in &services {
            self.image_present(&service.image).await?;
        }
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
                        BackendError::Failed { message, source } => BackendError::Failed {
                            message: format!("service {}: {message}", service.name),
                            source,
                        },
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
        self.remove_network_and_volumes(&env).await?;
        Ok(Completion::success())
    }

    /// One service's keys, or `services`, with `primary` and `ready_timeout`.
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::deployer()
    }
}
