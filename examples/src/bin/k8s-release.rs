//! Starter app: a release deployed to a Kubernetes namespace, then a smoke-test Job run there.
//!
//! ```text
//! cargo run -p gitops-examples --features in-memory-k8s --bin k8s-release -- --in-memory   # no cluster needed
//! KUBECONFIG=~/.kube/config cargo run -p gitops-examples --bin k8s-release [-- --keep]
//! ```
//!
//! It embeds the engine with the Kubernetes backend and tags `v1.0.0` in a throwaway repository
//! whose `k8s/app.yaml` holds a Deployment and a Service. The `release` pipeline deploys them to
//! the environment `production` (namespace `gitops-production`, server-side apply, the image set to
//! the release, a wait for the rollout) and then runs a smoke-test Job in that namespace against
//! the Service's address. The app prints the deployment's outputs, the Job's log, and what the
//! namespace holds; then it stops the environment (the namespace is deleted) unless `--keep`.
//!
//! With `--in-memory` it runs against `gitops_k8s::testing::FakeCluster`, whose kubelet runs the
//! Job's command on this machine (the smoke test then only checks that it was given an address).
//! That is test code, so it is built only with the crate's feature `in-memory-k8s`: the `gitops`
//! app and a default build of this starter do not carry it. Without the feature, `--in-memory`
//! says how to turn it on. Otherwise
//! on a real cluster the images (`--image`, default `busybox:1.36`) must be pullable, and the
//! smoke test fetches the page the Deployment serves.

use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_examples::scratch::ScratchRepo;
use gitops_examples::starter::{Error, exit, step_with_logs};
use gitops_k8s::KubernetesBackend;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata: { name: web }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - name: web
          image: busybox:latest
          command: ["sh", "-c", "mkdir -p /www && echo release $RELEASE > /www/index.html && exec httpd -f -p 8080 -h /www"]
          env: [{ name: RELEASE, value: unset }]
          readinessProbe: { tcpSocket: { port: 8080 }, periodSeconds: 1 }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
"#;

fn config(image: &str, smoke: &str) -> String {
    format!(
        r#"version: 1
environments:
  production: {{ backend: k8s, with: {{ manifests: [k8s/app.yaml], service: web }} }}
pipelines:
  release:
    on: {{ tag: {{ semver: ">=1.0.0" }} }}
    stages:
      deploy: {{ deploy: production, with: {{ image: "{image}" }} }}
      smoke:
        needs: deploy
        backend: k8s
        run: '{smoke}'
        env: {{ URL: "${{{{ stages.deploy.outputs.url }}}}" }}
        timeout: 2m
        with: {{ image: "{image}", namespace: "${{{{ stages.deploy.outputs.namespace }}}}" }}
"#
    )
}

/// The backend on an in-memory cluster, and a smoke test that needs no network.
#[cfg(feature = "in-memory-k8s")]
fn in_memory() -> Result<(KubernetesBackend, &'static str), Error> {
    println!("▸ An in-memory cluster (its kubelet runs Jobs on this machine)");
    let cluster = gitops_k8s::testing::FakeCluster::new();
    let smoke = r#"echo "smoke test against $URL"; test -n "$URL" && echo checked=$URL >> "$GITOPS_OUTPUT""#;
    Ok((KubernetesBackend::new(cluster.client()), smoke))
}

/// Without the feature: how to build the in-memory cluster in.
#[cfg(not(feature = "in-memory-k8s"))]
fn in_memory() -> Result<(KubernetesBackend, &'static str), Error> {
    Err("this build has no in-memory cluster (it is test code): run `cargo run -p gitops-examples --features in-memory-k8s --bin k8s-release -- --in-memory`".into())
}

/// A release deployed to a Kubernetes namespace, then a smoke-test Job there.
#[derive(clap::Parser)]
struct Args {
    /// Run against an in-memory cluster (no cluster needed; built with the feature
    /// `in-memory-k8s`).
    #[arg(long)]
    in_memory: bool,
    /// The image of the release and of the smoke test.
    #[arg(long, value_name = "IMAGE", default_value = "busybox:1.36")]
    image: String,
    /// Leave production running at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gitops_examples::output::exit_quietly_on_closed_pipes();
    exit(starter(<Args as clap::Parser>::parse()).await)
}

async fn starter(args: Args) -> Result<(), Error> {
    let (k8s, smoke) = if args.in_memory {
        in_memory()?
    } else {
        println!("▸ The cluster of KUBECONFIG");
        let smoke = r#"wget -q -T 10 -O- "$URL" && echo checked=$URL >> "$GITOPS_OUTPUT""#;
        (KubernetesBackend::from_env().await?, smoke)
    };
    let dir = tempfile::Builder::new()
        .prefix("gitops-k8s-release-")
        .tempdir()?;
    let backend = Arc::new(k8s.clone());
    let registry = BackendRegistry::new()
        .with_executor("k8s", backend.clone())
        .with_deployer("k8s", backend);
    let engine = Engine::open(dir.path().join("state"), registry)?;
    let mut scratch = ScratchRepo::init(&dir.path().join("repo"))?;
    let head = scratch.commit(
        "main",
        None,
        "A web service",
        &[
            (".gitops.yml", &config(&args.image, smoke)),
            ("k8s/app.yaml", APP),
        ],
    )?;
    scratch.set_ref("refs/tags/v1.0.0", &head)?;
    let repo = Repository::open(scratch.path())?;
    let mut options = RunOptions::default();
    options.actor = Some("k8s-release".to_owned());

    println!("▸ Tag v1.0.0: deploy to production, then a smoke-test Job there");
    let outcome = step_with_logs(
        &engine,
        &repo,
        &options,
        &GitEvent::tag_created("starter/web", "v1.0.0", &head),
    )
    .await;
    let result = async {
        let reports = outcome?;
        let deploy = reports
            .iter()
            .find_map(|r| r.stage("deploy"))
            .ok_or("no deploy stage ran")?;
        println!("  the deployment's outputs:");
        for (k, v) in &deploy.outputs {
            println!("    {k} = {v}");
        }
        let ns = deploy.outputs.get("namespace").cloned().unwrap_or_default();
        let deployments: kube::Api<Deployment> = kube::Api::namespaced(k8s.client().clone(), &ns);
        let services: kube::Api<Service> = kube::Api::namespaced(k8s.client().clone(), &ns);
        println!("  namespace {ns} holds:");
        for d in deployments.list(&Default::default()).await? {
            let status = d.status.unwrap_or_default();
            println!(
                "    deployment {}: {} of {} available, image {}",
                d.metadata.name.unwrap_or_default(),
                status.available_replicas.unwrap_or(0),
                d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                d.spec
                    .and_then(|s| s.template.spec)
                    .and_then(|p| p.containers.first().and_then(|c| c.image.clone()))
                    .unwrap_or_default()
            );
        }
        for s in services.list(&Default::default()).await? {
            println!("    service {}", s.metadata.name.unwrap_or_default());
        }
        Ok::<(), Error>(())
    }
    .await;
    if args.keep && result.is_ok() {
        println!("\n--keep: production stays (namespace gitops-production)");
        return Ok(());
    }
    println!("▸ Stopping production: its namespace is deleted");
    match engine.stop_environment("production", "k8s-release").await {
        Ok(stopped) => println!(
            "  production stopped (deployment #{}: {})",
            stopped.deployment.id,
            stopped.deployment.result.name()
        ),
        Err(e) => eprintln!("  could not stop production: {e}"),
    }
    result
}
