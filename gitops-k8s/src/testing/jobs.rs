//! The Job controller, as Kubernetes 1.31 and later run it, for Jobs of one pod at a time.
//!
//! A new Job gets `startTime` and `active: 1`, and a pod: named `<job>-<suffix>`, labelled
//! `batch.kubernetes.io/job-name`, `job-name`, `batch.kubernetes.io/controller-uid` and
//! `controller-uid` besides its template's labels, owned by the Job (`controller`,
//! `blockOwnerDeletion`). When the pod succeeds the Job gets `SuccessCriteriaMet`, then
//! `Complete` with `succeeded` and `completionTime`. When it fails, a new pod replaces it until
//! `backoffLimit` (default 6) failures are passed (at once: the fake does not back off), then
//! the Job gets `FailureTarget`, then `Failed`, both `BackoffLimitExceeded`. Past
//! `activeDeadlineSeconds` from its start, the Job gets `FailureTarget` (`DeadlineExceeded`),
//! its pods are deleted, and once they are gone it gets `Failed`.

use std::time::Duration;

use serde_json::{Value, json};

use super::apply;
use super::routes::Target;
use super::store::key;
use super::{FakeCluster, lock};

const NOW: &str = "2026-01-01T00:00:00Z";

fn condition(kind: &str, reason: Option<&str>, message: Option<&str>) -> Value {
    let mut c =
        json!({"type": kind, "status": "True", "lastProbeTime": NOW, "lastTransitionTime": NOW});
    if let Some(r) = reason {
        c["reason"] = json!(r);
    }
    if let Some(m) = message {
        c["message"] = json!(m);
    }
    c
}

/// Whether the Job's conditions say it is finished, or about to be.
fn finishing(job: &Value) -> bool {
    job["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| {
            c["status"] == "True"
                && ["Complete", "Failed", "FailureTarget", "SuccessCriteriaMet"]
                    .contains(&c["type"].as_str().unwrap_or(""))
        })
}

impl FakeCluster {
    /// Changes the status of Job `name` in `namespace` with `f` (nothing when it is gone);
    /// returns the Job as it was before.
    fn job_status(&self, namespace: &str, name: &str, f: impl FnOnce(&mut Value)) -> Option<Value> {
        let k = key("/apis/batch/v1", "jobs", namespace, name);
        let mut state = lock(&self.inner);
        let before = state.objects.get(&k).cloned()?;
        let mut job = before.clone();
        if !job["status"].is_object() {
            job["status"] = json!({});
        }
        f(&mut job["status"]);
        state.store(k, job, "MODIFIED");
        drop(state);
        self.inner.changed.notify_waiters();
        Some(before)
    }

