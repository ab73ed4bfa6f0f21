//! The Kubernetes backend passes the executor and deployer conformance suites: always against the
//! in-memory API of `gitops_k8s::testing` (its kubelet runs Jobs as local processes, its
//! controllers roll Deployments out), and against the cluster `KUBECONFIG` names when
//! `GITOPS_K8S_E2E=1` (else those tests print `skipped: ...`); that cluster must be able to pull
//! `GITOPS_K8S_E2E_IMAGE` (default `busybox:1.36`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::Completion;
use gitops_core::testing::{
    DeployerSetup, EnvironmentProbe, Setup, deployer_conformance, executor_conformance,
};
use gitops_k8s::KubernetesBackend;
use gitops_k8s::testing::FakeCluster;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service};
use kube::Api;
use serde_json::json;

/// The cluster of `KUBECONFIG` when the end-to-end tests are asked for, else `None` with
/// `skipped: ...`.
async fn real_cluster() -> Option<KubernetesBackend> {
    if std::env::var_os("GITOPS_K8S_E2E").is_none() || std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "skipped: set GITOPS_K8S_E2E=1 and KUBECONFIG to a cluster (kind, k3d, minikube) to run the conformance suites against it"
        );
        return None;
    }
    Some(
        KubernetesBackend::from_env()
            .await
            .unwrap_or_else(|e| panic!("GITOPS_K8S_E2E is set but {e}"))
            .with_rollout_timeout(Duration::from_secs(180)),
    )
}

fn e2e_image() -> String {
    std::env::var("GITOPS_K8S_E2E_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_owned())
}

fn executor_setup(dir: &Path, image: &str) -> Setup {
    Setup::new(dir)
        .with_param("image", json!(image))
        .with_merged_streams()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_conforms_on_the_in_memory_api() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    executor_conformance(
        Arc::new(backend),
        &executor_setup(dir.path(), "busybox:1.36"),
        "k8s",
    )
    .await;
    assert_eq!(cluster.running_processes(), 0, "nothing left running");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_conforms_on_a_real_cluster() {
    let Some(backend) = real_cluster().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = executor_setup(dir.path(), &e2e_image());
    executor_conformance(Arc::new(backend), &setup, "k8s").await;
}

/// Looks at an environment's namespace through the API: the release its Deployment `web` has
/// rolled out (the `RELEASE` of its container), and what the namespace holds.
struct Probe {
    client: kube::Client,
}

fn namespace(environment: &str) -> String {
    format!("gitops-{environment}")
}

#[async_trait]
impl EnvironmentProbe for Probe {
    async fn serving(&self, environment: &str, _deployed: &Completion) -> Option<String> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &namespace(environment));
        // What serves is what rolled out: give a rollout (a rollback's too) time to end.
        for _ in 0..300 {
            let d = deployments.get_opt("web").await.ok()??;
            let wanted = d.spec.as_ref()?.replicas.unwrap_or(1);
            let generation = d.metadata.generation.unwrap_or(0);
            let s = d.status.clone().unwrap_or_default();
            let done = s.observed_generation.unwrap_or(0) >= generation
                && s.updated_replicas.unwrap_or(0) >= wanted
                && s.available_replicas.unwrap_or(0) >= wanted
                && s.replicas.unwrap_or(0) <= wanted;
            if done {
                let container = d.spec?.template.spec?.containers.into_iter().next()?;
                return container
                    .env?
                    .into_iter()
                    .find(|e| e.name == "RELEASE")?
                    .value;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Some("(still rolling out)".to_owned())
    }

    async fn leftovers(&self, environment: &str) -> Vec<String> {
        let ns = namespace(environment);
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let Some(found) = namespaces.get_opt(&ns).await.unwrap() else {
            return Vec::new();
        };
        let mut left = vec![format!("namespace {ns}")];
        if found.metadata.deletion_timestamp.is_some() {
            left.push(format!("namespace {ns} terminating"));
        }
        let names = |list: Vec<Option<String>>, kind: &str| {
            list.into_iter()
                .flatten()
                .map(|n| format!("{kind} {n}"))
                .collect::<Vec<_>>()
        };
        let lp = Default::default();
        let deployments: Api<Deployment> = Api::namespaced(self.client.clone(), &ns);
        let d = deployments.list(&lp).await.unwrap().items;
        left.extend(names(
            d.into_iter().map(|o| o.metadata.name).collect(),
            "deployment",
        ));
        let services: Api<Service> = Api::namespaced(self.client.clone(), &ns);
        let s = services.list(&lp).await.unwrap().items;
        left.extend(names(
            s.into_iter().map(|o| o.metadata.name).collect(),
            "service",
        ));
        // Every namespace of a real cluster gets the cluster's CA bundle.
        let config_maps: Api<ConfigMap> = Api::namespaced(self.client.clone(), &ns);
        let c = config_maps.list(&lp).await.unwrap().items;
        let c = c.into_iter().map(|o| o.metadata.name);
        left.extend(names(
            c.filter(|n| n.as_deref() != Some("kube-root-ca.crt"))
                .collect(),
            "configmap",
        ));
        left
    }
}

/// The manifests of a release: a Deployment `web` (busybox `httpd`, its container's `RELEASE`
/// the marker; with `min_ready`, rolled out only after it), a Service and a ConfigMap.
fn manifests(marker: &str, min_ready: u32) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{ name: web }}
spec:
  replicas: 1
  minReadySeconds: {min_ready}
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      containers:
        - name: web
          image: busybox:placeholder
          command: ["sh", "-c", "mkdir -p /www && echo $RELEASE > /www/index.html && exec httpd -f -p 8080 -h /www"]
          env: [{{ name: RELEASE, value: "{marker}" }}]
          readinessProbe: {{ tcpSocket: {{ port: 8080 }}, periodSeconds: 1 }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web }}
