//! Server-side apply: who owns which field, conflicts and `force`, shared fields, removal of
//! what an applier stops applying, and lists merged by name.

use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

use super::{api_error, cluster};

/// The ConfigMap `settings` with `data` (none when `data` is null).
fn cm(data: Value) -> Value {
    let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}});
    if !data.is_null() {
        cm["data"] = data;
    }
    cm
}

async fn apply(
    api: &Api<ConfigMap>,
    manager: &str,
    force: bool,
    object: Value,
) -> kube::Result<ConfigMap> {
    let mut params = PatchParams::apply(manager);
    if force {
        params = params.force();
    }
    api.patch("settings", &params, &Patch::Apply(object)).await
}

/// The fields (`fieldsV1`) `manager` owns by `operation`, or `Null`.
fn owned(cluster: &FakeCluster, manager: &str, operation: &str) -> Value {
    let object = cluster
        .get("/api/v1", "configmaps", "t", "settings")
        .unwrap();
    object["metadata"]["managedFields"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["manager"] == manager && m["operation"] == operation)
        .map(|m| m["fieldsV1"].clone())
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn an_apply_owns_its_fields_and_another_managers_change_to_them_conflicts_unless_forced() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    apply(
        &api,
        "alice",
        false,
        cm(json!({"color": "red", "size": "s"})),
    )
    .await
    .unwrap();
    assert_eq!(
        owned(&cluster, "alice", "Apply"),
        json!({"f:data": {"f:color": {}, "f:size": {}}})
    );

    // Another manager changing alice's field: 409, naming the field and its manager.
    let status = api_error(apply(&api, "bob", false, cm(json!({"color": "blue"}))).await);
    assert_eq!(status.code, 409);
    assert_eq!(status.reason, "Conflict");
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.color"
    );
    let live = cluster
        .get("/api/v1", "configmaps", "t", "settings")
        .unwrap();
    assert_eq!(
        live["data"]["color"], "red",
        "a refused apply changes nothing"
    );

    // Forced: bob's value, and the field is bob's alone.
    let forced = apply(&api, "bob", true, cm(json!({"color": "blue"})))
        .await
        .unwrap();
    assert_eq!(forced.data.unwrap()["color"], "blue");
    assert_eq!(
        owned(&cluster, "alice", "Apply"),
        json!({"f:data": {"f:size": {}}})
    );
    assert_eq!(
        owned(&cluster, "bob", "Apply"),
        json!({"f:data": {"f:color": {}}})
    );
    // Now alice's old value conflicts with bob.
    let status = api_error(
        apply(
            &api,
            "alice",
            false,
            cm(json!({"color": "red", "size": "s"})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"bob\" using v1: .data.color"
    );
}

#[tokio::test]
async fn equal_values_are_shared_and_a_field_goes_when_its_last_applier_stops_applying_it() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    apply(
        &api,
        "alice",
        false,
        cm(json!({"color": "red", "size": "s"})),
    )
    .await
    .unwrap();
    // The same value: no conflict, both own it.
    apply(&api, "bob", false, cm(json!({"color": "red"})))
        .await
        .unwrap();
    assert_eq!(
        owned(&cluster, "bob", "Apply"),
        json!({"f:data": {"f:color": {}}})
    );
    // alice stops applying both: size (hers alone) goes, color (bob's too) stays.
    apply(&api, "alice", false, cm(Value::Null)).await.unwrap();
    let live = cluster
        .get("/api/v1", "configmaps", "t", "settings")
        .unwrap();
    assert_eq!(live["data"], json!({"color": "red"}));
    assert_eq!(
        owned(&cluster, "alice", "Apply"),
        Value::Null,
        "alice owns nothing"
    );
    // bob stops too: nobody owns it, it goes.
    apply(&api, "bob", false, cm(Value::Null)).await.unwrap();
    let live = cluster
        .get("/api/v1", "configmaps", "t", "settings")
        .unwrap();
    assert!(
        live["data"].as_object().is_none_or(|d| d.is_empty()),
        "{live}"
    );
}

