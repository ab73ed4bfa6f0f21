//! Reading and writing objects: list, create (into a namespace that exists and is not being
//! deleted), replace (with the optimistic concurrency of `resourceVersion`), and patches
//! (server-side apply, merge patches), each keeping `metadata` and `status` as the API server
//! does and recording who manages which field.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::apply::{self, Managed};
use super::routes::{Target, api_version, kind_of, not_found, status, status_object, whole};
use super::store::{Key, State, key};
use super::watch::matches;
use super::{FakeBody, FakeCluster, lock};

type Response = http::Response<FakeBody>;

/// Whether an object may be created in `target`'s namespace: it exists and is not being deleted.
fn admit(state: &State, target: &Target, name: &str) -> Result<(), Value> {
    if target.namespace.is_empty() {
        return Ok(());
    }
    match state
        .objects
        .get(&key("/api/v1", "namespaces", "", &target.namespace))
    {
        None => Err(status_object(
            404,
            "NotFound",
            format!("namespaces \"{}\" not found", target.namespace),
        )),
        Some(ns) if ns["metadata"]["deletionTimestamp"].is_string() => Err(
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": format!("{} \"{name}\" is forbidden: unable to create new content in namespace {} because it is being terminated", target.plural, target.namespace),
                "reason": "Forbidden",
                "details": {"name": name, "kind": target.plural,
                    "causes": [{"reason": "NamespaceTerminating",
                        "message": format!("namespace {} is being terminated", target.namespace),
                        "field": "metadata.namespace"}]},
                "code": 403}),
        ),
        Some(_) => Ok(()),
    }
}

/// A refused request's response, from its `Status`.
fn refusal(status: &Value) -> Response {
    let code = status["code"]
        .as_u64()
        .and_then(|c| u16::try_from(c).ok())
        .unwrap_or(500);
    whole(code, status)
}

/// The generation after a write: one more when anything but `metadata` and `status` changed.
fn next_generation(current: &Value, next: &Value) -> i64 {
    let generation = current["metadata"]["generation"].as_i64().unwrap_or(1);
    let body = |o: &Value| {
        let mut o = o.clone();
        if let Some(map) = o.as_object_mut() {
            map.remove("metadata");
            map.remove("status");
        }
        o
    };
    if body(current) != body(next) {
        generation + 1
    } else {
        generation
    }
}

/// `next`, with the metadata the server keeps from `current` and `current`'s status (a write to
/// the main resource does not change the status).
fn keep_server_fields(current: &Value, mut next: Value) -> Value {
    let generation = next_generation(current, &next);
    let mut metadata = current["metadata"].clone();
    for field in ["labels", "annotations", "finalizers", "ownerReferences"] {
        match next["metadata"].get(field) {
            Some(v) => metadata[field] = v.clone(),
            None => {
                if let Some(m) = metadata.as_object_mut() {
                    m.remove(field);
                }
            }
        }
    }
    metadata["generation"] = json!(generation);
    next["metadata"] = metadata;
    match current.get("status") {
        Some(s) => next["status"] = s.clone(),
        None => {
            if let Some(m) = next.as_object_mut() {
                m.remove("status");
            }
        }
    }
    if next.get("apiVersion").is_none() {
        next["apiVersion"] = current["apiVersion"].clone();
    }
    if next.get("kind").is_none() {
        next["kind"] = current["kind"].clone();
    }
    next
}

/// A write's `resourceVersion` precondition, when it gives one: `409 Conflict` when stale.
fn precondition(current: &Value, given: &Value, plural: &str, name: &str) -> Result<(), Value> {
    match given["metadata"]["resourceVersion"].as_str() {
        Some(rv)
            if !rv.is_empty() && current["metadata"]["resourceVersion"].as_str() != Some(rv) =>
        {
            Err(status_object(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on {plural} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
                ),
            ))
        }
        _ => Ok(()),
    }
}

