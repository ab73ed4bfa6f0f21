//! What a deploy changed, put back when it is cancelled.
//!
//! Before a deploy applies or prunes anything, it remembers each object it will touch as the
//! previous deploy applied it: the fields the manager `gitops` owns by apply, extracted from the
//! object's `managedFields` (as client-go's `Extract...` functions do), so that applying them
//! again with `force` restores exactly what gitops set, and nothing another manager owns. An
//! object that was not there is deleted again; one that was there but not gitops's is left as
//! it is. The namespace's record of what was applied is restored, and a namespace the deploy
//! made is deleted.

use std::time::Duration;

use gitops_core::backend::{BackendError, Cancellation};
use k8s_openapi::api::core::v1::Namespace;
use kube::Api;
use kube::api::{DeleteParams, Patch, PatchParams};
use serde_json::{Map, Value, json};

use super::manifests::Manifest;
use super::{APPLIED, Pruned, record};
use crate::KubernetesBackend;
use crate::api::api_error;
use crate::wait;

/// An object as it was before a deploy.
enum Prior {
    /// Not there.
    Absent,
    /// There, with what gitops had applied to it.
    Applied(Value),
    /// There, but with nothing gitops applied: not ours to put back.
    Foreign,
}

/// What a deploy is about to change, as it was.
pub(super) struct Previous {
    objects: Vec<(String, String, String, Prior)>,
    /// The namespace's record of what was applied (its annotation), when it had one.
    record: Option<String>,
    /// The deploy made the namespace.
    made_namespace: bool,
}

/// The applied configuration `manager` owns in `live` (its `Apply` entry of `managedFields`),
/// with the object's identity; `None` when it owns nothing there.
pub(super) fn extract(live: &Value, manager: &str) -> Option<Value> {
    let fields = live["metadata"]["managedFields"]
        .as_array()?
        .iter()
        .find(|m| m["manager"] == manager && m["operation"] == "Apply")?
        .get("fieldsV1")?;
    let mut config = extract_fields(live, fields);
    config["apiVersion"] = live["apiVersion"].clone();
    config["kind"] = live["kind"].clone();
    config["metadata"]["name"] = live["metadata"]["name"].clone();
    if live["metadata"]["namespace"].is_string() {
        config["metadata"]["namespace"] = live["metadata"]["namespace"].clone();
    }
    Some(config)
}

/// Whether list item `item` is the one `key` (`k:{"name":"web"}`'s JSON) names.
fn matches_key(item: &Value, key: &Value) -> bool {
    key.as_object()
        .is_some_and(|k| k.iter().all(|(field, value)| &item[field] == value))
}

/// The part of `live` that `fields` (a `fieldsV1` set) names.
fn extract_fields(live: &Value, fields: &Value) -> Value {
    let Some(fields) = fields.as_object().filter(|f| !f.is_empty()) else {
        return live.clone();
    };
    match live {
        Value::Object(map) => {
            let mut out = Map::new();
            for (name, sub) in fields {
                if let Some(field) = name.strip_prefix("f:") {
                    if let Some(value) = map.get(field) {
                        out.insert(field.to_owned(), extract_fields(value, sub));
                    }
                }
            }
            Value::Object(out)
        }
        Value::Array(items) => {
            // In the live list's order: each item a key, value or index names.
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let named = fields.iter().find(|(name, _)| {
                    if let Some(key) = name.strip_prefix("k:") {
                        serde_json::from_str::<Value>(key).is_ok_and(|k| matches_key(item, &k))
                    } else if let Some(value) = name.strip_prefix("v:") {
                        serde_json::from_str::<Value>(value).is_ok_and(|v| &v == item)
                    } else if let Some(index) = name.strip_prefix("i:") {
                        index.parse::<usize>() == Ok(i)
                    } else {
                        false
                    }
                });
                if let Some((name, sub)) = named {
                    let mut kept = extract_fields(item, sub);
                    // An item keeps its key, whatever `fieldsV1` lists of it.
                    if let (Some(key), Value::Object(kept)) = (name.strip_prefix("k:"), &mut kept) {
                        if let Ok(Value::Object(key)) = serde_json::from_str::<Value>(key) {
                            kept.extend(key);
                        }
                    }
                    out.push(kept);
                }
            }
            Value::Array(out)
        }
        other => other.clone(),
    }
}

