//! Deleting objects as the API server and its garbage collector do.
//!
//! - A namespace goes `Terminating` (its `deletionTimestamp` set) while what it holds is deleted,
//!   and is gone once that is; nothing new may be created in it meanwhile, and deleting it again
//!   is a `409 Conflict`.
//! - Dependents (objects whose `ownerReferences` name the deleted one) are deleted after their
//!   owner (`propagationPolicy=Background`), before it (`Foreground`: the owner stays, with its
//!   `deletionTimestamp` and the `foregroundDeletion` finalizer, until they are gone), or kept
//!   without the reference (`Orphan`). Without a policy, a `batch/v1` Job orphans its pods, as
//!   the API server keeps doing for compatibility; anything else deletes in the background.
//! - A pod whose container the kubelet runs is deleted gracefully: it gets a `deletionTimestamp`,
//!   its process is stopped, and it is gone once the process has ended.
//! - An object with finalizers stays, marked, until they are removed.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{Value, json};

use super::routes::{Target, not_found, status, whole};
use super::store::{Key, key};
use super::{FakeBody, FakeCluster, lock};

/// How dependents go with their owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Propagation {
    Background,
    Foreground,
    Orphan,
}

/// The propagation a delete request asks for, else the default for what it deletes.
fn propagation(target: &Target, q: &BTreeMap<String, String>, body: &Bytes) -> Propagation {
    let options: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let asked = q
        .get("propagationPolicy")
        .cloned()
        .or_else(|| options["propagationPolicy"].as_str().map(str::to_owned))
        .or_else(|| match options["orphanDependents"].as_bool() {
            Some(true) => Some("Orphan".to_owned()),
            Some(false) => Some("Background".to_owned()),
            None => None,
        });
    match asked.as_deref() {
        Some("Foreground") => Propagation::Foreground,
        Some("Orphan") => Propagation::Orphan,
        Some(_) => Propagation::Background,
        None if target.api == "/apis/batch/v1" && target.plural == "jobs" => Propagation::Orphan,
        None => Propagation::Background,
    }
}

fn deleting(object: &Value) -> bool {
    object["metadata"]["deletionTimestamp"].is_string()
}