/// RFC 7386 merge of `patch` into `target` (a `null` removes a key), merging lists of named
/// objects by name as a strategic merge patch does for `containers`, `env` and the like.
fn merge_patch(target: &mut Value, patch: &Value, strategic: bool) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v, strategic);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if strategic
                && p.iter().all(|i| i["name"].is_string())
                && t.iter().all(|i| i["name"].is_string()) =>
        {
            for item in p {
                match t.iter_mut().find(|i| i["name"] == item["name"]) {
                    Some(existing) => merge_patch(existing, item, strategic),
                    None => t.push(item.clone()),
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl FakeCluster {
    /// A list of the objects `target` and the selectors pick, at the current resource version.
    pub(super) fn list_response(&self, target: &Target, q: &BTreeMap<String, String>) -> Response {
        let state = lock(&self.inner);
        let items: Vec<Value> = state
            .objects
            .iter()
            .filter(|(k, o)| {
                k.api == target.api
                    && k.plural == target.plural
                    && (target.namespace.is_empty() || k.namespace == target.namespace)
                    && matches(
                        o,
                        q.get("labelSelector").map(String::as_str),
                        q.get("fieldSelector").map(String::as_str),
                    )
            })
            .map(|(_, o)| o.clone())
            .collect();
        whole(
            200,
            &json!({"apiVersion": api_version(&target.api),
                    "kind": format!("{}List", kind_of(&target.plural)),
                    "metadata": {"resourceVersion": state.rv.to_string()},
                    "items": items}),
        )
    }

    /// `POST`: a new object, owned by `manager`.
    pub(super) fn create(&self, target: &Target, object: Value, manager: &str) -> Response {
        let mut managers = Vec::new();
        apply::track_update(
            None,
            &object,
            manager,
            &api_version(&target.api),
            &mut managers,
        );
        self.create_managed(target, object, managers)
    }

    /// A new object whose fields `managers` own.
    pub(super) fn create_managed(
        &self,
        target: &Target,
        mut object: Value,
        managers: Vec<Managed>,
    ) -> Response {
        let Some(name) = object["metadata"]["name"].as_str().map(str::to_owned) else {
            return status(422, "Invalid", "metadata.name: Required value".into());
        };
        let k = key(&target.api, &target.plural, &target.namespace, &name);
        let mut state = lock(&self.inner);
        if let Err(refused) = admit(&state, target, &name) {
            return refusal(&refused);
        }
        if state.objects.contains_key(&k) {
            return status(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", target.plural),
            );
        }
        let uid = state.uid();
        let meta = &mut object["metadata"];
        meta["uid"] = json!(uid);
        meta["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
        meta["generation"] = json!(1);
        if !target.namespace.is_empty() {
            meta["namespace"] = json!(target.namespace);
        }
        if object.get("apiVersion").is_none() {
            object["apiVersion"] = json!(api_version(&target.api));
        }
        if object.get("kind").is_none() {
            object["kind"] = json!(kind_of(&target.plural));
        }
        if target.plural == "namespaces" {
            object["spec"]["finalizers"] = json!(["kubernetes"]);
            object["status"] = json!({"phase": "Active"});
        }
        state.managers.insert(k.clone(), managers);
        let stored = state.store(k, object, "ADDED");
        drop(state);
        if target.plural == "jobs" && self.inner.controllers {
            self.start_job(&target.namespace, &stored);
        }
        let stored = self.roll_out(&target.plural, stored);
        self.inner.changed.notify_waiters();
        whole(201, &stored)
    }

    /// Stores a changed object, and lets its controllers see it.
    fn write(&self, target: &Target, k: Key, object: Value, status_only: bool) -> Response {
        let stored = lock(&self.inner).store(k, object, "MODIFIED");
        let stored = if status_only {
            stored
        } else {
            self.roll_out(&target.plural, stored)
        };
        self.finish_deletion_if_released(&target.plural, &stored);
        self.inner.changed.notify_waiters();
        whole(200, &stored)
    }

    /// `PUT`: the object replaced (or, for `status`, its status).
    pub(super) fn replace(
        &self,
        target: &Target,
        name: &str,
        sub: Option<&str>,
        object: Value,
        manager: &str,
    ) -> Response {
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let mut state = lock(&self.inner);
        let Some(mut current) = state.objects.get(&k).cloned() else {
            return not_found(&target.plural, name);
        };
        if let Err(stale) = precondition(&current, &object, &target.plural, name) {
            return refusal(&stale);
        }
        if sub == Some("status") {
            current["status"] = object["status"].clone();
        } else {
            let next = keep_server_fields(&current, object);
            let managers = state.managers.entry(k.clone()).or_default();
            apply::track_update(
                Some(&current),
                &next,
                manager,
                &api_version(&target.api),
                managers,
            );
            current = next;
        }
        drop(state);
        self.write(target, k, current, sub == Some("status"))
    }

    /// `PATCH`: server-side apply (`application/apply-patch+yaml`), or a merge or strategic
    /// merge patch.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn patch(
        &self,
        target: &Target,
        name: &str,
        sub: Option<&str>,
        content_type: &str,
        q: &BTreeMap<String, String>,
        mut patch: Value,
        manager: &str,
    ) -> Response {
        let version = api_version(&target.api);
        if content_type.contains("json-patch") {
            return status(
                415,
                "UnsupportedMediaType",
                "the fake does not serve JSON patches (RFC 6902)".into(),
            );
        }
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let mut state = lock(&self.inner);
        let existing = state.objects.get(&k).cloned();
        if content_type.contains("apply-patch") {
            if q.get("fieldManager").is_none_or(|m| m.is_empty()) {
                return status(
                    400,
                    "BadRequest",
                    "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch".into(),
                );
            }
            if patch["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n != name)
            {
                return status(
                    400,
                    "BadRequest",
                    "the name of the object (in the body) does not match the name in the URL"
                        .into(),
                );
            }
            if sub != Some("status") {
                // An apply to the main resource does not set the status.
                if let Some(map) = patch.as_object_mut() {
                    map.remove("status");
                }
            }
            let force = q.get("force").is_some_and(|f| f == "true");
            let mut managers = state.managers.get(&k).cloned().unwrap_or_default();
            let applied = match apply::apply(
                existing.as_ref(),
                &patch,
                manager,
                &version,
                force,
                &mut managers,
            ) {
                Ok(o) => o,
                Err(conflicts) => return whole(409, &apply::conflict_status(&conflicts)),
            };
            let Some(current) = existing else {
                drop(state);
                let mut created = applied;
                created["metadata"]["name"] = json!(name);
                return self.create_managed(target, created, managers);
            };
            let next = if sub == Some("status") {
                let mut next = current.clone();
                next["status"] = applied["status"].clone();
                next
            } else {
                let mut next = applied;
                let generation = next_generation(&current, &next);
                next["metadata"]["generation"] = json!(generation);
                next
            };
            state.managers.insert(k.clone(), managers);
            drop(state);
            return self.write(target, k, next, sub == Some("status"));
        }
        let Some(current) = existing else {
            return not_found(&target.plural, name);
        };
        if let Err(stale) = precondition(&current, &patch, &target.plural, name) {
            return refusal(&stale);
        }
        let strategic = content_type.contains("strategic-merge-patch");
        let mut next = current.clone();
        if sub == Some("status") {
            merge_patch(&mut next["status"], &patch["status"], strategic);
        } else {
            merge_patch(&mut next, &patch, strategic);
            next = keep_server_fields(&current, next);
            let managers = state.managers.entry(k.clone()).or_default();
            apply::track_update(Some(&current), &next, manager, &version, managers);
        }
        drop(state);
        self.write(target, k, next, sub == Some("status"))
    }
}
