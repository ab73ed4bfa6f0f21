//! Watches: resumption from a resource version, `410 Expired`, selectors, timeouts.

use futures_util::StreamExt;
use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{
    DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use serde_json::json;

use super::{cluster, config_map};

/// The events of a watch from `version` that ends after a second, as `TYPE name`.
async fn events(api: &Api<ConfigMap>, params: &WatchParams, version: &str) -> Vec<String> {
    let stream = api
        .watch(&params.clone().timeout(1), version)
        .await
        .unwrap();
    let mut stream = std::pin::pin!(stream);
    let mut out = Vec::new();
    while let Some(event) = stream.next().await {
        let name = |c: &ConfigMap| c.metadata.name.clone().unwrap_or_default();
        out.push(match event.unwrap() {
            WatchEvent::Added(c) => format!("ADDED {}", name(&c)),
            WatchEvent::Modified(c) => format!("MODIFIED {}", name(&c)),
            WatchEvent::Deleted(c) => format!("DELETED {}", name(&c)),
            WatchEvent::Bookmark(_) => "BOOKMARK".to_owned(),
            WatchEvent::Error(e) => format!("ERROR {} {}", e.code, e.reason),
        });
    }
    out
}

#[tokio::test]
async fn a_watch_resumes_after_the_resource_version_it_is_given() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let pp = PostParams::default();
    api.create(&pp, &config_map("a", json!({"v": "1"})))
        .await
        .unwrap();
    let listed = api.list(&ListParams::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();
    let b = api.create(&pp, &config_map("b", json!({}))).await.unwrap();
    let after_b = b.metadata.resource_version.unwrap();
    let patch = Patch::Merge(json!({"data": {"v": "2"}}));
    api.patch("a", &PatchParams::default(), &patch)
        .await
        .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();

    // Every change after the list's version, in order, and nothing before it.
    let all = events(&api, &WatchParams::default(), &version).await;
    assert_eq!(all, ["ADDED b", "MODIFIED a", "DELETED b"]);
    // From a later version, only what came after it.
    let later = events(&api, &WatchParams::default(), &after_b).await;
    assert_eq!(later, ["MODIFIED a", "DELETED b"]);
    // From no version (or 0): the current objects as ADDED, then what comes.
    let fresh = events(&api, &WatchParams::default(), "0").await;
    assert_eq!(fresh, ["ADDED a"]);
}

#[tokio::test]
async fn a_watch_from_a_compacted_version_is_told_410_expired_and_a_new_list_recovers() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let pp = PostParams::default();
    let old = api.create(&pp, &config_map("a", json!({}))).await.unwrap();
    let old = old.metadata.resource_version.unwrap();
    api.create(&pp, &config_map("b", json!({}))).await.unwrap();
    cluster.compact();
    // As an API server does: 200, then one ERROR event with the status, then the end.
    let expired = events(&api, &WatchParams::default(), &old).await;
    assert_eq!(expired, ["ERROR 410 Expired"]);
    // Listing again gives a version to watch from.
    let listed = api.list(&ListParams::default()).await.unwrap();
    let version = listed.metadata.resource_version.unwrap();
    api.create(&pp, &config_map("c", json!({}))).await.unwrap();
    assert_eq!(
        events(&api, &WatchParams::default(), &version).await,
        ["ADDED c"]
    );
}

#[tokio::test]
async fn only_the_last_changes_are_kept_for_watches_to_resume_from() {
    let cluster = FakeCluster::new().with_history(3);
    let client = cluster.client();
    super::create_namespace(&client, "t").await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let pp = PostParams::default();
    let mut versions = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let made = api.create(&pp, &config_map(name, json!({}))).await.unwrap();
        versions.push(made.metadata.resource_version.unwrap());
    }
    // After `a` the changes b..e are four: more than three, so b's is forgotten.
    assert_eq!(
        events(&api, &WatchParams::default(), &versions[0]).await,
        ["ERROR 410 Expired"]
    );
    // After `b`: c, d and e, all kept.
    assert_eq!(
        events(&api, &WatchParams::default(), &versions[1]).await,
        ["ADDED c", "ADDED d", "ADDED e"]
    );
    assert_eq!(
        cluster.resource_version().to_string(),
        versions[4],
        "the last change's version is the cluster's"
    );
}

#[tokio::test]
async fn watches_and_lists_honour_label_and_field_selectors() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let pp = PostParams::default();
    let labelled = |name: &str, tier: &str| {
        super::from::<ConfigMap>(json!({"metadata": {"name": name, "labels": {"tier": tier}}}))
    };
    api.create(&pp, &labelled("web", "front")).await.unwrap();
    api.create(&pp, &labelled("db", "back")).await.unwrap();
    api.create(&pp, &config_map("plain", json!({})))
        .await
        .unwrap();
    let names = |list: kube::core::ObjectList<ConfigMap>| {
        list.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let lp = |labels: &str| ListParams::default().labels(labels);
    assert_eq!(names(api.list(&lp("tier=front")).await.unwrap()), ["web"]);
    assert_eq!(
        names(api.list(&lp("tier!=front")).await.unwrap()),
        ["db", "plain"]
    );
    assert_eq!(names(api.list(&lp("tier")).await.unwrap()), ["db", "web"]);
    assert_eq!(names(api.list(&lp("!tier")).await.unwrap()), ["plain"]);
    let by_name = ListParams::default().fields("metadata.name=db");
    assert_eq!(names(api.list(&by_name).await.unwrap()), ["db"]);
    let wp = WatchParams::default().labels("tier=back");
    assert_eq!(events(&api, &wp, "0").await, ["ADDED db"]);
    let wp = WatchParams::default().fields("metadata.name=plain");
    assert_eq!(events(&api, &wp, "0").await, ["ADDED plain"]);
}

#[tokio::test]
async fn a_watch_ends_at_its_timeout() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let started = std::time::Instant::now();
    assert!(events(&api, &WatchParams::default(), "0").await.is_empty());
    let took = started.elapsed();
    assert!(
        took >= std::time::Duration::from_millis(900) && took < std::time::Duration::from_secs(5),
        "{took:?}"
    );
}
