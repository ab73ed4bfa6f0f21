//! The objects a deploy applies: read from the manifests `with` names (through the checkout's one
//! door), checked to be namespaced and in the environment's namespace, labelled, and given the
//! release's image.

use gitops_core::backend::BackendError::InvalidParameters;

use gitops_core::backend::paths::Kind;
use gitops_core::backend::{BackendError, Checkout, StageContext};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};

use crate::names::{self, ENVIRONMENT, MANAGED_BY};

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
pub(super) struct Manifest {
    pub(super) api_version: String,
    pub(super) kind: String,
    pub(super) name: String,
    pub(super) object: Value,
}

impl Manifest {
    /// `apiVersion|kind|name`, as the inventory keeps it.
    pub(super) fn id(&self) -> String {
        format!("{}|{}|{}", self.api_version, self.kind, self.name)
    }
}

pub(super) fn api_resource(api_version: &str, kind: &str) -> ApiResource {
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

/// The files `paths` name: each file, and the `.yaml`, `.yml` and `.json` files of each
/// directory, in name order (as `kubectl apply -f DIR` reads them).
fn manifest_files(checkout: &Checkout, paths: &[String]) -> Result<Vec<String>, BackendError> {
    let mut files = Vec::new();
    for path in paths {
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
    Ok(files)
}

/// Reads the manifests `with` names, checked and prepared for `ns` and `env`.
pub(super) fn manifests(
    ctx: &StageContext,
    ns: &str,
    env: &str,
) -> Result<Vec<Manifest>, BackendError> {
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
    let files = manifest_files(&checkout, &paths)?;
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
}
