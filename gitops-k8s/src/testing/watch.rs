//! Watches (`?watch=true`) and the label and field selectors that lists and watches take.
//!
//! A watch without a resource version (or from `0`) starts with every matching object as
//! `ADDED`; from a version, it sends the changes after it, in order, then the new ones as they
//! come, until `timeoutSeconds`. A version older than the changes the fake still holds is
//! answered, as an API server does, with an `ERROR` event whose status is `410` (`Expired`):
//! the client must list again.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{Value, json};

use super::routes::{Target, async_stream, line, status_object, streaming};
use super::store::Key;
use super::{FakeBody, FakeCluster, lock};

/// Whether `object` matches a label selector (`a=b,c!=d,e,!f`) and a field selector
/// (`metadata.name=x`, `metadata.namespace=y`, `!=` too).
pub(super) fn matches(object: &Value, labels: Option<&str>, fields: Option<&str>) -> bool {
    let label = |k: &str| object["metadata"]["labels"][k].as_str().map(str::to_owned);
    let terms = |s: Option<&str>| {
        s.unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    let label_ok = terms(labels).iter().all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            label(k).as_deref() != Some(v)
        } else if let Some((k, v)) = term.split_once('=') {
            label(k.trim_end_matches('=')).as_deref() == Some(v)
        } else if let Some(k) = term.strip_prefix('!') {
            label(k).is_none()
        } else {
            label(term).is_some()
        }
    });
    let field = |k: &str| match k {
        "metadata.name" => object["metadata"]["name"].as_str(),
        "metadata.namespace" => object["metadata"]["namespace"].as_str(),
        _ => None,
    };
    let field_ok = terms(fields).iter().all(|term| {
        if let Some((k, v)) = term.split_once("!=") {
            field(k) != Some(v)
        } else if let Some((k, v)) = term.split_once('=') {
            field(k.trim_end_matches('=')) == Some(v)
        } else {
            true
        }
    });
    label_ok && field_ok
}

impl FakeCluster {
    /// A watch of `target` (see the module docs).
    pub(super) fn watch(
        &self,
        target: &Target,
        q: &BTreeMap<String, String>,
    ) -> http::Response<FakeBody> {
        let from: u64 = q
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let timeout = q
            .get("timeoutSeconds")
            .and_then(|v| v.parse().ok())
            .unwrap_or(290u64);
        let labels = q.get("labelSelector").cloned();
        let fields = q.get("fieldSelector").cloned();
        let (api, plural, namespace) = (
            target.api.clone(),
            target.plural.clone(),
            target.namespace.clone(),
        );
        let inner = self.inner.clone();
        // A client may ask for any number: no more than a day, as no watch needs longer.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout.min(86_400));
        let wanted = move |k: &Key, o: &Value| {
            k.api == api
                && k.plural == plural
                && (namespace.is_empty() || k.namespace == namespace)
                && matches(o, labels.as_deref(), fields.as_deref())
        };
        let stream = async_stream(move |tx| async move {
            let mut cursor = from;
            if from == 0 {
                let (initial, rv) = {
                    let state = lock(&inner);
                    let initial: Vec<Value> = state
                        .objects
                        .iter()
                        .filter(|(k, o)| wanted(k, o))
                        .map(|(_, o)| json!({"type": "ADDED", "object": o}))
                        .collect();
                    (initial, state.rv)
                };
                cursor = rv;
                for e in initial {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
            }
            loop {
                let notified = inner.changed.notified();
                let batch: Result<Vec<Value>, u64> = {
                    let state = lock(&inner);
                    let batch = state.events_after(cursor).map(|events| {
                        events
                            .filter(|e| wanted(&e.key, &e.object))
                            .map(|e| json!({"type": e.kind, "object": e.object}))
                            .collect()
                    });
                    cursor = state.rv;
                    batch
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(oldest) => {
                        let expired = status_object(
                            410,
                            "Expired",
                            format!("too old resource version: {from} ({oldest})"),
                        );
                        let _ = tx
                            .send(line(&json!({"type": "ERROR", "object": expired})))
                            .await;
                        return;
                    }
                };
                for e in batch {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep_until(deadline) => return,
                    _ = tx.closed() => return,
                }
            }
        });
        streaming(stream)
    }
}