fn finalizers(object: &Value) -> Vec<String> {
    object["metadata"]["finalizers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|f| f.as_str().map(str::to_owned))
        .collect()
}

impl FakeCluster {
    /// `DELETE`.
    pub(super) fn delete(
        &self,
        target: &Target,
        name: &str,
        q: &BTreeMap<String, String>,
        body: &Bytes,
    ) -> http::Response<FakeBody> {
        let k = key(&target.api, &target.plural, &target.namespace, name);
        let Some(current) = lock(&self.inner).objects.get(&k).cloned() else {
            return not_found(&target.plural, name);
        };
        if target.plural == "namespaces" && deleting(&current) {
            return status(
                409,
                "Conflict",
                format!(
                    "Operation cannot be fulfilled on namespaces \"{name}\": The system is ensuring all content is removed from this namespace.  Upon completion, this namespace will automatically be purged by the system."
                ),
            );
        }
        let object = self.delete_key(&k, propagation(target, q, body));
        self.inner.changed.notify_waiters();
        match object {
            Some(o) => whole(200, &o),
            None => not_found(&target.plural, name),
        }
    }

    /// Deletes the object at `k`: the object as it is now (marked for deletion, or as it was
    /// when removed), `None` when there is none.
    pub(super) fn delete_key(&self, k: &Key, propagation: Propagation) -> Option<Value> {
        let mut state = lock(&self.inner);
        let mut current = state.objects.get(k).cloned()?;
        if deleting(&current) {
            return Some(current);
        }
        let uid = current["metadata"]["uid"].clone();
        let graceful = k.plural == "pods"
            && state
                .running
                .contains_key(&(k.namespace.clone(), k.name.clone()));
        let foreground = propagation == Propagation::Foreground;
        if k.plural == "namespaces" || graceful || foreground || !finalizers(&current).is_empty() {
            current["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:01Z");
            if k.plural == "namespaces" {
                current["status"]["phase"] = json!("Terminating");
            }
            if graceful {
                current["metadata"]["deletionGracePeriodSeconds"] = json!(30);
                if let Some(token) = state.running.get(&(k.namespace.clone(), k.name.clone())) {
                    token.cancel();
                }
            }
            if foreground {
                let mut f = finalizers(&current);
                f.push("foregroundDeletion".to_owned());
                current["metadata"]["finalizers"] = json!(f);
            }
            let marked = state.store(k.clone(), current, "MODIFIED");
            drop(state);
            if k.plural == "namespaces" {
                self.spawn_namespace_cleanup(k.name.clone());
            } else if foreground {
                self.spawn_foreground(k.clone(), uid);
            }
            return Some(marked);
        }
        let removed = state.remove(k);
        match propagation {
            Propagation::Orphan => {
                for dependent in state.dependents(&uid) {
                    if let Some(mut o) = state.objects.get(&dependent).cloned() {
                        if let Some(refs) = o["metadata"]["ownerReferences"].as_array_mut() {
                            refs.retain(|r| r["uid"] != uid);
                            if refs.is_empty() {
                                if let Some(meta) = o["metadata"].as_object_mut() {
                                    meta.remove("ownerReferences");
                                }
                            }
                        }
                        state.store(dependent, o, "MODIFIED");
                    }
                }
            }
            _ => {
                drop(state);
                self.spawn_background(uid);
            }
        }
        removed
    }

    /// The garbage collector, after an owner went: its dependents go too.
    fn spawn_background(&self, uid: Value) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let dependents = lock(&cluster.inner).dependents(&uid);
            for k in dependents {
                cluster.delete_key(&k, Propagation::Background);
            }
            cluster.inner.changed.notify_waiters();
        });
    }

    /// Foreground deletion: the dependents go, then the owner.
    fn spawn_foreground(&self, owner: Key, uid: Value) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let dependents = lock(&cluster.inner).dependents(&uid);
            for k in dependents {
                cluster.delete_key(&k, Propagation::Background);
            }
            cluster.inner.changed.notify_waiters();
            cluster
                .until(|state| state.dependents(&uid).is_empty())
                .await;
            cluster.release_finalizer(&owner, "foregroundDeletion");
        });
    }

    /// The namespace controller: everything in the namespace is deleted, then the namespace.
    fn spawn_namespace_cleanup(&self, namespace: String) {
        let cluster = self.clone();
        tokio::spawn(async move {
            let inside: Vec<Key> = lock(&cluster.inner)
                .objects
                .keys()
                .filter(|k| k.namespace == namespace)
                .cloned()
                .collect();
            for k in inside {
                cluster.delete_key(&k, Propagation::Background);
            }
            cluster.inner.changed.notify_waiters();
            cluster
                .until(|state| state.objects.keys().all(|k| k.namespace != namespace))
                .await;
            lock(&cluster.inner).remove(&key("/api/v1", "namespaces", "", &namespace));
            cluster.inner.changed.notify_waiters();
        });
    }

    /// Removes `finalizer` from the object at `k`; an object being deleted goes once it has
    /// none left.
    fn release_finalizer(&self, k: &Key, finalizer: &str) {
        let mut state = lock(&self.inner);
        let Some(mut object) = state.objects.get(k).cloned() else {
            return;
        };
        let left: Vec<String> = finalizers(&object)
            .into_iter()
            .filter(|f| f != finalizer)
            .collect();
        if left.is_empty() && deleting(&object) {
            state.remove(k);
        } else {
            object["metadata"]["finalizers"] = json!(left);
            state.store(k.clone(), object, "MODIFIED");
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }

    /// After a write: an object being deleted whose finalizers were all removed is gone (a pod
    /// whose process still runs goes when the kubelet has stopped it).
    pub(super) fn finish_deletion_if_released(&self, plural: &str, object: &Value) {
        if plural == "namespaces" || !deleting(object) || !finalizers(object).is_empty() {
            return;
        }
        let k = Key::of(plural, object);
        let mut state = lock(&self.inner);
        if state
            .running
            .contains_key(&(k.namespace.clone(), k.name.clone()))
        {
            return;
        }
        state.remove(&k);
    }
}