impl KubernetesBackend {
    /// Remembers `objects` and `pruned` in `ns` as they are now, before a deploy changes them.
    pub(super) async fn remember(
        &self,
        ns: &str,
        objects: &[Manifest],
        pruned: &[Pruned],
        made_namespace: bool,
    ) -> Result<Previous, BackendError> {
        let mut remembered = Vec::new();
        let touched = objects
            .iter()
            .map(|m| (&m.api_version, &m.kind, &m.name))
            .chain(pruned.iter().map(|(a, k, n)| (a, k, n)));
        for (api_version, kind, name) in touched {
            let live = self
                .dynamic(ns, api_version, kind)
                .get_opt(name)
                .await
                .map_err(|e| api_error(&format!("reading {kind} {name}"), e))?;
            let prior = match live {
                None => Prior::Absent,
                Some(o) => {
                    let value = serde_json::to_value(&o)
                        .map_err(|e| BackendError::failed_with(format!("{kind} {name}"), e))?;
                    match extract(&value, "gitops") {
                        Some(config) => Prior::Applied(config),
                        None => Prior::Foreign,
                    }
                }
            };
            remembered.push((api_version.clone(), kind.clone(), name.clone(), prior));
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let record = namespaces
            .get_opt(ns)
            .await
            .map_err(|e| api_error(&format!("reading namespace {ns}"), e))?
            .and_then(|n| n.metadata.annotations)
            .and_then(|a| a.get(APPLIED).cloned());
        Ok(Previous {
            objects: remembered,
            record,
            made_namespace,
        })
    }

    /// Puts back what a cancelled deploy changed (see the module docs).
    pub(super) async fn put_back(
        &self,
        ns: &str,
        env: &str,
        previous: Previous,
    ) -> Result<(), BackendError> {
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if previous.made_namespace {
            match namespaces.delete(ns, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
                Err(e) => return Err(api_error(&format!("deleting namespace {ns}"), e)),
            }
            let patience = Duration::from_secs(60);
            let deadline = tokio::time::Instant::now().checked_add(patience);
            return wait::until_gone(&namespaces, ns, deadline, &Cancellation::new())
                .await
                .map_err(|_| {
                    BackendError::failed(format!(
                        "namespace {ns}, made by the cancelled deploy, was still there after {}s",
                        patience.as_secs()
                    ))
                });
        }
        let apply = PatchParams::apply("gitops").force();
        for (api_version, kind, name, prior) in &previous.objects {
            let api = self.dynamic(ns, api_version, kind);
            match prior {
                Prior::Applied(config) => {
                    api.patch(name, &apply, &Patch::Apply(config))
                        .await
                        .map_err(|e| api_error(&format!("putting back {kind} {name}"), e))?;
                }
                Prior::Absent => match api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(e)) if e.code == 404 => {}
                    Err(e) => return Err(api_error(&format!("deleting {kind} {name}"), e)),
                },
                Prior::Foreign => {}
            }
        }
        let applied = previous.record.unwrap_or_else(|| json!([]).to_string());
        namespaces
            .patch(
                ns,
                &PatchParams::apply("gitops"),
                &Patch::Apply(&record(ns, env, &applied)),
            )
            .await
            .map_err(|e| api_error(&format!("putting back the record of {ns}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_manager_applied_is_extracted_from_managed_fields() {
        let live = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "ns", "uid": "1", "resourceVersion": "9",
                "labels": {"app": "web", "added-by-someone": "x"},
                "managedFields": [
                    {"manager": "gitops", "operation": "Apply", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:app": {}}},
                        "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                            "k:{\"name\":\"web\"}": {".": {}, "f:image": {}},
                            "k:{\"name\":\"gone\"}": {".": {}}},
                            "f:args": {}}}}}},
                    {"manager": "hpa", "operation": "Update", "fieldsV1": {
                        "f:metadata": {"f:labels": {"f:added-by-someone": {}}}}}]},
            "spec": {"replicas": 3, "paused": false, "template": {"spec": {
                "containers": [{"name": "sidecar", "image": "s"}, {"name": "web", "image": "app:1", "ports": [80]}],
                "args": ["a", "b"]}}},
            "status": {"replicas": 3},
        });
        assert_eq!(
            extract(&live, "gitops").unwrap(),
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "web", "namespace": "ns", "labels": {"app": "web"}},
                   "spec": {"replicas": 3, "template": {"spec": {
                       "containers": [{"name": "web", "image": "app:1"}],
                       "args": ["a", "b"]}}}})
        );
        assert_eq!(extract(&live, "nobody"), None);
        assert_eq!(
            extract(&live, "hpa"),
            None,
            "an update is not an applied configuration"
        );
    }
}
