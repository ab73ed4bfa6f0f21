//! A cancelled deploy puts back what it changed (on the in-memory API): objects it changed as
//! the previous deploy applied them, objects it pruned made again, objects it created deleted,
//! the namespace's record restored; a cancelled first deploy leaves no namespace.

use std::sync::Arc;
use std::time::Duration;

use gitops_core::backend::{BackendError, Deployer, EnvironmentTarget, RunInfo, StageContext};
use gitops_core::testing::push_event;
use gitops_k8s::KubernetesBackend;
use gitops_k8s::testing::FakeCluster;
use serde_json::{Value, json};

const NS: &str = "gitops-staging";

fn deployment(image_note: &str, min_ready: u32) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{ name: web, annotations: {{ note: \"{image_note}\" }} }}\n\
         spec:\n  replicas: 1\n  minReadySeconds: {min_ready}\n  selector: {{ matchLabels: {{ app: web }} }}\n\
         \x20 template:\n    metadata: {{ labels: {{ app: web }} }}\n    spec:\n      containers:\n\
         \x20       - {{ name: web, image: \"registry.test/web:placeholder\" }}\n"
    )
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: {name} }}\ndata: {{ a: b }}\n")
}

fn ctx(dir: &std::path::Path, files: &[&str], image: &str) -> StageContext {
    let run = Arc::new(RunInfo::new("run-9", "release", push_event(), dir));
    let mut ctx = StageContext::new(run, "deploy")
        .with_environment(EnvironmentTarget::new("staging", "staging", None));
    ctx.with = json!({"manifests": files, "image": image})
        .as_object()
        .unwrap()
        .clone();
    ctx
}

/// Deploys `ctx` and cancels it once its Deployment is applied (and waits to roll out).
async fn cancel_while_rolling_out(
    cluster: &FakeCluster,
    backend: &KubernetesBackend,
    ctx: StageContext,
    image: &str,
) {
    let token = gitops_core::backend::Cancellation::new();
    let ctx = ctx.with_cancel(token.clone());
    let deploying = tokio::spawn({
        let backend = backend.clone();
        async move { backend.deploy(ctx).await }
    });
    let applied = |c: &FakeCluster| {
        c.get("/apis/apps/v1", "deployments", NS, "web")
            .is_some_and(|d| d["spec"]["template"]["spec"]["containers"][0]["image"] == image)
    };
    for _ in 0..500 {
        if applied(cluster) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(applied(cluster), "the slow release was applied");
    tokio::time::sleep(Duration::from_millis(200)).await;
    token.cancel();
    let result = tokio::time::timeout(Duration::from_secs(30), deploying)
        .await
        .expect("the cancelled deploy returns")
        .unwrap();
    assert!(matches!(result, Err(BackendError::Cancelled)), "{result:?}");
}

fn record(cluster: &FakeCluster) -> Value {
    cluster.get("/api/v1", "namespaces", "", NS).unwrap()["metadata"]["annotations"]
        ["gitops.dev/applied"]
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_deploy_puts_back_what_it_changed_pruned_and_created() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write("web-v1.yaml", deployment("first", 0));
    write("web-v2.yaml", deployment("second", 3600));
    write("old.yaml", config_map("old"));
    write("new.yaml", config_map("new"));

    let v1 = ctx(
        dir.path(),
        &["web-v1.yaml", "old.yaml"],
        "registry.test/web:v1",
    );
    backend.deploy(v1).await.unwrap();
    let before = record(&cluster);
    let web = |c: &FakeCluster| c.get("/apis/apps/v1", "deployments", NS, "web").unwrap();
    let generation = web(&cluster)["metadata"]["generation"].clone();

    // v2 changes the Deployment, prunes `old` and adds `new`; cancelled while it rolls out.
    let v2 = ctx(
        dir.path(),
        &["web-v2.yaml", "new.yaml"],
        "registry.test/web:v2",
    );
    cancel_while_rolling_out(&cluster, &backend, v2, "registry.test/web:v2").await;

    let now = web(&cluster);
    let spec = &now["spec"];
    assert_eq!(
        spec["template"]["spec"]["containers"][0]["image"],
        "registry.test/web:v1"
    );
    assert_eq!(now["metadata"]["annotations"]["note"], "first");
    assert_eq!(spec["minReadySeconds"], 0, "v2's field is gone");
    assert!(
        now["metadata"]["generation"].as_i64() > generation.as_i64(),
        "put back as a new generation"
    );
    assert_eq!(
        now["status"]["observedGeneration"],
        now["metadata"]["generation"]
    );
    assert!(
        cluster.get("/api/v1", "configmaps", NS, "old").is_some(),
        "the pruned object is back"
    );
    assert!(
        cluster.get("/api/v1", "configmaps", NS, "new").is_none(),
        "the created object is gone"
    );
    assert_eq!(record(&cluster), before, "the record of what was applied");
    // What gitops owns is what it applied: the put-back is an apply of that, not an update.
    let managers: Vec<String> = now["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["manager"].as_str().unwrap(),
                m["operation"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(managers, ["gitops Apply"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancelled_first_deploy_leaves_no_namespace() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("web.yaml"), deployment("slow", 3600)).unwrap();
    let first = ctx(dir.path(), &["web.yaml"], "registry.test/web:v1");
    cancel_while_rolling_out(&cluster, &backend, first, "registry.test/web:v1").await;
    assert!(cluster.get("/api/v1", "namespaces", "", NS).is_none());
    assert!(cluster.namespace_contents(NS).is_empty());
}
