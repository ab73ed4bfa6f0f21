//! The Docker backend of gitops: stages run in containers, through the Docker Engine API
//! (bollard).
//!
//! A stage's `with` names its `image`; its `run` command runs with `sh -c` in the container (or
//! `with.command`, an argv list, runs as given), with the run's checkout mounted at the working
//! directory (`/workspace`), the `GITOPS_*` variables and the stage's `env`, and `$GITOPS_OUTPUT`
//! naming a file whose `key=value` lines become outputs. Output lines stream as log lines.
//! Cancellation and timeouts stop and remove the container; no container is left behind.
//!
//! A stage with `with: { dockerfile, context, tag }` builds an image from the checkout instead
//! (the context sent as a tar stream honouring `.dockerignore`, build output as log lines); its
//! outputs are `image` (the tag) and `image_id`.
//!
//! As a [`Deployer`](gitops_core::backend::Deployer), an environment is a set of containers (one
//! per service in `with.services`, or the one `with` describes) on a network of its own, where
//! they reach each other by service name, with named volumes kept across deploys; every object is
//! labelled with the environment, ports are published on 127.0.0.1. A deploy waits until every
//! service is healthy, returns the `url`, and replaces the previous release only once the new one
//! is ready; stopping removes what carries the label. [`deploy`] says what `with` may hold.
//!
//! ```no_run
//! # async fn f() -> Result<(), gitops_docker::DockerError> {
//! use std::sync::Arc;
//! use gitops_core::backend::BackendRegistry;
//! let docker = Arc::new(gitops_docker::DockerBackend::from_env().await?);
//! let registry = BackendRegistry::new()
//!     .with_executor("docker", docker.clone())
//!     .with_deployer("docker", docker);
//! // Or connect when a stage first uses it (an app whose pipelines may not use Docker):
//! let lazy = Arc::new(gitops_docker::DockerBackend::builder().lazy());
//! let registry = BackendRegistry::new().with_executor("docker", lazy);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod build;
mod busybox;
mod container;
pub mod deploy;
mod executor;
mod lines;
mod params;

use bollard::Docker;
use gitops_core::backend::BoxError;

/// `s` as a name Docker accepts (`[a-zA-Z0-9_.-]`), at most `max` characters.
pub(crate) fn docker_name(s: &str, max: usize) -> String {
    gitops_core::backend::names::sanitize(s, max, "_.-", '-')
}

/// Why the Docker engine could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// No engine answered where one was looked for.
    #[error("no Docker engine answered at {tried}")]
    Unreachable {
        /// Where it was looked for (`DOCKER_HOST`, or the local socket).
        tried: String,
        /// What the client said.
        #[source]
        source: BoxError,
    },
    /// An image could not be built.
    #[error("cannot build image {image}: {message}")]
    Image {
        /// Its tag.
        image: String,
        /// Why.
        message: String,
    },
}

/// Runs stages in containers on a Docker engine.
#[derive(Debug, Clone)]
pub struct DockerBackend {
    docker: Docker,
    workdir: String,
    stop_grace_secs: i32,
}

/// Builds a [`DockerBackend`].
#[derive(Debug, Clone, Default)]
pub struct DockerBackendBuilder {
    host: Option<String>,
    workdir: Option<String>,
    stop_grace_secs: Option<i32>,
}

impl DockerBackend {
    /// A builder.
    pub fn builder() -> DockerBackendBuilder {
        DockerBackendBuilder::default()
    }

    /// The engine named by `DOCKER_HOST`, else the local socket; checked with a ping.
    pub async fn from_env() -> Result<DockerBackend, DockerError> {
        Self::builder().build().await
    }

    /// The client, for what the backend does not wrap.
    pub fn client(&self) -> &Docker {
        &self.docker
    }
}

impl DockerBackendBuilder {
    /// The engine's address (`unix:///var/run/docker.sock`, `tcp://127.0.0.1:2375`); default
    /// `DOCKER_HOST`, else the local socket.
    pub fn with_host(mut self, host: impl Into<String>) -> Self {
        self.host = Some(host.into());
        self
    }

    /// Where the checkout is mounted in stage containers (default `/workspace`).
    pub fn with_workdir(mut self, dir: impl Into<String>) -> Self {
        self.workdir = Some(dir.into());
        self
    }

    /// Seconds a cancelled stage's container gets between SIGTERM and SIGKILL (default 5).
    pub fn with_stop_grace_secs(mut self, secs: i32) -> Self {
        self.stop_grace_secs = Some(secs);
        self
    }

    /// Connects and checks that the engine answers.
    pub async fn build(self) -> Result<DockerBackend, DockerError> {
        let host = self
            .host
            .or_else(|| std::env::var("DOCKER_HOST").ok().filter(|h| !h.is_empty()));
        let (tried, docker) = match &host {
            Some(h) if h.starts_with("unix://") => (
                h.clone(),
                Docker::connect_with_unix(h, 120, bollard::API_DEFAULT_VERSION),
            ),
            Some(h) => (
                h.clone(),
                Docker::connect_with_http(h, 120, bollard::API_DEFAULT_VERSION),
            ),
            None => (
                "unix:///var/run/docker.sock (DOCKER_HOST is not set)".to_owned(),
                Docker::connect_with_socket_defaults(),
            ),
        };
        let unreachable = |e: bollard::errors::Error| DockerError::Unreachable {
            tried: tried.clone(),
            source: e.into(),
        };
        let docker = docker.map_err(unreachable)?;
        docker.ping().await.map_err(unreachable)?;
        Ok(DockerBackend {
            docker,
            workdir: self.workdir.unwrap_or_else(|| "/workspace".to_owned()),
            stop_grace_secs: self.stop_grace_secs.unwrap_or(5),
        })
    }

    /// A backend that connects when a stage first uses it: for an app that registers Docker
    /// whether or not a pipeline uses it. When no engine answers, that stage fails with
    /// [`BackendError::Unavailable`](gitops_core::backend::BackendError::Unavailable) naming where
    /// the engine was looked for (its source the [`DockerError`]), and the next stage tries
    /// again.
    pub fn lazy(self) -> gitops_core::backend::Lazy<DockerBackend> {
        gitops_core::backend::Lazy::new(move || {
            let builder = self.clone();
            async move { builder.build().await }
        })
        .with_params(params::executor(), params::deployer())
    }
}