#[tokio::test]
async fn an_update_takes_the_fields_it_changes_and_the_applier_then_conflicts_with_it() {
    let (cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    apply(
        &api,
        "alice",
        false,
        cm(json!({"color": "red", "size": "s"})),
    )
    .await
    .unwrap();
    // A merge patch (an update, as `kubectl edit` or a controller makes) by carol.
    let params = PatchParams {
        field_manager: Some("carol".to_owned()),
        ..PatchParams::default()
    };
    api.patch(
        "settings",
        &params,
        &Patch::Merge(json!({"data": {"color": "green"}})),
    )
    .await
    .unwrap();
    assert_eq!(
        owned(&cluster, "carol", "Update"),
        json!({"f:data": {"f:color": {}}})
    );
    assert_eq!(
        owned(&cluster, "alice", "Apply"),
        json!({"f:data": {"f:size": {}}})
    );
    let status = api_error(
        apply(
            &api,
            "alice",
            false,
            cm(json!({"color": "red", "size": "s"})),
        )
        .await,
    );
    assert_eq!(
        status.message,
        "Apply failed with 1 conflict: conflict with \"carol\" using v1: .data.color"
    );
    // Applying without the field leaves carol's value.
    apply(&api, "alice", false, cm(json!({"size": "m"})))
        .await
        .unwrap();
    let live = cluster
        .get("/api/v1", "configmaps", "t", "settings")
        .unwrap();
    assert_eq!(live["data"], json!({"color": "green", "size": "m"}));
}

#[tokio::test]
async fn an_apply_needs_a_field_manager() {
    let (_cluster, client) = cluster().await;
    let api: Api<ConfigMap> = Api::namespaced(client, "t");
    let status = api_error(
        api.patch(
            "settings",
            &PatchParams::default(),
            &Patch::Apply(cm(json!({}))),
        )
        .await,
    );
    assert_eq!(status.code, 400);
    assert!(
        status.message.contains("fieldManager: Required value"),
        "{}",
        status.message
    );
}

fn deployment(containers: Value) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
           "spec": {"selector": {"matchLabels": {"app": "web"}},
                    "template": {"metadata": {"labels": {"app": "web"}},
                                 "spec": {"containers": containers}}}})
}

#[tokio::test]
async fn containers_are_merged_by_name_and_owned_one_by_one() {
    let (cluster, client) = cluster().await;
    let api: Api<Deployment> = Api::namespaced(client, "t");
    let pp = |m: &str| PatchParams::apply(m);
    api.patch(
        "web",
        &pp("gitops"),
        &Patch::Apply(deployment(json!([{"name": "web", "image": "app:1"}]))),
    )
    .await
    .unwrap();
    // A second manager adds a sidecar: no conflict, the first container stays.
    let sidecar = json!([{"name": "proxy", "image": "envoy:1"}]);
    let mut other = deployment(sidecar);
    other["spec"] = json!({"template": {"spec": {"containers": other["spec"]["template"]["spec"]["containers"].clone()}}});
    api.patch("web", &pp("mesh"), &Patch::Apply(other.clone()))
        .await
        .unwrap();
    let names = |d: &Value| -> Vec<String> {
        d["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                format!(
                    "{}={}",
                    c["name"].as_str().unwrap(),
                    c["image"].as_str().unwrap()
                )
            })
            .collect()
    };
    let live = cluster
        .get("/apis/apps/v1", "deployments", "t", "web")
        .unwrap();
    assert_eq!(names(&live), ["web=app:1", "proxy=envoy:1"]);
    let mesh = live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["manager"] == "mesh")
        .unwrap()["fieldsV1"]
        .clone();
    assert_eq!(
        mesh["f:spec"]["f:template"]["f:spec"]["f:containers"],
        json!({"k:{\"name\":\"proxy\"}": {".": {}, "f:name": {}, "f:image": {}}})
    );
    // The first manager's new image: its own container changes, the sidecar stays.
    api.patch(
        "web",
        &pp("gitops"),
        &Patch::Apply(deployment(json!([{"name": "web", "image": "app:2"}]))),
    )
    .await
    .unwrap();
    let live = cluster
        .get("/apis/apps/v1", "deployments", "t", "web")
        .unwrap();
    assert_eq!(names(&live), ["web=app:2", "proxy=envoy:1"]);
    assert_eq!(
        live["metadata"]["generation"], 3,
        "each change of the spec is a generation"
    );
    // The mesh manager drops its sidecar: only that container goes.
    other["spec"]["template"]["spec"]["containers"] = json!([]);
    api.patch("web", &pp("mesh"), &Patch::Apply(other))
        .await
        .unwrap();
    let live = cluster
        .get("/apis/apps/v1", "deployments", "t", "web")
        .unwrap();
    assert_eq!(names(&live), ["web=app:2"]);
}
