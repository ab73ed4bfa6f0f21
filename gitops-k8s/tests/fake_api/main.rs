//! Tests of the in-memory API itself (`gitops_k8s::testing::FakeCluster`), through kube's
//! client as the backend uses it: each pins a behaviour of a real API server that the backend
//! relies on, so that where the fake differs from one, a test here shows it.
//!
//! - `watch`: resuming from a resource version, `410 Expired` for a compacted one, selectors;
//! - `apply`: server-side apply's field ownership, conflicts, `force`, shared fields, removal;
//! - `objects`: admission into namespaces, optimistic concurrency, status, generations,
//!   rollouts;
//! - `namespaces`: deletion (`Terminating`, then gone with what it held);
//! - `jobs`: the Job lifecycle (pods, conditions, retries, deadlines) and deletion with each
//!   propagation policy.

mod apply;
mod jobs;
mod namespaces;
mod objects;
mod watch;

use std::time::Duration;

use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::PostParams;
use serde_json::{Value, json};

/// A cluster with the namespace `t`, and a client.
async fn cluster() -> (FakeCluster, kube::Client) {
    let cluster = FakeCluster::new();
    let client = cluster.client();
    create_namespace(&client, "t").await;
    (cluster, client)
}

async fn create_namespace(client: &kube::Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": name}})),
        )
        .await
        .unwrap();
}

/// A typed object from JSON.
fn from<K: serde::de::DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).unwrap()
}

/// A ConfigMap named `name` with `data`.
fn config_map(name: &str, data: Value) -> ConfigMap {
    from(json!({"metadata": {"name": name}, "data": data}))
}

/// The API error of a failed call.
fn api_error<T: std::fmt::Debug>(result: kube::Result<T>) -> Box<kube::core::Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A command that ignores SIGTERM (so that it stops only at the end of its grace period) and
/// says `trapped` once it does.
const STUBBORN: &str = "trap '' TERM; echo trapped; sleep 30";

/// Waits until the pods in `namespace` whose names start with `prefix` have said `trapped`.
async fn wait_trapped(client: &kube::Client, namespace: &str, prefix: &str) {
    use k8s_openapi::api::core::v1::Pod;
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for _ in 0..1000 {
        let list = pods.list(&Default::default()).await.unwrap();
        let mut all = 0;
        let mut ready = 0;
        for p in list.items {
            let name = p.metadata.name.unwrap_or_default();
            if name.starts_with(prefix) {
                all += 1;
                let log = pods
                    .logs(&name, &Default::default())
                    .await
                    .unwrap_or_default();
                ready += usize::from(log.contains("trapped"));
            }
        }
        if all > 0 && all == ready {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the pods {prefix}* never said they ignore SIGTERM");
}

/// Waits (up to 20s) until `f` holds, checking every 20ms.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("never happened: {what}");
}
