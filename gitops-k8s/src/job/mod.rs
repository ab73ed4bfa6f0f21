//! A stage as a Kubernetes Job (see the crate docs).

mod run;
mod spec;

use async_trait::async_trait;
use gitops_core::backend::{BackendError, Completion, Executor, StageContext};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use crate::KubernetesBackend;
use crate::api::api_error;
use crate::names::{self, RUN};

/// Where the container writes its outputs: its termination message.
const OUTPUT_PATH: &str = "/dev/termination-log";

impl KubernetesBackend {
    /// Deletes a Secret; one already gone is fine.
    async fn delete_secret(
        &self,
        secrets: &Api<Secret>,
        ns: &str,
        name: &str,
    ) -> Result<bool, BackendError> {
        match secrets.delete(name, &DeleteParams::default()).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
            Err(e) => Err(api_error(&format!("deleting Secret {ns}/{name}"), e)),
        }
    }
}

#[async_trait]
impl Executor for KubernetesBackend {
    /// Runs the stage as a Job and waits for it (see the crate docs). Its secrets go in a
    /// Secret of the Job's name, made before the Job and deleted after it.
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let ns = spec::namespace(&ctx)?;
        let name = names::unique_dns_label(
            &format!("gitops-{}-{}-{}", ctx.run.id, ctx.stage, ctx.attempt),
            52,
            "gitops-stage",
        );
        let job = self.job(&ctx, &name)?;
        let env_label = ctx
            .environment
            .as_ref()
            .map(|e| json!({names::ENVIRONMENT: names::label_value(&e.name)}))
            .unwrap_or_else(|| json!({}));
        self.ensure_namespace(&ns, env_label).await?;
        if ctx.secrets.is_empty() {
            return self.run_job(&ctx, &ns, &name, job).await;
        }
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        let secret = spec::stage_secret(&ctx, &name, &job["metadata"]["labels"])?;
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .map_err(|e| api_error(&format!("creating Secret {ns}/{name}"), e))?;
        let ran = self.run_job(&ctx, &ns, &name, job).await;
        let deleted = self.delete_secret(&secrets, &ns, &name).await;
        let completion = ran?;
        deleted?;
        Ok(completion)
    }

    /// Deletes, with their pods, the Jobs of `run_id` in any namespace that a crashed process
    /// left running, and their Secrets.
    async fn abandon(&self, run_id: &str) -> Result<usize, BackendError> {
        let selector = format!("{RUN}={}", names::label_value(run_id));
        let all: Api<Job> = Api::all(self.client.clone());
        let left = all
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("listing the run's Jobs", e))?;
        let mut removed = 0;
        for job in left.items {
            let (Some(ns), Some(name)) = (job.metadata.namespace, job.metadata.name) else {
                continue;
            };
            let jobs: Api<Job> = Api::namespaced(self.client.clone(), &ns);
            self.delete_job(&jobs, &ns, &name).await?;
            removed += 1;
        }
        let all: Api<Secret> = Api::all(self.client.clone());
        let left = all
            .list(&kube::api::ListParams::default().labels(&selector))
            .await
            .map_err(|e| api_error("listing the run's Secrets", e))?;
        for secret in left.items {
            let (Some(ns), Some(name)) = (secret.metadata.namespace, secret.metadata.name) else {
                continue;
            };
            let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
            if self.delete_secret(&secrets, &ns, &name).await? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// `image`, `command`, `env` and `namespace` (see the crate docs).
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::executor()
    }
}
