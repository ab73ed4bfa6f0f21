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
//!   subdirectories, as `kubectl apply -f DIR`); read through [`Checkout`], so a link leading
//!   out of the checkout, a FIFO, a device or a socket is refused;
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

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::paths::Kind;
use gitops_core::backend::{BackendError, Checkout, Completion, Deployer, LogStream, StageContext};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::KubernetesBackend;
use crate::api::api_error;
use crate::names::{self, ENVIRONMENT, MANAGED_BY};
use crate::wait::{self, Selector, WaitError};

/// The namespace annotation listing what the last deploy applied.
const APPLIED: &str = "gitops.dev/applied";

/// Kinds an environment's namespace cannot hold.
const CLUSTER_SCOPED: [&str; 8] = [
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "IngressClass",
];

/// One object of the manifests.
struct Manifest {
    api_version: String,
    kind: String,
    name: String,
    object: Value,
}

impl Manifest {
    /// `apiVersion|kind|name`, as the inventory keeps it.
    fn id(&self) -> String {
        format!("{}|{}|{}", self.api_version, self.kind, self.name)
    }
}

fn api_resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind))
}

/// The repository of an image reference: without its tag or digest.
fn repository(image: &str) -> &str {
    let image = image.split('@').next().unwrap_or(image);
    match image.rfind(':') {
        // A colon after the last slash is a tag; before it, a registry's port.
        Some(i) if !image[i..].contains('/') => &image[..i],
        _ => image,
    }
}

/// Sets `image` on every container of `object` whose image has the same repository.
fn substitute_image(object: &mut Value, image: &str) {
    let repo = repository(image);
    let pod_spec = match object["kind"].as_str() {
        Some("Pod") => &mut object["spec"],
        Some("CronJob") => &mut object["spec"]["jobTemplate"]["spec"]["template"]["spec"],
        _ => &mut object["spec"]["template"]["spec"],
    };
    for list in ["containers", "initContainers"] {
        if let Some(containers) = pod_spec[list].as_array_mut() {
            for c in containers {
                if c["image"].as_str().is_some_and(|i| repository(i) == repo) {
                    c["image"] = json!(image);
                }
            }
        }
    }
}

/// Reads the manifests `with` names, checked and prepared for `ns` and `env`.
fn manifests(ctx: &StageContext, ns: &str, env: &str) -> Result<Vec<Manifest>, BackendError> {
    let with = ctx.params();
    let paths = match with.get("manifests") {
        Some(Value::String(one)) => vec![one.clone()],
        Some(_) => with
            .strings("manifests")?
            .ok_or_else(|| with.invalid("manifests", "a list of files"))?,
        None => {
            return Err(InvalidParameters(format!(
                "stage \"{}\" names no `with.manifests`, which a k8s deployment needs",
                ctx.stage
            )));
        }
    };
    let image = with.str("image")?;
    let checkout = Checkout::open(&ctx.run.workdir)?;
    let mut files = Vec::new();
    for path in &paths {
        if checkout.resolve("manifests", path)?.kind == Kind::File {
            files.push(path.clone());
            continue;
        }
        for (named, entry) in checkout.list("manifests", path)? {
            let yaml = named
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json");
            if yaml && entry.kind == Kind::File {
                files.push(named.display().to_string());
            }
        }
    }
    let mut out: Vec<Manifest> = Vec::new();
    for path in &files {
        let text = checkout.read_to_string("manifests", path)?;
        for (i, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let at = format!("{path}: document {}", i + 1);
            let mut object = <Value as serde::Deserialize>::deserialize(doc)
                .map_err(|e| InvalidParameters(format!("{at}: {e}")))?;
            if object.is_null() {
                continue;
            }
            let field = |o: &Value, f: &str| o[f].as_str().map(str::to_owned);
            let (Some(api_version), Some(kind), Some(name)) = (
                field(&object, "apiVersion"),
                field(&object, "kind"),
                field(&object["metadata"], "name"),
            ) else {
                return Err(InvalidParameters(format!(
                    "{at}: an object needs apiVersion, kind and metadata.name"
                )));
            };
            if CLUSTER_SCOPED.contains(&kind.as_str()) {
                return Err(InvalidParameters(format!(
                    "{at}: {kind} {name} is cluster-scoped; an environment holds namespaced objects only"
                )));
            }
            match object["metadata"]["namespace"].as_str() {
                Some(other) if other != ns => {
                    return Err(InvalidParameters(format!(
                        "{at}: {kind} {name} is in namespace {other}, the environment's is {ns}"
                    )));
                }
                _ => {}
            }
            object["metadata"]["namespace"] = json!(ns);
            let labels = &mut object["metadata"]["labels"];
            if !labels.is_object() {
                *labels = json!({});
            }
            labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
            labels[ENVIRONMENT] = json!(names::label_value(env));
            if let Some(image) = image {
                substitute_image(&mut object, image);
            }
            let manifest = Manifest {
                api_version,
                kind,
                name,
                object,
            };
            if out.iter().any(|m| m.id() == manifest.id()) {
                return Err(InvalidParameters(format!(
                    "{at}: {} {} appears twice in the manifests",
                    manifest.kind, manifest.name
                )));
            }
            out.push(manifest);
        }
    }
    if out.is_empty() {
        return Err(InvalidParameters(format!(
            "the manifests ({}) hold no objects",
            paths.join(", ")
        )));
    }
    Ok(out)
}

