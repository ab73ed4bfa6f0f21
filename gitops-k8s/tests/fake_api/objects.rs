//! Writes: admission into namespaces, optimistic concurrency, status and generations, and the
//! rollout of Deployments.

use std::time::Duration;

use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use serde_json::json;

use super::{api_error, cluster, config_map, eventually, from};

#[tokio::test]
async fn objects_are_created_only_in_a_namespace_that_exists() {
    let (_cluster, client) = cluster().await;
    let elsewhere: Api<ConfigMap> = Api::namespaced(client.clone(), "nowhere");
    let status = api_error(
        elsewhere
            .create(&PostParams::default(), &config_map("a", json!({})))
            .await,
    );
    assert_eq!((status.code, status.reason.as_str()), (404, "NotFound"));
    assert_eq!(status.message, "namespaces \"nowhere\" not found");
    // An apply that would create it is refused the same way.
    let apply = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}});
    let status = api_error(
        elsewhere
            .patch("a", &PatchParams::apply("m"), &Patch::Apply(apply))
            .await,
    );
    assert_eq!(status.code, 404);
    let here: Api<ConfigMap> = Api::namespaced(client, "t");
    here.create(&PostParams::default(), &config_map("a", json!({})))
        .await
        .unwrap();
    let status = api_error(
        here.create(&PostParams::default(), &config_map("a", json!({})))
            .await,
    );
    assert_eq!(
        (status.code, status.reason.as_str()),
        (409, "AlreadyExists")
    );
}

#[tokio::test]
async fn a_replace_from_a_stale_version_conflicts_and_never_sets_the_status() {
    let (cluster, client) = cluster().await;
    let api: Api<Deployment> = Api::namespaced(client, "t");
    let made = api
        .create(
            &PostParams::default(),
            &from(json!({"metadata": {"name": "web"}, "spec": {"replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "a"}]}}}})),
        )
        .await
        .unwrap();
    assert_eq!(made.metadata.generation, Some(1));
    let current = api.get("web").await.unwrap();

    // A label is metadata: no new generation. The status in a replace is not taken.
    let mut relabelled = current.clone();
    relabelled.metadata.labels = Some([("tier".to_owned(), "front".to_owned())].into());
    relabelled.status = Some(from(json!({"replicas": 42})));
    let relabelled = api
        .replace("web", &PostParams::default(), &relabelled)
        .await
        .unwrap();
    assert_eq!(relabelled.metadata.generation, Some(1));
    assert_ne!(relabelled.status.unwrap().replicas, Some(42));

    // The version read before that change is stale now.
    let mut stale = current;
    stale.spec.as_mut().unwrap().replicas = Some(3);
    let status = api_error(api.replace("web", &PostParams::default(), &stale).await);
    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
    assert!(
        status.message.contains("the object has been modified"),
        "{}",
        status.message
    );
    // From the latest version: a new generation, rolled out by the controller.
    let mut latest = api.get("web").await.unwrap();
    latest.spec.as_mut().unwrap().replicas = Some(3);
    let replaced = api
        .replace("web", &PostParams::default(), &latest)
        .await
        .unwrap();
    assert_eq!(replaced.metadata.generation, Some(2));
    let live = cluster
        .get("/apis/apps/v1", "deployments", "t", "web")
        .unwrap();
    assert_eq!(live["status"]["observedGeneration"], 2);
    assert_eq!(live["status"]["availableReplicas"], 3);
    // The status subresource sets the status.
    let status =
        json!({"status": {"replicas": 3, "availableReplicas": 1, "observedGeneration": 2}});
    api.patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let live = cluster
        .get("/apis/apps/v1", "deployments", "t", "web")
        .unwrap();
    assert_eq!(live["status"]["availableReplicas"], 1);
}

#[tokio::test]
async fn a_deployment_with_min_ready_seconds_rolls_out_only_after_them() {
    let cluster = FakeCluster::new();
    let client = cluster.client();
    super::create_namespace(&client, "t").await;
    let api: Api<Deployment> = Api::namespaced(client, "t");
    let spec = |image: &str, min_ready: u64| {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
               "spec": {"replicas": 2, "minReadySeconds": min_ready,
                        "selector": {"matchLabels": {"app": "web"}},
                        "template": {"metadata": {"labels": {"app": "web"}},
                                     "spec": {"containers": [{"name": "web", "image": image}]}}}})
    };
    let apply = PatchParams::apply("gitops");
    api.patch("web", &apply, &Patch::Apply(spec("app:1", 0)))
        .await
        .unwrap();
    let status = |c: &FakeCluster| {
        c.get("/apis/apps/v1", "deployments", "t", "web").unwrap()["status"].clone()
    };
    assert_eq!(
        status(&cluster),
        json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
               "availableReplicas": 2, "readyReplicas": 2})
    );
    // The new replicas are ready, not yet available; the old ones still count.
    api.patch("web", &apply, &Patch::Apply(spec("app:2", 1)))
        .await
        .unwrap();
    assert_eq!(
        status(&cluster),
        json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 2,
               "availableReplicas": 2, "readyReplicas": 4})
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        status(&cluster)["replicas"],
        4,
        "not before minReadySeconds"
    );
    eventually("the rollout ends", || status(&cluster)["replicas"] == 2).await;
    assert_eq!(status(&cluster)["availableReplicas"], 2);
}
