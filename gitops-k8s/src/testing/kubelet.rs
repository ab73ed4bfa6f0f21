//! The kubelet: runs a Job pod's container command as a local process (the image is not
//! pulled: the command runs on this machine with the container's `env`, secrets resolved from
//! `secretKeyRef`), keeps its output as the pod's log (`pods/<name>/log`, with `follow`), and
//! writes the pod's status: `Running`, then `Succeeded` or `Failed` with the exit code and the
//! termination message (the file named by `terminationMessagePath`, which the process finds
//! through any env variable whose value is that path). A secret that cannot be resolved keeps
//! the container from being created (`CreateContainerConfigError`), as on a node. A deleted
//! pod's process is stopped, and the pod is gone once it has ended.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use gitops_core::backend::Cancellation;
use gitops_core::backend::process::{Exit, StopPolicy, StopSignal, run_streaming};
use serde_json::{Value, json};

use super::routes::{Target, async_stream, not_found, streaming};
use super::store::{PodLog, key};
use super::{FakeBody, FakeCluster, lock};

const NOW: &str = "2026-01-01T00:00:00Z";

impl FakeCluster {
    /// Runs the first container of `pod` (of Job `job`).
    pub(super) fn start_pod(&self, namespace: &str, name: &str, job: Option<String>, pod: &Value) {
        let token = Cancellation::new();
        {
            let mut state = lock(&self.inner);
            let id = (namespace.to_owned(), name.to_owned());
            state.running.insert(id.clone(), token.clone());
            state.logs.insert(id, PodLog::default());
        }
        let container = pod["spec"]["containers"][0].clone();
        // SIGTERM, then SIGKILL after the pod's grace period, as a node stops a deleted pod.
        let grace = pod["spec"]["terminationGracePeriodSeconds"]
            .as_u64()
            .unwrap_or(30);
        let stop = StopPolicy::new(StopSignal::Terminate, Duration::from_secs(grace));
        let cluster = self.clone();
        let (namespace, name) = (namespace.to_owned(), name.to_owned());
        tokio::spawn(async move {
            cluster
                .run_pod(&namespace, &name, job.as_deref(), &container, token, stop)
                .await;
        });
    }