/// A rollout's progress, from a Deployment's or StatefulSet's status: `None` when done.
fn rollout_pending(kind: &str, object: &Value) -> Option<String> {
    let generation = object["metadata"]["generation"].as_i64().unwrap_or(0);
    let status = &object["status"];
    let observed = status["observedGeneration"].as_i64().unwrap_or(0);
    let wanted = object["spec"]["replicas"].as_i64().unwrap_or(1);
    let updated = status["updatedReplicas"].as_i64().unwrap_or(0);
    let (ready_word, ready) = if kind == "StatefulSet" {
        ("ready", status["readyReplicas"].as_i64().unwrap_or(0))
    } else {
        (
            "available",
            status["availableReplicas"].as_i64().unwrap_or(0),
        )
    };
    // Old replicas still running count in `replicas` while a Deployment rolls.
    let total = status["replicas"].as_i64().unwrap_or(0);
    let done = observed >= generation
        && updated >= wanted
        && ready >= wanted
        && (kind == "StatefulSet" || total <= wanted);
    (!done).then(|| {
        format!(
            "generation {observed} of {generation} observed, {updated} of {wanted} updated, {ready} of {wanted} {ready_word}"
        )
    })
}

impl KubernetesBackend {
    fn dynamic(&self, ns: &str, api_version: &str, kind: &str) -> Api<DynamicObject> {
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

    /// Waits for a Deployment or StatefulSet to roll out.
    async fn rollout(
        &self,
        m: &Manifest,
        ns: &str,
        timeout: Duration,
        ctx: &StageContext,
    ) -> Result<(), BackendError> {
        let api = self.dynamic(ns, &m.api_version, &m.kind);
        ctx.log.line(
            LogStream::Stdout,
            &format!("waiting for {} {} to roll out", m.kind, m.name),
        );
        // Past what the clock can add, no deadline: the stage's own timeout and cancellation
        // still stop the wait.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        let kind = m.kind.clone();
        let result = wait::until(
            &api,
            Selector::Name(&m.name),
            deadline,
            &ctx.cancel,
            |o: &DynamicObject| {
                let value = serde_json::to_value(o).ok()?;
                rollout_pending(&kind, &value).is_none().then_some(Ok(()))
            },
            |_| {
                Some(Err(format!(
                    "{} {} was deleted while it rolled out",
                    m.kind, m.name
                )))
            },
            || Some(Err(format!("{} {} is not there", m.kind, m.name))),
        )
        .await;
        match result {
            Ok(Ok(())) => {
                ctx.log.line(
                    LogStream::Stdout,
                    &format!("{} {} rolled out", m.kind, m.name),
                );
                Ok(())
            }
            Ok(Err(message)) => Err(BackendError::Failed(message)),
            Err(WaitError::Cancelled) => Err(BackendError::Cancelled),
            Err(WaitError::TimedOut) => {
                let progress = match api.get(&m.name).await {
                    Ok(o) => serde_json::to_value(&o)
                        .ok()
                        .and_then(|v| rollout_pending(&m.kind, &v))
                        .unwrap_or_else(|| "done just now".to_owned()),
                    Err(e) => e.to_string(),
                };
                Err(BackendError::Failed(format!(
                    "{} {} did not roll out within {}s: {progress}",
                    m.kind,
                    m.name,
                    timeout.as_secs()
                )))
            }
            Err(WaitError::Api(e)) => Err(api_error(&format!("watching {} {}", m.kind, m.name), e)),
        }
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
        let timeout = ctx
            .param_seconds("rollout_timeout")?
            .unwrap_or(self.rollout_timeout);
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
        self.ensure_namespace(&ns, env_label.clone()).await?;
        let before = self.applied(&ns).await?;
        let apply = PatchParams::apply("gitops").force();
        for m in &objects {
            self.dynamic(&ns, &m.api_version, &m.kind)
                .patch(&m.name, &apply, &Patch::Apply(&m.object))
                .await
                .map_err(|e| api_error(&format!("applying {} {}", m.kind, m.name), e))?;
            ctx.log
                .line(LogStream::Stdout, &format!("{} {} applied", m.kind, m.name));
        }
        let now: BTreeSet<String> = objects.iter().map(Manifest::id).collect();
        for id in before.difference(&now) {
            let mut parts = id.splitn(3, '|');
            let (Some(api_version), Some(kind), Some(name)) =
                (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            // The same object under another API version (apps/v1beta2 → apps/v1) is kept.
            if objects.iter().any(|m| m.kind == kind && m.name == name) {
                continue;
            }
            match self
                .dynamic(&ns, api_version, kind)
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
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let mut labels = env_label;
        labels[MANAGED_BY.0] = json!(MANAGED_BY.1);
        let record = json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": labels,
                         "annotations": {APPLIED: serde_json::to_string(&now).unwrap_or_default()}}});
        namespaces
            .patch(&ns, &PatchParams::apply("gitops"), &Patch::Apply(&record))
            .await
            .map_err(|e| api_error(&format!("recording what was applied to {ns}"), e))?;
        for m in objects
            .iter()
            .filter(|m| m.kind == "Deployment" || m.kind == "StatefulSet")
        {
            self.rollout(m, &ns, timeout, &ctx).await?;
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
            Err(e) => return Err(api_error(&format!("deleting namespace {ns}"), e)),
        }
        let deadline = tokio::time::Instant::now().checked_add(self.rollout_timeout);
        match wait::until_gone(&api, &ns, deadline, &ctx.cancel).await {
            Ok(()) => Ok(Completion::success()),
            Err(WaitError::Cancelled) => Err(BackendError::Cancelled),
            Err(WaitError::TimedOut) => Err(BackendError::Failed(format!(
                "namespace {ns} was still terminating after {}s",
                self.rollout_timeout.as_secs()
            ))),
            Err(WaitError::Api(e)) => Err(api_error(&format!("watching namespace {ns}"), e)),
        }
    }

