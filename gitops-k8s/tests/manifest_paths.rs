//! `with.manifests` stays in the checkout: a directory of manifests is read as `kubectl apply -f
//! DIR` reads it, and a link leading out of the checkout or a FIFO is refused before anything
//! reaches the (in-memory) API server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_core::backend::{Deployer, EnvironmentTarget, Outcome, RunInfo, StageContext};
use gitops_core::testing::push_event;
use gitops_k8s::KubernetesBackend;
use gitops_k8s::testing::FakeCluster;
use serde_json::{Value, json};

fn deploy_ctx(dir: &std::path::Path, with: Value) -> StageContext {
    let info = Arc::new(RunInfo::new("run-3", "release", push_event(), dir));
    let mut ctx = StageContext::new(info, "deploy")
        .with_environment(EnvironmentTarget::new("staging", "staging", None));
    ctx.with = with.as_object().unwrap().clone();
    ctx
}

fn config_map(name: &str) -> String {
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{ name: {name} }}\ndata: {{ a: b }}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_of_manifests_is_read_like_kubectl_reads_it() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s");
    std::fs::create_dir_all(k8s.join("sub")).unwrap();
    std::fs::create_dir_all(dir.path().join("shared")).unwrap();
    std::fs::write(k8s.join("a.yaml"), config_map("a")).unwrap();
    std::fs::write(k8s.join("b.yml"), config_map("b")).unwrap();
    std::fs::write(k8s.join("notes.txt"), "not a manifest").unwrap();
    std::fs::write(k8s.join("sub/c.yaml"), config_map("c")).unwrap();
    std::fs::write(dir.path().join("shared/d.yaml"), config_map("d")).unwrap();
    // A link to a file elsewhere in the checkout is read, as kubectl would.
    std::os::unix::fs::symlink("../shared/d.yaml", k8s.join("d.yaml")).unwrap();
    let done = backend
        .deploy(deploy_ctx(dir.path(), json!({"manifests": "k8s"})))
        .await
        .unwrap();
    assert_eq!(done.outcome, Outcome::Success);
    let mut names: Vec<String> = cluster
        .list("/api/v1", "configmaps", Some("gitops-staging"))
        .iter()
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
        .filter(|n| n.len() == 1)
        .collect();
    names.sort();
    assert_eq!(names, ["a", "b", "d"], "not sub/c.yaml, not notes.txt");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manifests_leading_out_of_the_checkout_or_to_a_fifo_are_refused() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s");
    std::fs::create_dir_all(&k8s).unwrap();
    std::fs::write(k8s.join("a.yaml"), config_map("a")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", k8s.join("passwd.yaml")).unwrap();
    std::os::unix::fs::symlink("../..", dir.path().join("up")).unwrap();
    let fifo = dir.path().join("pipe.yaml");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    for (manifests, want) in [
        (
            json!(["k8s/passwd.yaml"]),
            "`with.manifests`: \"k8s/passwd.yaml\" is a symbolic link to /etc/passwd, which leads out of the checkout",
        ),
        (
            json!("k8s"),
            "`with.manifests`: \"k8s/passwd.yaml\" is a symbolic link to /etc/passwd, which leads out of the checkout",
        ),
        (
            json!(["up/etc/hostname"]),
            "`with.manifests`: \"up/etc/hostname\": \"up\" is a symbolic link to ../.., which leads out of the checkout",
        ),
        (
            json!(["k8s/a.yaml", "pipe.yaml"]),
            "`with.manifests`: \"pipe.yaml\" is a FIFO, not a file or directory",
        ),
    ] {
        let started = Instant::now();
        let err = tokio::time::timeout(
            Duration::from_secs(10),
            backend.deploy(deploy_ctx(dir.path(), json!({ "manifests": manifests }))),
        )
        .await
        .expect("a refused manifest never blocks")
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert_eq!(err.to_string(), format!("invalid parameters: {want}"));
    }
    assert!(
        cluster.list("/api/v1", "namespaces", None).is_empty(),
        "nothing was created"
    );
}
