//! The Kubernetes backend of gitops: stages run as Jobs, environments are namespaces whose
//! manifests are applied server-side (kube, k8s-openapi).
//!
//! As an [`Executor`](gitops_core::backend::Executor), a stage is a Job in the namespace of its
//! environment, else of its pipeline (`gitops-<name>`), labelled with its run and stage:
//! `with.image` (required), the stage's `run` through `sh -c` or `with.command` (argv), the
//! `GITOPS_*` variables, the stage's `env` and `with.env`; `backoffLimit: 0` (retries are core's),
//! `activeDeadlineSeconds` from the stage's `timeout`, `ttlSecondsAfterFinished`. The backend
//! waits for the Job with a watch, streams its pod's log (Kubernetes keeps stdout and stderr as one
//! log), and reads outputs from the container's termination message: `$GITOPS_OUTPUT` names
//! `/dev/termination-log`, whose `key=value` lines (4 KiB at most) become outputs. Cancellation
//! deletes the Job with its pods (foreground propagation) and returns once they are gone (the
//! container gets [`with_stop_grace`](KubernetesBackend::with_stop_grace) to stop).
//!
//! As a [`Deployer`](gitops_core::backend::Deployer), an environment is the namespace
//! `gitops-<environment>` (labelled as ours): see [`deploy`] for what `with` holds. A deploy applies
//! the manifests with server-side apply under the field manager `gitops`, prunes what a previous
//! deploy applied and these manifests no longer have, and waits for Deployments and StatefulSets
//! to roll out; a stop deletes the namespace.
//!
//! ```no_run
//! # async fn f() -> Result<(), gitops_k8s::K8sError> {
//! use std::sync::Arc;
//! use gitops_core::backend::BackendRegistry;
//! let k8s = Arc::new(gitops_k8s::KubernetesBackend::from_env().await?);
//! let registry = BackendRegistry::new()
//!     .with_executor("k8s", k8s.clone())
//!     .with_deployer("k8s", k8s);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

mod api;
pub mod deploy;
mod job;
mod names;
mod params;
#[cfg(feature = "testing")]
pub mod testing;
mod wait;

use std::time::Duration;

/// Why the cluster could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum K8sError {
    /// No configuration was found, or the cluster it names did not answer.
    #[error("no Kubernetes cluster answered ({tried})")]
    Unreachable {
        /// Where the configuration came from (`KUBECONFIG=...`, in-cluster, `~/.kube/config`).
        tried: String,
        /// What went wrong.
        #[source]
        source: gitops_core::backend::BoxError,
    },
}

/// Runs stages as Jobs and deploys environments as namespaces.
#[derive(Clone)]
pub struct KubernetesBackend {
    client: kube::Client,
    ttl_after_finished: i32,
    rollout_timeout: Duration,
    stop_grace: Duration,
}

impl std::fmt::Debug for KubernetesBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesBackend")
            .field("ttl_after_finished", &self.ttl_after_finished)
            .field("rollout_timeout", &self.rollout_timeout)
            .field("stop_grace", &self.stop_grace)
            .finish_non_exhaustive()
    }
}

impl KubernetesBackend {
    /// A backend on `client`: Jobs kept 10 minutes after they finish, rollouts given 5 minutes,
    /// a stopped stage's container 5 seconds between SIGTERM and SIGKILL.
    pub fn new(client: kube::Client) -> Self {
        KubernetesBackend {
            client,
            ttl_after_finished: 600,
            rollout_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(5),
        }
    }

    /// The cluster `KUBECONFIG` (or `~/.kube/config`) names, or the one this process runs in;
    /// checked by asking its version.
    pub async fn from_env() -> Result<KubernetesBackend, K8sError> {
        let tried = match std::env::var("KUBECONFIG") {
            Ok(path) if !path.is_empty() => format!("KUBECONFIG={path}"),
            _ if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() => {
                "in-cluster configuration".to_owned()
            }
            _ => "~/.kube/config (KUBECONFIG is not set)".to_owned(),
        };
        let unreachable = |tried: String, e: gitops_core::backend::BoxError| {
            K8sError::Unreachable { tried, source: e }
        };
        let config = kube::Config::infer()
            .await
            .map_err(|e| unreachable(tried.clone(), e.into()))?;
        let url = config.cluster_url.to_string();
        let client =
            kube::Client::try_from(config).map_err(|e| unreachable(tried.clone(), e.into()))?;
        client
            .apiserver_version()
            .await
            .map_err(|e| unreachable(format!("{tried}, {url}"), e.into()))?;
        Ok(Self::new(client))
    }

    /// [`from_env`](Self::from_env) when a stage first needs it: for an app that registers the
    /// backend whether or not a pipeline uses it.
    pub fn lazy() -> gitops_core::backend::Lazy<KubernetesBackend> {
        gitops_core::backend::Lazy::new(KubernetesBackend::from_env)
            .with_params(params::executor(), params::deployer())
    }

    /// How long finished Jobs stay before Kubernetes removes them (`ttlSecondsAfterFinished`).
    pub fn with_ttl_after_finished(mut self, secs: i32) -> Self {
        self.ttl_after_finished = secs;
        self
    }

    /// How long a cancelled stage's container gets between SIGTERM and SIGKILL (the pod's
    /// `terminationGracePeriodSeconds`; default 5 seconds). A cancelled stage returns once its
    /// Job and pod are gone.
    pub fn with_stop_grace(mut self, grace: Duration) -> Self {
        self.stop_grace = grace;
        self
    }

    /// How long a deploy waits for its Deployments and StatefulSets by default.
    pub fn with_rollout_timeout(mut self, timeout: Duration) -> Self {
        self.rollout_timeout = timeout;
        self
    }

    /// The client.
    pub fn client(&self) -> &kube::Client {
        &self.client
    }
}
