//! Waiting for Deployments and StatefulSets to roll out, with a watch.

use std::time::Duration;

use gitops_core::backend::{BackendError, LogStream, StageContext};
use kube::api::DynamicObject;
use serde_json::Value;

use super::manifests::Manifest;
use crate::KubernetesBackend;
use crate::api::api_error;
use crate::wait::{self, Selector, WaitError};

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
    /// Waits for a Deployment or StatefulSet to roll out.
    pub(super) async fn rollout(
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
            ctx.cancellation(),
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
            Ok(Err(message)) => Err(BackendError::failed(message)),
            Err(WaitError::Cancelled) => Err(BackendError::Cancelled),
            Err(WaitError::TimedOut) => {
                let progress = match api.get(&m.name).await {
                    Ok(o) => serde_json::to_value(&o)
                        .ok()
                        .and_then(|v| rollout_pending(&m.kind, &v))
                        .unwrap_or_else(|| "done just now".to_owned()),
                    Err(e) => e.to_string(),
                };
                Err(BackendError::failed(format!(
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
