//! The Kubernetes backend as a [`Deployer`]: an environment is a namespace.
//!
//! ```yaml
//! environments:
//!   staging:
//!     backend: k8s
//!     with: { manifests: [deploy/app.yaml, deploy/service.yaml], service: web }
//! pipelines:
//!   main:
//!     stages:
//!       deploy: { deploy: staging, with: { image: "registry.example/app:${{ event.sha }}" } }
//! ```
//!
//! `with` of a deploy:
//! - `manifests` (required): files of the checkout, each holding one or more YAML documents of
//!   namespaced objects (their namespace, when given, must be the environment's), or
//!   directories whose `.yaml`, `.yml` and `.json` files are read in name order (not their
//!   subdirectories, as `kubectl apply -f DIR`); read through
//!   [`Checkout`](gitops_core::backend::Checkout), so a link leading out of the checkout, a
//!   FIFO, a device or a socket is refused;
//! - `image`: every container (and init container) whose image has this image's repository gets
//!   this image, tag or digest included, as kustomize's `images` does;
//! - `namespace`: the namespace (default `gitops-<environment>`);
//! - `service`: the Service whose address is the `url` output (default the first);
//! - `rollout_timeout`: seconds to wait for Deployments and StatefulSets (default the backend's,
//!   at most 7 days).
//!
//! Each object is applied with server-side apply under the field manager `gitops` (conflicts
//! forced: the pipeline owns what it deploys), labelled `app.kubernetes.io/managed-by: gitops`
//! and `gitops.dev/environment`. What the previous deploy applied and these manifests no longer
//! have is deleted (the list is kept in the namespace's `gitops.dev/applied` annotation). The
//! deploy waits until every Deployment and StatefulSet has rolled out (the controller has seen the
//! new generation, and every replica is updated and available or ready). Outputs: `namespace`,
//! `url` (`http://<service>.<namespace>.svc.cluster.local:<port>/`) and, for each Service,
//! `service_<name>` (`<name>.<namespace>.svc.cluster.local:<port>`). A stop deletes the namespace
//! and waits until it is gone.
//!
//! A cancelled deploy puts back what it changed before it returns: each object it applied or
//! pruned as the previous deploy applied it (the fields the manager `gitops` owned, read from
//! `managedFields`), what it created deleted, the namespace's record restored (and a namespace
//! it made deleted). A deploy that fails (a rollout past its time) leaves what it applied, for
//! `kubectl rollout status` and the like to look at.

mod manifests;
mod restore;
mod rollout;

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::BTreeSet;

use async_trait::async_trait;
use gitops_core::backend::{BackendError, Completion, Deployer, LogStream, StageContext};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use serde_json::{Value, json};

use crate::KubernetesBackend;
use crate::api::api_error;
use crate::names::{self, ENVIRONMENT, MANAGED_BY};
use crate::wait::{self, WaitError};
use manifests::{Manifest, api_resource, manifests};

/// The namespace annotation listing what the last deploy applied.
const APPLIED: &str = "gitops.dev/applied";

/// An object a previous deploy applied and this one does not: (apiVersion, kind, name).
type Pruned = (String, String, String);

/// What the previous deploy applied (`before`, as ids) and `objects` do not have.
fn to_prune(before: &BTreeSet<String>, objects: &[Manifest]) -> Vec<Pruned> {
    let now: BTreeSet<String> = objects.iter().map(Manifest::id).collect();
    before
        .difference(&now)
        .filter_map(|id| {
            let mut parts = id.splitn(3, '|');
            let (api_version, kind, name) = (parts.next()?, parts.next()?, parts.next()?);
            // The same object under another API version (apps/v1beta2 → apps/v1) is kept.
            if objects.iter().any(|m| m.kind == kind && m.name == name) {
                return None;
            }
            Some((api_version.to_owned(), kind.to_owned(), name.to_owned()))
        })
        .collect()
}

/// The namespace as a deploy records it: labelled as ours, annotated with what it applied.
fn record(ns: &str, env: &str, applied: &str) -> Value {
    let mut labels = json!({ENVIRONMENT: names::label_value(env)});
    labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
    json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": ns, "labels": labels, "annotations": {APPLIED: applied}}})
}