    /// A new Job: its start, its first pod, and its deadline.
    pub(super) fn start_job(&self, namespace: &str, job: &Value) {
        let name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        self.job_status(namespace, &name, |s| {
            s["startTime"] = json!(NOW);
            s["active"] = json!(1);
            s["ready"] = json!(0);
        });
        self.start_job_pod(namespace, job);
        if let Some(secs) = job["spec"]["activeDeadlineSeconds"].as_u64() {
            let cluster = self.clone();
            let namespace = namespace.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(secs)).await;
                cluster.deadline_passed(&namespace, &name).await;
            });
        }
    }

    /// Makes a pod of the Job and has the kubelet run it.
    fn start_job_pod(&self, namespace: &str, job: &Value) {
        let job_name = job["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let uid = job["metadata"]["uid"].clone();
        let template = &job["spec"]["template"];
        let mut labels = template["metadata"]["labels"].clone();
        if !labels.is_object() {
            labels = json!({});
        }
        for (k, v) in [
            ("batch.kubernetes.io/job-name", json!(job_name)),
            ("job-name", json!(job_name)),
            ("batch.kubernetes.io/controller-uid", uid.clone()),
            ("controller-uid", uid.clone()),
        ] {
            labels[k] = v;
        }
        let pod_name = format!("{job_name}-{:05x}", lock(&self.inner).next() & 0xfffff);
        let pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": labels,
                "ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": job_name,
                                     "uid": uid, "controller": true, "blockOwnerDeletion": true}]},
            "spec": template["spec"].clone(),
            "status": {"phase": "Pending"},
        });
        let mut managers = Vec::new();
        apply::track_update(None, &pod, "kube-controller-manager", "v1", &mut managers);
        let _ = self.create_managed(
            &Target::collection("/api/v1", "pods", namespace),
            pod.clone(),
            managers,
        );
        if lock(&self.inner)
            .objects
            .contains_key(&key("/api/v1", "pods", namespace, &pod_name))
        {
            self.start_pod(namespace, &pod_name, Some(job_name), &pod);
        }
    }

    /// The kubelet says a pod of Job `job` ended (not deleted): the Job's next step.
    pub(super) fn job_pod_ended(&self, namespace: &str, job: &str, succeeded: bool) {
        let k = key("/apis/batch/v1", "jobs", namespace, job);
        let Some(current) = lock(&self.inner).objects.get(&k).cloned() else {
            return;
        };
        if finishing(&current) || current["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        if succeeded {
            self.job_status(namespace, job, |s| {
                s["active"] = json!(0);
                s["ready"] = json!(0);
                s["succeeded"] = json!(s["succeeded"].as_i64().unwrap_or(0) + 1);
                s["conditions"] = json!([condition(
                    "SuccessCriteriaMet",
                    Some("CompletionsReached"),
                    Some("Reached expected number of succeeded pods")
                )]);
            });
            self.job_status(namespace, job, |s| {
                s["completionTime"] = json!(NOW);
                let mut c = s["conditions"].as_array().cloned().unwrap_or_default();
                c.push(condition(
                    "Complete",
                    Some("CompletionsReached"),
                    Some("Reached expected number of succeeded pods"),
                ));
                s["conditions"] = json!(c);
            });
            return;
        }
        let failed = current["status"]["failed"].as_i64().unwrap_or(0) + 1;
        let limit = current["spec"]["backoffLimit"].as_i64().unwrap_or(6);
        if failed <= limit {
            self.job_status(namespace, job, |s| s["failed"] = json!(failed));
            self.start_job_pod(namespace, &current);
            return;
        }
        let (reason, message) = (
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        );
        self.job_status(namespace, job, |s| {
            s["active"] = json!(0);
            s["ready"] = json!(0);
            s["failed"] = json!(failed);
            s["conditions"] = json!([condition("FailureTarget", Some(reason), Some(message))]);
        });
        self.job_status(namespace, job, |s| {
            let mut c = s["conditions"].as_array().cloned().unwrap_or_default();
            c.push(condition("Failed", Some(reason), Some(message)));
            s["conditions"] = json!(c);
        });
    }

    /// `activeDeadlineSeconds` passed: the Job fails and its pods go.
    async fn deadline_passed(&self, namespace: &str, job: &str) {
        let k = key("/apis/batch/v1", "jobs", namespace, job);
        let Some(current) = lock(&self.inner).objects.get(&k).cloned() else {
            return;
        };
        if finishing(&current) || current["metadata"]["deletionTimestamp"].is_string() {
            return;
        }
        let (reason, message) = (
            "DeadlineExceeded",
            "Job was active longer than specified deadline",
        );
        self.job_status(namespace, job, |s| {
            s["conditions"] = json!([condition("FailureTarget", Some(reason), Some(message))]);
        });
        let uid = current["metadata"]["uid"].clone();
        let pods = lock(&self.inner).dependents(&uid);
        let active = pods.len() as i64;
        for pod in pods {
            self.delete_key(&pod, super::deletion::Propagation::Background);
        }
        self.inner.changed.notify_waiters();
        self.until(|state| state.dependents(&uid).is_empty()).await;
        self.job_status(namespace, job, |s| {
            s["active"] = json!(0);
            s["ready"] = json!(0);
            s["failed"] = json!(s["failed"].as_i64().unwrap_or(0) + active);
            let mut c = s["conditions"].as_array().cloned().unwrap_or_default();
            c.push(condition("Failed", Some(reason), Some(message)));
            s["conditions"] = json!(c);
        });
    }
}
