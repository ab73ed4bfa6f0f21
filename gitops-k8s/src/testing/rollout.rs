//! The Deployment and StatefulSet controllers: a new generation rolls out at once, or, with
//! `spec.minReadySeconds`, once its replicas have been ready that long. Meanwhile the status
//! says what a real rollout's does: the new replicas are updated and ready, the old ones still
//! count in `replicas` and are the only available ones.

use std::time::Duration;

use serde_json::{Value, json};

use super::store::Key;
use super::{FakeCluster, lock};

/// The status of a finished rollout of `object`'s generation.
fn rolled_out(object: &Value) -> Value {
    let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
    json!({"observedGeneration": object["metadata"]["generation"], "replicas": replicas,
           "updatedReplicas": replicas, "availableReplicas": replicas, "readyReplicas": replicas})
}

impl FakeCluster {
    /// After a write of `object`: a Deployment or StatefulSet whose status has not seen its
    /// generation gets the status of its rollout (see the module docs). Returns the object as
    /// stored.
    pub(super) fn roll_out(&self, plural: &str, object: Value) -> Value {
        if !self.inner.controllers || !(plural == "deployments" || plural == "statefulsets") {
            return object;
        }
        let generation = object["metadata"]["generation"].clone();
        if object["status"]["observedGeneration"] == generation
            || object["metadata"]["deletionTimestamp"].is_string()
        {
            return object;
        }
        let k = Key::of(plural, &object);
        let min_ready = object["spec"]["minReadySeconds"].as_u64().unwrap_or(0);
        let mut next = object.clone();
        if min_ready == 0 {
            next["status"] = rolled_out(&object);
            return lock(&self.inner).store(k, next, "MODIFIED");
        }
        let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
        let old = object["status"]["availableReplicas"].as_i64().unwrap_or(0);
        next["status"] = json!({"observedGeneration": generation, "replicas": replicas + old,
            "updatedReplicas": replicas, "readyReplicas": replicas + old, "availableReplicas": old});
        let stored = lock(&self.inner).store(k.clone(), next, "MODIFIED");
        let cluster = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(min_ready)).await;
            let mut state = lock(&cluster.inner);
            let Some(mut now) = state.objects.get(&k).cloned() else {
                return;
            };
            // A newer generation has its own rollout.
            if now["metadata"]["generation"] != generation {
                return;
            }
            now["status"] = rolled_out(&now);
            state.store(k, now, "MODIFIED");
            drop(state);
            cluster.inner.changed.notify_waiters();
        });
        stored
    }
}