    /// `manifests`, `image`, `namespace`, `service` and `rollout_timeout` (see the module docs).
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::deployer()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_are_matched_by_repository() {
        assert_eq!(repository("nginx:1.25"), "nginx");
        assert_eq!(
            repository("registry:5000/team/app:v1"),
            "registry:5000/team/app"
        );
        assert_eq!(
            repository("registry:5000/team/app"),
            "registry:5000/team/app"
        );
        assert_eq!(repository("app@sha256:abc"), "app");
        let mut d = json!({"kind": "Deployment", "spec": {"template": {"spec": {
            "containers": [{"image": "registry:5000/app:old"}, {"image": "sidecar:1"}],
            "initContainers": [{"image": "registry:5000/app"}]}}}});
        substitute_image(&mut d, "registry:5000/app:new");
        let spec = &d["spec"]["template"]["spec"];
        assert_eq!(spec["containers"][0]["image"], "registry:5000/app:new");
        assert_eq!(spec["containers"][1]["image"], "sidecar:1");
        assert_eq!(spec["initContainers"][0]["image"], "registry:5000/app:new");
    }

    #[test]
    fn a_rollout_is_done_when_every_replica_is_updated_and_available() {
        let d = |status: Value| json!({"metadata": {"generation": 2}, "spec": {"replicas": 2}, "status": status});
        assert_eq!(
            rollout_pending("Deployment", &d(json!({}))).as_deref(),
            Some("generation 0 of 2 observed, 0 of 2 updated, 0 of 2 available")
        );
        let rolling = json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 3});
        assert!(
            rollout_pending("Deployment", &d(rolling)).is_some(),
            "an old replica still runs"
        );
        let done = json!({"observedGeneration": 2, "updatedReplicas": 2, "availableReplicas": 2, "replicas": 2});
        assert_eq!(rollout_pending("Deployment", &d(done)), None);
        let sts = json!({"observedGeneration": 2, "updatedReplicas": 2, "readyReplicas": 1});
        assert_eq!(
            rollout_pending("StatefulSet", &d(sts)).as_deref(),
            Some("generation 2 of 2 observed, 2 of 2 updated, 1 of 2 ready")
        );
    }
}
