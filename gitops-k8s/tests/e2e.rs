//! The Kubernetes backend against a real cluster: an environment deployed (a Deployment and a
//! Service), a Job run in its namespace (outputs, logs, a failure), and the environment torn down.
//!
//! Runs when `GITOPS_K8S_E2E=1` and `KUBECONFIG` names a cluster (kind, k3d, minikube; see the
//! README); the cluster must be able to pull `GITOPS_K8S_E2E_IMAGE` (default `busybox:1.36`).
//! Without them it prints `skipped: ...`. With `GITOPS_K8S_E2E=1` set, a cluster that does not
//! answer is a failure.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::backend::{
    Deployer, EnvironmentTarget, Executor, LogSink, Outcome, RunInfo, StageContext,
};
use gitops_core::testing::push_event;
use gitops_k8s::KubernetesBackend;
use k8s_openapi::api::core::v1::Namespace;
use serde_json::json;

async fn cluster() -> Option<KubernetesBackend> {
    if std::env::var_os("GITOPS_K8S_E2E").is_none() || std::env::var_os("KUBECONFIG").is_none() {
        eprintln!(
            "skipped: set GITOPS_K8S_E2E=1 and KUBECONFIG to a cluster (kind, k3d, minikube) to run the end-to-end Kubernetes tests"
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

fn image() -> String {
    std::env::var("GITOPS_K8S_E2E_IMAGE").unwrap_or_else(|_| "busybox:1.36".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_deployed_a_job_runs_in_it_and_it_is_torn_down() {
    let Some(k8s) = cluster().await else {
        return;
    };
    let env = format!("e2e-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        format!(
            r#"apiVersion: apps/v1
kind: Deployment
metadata: {{ name: web }}
spec:
  replicas: 1
  selector: {{ matchLabels: {{ app: web }} }}
  template:
    metadata: {{ labels: {{ app: web }} }}
    spec:
      containers:
        - name: web
          image: {image}
          command: ["sh", "-c", "mkdir -p /www && echo hello > /www/index.html && exec httpd -f -p 8080 -h /www"]
          readinessProbe: {{ tcpSocket: {{ port: 8080 }}, periodSeconds: 1 }}
---
apiVersion: v1
kind: Service
metadata: {{ name: web }}
spec: {{ selector: {{ app: web }}, ports: [{{ port: 80, targetPort: 8080 }}] }}
"#,
            image = image()
        ),
    )
    .unwrap();
    let run = Arc::new(RunInfo::new("e2e", "e2e", push_event(), dir.path()));
    let target = EnvironmentTarget::new(env.clone(), "e2e", None);
    let mut deploy = StageContext::new(run.clone(), "deploy").with_environment(target.clone());
    deploy.with = json!({"manifests": ["app.yaml"]})
        .as_object()
        .unwrap()
        .clone();
    let done = k8s.deploy(deploy).await.unwrap();
    assert_eq!(done.outcome, Outcome::Success);
    let ns = done.outputs["namespace"].clone();
    let url = done.outputs["url"].clone();
    assert_eq!(url, format!("http://web.{ns}.svc.cluster.local:80/"));

    // A smoke-test Job in the environment's namespace reaches the Service.
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    let smoke = StageContext::new(run.clone(), "smoke")
        .with_command(format!(
            "wget -q -T 10 -O- {url}; echo checked=yes >> \"$GITOPS_OUTPUT\""
        ))
        .with_param("image", json!(image()))
        .with_param("namespace", json!(ns))
        .with_timeout(Duration::from_secs(120))
        .with_log(LogSink::new("smoke", 1, Vec::new(), move |l| {
            seen.lock().unwrap().push(l.line)
        }));
    let smoked = k8s.execute(smoke).await.unwrap();
    assert_eq!(
        smoked.outcome,
        Outcome::Success,
        "{:?}",
        lines.lock().unwrap()
    );
    assert_eq!(smoked.outputs["checked"], "yes");
    assert!(lines.lock().unwrap().iter().any(|l| l == "hello"));

    let failing = StageContext::new(run.clone(), "failing")
        .with_command("exit 3")
        .with_param("image", json!(image()))
        .with_param("namespace", json!(ns));
    let failed = k8s.execute(failing).await.unwrap();
    assert!(
        matches!(
            failed.outcome,
            Outcome::Failure {
                exit_code: Some(3),
                ..
            }
        ),
        "{:?}",
        failed.outcome
    );

    let stop = StageContext::new(run, "stop").with_environment(target);
    k8s.stop(stop).await.unwrap();
    let namespaces: kube::Api<Namespace> = kube::Api::all(k8s.client().clone());
    assert!(
        namespaces.get_opt(&ns).await.unwrap().is_none(),
        "namespace {ns} is gone"
    );
}
