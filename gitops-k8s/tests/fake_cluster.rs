//! The Kubernetes backend against kube's client over the in-memory API (`gitops_k8s::testing`):
//! the objects created and their labels, apply and prune, rollout waiting with statuses set by
//! the test, Job success, failure, deadline and cancellation, and that waits watch rather than
//! poll. (The conformance suites run from `tests/conformance.rs`.)

use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::backend::{
    BackendError, Deployer, EnvironmentTarget, Executor, LogSink, Outcome, RunInfo, StageContext,
};
use gitops_core::testing::push_event;
use gitops_k8s::KubernetesBackend;
use gitops_k8s::testing::FakeCluster;
use serde_json::{Value, json};

fn stage(dir: &std::path::Path, name: &str, run: &str) -> StageContext {
    let info = Arc::new(RunInfo::new("run-1", "ci", push_event(), dir));
    StageContext::new(info, name)
        .with_command(run)
        .with_param("image", json!("busybox:1.36"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stage_is_a_labelled_job_with_the_stages_settings_and_waits_with_a_watch() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client()).with_ttl_after_finished(120);
    let dir = tempfile::tempdir().unwrap();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let seen = lines.clone();
    let ctx = stage(
        dir.path(),
        "build",
        "sleep 1; echo built; echo digest=sha256:abc >> \"$GITOPS_OUTPUT\"",
    )
    .with_env("MODE", "release")
    .with_timeout(Duration::from_secs(90))
    .with_log(LogSink::new("build", 1, Vec::new(), move |l| {
        seen.lock().unwrap().push(l.line)
    }));
    let done = backend.execute(ctx).await.unwrap();
    assert_eq!(done.outcome, Outcome::Success);
    assert_eq!(done.outputs["digest"], "sha256:abc");
    assert_eq!(*lines.lock().unwrap(), ["built"]);

    // The namespace of the pipeline, labelled as ours, and the Job in it.
    let ns = cluster
        .get("/api/v1", "namespaces", "", "gitops-ci")
        .expect("namespace");
    assert_eq!(
        ns["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "gitops"
    );
    let jobs = cluster.list("/apis/batch/v1", "jobs", Some("gitops-ci"));
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["metadata"]["name"], "gitops-run-1-build-1");
    let labels = &job["metadata"]["labels"];
    assert_eq!(labels["gitops.dev/run"], "run-1");
    assert_eq!(labels["gitops.dev/stage"], "build");
    assert_eq!(labels["gitops.dev/pipeline"], "ci");
    let spec = &job["spec"];
    assert_eq!(spec["backoffLimit"], 0);
    assert_eq!(spec["activeDeadlineSeconds"], 90);
    assert_eq!(spec["ttlSecondsAfterFinished"], 120);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let container = &pod["containers"][0];
    assert_eq!(container["image"], "busybox:1.36");
    assert_eq!(container["command"][0], "sh");
    assert_eq!(container["command"][1], "-c");
    let env: Vec<(String, String)> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(env.contains(&("MODE".into(), "release".into())));
    assert!(env.contains(&("GITOPS_STAGE".into(), "build".into())));
    assert!(env.contains(&("GITOPS_OUTPUT".into(), "/dev/termination-log".into())));
    let conditions = job["status"]["conditions"].as_array().unwrap();
    assert!(
        conditions
            .iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True"),
        "{conditions:?}"
    );

    // Waiting was a watch: the Job was listed once and then watched, not polled.
    let requests = cluster.requests();
    let job_lists = requests
        .iter()
        .filter(|r| r.starts_with("GET /apis/batch/v1/namespaces/gitops-ci/jobs?"))
        .collect::<Vec<_>>();
    assert!(
        job_lists.iter().any(|r| r.contains("watch=true")),
        "{requests:#?}"
    );
    assert!(
        job_lists
            .iter()
            .filter(|r| !r.contains("watch=true"))
            .count()
            <= 2,
        "the Job was polled: {requests:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_deadlines_and_cancellation_end_the_job() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();

    let failed = backend
        .execute(stage(dir.path(), "test", "echo broken; exit 4"))
        .await
        .unwrap();
    assert_eq!(
        failed.outcome,
        Outcome::Failure {
            exit_code: Some(4),
            message:
                "exit code 4 (BackoffLimitExceeded: Job has reached the specified backoff limit)"
                    .into()
        }
    );

    // The stage's timeout is the Job's deadline: Kubernetes ends it.
    let slow = stage(dir.path(), "slow", "sleep 30").with_timeout(Duration::from_secs(1));
    let started = std::time::Instant::now();
    let ended = backend.execute(slow).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    match ended.outcome {
        Outcome::Failure { message, .. } => assert!(
            message.contains("DeadlineExceeded: Job was active longer than specified deadline"),
            "{message}"
        ),
        Outcome::Success => panic!("a Job past its deadline succeeded"),
    }

    // Cancelling deletes the Job with its pods, in the foreground.
    let ctx = stage(dir.path(), "cancel", "sleep 30");
    let cancel = ctx.cancellation().clone();
    let running = tokio::spawn({
        let backend = backend.clone();
        async move { backend.execute(ctx).await }
    });
    while cluster.running_processes() == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cancel.cancel();
    let result = running.await.unwrap();
    assert!(matches!(result, Err(BackendError::Cancelled)), "{result:?}");
    assert!(
        cluster
            .get(
                "/apis/batch/v1",
                "jobs",
                "gitops-ci",
                "gitops-run-1-cancel-1"
            )
            .is_none()
    );
    assert!(
        cluster
            .list("/api/v1", "pods", Some("gitops-ci"))
            .iter()
            .all(|p| p["metadata"]["labels"]["gitops.dev/stage"] != "cancel"),
        "the Job's pods went with it"
    );
    assert_eq!(cluster.running_processes(), 0);
    let deletes: Vec<String> = cluster
        .requests()
        .into_iter()
        .filter(|r| {
            r.starts_with("DELETE /apis/batch/v1/namespaces/gitops-ci/jobs/gitops-run-1-cancel-1")
        })
        .collect();
    assert_eq!(deletes.len(), 1, "{deletes:?}");

    // Bad parameters say what is wrong.
    let mut no_image = stage(dir.path(), "x", "true");
    no_image.with.remove("image");
    let err = backend.execute(no_image).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameters: stage \"x\" has no `with.image`, which the k8s backend needs"
    );
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: web }
spec:
  replicas: 2
  selector: { matchLabels: { app: web } }
  template:
    metadata: { labels: { app: web } }
    spec:
      containers:
        - { name: web, image: "registry.test/web:placeholder", ports: [{ containerPort: 8080 }] }
        - { name: proxy, image: "envoy:1.30" }
---
apiVersion: v1
kind: Service
metadata: { name: web }
spec: { selector: { app: web }, ports: [{ port: 80, targetPort: 8080 }] }
"#;

const EXTRA: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: { name: settings }
data: { mode: fast }
"#;

fn deploy_ctx(dir: &std::path::Path, with: Value) -> StageContext {
    let info = Arc::new(RunInfo::new("run-2", "release", push_event(), dir));
    let mut ctx = StageContext::new(info, "deploy")
        .with_environment(EnvironmentTarget::new("staging", "staging", None));
    ctx.with = with.as_object().unwrap().clone();
    ctx
}

/// Sets the Deployment's status as its controller would once `web` rolled out.
fn rolled_out(cluster: &FakeCluster, ns: &str) {
    let d = cluster
        .get("/apis/apps/v1", "deployments", ns, "web")
        .expect("the deployment");
    let generation = d["metadata"]["generation"].clone();
    cluster.set_status(
        "/apis/apps/v1",
        "deployments",
        ns,
        "web",
        json!({"observedGeneration": generation, "replicas": 2, "updatedReplicas": 2, "availableReplicas": 2}),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_apply_server_side_wait_for_the_rollout_prune_and_stop() {
    let cluster = FakeCluster::without_controllers();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("k8s")).unwrap();
    std::fs::write(dir.path().join("k8s/app.yaml"), APP).unwrap();
    std::fs::write(dir.path().join("k8s/extra.yaml"), EXTRA).unwrap();
    let ns = "gitops-staging";
    let with = |files: Value, image: &str| json!({"manifests": files, "image": image, "rollout_timeout": 20});

    // The deploy waits until the test, as the controller, says the Deployment rolled out.
    let deploying = tokio::spawn({
        let backend = backend.clone();
        let ctx = deploy_ctx(
            dir.path(),
            with(
                json!(["k8s/app.yaml", "k8s/extra.yaml"]),
                "registry.test/web:v1",
            ),
        );
        async move { backend.deploy(ctx).await }
    });
    while cluster
        .get("/apis/apps/v1", "deployments", ns, "web")
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!deploying.is_finished(), "the deploy waits for the rollout");
    rolled_out(&cluster, ns);
    let done = deploying.await.unwrap().unwrap();
    assert_eq!(done.outcome, Outcome::Success);
    assert_eq!(done.outputs["namespace"], ns);
    assert_eq!(
        done.outputs["url"],
        "http://web.gitops-staging.svc.cluster.local:80/"
    );
    assert_eq!(
        done.outputs["service_web"],
        "web.gitops-staging.svc.cluster.local:80"
    );

    let namespace = cluster.get("/api/v1", "namespaces", "", ns).unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["gitops.dev/environment"],
        "staging"
    );
    let web = cluster
        .get("/apis/apps/v1", "deployments", ns, "web")
        .unwrap();
    assert_eq!(
        web["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "gitops"
    );
    assert_eq!(web["metadata"]["managedFields"][0]["manager"], "gitops");
    let containers = &web["spec"]["template"]["spec"]["containers"];
    assert_eq!(
        containers[0]["image"], "registry.test/web:v1",
        "the image substituted"
    );
    assert_eq!(containers[1]["image"], "envoy:1.30", "other images kept");
    assert!(
        cluster
            .get("/api/v1", "configmaps", ns, "settings")
            .is_some()
    );
    let applies: Vec<String> = cluster
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PATCH /apis/apps/v1/namespaces/gitops-staging/deployments/web?"))
        .collect();
    assert!(
        applies
            .iter()
            .all(|r| r.contains("fieldManager=gitops") && r.contains("force=true")),
        "{applies:?}"
    );

    // A Job run in the environment's namespace (a smoke test) leaves the namespace's record of
    // what was deployed alone.
    let smoke = stage(dir.path(), "smoke", "true").with_param("namespace", json!(ns));
    // (This cluster has no kubelet: the test ends the Job as its controller would.)
    let running = tokio::spawn({
        let backend = backend.clone();
        async move { backend.execute(smoke).await }
    });
    let job = "gitops-run-1-smoke-1";
    while cluster.get("/apis/batch/v1", "jobs", ns, job).is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.set_status(
        "/apis/batch/v1",
        "jobs",
        ns,
        job,
        json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}),
    );
    assert_eq!(running.await.unwrap().unwrap().outcome, Outcome::Success);
    let namespace = cluster.get("/api/v1", "namespaces", "", ns).unwrap();
    assert!(
        namespace["metadata"]["annotations"]["gitops.dev/applied"]
            .as_str()
            .is_some_and(|a| a.contains("ConfigMap|settings")),
        "{namespace}"
    );

    // A redeploy without the ConfigMap prunes it, and a rollout that never ends times out.
    let mut quick = with(json!("k8s/app.yaml"), "registry.test/web:v2");
    quick["rollout_timeout"] = json!(1);
    let err = backend
        .deploy(deploy_ctx(dir.path(), quick))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "Deployment web did not roll out within 1s: generation 1 of 2 observed, 2 of 2 updated, 2 of 2 available"
    );
    assert!(
        cluster
            .get("/api/v1", "configmaps", ns, "settings")
            .is_none(),
        "pruned"
    );
    let web = cluster
        .get("/apis/apps/v1", "deployments", ns, "web")
        .unwrap();
    assert_eq!(
        web["spec"]["template"]["spec"]["containers"][0]["image"],
        "registry.test/web:v2"
    );

    // Stopping deletes the namespace and everything in it.
    backend
        .stop(deploy_ctx(dir.path(), json!({})))
        .await
        .unwrap();
    assert!(cluster.get("/api/v1", "namespaces", "", ns).is_none());
    assert!(
        cluster
            .list("/apis/apps/v1", "deployments", None)
            .is_empty()
    );
    assert!(cluster.list("/api/v1", "services", None).is_empty());
    // Stopping what is gone is fine.
    backend
        .stop(deploy_ctx(dir.path(), json!({})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_manifests_are_located_errors() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write(
        "broken.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: a }\n---\nkind: [\n",
    );
    write(
        "nameless.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n",
    );
    write(
        "elsewhere.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: { name: a, namespace: prod }\n",
    );
    write(
        "cluster.yaml",
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: { name: admin }\n",
    );
    write("empty.yaml", "---\n");
    for (with, want) in [
        (
            json!({}),
            "stage \"deploy\" names no `with.manifests`, which a k8s deployment needs",
        ),
        (
            json!({"manifests": ["missing.yaml"]}),
            "`with.manifests`: \"missing.yaml\" is not in the checkout",
        ),
        (
            json!({"manifests": ["../etc/passwd"]}),
            "`with.manifests`: \"../etc/passwd\" is not a path inside the checkout",
        ),
        (
            json!({"manifests": ["nameless.yaml"]}),
            "nameless.yaml: document 1: an object needs apiVersion, kind and metadata.name",
        ),
        (
            json!({"manifests": ["elsewhere.yaml"]}),
            "elsewhere.yaml: document 1: ConfigMap a is in namespace prod, the environment's is gitops-staging",
        ),
        (
            json!({"manifests": ["cluster.yaml"]}),
            "cluster.yaml: document 1: ClusterRole admin is cluster-scoped; an environment holds namespaced objects only",
        ),
        (
            json!({"manifests": ["empty.yaml"]}),
            "the manifests (empty.yaml) hold no objects",
        ),
        (
            json!({"manifests": ["nameless.yaml"], "namespace": "Bad_NS"}),
            "`with.namespace` must be a DNS label (lower-case letters, digits and -), found \"Bad_NS\"",
        ),
    ] {
        let err = backend
            .deploy(deploy_ctx(dir.path(), with))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), format!("invalid parameters: {want}"));
    }
    let err = backend
        .deploy(deploy_ctx(
            dir.path(),
            json!({"manifests": ["broken.yaml"]}),
        ))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("invalid parameters: broken.yaml: document 2: "),
        "{err}"
    );
    assert!(
        cluster.list("/api/v1", "namespaces", None).is_empty(),
        "nothing was created"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_that_cannot_pull_its_image_fails_the_stage_instead_of_waiting_forever() {
    use k8s_openapi::api::core::v1::Pod;
    let cluster = FakeCluster::without_controllers();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let running = tokio::spawn({
        let backend = backend.clone();
        let ctx = stage(dir.path(), "pull", "true");
        async move { backend.execute(ctx).await }
    });
    let job = "gitops-run-1-pull-1";
    while cluster
        .get("/apis/batch/v1", "jobs", "gitops-ci", job)
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The Job controller's pod, stuck pulling (as the test plays the controller and kubelet).
    let pods: kube::Api<Pod> = kube::Api::namespaced(cluster.client(), "gitops-ci");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": format!("{job}-abcde"), "labels": {"gitops.dev/job": job}},
        "spec": {"containers": [{"name": "stage", "image": "busybox:1.36"}]}
    }))
    .unwrap();
    pods.create(&Default::default(), &pod).await.unwrap();
    cluster.set_status(
        "/api/v1",
        "pods",
        "gitops-ci",
        &format!("{job}-abcde"),
        json!({"phase": "Pending", "containerStatuses": [{"name": "stage", "ready": false, "restartCount": 0,
            "image": "busybox:1.36", "imageID": "",
            "state": {"waiting": {"reason": "ErrImagePull", "message": "pull access denied for busybox"}}}]}),
    );
    let done = tokio::time::timeout(Duration::from_secs(10), running)
        .await
        .expect("the stage ended")
        .unwrap()
        .unwrap();
    assert_eq!(
        done.outcome,
        Outcome::Failure {
            exit_code: None,
            message: "the Job's pod cannot start: ErrImagePull: pull access denied for busybox"
                .into()
        }
    );
    assert!(
        cluster
            .get("/apis/batch/v1", "jobs", "gitops-ci", job)
            .is_none(),
        "the Job is deleted"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_deletes_the_jobs_a_crashed_process_left() {
    let cluster = FakeCluster::without_controllers();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    // A stage whose process dies while it waits: its Job stays.
    let running = tokio::spawn({
        let backend = backend.clone();
        let ctx = stage(dir.path(), "slow", "sleep 1000");
        async move { backend.execute(ctx).await }
    });
    let job = "gitops-run-1-slow-1";
    while cluster
        .get("/apis/batch/v1", "jobs", "gitops-ci", job)
        .is_none()
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    running.abort();
    let _ = running.await;
    assert!(
        cluster
            .get("/apis/batch/v1", "jobs", "gitops-ci", job)
            .is_some()
    );
    assert_eq!(backend.abandon("another-run").await.unwrap(), 0);
    assert_eq!(backend.abandon("run-1").await.unwrap(), 1);
    assert!(
        cluster
            .get("/apis/batch/v1", "jobs", "gitops-ci", job)
            .is_none()
    );
    assert_eq!(backend.abandon("run-1").await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stages_secrets_come_from_a_secret_that_is_deleted_with_it_never_from_the_job_spec() {
    let cluster = FakeCluster::new();
    let backend = KubernetesBackend::new(cluster.client());
    let dir = tempfile::tempdir().unwrap();
    let ctx = stage(
        dir.path(),
        "publish",
        // Split, so that the Job's command does not hold the value it checks.
        "test \"$NPM_TOKEN\" = npm-secret-\"\"42 && echo seen=yes >> \"$GITOPS_OUTPUT\"",
    )
    .with_secret(
        "NPM_TOKEN",
        gitops_core::secret::Secret::new("npm-secret-42"),
    );
    let done = backend.execute(ctx).await.unwrap();
    assert_eq!(done.outcome, Outcome::Success, "the stage saw its secret");
    assert_eq!(done.outputs["seen"], "yes");
    let jobs = cluster.list("/apis/batch/v1", "jobs", Some("gitops-ci"));
    let job = serde_json::to_string(&jobs[0]).unwrap();
    assert!(!job.contains("npm-secret-42"), "{job}");
    let env = &jobs[0]["spec"]["template"]["spec"]["containers"][0]["env"];
    let reference = env
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "NPM_TOKEN")
        .unwrap();
    assert_eq!(
        reference["valueFrom"]["secretKeyRef"],
        json!({"name": "gitops-run-1-publish-1", "key": "NPM_TOKEN"})
    );
    assert!(reference.get("value").is_none());
    // The Secret went with the stage; creating it was seen by the API.
    assert!(
        cluster
            .list("/api/v1", "secrets", Some("gitops-ci"))
            .is_empty()
    );
    assert!(
        cluster
            .requests()
            .iter()
            .any(|r| r.starts_with("POST /api/v1/namespaces/gitops-ci/secrets")),
        "{:#?}",
        cluster.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_secret_reference_that_resolves_to_nothing_keeps_the_pod_from_starting() {
    // The fake kubelet, as a real one: a missing Secret is CreateContainerConfigError.
    let cluster = FakeCluster::new();
    let client = cluster.client();
    let ns: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    ns.create(
        &Default::default(),
        &serde_json::from_value(json!({"metadata": {"name": "t"}})).unwrap(),
    )
    .await
    .unwrap();
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = kube::Api::namespaced(client, "t");
    let job = json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c",
        "image": "busybox", "command": ["true"],
        "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "X"}}}]}]}}}});
    jobs.create(&Default::default(), &serde_json::from_value(job).unwrap())
        .await
        .unwrap();
    let mut waiting = None;
    for _ in 0..100 {
        let pods = cluster.list("/api/v1", "pods", Some("t"));
        waiting = pods
            .first()
            .map(|p| p["status"]["containerStatuses"][0]["state"]["waiting"].clone())
            .filter(|w| !w.is_null());
        if waiting.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = waiting.expect("the pod waits");
    assert_eq!(waiting["reason"], "CreateContainerConfigError");
    assert_eq!(waiting["message"], "secret \"nope\" not found");
}