impl KubernetesBackend {
    pub(super) fn dynamic(&self, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), ns, &api_resource(api_version, kind))
    }

    /// The ids the last deploy to `ns` applied.
    async fn applied(&self, ns: &str) -> Result<BTreeSet<String>, BackendError> {
        let api: Api<Namespace> = Api::all(self.client.clone());
        let namespace = api
            .get_opt(ns)
            .await
            .map_err(|e| api_error(&format!("reading namespace {ns}"), e))?;
        let text = namespace
            .and_then(|n| n.metadata.annotations)
            .and_then(|a| a.get(APPLIED).cloned())
            .unwrap_or_default();
        Ok(serde_json::from_str(&text).unwrap_or_default())
    }

    /// Applies `objects`, prunes `pruned`, records what was applied, and waits for the rollouts:
    /// the deploy past its checks.
    async fn roll_out(
        &self,
        ctx: &StageContext,
        ns: &str,
        env: &str,
        objects: &[Manifest],
        pruned: &[Pruned],
    ) -> Result<(), BackendError> {
        let timeout = ctx
            .param_seconds("rollout_timeout")?
            .unwrap_or(self.rollout_timeout);
        let apply = PatchParams::apply("gitops").force();
        for m in objects {
            self.dynamic(ns, &m.api_version, &m.kind)
                .patch(&m.name, &apply, &Patch::Apply(&m.object))
                .await
                .map_err(|e| api_error(&format!("applying {} {}", m.kind, m.name), e))?;
            ctx.log
                .line(LogStream::Stdout, &format!("{} {} applied", m.kind, m.name));
        }
        for (api_version, kind, name) in pruned {
            match self
                .dynamic(ns, api_version, kind)
                .delete(name, &DeleteParams::background())
                .await
            {
                Ok(_) => ctx
                    .log
                    .line(LogStream::Stdout, &format!("{kind} {name} pruned")),
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(api_error(&format!("pruning {kind} {name}"), e)),
            }
        }
        // What this deploy applied, for the next one to prune against.
        let now: BTreeSet<String> = objects.iter().map(Manifest::id).collect();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let applied = serde_json::to_string(&now).unwrap_or_default();
        namespaces
            .patch(
                ns,
                &PatchParams::apply("gitops"),
                &Patch::Apply(&record(ns, env, &applied)),
            )
            .await
            .map_err(|e| api_error(&format!("recording what was applied to {ns}"), e))?;
        for m in objects
            .iter()
            .filter(|m| m.kind == "Deployment" || m.kind == "StatefulSet")
        {
            self.rollout(m, ns, timeout, ctx).await?;
        }
        Ok(())
    }
}

/// The environment a deploy or stop acts on, and its namespace.
fn target(ctx: &StageContext) -> Result<(String, String), BackendError> {
    let env = ctx
        .environment
        .as_ref()
        .map(|e| e.name.clone())
        .ok_or_else(|| {
            InvalidParameters(format!("stage \"{}\" names no environment", ctx.stage))
        })?;
    let ns = names::namespace_param(ctx)?.unwrap_or_else(|| names::environment_namespace(&env));
    Ok((env, ns))
}

#[async_trait]
impl Deployer for KubernetesBackend {
    /// Applies the manifests to the environment's namespace, prunes, waits for rollouts (see the
    /// module docs).
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let (env, ns) = target(&ctx)?;
        let objects = manifests(&ctx, &ns, &env)?;
        // Checked before anything is made.
        ctx.param_seconds("rollout_timeout")?;
        let primary = ctx.param_str("service")?.map(str::to_owned);
        if let Some(name) = &primary {
            if !objects
                .iter()
                .any(|m| m.kind == "Service" && &m.name == name)
            {
                return Err(InvalidParameters(format!(
                    "`with.service`: the manifests have no Service {name}"
                )));
            }
        }
        let env_label = json!({ENVIRONMENT: names::label_value(&env)});
        let made_namespace = self.ensure_namespace(&ns, env_label).await?;
        let before = self.applied(&ns).await?;
        let pruned = to_prune(&before, &objects);
        let previous = self
            .remember(&ns, &objects, &pruned, made_namespace)
            .await?;
        match self.roll_out(&ctx, &ns, &env, &objects, &pruned).await {
            Ok(()) => {}
            Err(BackendError::Cancelled) => {
                ctx.log.line(
                    LogStream::Stdout,
                    "cancelled: putting back what the deploy changed",
                );
                self.put_back(&ns, &env, previous).await?;
                return Err(BackendError::Cancelled);
            }
            Err(e) => return Err(e),
        }
        let mut completion = Completion::success().with_output("namespace", ns.clone());
        let mut url = None;
        for m in objects.iter().filter(|m| m.kind == "Service") {
            let port = m.object["spec"]["ports"][0]["port"].as_i64().unwrap_or(80);
            let address = format!("{}.{ns}.svc.cluster.local:{port}", m.name);
            if url.is_none() && primary.as_ref().is_none_or(|p| p == &m.name) {
                url = Some(format!("http://{address}/"));
            }
            completion = completion.with_output(format!("service_{}", m.name), address);
        }
        if let Some(url) = url {
            completion = completion.with_output("url", url);
        }
        Ok(completion)
    }

    /// Deletes the environment's namespace with everything in it, and waits until it is gone.
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let (_, ns) = target(&ctx)?;
        let api: Api<Namespace> = Api::all(self.client.clone());
        match api.delete(&ns, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 => return Ok(Completion::success()),
            // Being deleted already (a stop before this one): wait for it.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(api_error(&format!("deleting namespace {ns}"), e)),
        }
        let deadline = tokio::time::Instant::now().checked_add(self.rollout_timeout);
        match wait::until_gone(&api, &ns, deadline, ctx.cancellation()).await {
            Ok(()) => Ok(Completion::success()),
            Err(WaitError::Cancelled) => Err(BackendError::Cancelled),
            Err(WaitError::TimedOut) => Err(BackendError::failed(format!(
                "namespace {ns} was still terminating after {}s",
                self.rollout_timeout.as_secs()
            ))),
            Err(WaitError::Api(e)) => Err(api_error(&format!("watching namespace {ns}"), e)),
        }
    }

    /// `manifests`, `image`, `namespace`, `service` and `rollout_timeout` (see the module docs).
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::deployer()
    }
}
