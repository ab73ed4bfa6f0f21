//! Deleting a namespace: `Terminating` while what it holds is deleted (running pods stopped),
//! no new content meanwhile, then gone.

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::json;

use super::{STUBBORN, api_error, cluster, config_map, eventually, from, wait_trapped};

#[tokio::test]
async fn a_deleted_namespace_terminates_with_what_it_holds_and_then_is_gone() {
    let (cluster, client) = cluster().await;
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), "t");
    config_maps
        .create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let jobs: Api<Job> = Api::namespaced(client.clone(), "t");
    // A container that ignores SIGTERM: it stops at the end of its grace period, so the
    // namespace stays terminating that long.
    let job = json!({"metadata": {"name": "slow"}, "spec": {"backoffLimit": 0, "template": {"spec": {
        "restartPolicy": "Never", "terminationGracePeriodSeconds": 2,
        "containers": [{"name": "c", "image": "busybox",
                        "command": ["sh", "-c", STUBBORN]}]}}}});
    jobs.create(&PostParams::default(), &from(job))
        .await
        .unwrap();
    wait_trapped(&client, "t", "slow-").await;
    let mut contents = cluster.namespace_contents("t");
    contents.retain(|c| !c.starts_with("pods/"));
    assert_eq!(contents, ["configmaps/a", "jobs/slow"]);

    let namespaces: Api<Namespace> = Api::all(client.clone());
    let deleting = namespaces
        .delete("t", &DeleteParams::background())
        .await
        .unwrap();
    // The answer is the namespace, terminating.
    let deleting = deleting.left().expect("the namespace, still there");
    assert!(deleting.metadata.deletion_timestamp.is_some());
    assert_eq!(
        deleting.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // Meanwhile: no new content, and deleting it again is a conflict.
    let status = api_error(
        config_maps
            .create(&PostParams::default(), &config_map("b", json!({})))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        status.message,
        "configmaps \"b\" is forbidden: unable to create new content in namespace t because it is being terminated"
    );
    let status = api_error(namespaces.delete("t", &DeleteParams::background()).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert_eq!(cluster.running_processes(), 1, "its pod is still stopping");
    // Then it is gone, with everything it held, and its pod's process stopped.
    eventually("the namespace is gone", || {
        cluster.get("/api/v1", "namespaces", "", "t").is_none()
    })
    .await;
    assert!(cluster.namespace_contents("t").is_empty());
    assert_eq!(cluster.running_processes(), 0);
    let status = api_error(namespaces.get("t").await);
    assert_eq!(status.code, 404);
}

#[tokio::test]
async fn a_namespace_is_created_active_with_its_finalizer() {
    let (cluster, _client) = cluster().await;
    let ns = cluster.get("/api/v1", "namespaces", "", "t").unwrap();
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
}