    async fn run_pod(
        &self,
        namespace: &str,
        pod: &str,
        job: Option<&str>,
        container: &Value,
        token: Cancellation,
        stop: StopPolicy,
    ) {
        let argv: Vec<String> = container["command"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(container["args"].as_array().into_iter().flatten())
            .filter_map(|v| v.as_str().map(str::to_owned))
            .collect();
        let message_path = container["terminationMessagePath"]
            .as_str()
            .unwrap_or("/dev/termination-log")
            .to_owned();
        let message_file = self
            .inner
            .workdir
            .path()
            .join(format!("{namespace}-{pod}.msg"));
        let Some((program, args)) = argv.split_first() else {
            self.finish(
                namespace,
                pod,
                job,
                container,
                Err("no command".into()),
                &message_file,
            );
            return;
        };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            .current_dir(self.inner.workdir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default());
        for var in container["env"].as_array().into_iter().flatten() {
            let Some(name) = var["name"].as_str() else {
                continue;
            };
            let value = match (var["value"].as_str(), &var["valueFrom"]["secretKeyRef"]) {
                (Some(value), _) => value.to_owned(),
                (None, reference) if reference.is_object() => {
                    match self.secret_value(namespace, reference) {
                        Ok(value) => value,
                        // As a kubelet does: the container is not created, the pod waits.
                        Err(message) => {
                            lock(&self.inner)
                                .running
                                .remove(&(namespace.to_owned(), pod.to_owned()));
                            let waiting = json!({"phase": "Pending", "containerStatuses": [
                                {"name": container["name"], "ready": false, "restartCount": 0, "state": {"waiting": {
                                    "reason": "CreateContainerConfigError", "message": message}}}]});
                            self.update_status("/api/v1", "pods", namespace, pod, waiting);
                            return;
                        }
                    }
                }
                _ => continue,
            };
            if value == message_path {
                cmd.env(name, &message_file);
            } else {
                cmd.env(name, value);
            }
        }
        let running = json!({"phase": "Running", "startTime": NOW, "containerStatuses": [
            {"name": container["name"], "ready": true, "restartCount": 0, "state": {"running": {"startedAt": NOW}}}]});
        self.update_status("/api/v1", "pods", namespace, pod, running);
        let id = (namespace.to_owned(), pod.to_owned());
        let inner = self.inner.clone();
        let exit = run_streaming(cmd, &token, stop, |_, line| {
            let mut state = lock(&inner);
            if let Some(log) = state.logs.get_mut(&id) {
                log.text.push_str(line);
                log.text.push('\n');
            }
            drop(state);
            inner.changed.notify_waiters();
        })
        .await
        .map_err(|e| e.to_string());
        self.finish(namespace, pod, job, container, exit, &message_file);
    }

    /// The value a `secretKeyRef` names, decoded, as a kubelet reads it; or why there is none
    /// (its message).
    fn secret_value(&self, namespace: &str, reference: &Value) -> Result<String, String> {
        let (name, key) = (
            reference["name"].as_str().unwrap_or_default(),
            reference["key"].as_str().unwrap_or_default(),
        );
        let secret = self
            .get("/api/v1", "secrets", namespace, name)
            .ok_or_else(|| format!("secret \"{name}\" not found"))?;
        let encoded = secret["data"][key].clone();
        if encoded.is_null() {
            return Err(format!(
                "couldn't find key {key} in Secret {namespace}/{name}"
            ));
        }
        let bytes: k8s_openapi::ByteString = serde_json::from_value(encoded)
            .map_err(|e| format!("Secret {namespace}/{name} key {key}: {e}"))?;
        String::from_utf8(bytes.0).map_err(|e| format!("Secret {namespace}/{name}: {e}"))
    }

    /// Sets an object's status, as its controller does.
    pub(super) fn update_status(
        &self,
        api: &str,
        plural: &str,
        namespace: &str,
        name: &str,
        status: Value,
    ) {
        let k = key(api, plural, namespace, name);
        let mut state = lock(&self.inner);
        if let Some(mut object) = state.objects.get(&k).cloned() {
            object["status"] = status;
            state.store(k, object, "MODIFIED");
        }
        drop(state);
        self.inner.changed.notify_waiters();
    }

    /// The pod's process ended: its status, then its Job's next step; a deleted pod goes.
    fn finish(
        &self,
        namespace: &str,
        pod: &str,
        job: Option<&str>,
        container: &Value,
        outcome: Result<Exit, String>,
        message_file: &Path,
    ) {
        let message = std::fs::read_to_string(message_file).unwrap_or_default();
        let _ = std::fs::remove_file(message_file);
        let k = key("/api/v1", "pods", namespace, pod);
        let deleted = {
            let mut state = lock(&self.inner);
            let id = (namespace.to_owned(), pod.to_owned());
            if let Some(log) = state.logs.get_mut(&id) {
                log.done = true;
            }
            let was_running = state.running.remove(&id).is_some();
            match state.objects.get(&k) {
                Some(p) => !was_running || p["metadata"]["deletionTimestamp"].is_string(),
                None => true,
            }
        };
        let (code, reason) = match &outcome {
            Ok(Exit::Code(0)) => (0, "Completed"),
            Ok(Exit::Code(c)) => (*c, "Error"),
            Ok(Exit::Signal(s)) => (128 + s, "Error"),
            Ok(Exit::Cancelled) => (137, "Error"),
            Err(_) => (128, "ContainerCannotRun"),
        };
        let phase = if code == 0 { "Succeeded" } else { "Failed" };
        self.update_status(
            "/api/v1",
            "pods",
            namespace,
            pod,
            json!({"phase": phase, "containerStatuses": [{"name": container["name"], "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason, "message": message,
                                         "startedAt": NOW, "finishedAt": NOW}}}]}),
        );
        if deleted {
            // Deleted while it ran (its Job, its namespace, a deadline): it goes now.
            lock(&self.inner).remove(&k);
            self.inner.changed.notify_waiters();
            return;
        }
        if let Some(job) = job {
            self.job_pod_ended(namespace, job, code == 0);
        }
    }

    /// A pod's log; with `follow`, streamed until the pod's process ends.
    pub(super) fn log(
        &self,
        target: &Target,
        q: &BTreeMap<String, String>,
    ) -> http::Response<FakeBody> {
        let name = target.name.clone().unwrap_or_default();
        let id = (target.namespace.clone(), name.clone());
        if !lock(&self.inner).objects.contains_key(&key(
            "/api/v1",
            "pods",
            &target.namespace,
            &name,
        )) {
            return not_found("pods", &name);
        }
        let follow = q.get("follow").is_some_and(|f| f == "true");
        let inner = self.inner.clone();
        let stream = async_stream(move |tx| async move {
            let mut sent = 0;
            loop {
                let notified = inner.changed.notified();
                let (chunk, done) = {
                    let state = lock(&inner);
                    match state.logs.get(&id) {
                        Some(log) => (log.text[sent..].to_owned(), log.done),
                        None => (String::new(), true),
                    }
                };
                sent += chunk.len();
                if !chunk.is_empty() && tx.send(Bytes::from(chunk)).await.is_err() {
                    return;
                }
                if done || !follow {
                    return;
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tx.closed() => return,
                }
            }
        });
        streaming(stream)
    }
}