spec: {{ selector: {{ app: web }}, ports: [{{ port: 80, targetPort: 8080 }}] }}
---
apiVersion: v1
kind: ConfigMap
metadata: {{ name: settings }}
data: {{ release: "{marker}" }}
"#
    )
}

/// The deployer suite on `backend`, through `client`, for environment `environment`.
async fn deployer_suite(backend: KubernetesBackend, client: kube::Client, environment: &str) {
    let dir = tempfile::tempdir().unwrap();
    let k8s = dir.path().join("k8s");
    std::fs::create_dir(&k8s).unwrap();
    std::fs::write(k8s.join("base.yaml"), manifests("base", 0)).unwrap();
    let image = e2e_image();
    // Each release's manifests are written as it is asked for; the slow one is still rolling
    // out an hour later (minReadySeconds), so its deploy waits until it is cancelled.
    let release = |min_ready: u32| {
        let (k8s, image) = (k8s.clone(), image.clone());
        move |marker: &str| {
            let file = format!("{marker}-{min_ready}.yaml");
            std::fs::write(k8s.join(&file), manifests(marker, min_ready)).unwrap();
            json!({"manifests": [format!("k8s/{file}")], "image": image, "service": "web"})
                .as_object()
                .unwrap()
                .clone()
        }
    };
    let setup = DeployerSetup::new(
        dir.path(),
        environment,
        release(0),
        release(3600),
        Probe { client },
    )
    .with_bad_params([
        json!({}),
        json!({"manifests": []}),
        json!({"manifests": ["k8s/missing.yaml"]}),
        json!({"manifests": ["../etc/passwd"]}),
        json!({"manifests": ["k8s/base.yaml"], "namespace": "Bad_NS"}),
        json!({"manifests": ["k8s/base.yaml"], "service": "nope"}),
        json!({"manifests": ["k8s/base.yaml"], "rollout_timeout": 999_999_999}),
    ])
    .with_cancel_timing(Duration::from_secs(3), Duration::from_secs(60))
    .with_deploy_within(Duration::from_secs(300));
    deployer_conformance(Arc::new(backend), &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployer_conforms_on_the_in_memory_api() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    deployer_suite(backend, cluster.client(), "conformance").await;
    assert!(cluster.list("/api/v1", "namespaces", None).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployer_conforms_on_a_real_cluster() {
    let Some(backend) = real_cluster().await else {
        return;
    };
    let client = backend.client().clone();
    let environment = format!("conformance-{}", std::process::id());
    deployer_suite(backend, client, &environment).await;
}
