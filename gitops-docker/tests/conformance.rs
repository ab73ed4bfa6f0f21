//! The Docker backend on a real engine: the executor and deployer conformance suites in a
//! busybox image built `FROM scratch` (no registry is needed), and containers never left behind.
//!
//! Runs when `GITOPS_TEST_DOCKER=1` (`scripts/test.sh` sets it and starts `dockerd`); then a
//! missing engine or busybox is a failure, not a skip.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bollard::query_parameters::{ListNetworksOptionsBuilder, ListVolumesOptionsBuilder};
use gitops_core::backend::{BackendError, Completion, Executor, RunInfo, StageContext};
use gitops_core::testing::{
    DeployerSetup, EnvironmentProbe, Setup, deployer_conformance, executor_conformance, push_event,
};
use gitops_docker::DockerBackend;
use serde_json::json;

mod common;
use common::{EnvGuard, backend, image, labelled};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_conforms_and_leaves_no_container() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path()).with_param("image", serde_json::json!(image()));
    executor_conformance(Arc::new(docker.clone()), &setup, "docker").await;
    // The suite's runs are all named like its push event's; none left a stage container (the
    // deployer suite's environments, running meanwhile, are not stages').
    let all = labelled(&docker, "gitops.stage").await;
    let ours: Vec<_> = all
        .iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get("gitops.run"))
                .is_some_and(|r| r.starts_with("conformance"))
        })
        .collect();
    assert!(ours.is_empty(), "containers left behind: {ours:?}");
}

/// Looks at an environment through the engine (what carries its label) and over loopback.
struct Probe(DockerBackend);

#[async_trait]
impl EnvironmentProbe for Probe {
    async fn serving(&self, _environment: &str, deployed: &Completion) -> Option<String> {
        let url = deployed.outputs.get("url")?.clone();
        tokio::task::spawn_blocking(move || common::get(&url))
            .await
            .ok()
            .flatten()
            .map(|body| body.trim().to_owned())
    }

    async fn leftovers(&self, environment: &str) -> Vec<String> {
        let label = format!("gitops.environment={environment}");
        let mut left: Vec<String> = labelled(&self.0, &label)
            .await
            .into_iter()
            .map(|c| format!("container {}", c.names.unwrap_or_default().join(",")))
            .collect();
        let filters = HashMap::from([("label".to_owned(), vec![label])]);
        let docker = self.0.client();
        let networks = docker
            .list_networks(Some(
                ListNetworksOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        left.extend(
            networks
                .into_iter()
                .map(|n| format!("network {}", n.name.unwrap_or_default())),
        );
        let volumes = docker
            .list_volumes(Some(
                ListVolumesOptionsBuilder::default()
                    .filters(&filters)
                    .build(),
            ))
            .await
            .unwrap();
        left.extend(
            volumes
                .volumes
                .unwrap_or_default()
                .into_iter()
                .map(|v| format!("volume {}", v.name)),
        );
        left
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_deployer_conforms() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = format!("conformance-{}", std::process::id());
    let _cleanup = [
        EnvGuard(env.clone()),
        EnvGuard(format!("{env}-never")),
        EnvGuard(format!("{env}-bad")),
    ];
    // A busybox httpd serving the marker on 8080, with a volume of the environment; the slow
    // one sleeps before it serves, so it is cancelled while the deploy waits for it.
    let release = |delay: u32| {
        move |marker: &str| {
            let script = format!(
                "sleep {delay}; mkdir -p /www && echo {marker} > /www/index.html && exec httpd -f -p 8080 -h /www"
            );
            json!({"image": image(), "port": 8080, "command": ["/bin/sh", "-c", script],
                   "volumes": ["data:/data"], "ready_timeout": 60})
            .as_object()
            .unwrap()
            .clone()
        }
    };
    let setup = DeployerSetup::new(
        dir.path(),
        env.clone(),
        release(0),
        release(1000),
        Probe(docker.clone()),
    )
    .with_bad_params([
        json!({"image": image(), "prot": 80}),
        json!({"port": 80}),
        json!({"services": ["web"]}),
        json!({"services": {"web": {"image": image(), "port": 70000}}}),
        json!({"services": {"web": {"image": image(), "volumes": ["/data"]}}}),
        json!({"services": {"web": {"image": image()}}, "primary": "db"}),
        json!({"image": image(), "ready_timeout": 999_999_999}),
    ])
    .with_cancel_timing(Duration::from_secs(3), Duration::from_secs(30));
    deployer_conformance(Arc::new(docker), &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_and_missing_images_are_clear_errors() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let run = Arc::new(RunInfo::new("docker-errors", "p", push_event(), dir.path()));
    let ctx = |with: serde_json::Value| {
        let mut c = StageContext::new(run.clone(), "s").with_command("true");
        c.with = with.as_object().unwrap().clone();
        c
    };
    let err = docker
        .execute(ctx(serde_json::json!({})))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameters: stage \"s\" has no `with.image`, which the docker backend needs"
    );
    let err = docker
        .execute(ctx(serde_json::json!({"image": image(), "command": "ls"})))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::InvalidParameters(_)), "{err}");
    let err = docker
        .execute(ctx(serde_json::json!({"image": common::MISSING_IMAGE})))
        .await
        .unwrap_err();
    common::assert_missing_image(&err);
    // An argv command runs as given, without a shell.
    let done = docker
        .execute(ctx(
            serde_json::json!({"image": image(), "command": ["/bin/sh", "-c", "exit 7"]}),
        ))
        .await
        .unwrap();
    assert_eq!(
        done.outcome,
        gitops_core::backend::Outcome::Failure {
            exit_code: Some(7),
            message: "exit code 7".into()
        }
    );
    assert!(
        labelled(&docker, "gitops.run=docker-errors")
            .await
            .is_empty()
    );
}

#[tokio::test]
async fn a_missing_engine_is_a_clear_error_naming_what_was_tried() {
    let err = DockerBackend::builder()
        .with_host("unix:///nonexistent/docker.sock")
        .build()
        .await
        .unwrap_err();
    let chain = gitops_core::ErrorChain(&err).to_string();
    assert!(
        chain.starts_with(
            "no Docker engine answered at unix:///nonexistent/docker.sock: caused by: "
        ),
        "{chain}"
    );
    // The client's own error, not a copy of its text.
    let source = std::error::Error::source(&err).expect("a source");
    assert!(
        source.downcast_ref::<bollard::errors::Error>().is_some(),
        "{source:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_is_built_from_the_checkout_honouring_dockerignore_and_runs_stages() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let write = |p: &str, text: &str| {
        let path = dir.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "app/Dockerfile",
        &format!(
            "FROM {}\nCOPY . /app\nRUN [\"/bin/sh\", \"-c\", \"echo built > /app/stamp\"]\n",
            image()
        ),
    );
    write(
        "app/.dockerignore",
        "# not sent\nsecrets\n*.log\n!keep.log\n",
    );
    write("app/main.txt", "hello");
    write("app/secrets/key", "do not send");
    write("app/debug.log", "noise");
    write("app/keep.log", "kept");
    let run = Arc::new(RunInfo::new("docker-build", "p", push_event(), dir.path()));
    let lines = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = lines.clone();
    let mut ctx = StageContext::new(run.clone(), "build");
    ctx.with = serde_json::json!({"dockerfile": "Dockerfile", "context": "app", "tag": "gitops-test-built:1"})
        .as_object()
        .unwrap()
        .clone();
    ctx.log = gitops_core::backend::LogSink::new("build", 1, Vec::new(), move |l| {
        seen.lock().unwrap().push(l.line)
    });
    let built = docker.execute(ctx).await.unwrap();
    assert_eq!(built.outcome, gitops_core::backend::Outcome::Success);
    assert_eq!(built.outputs["image"], "gitops-test-built:1");
    assert!(
        built.outputs["image_id"].starts_with("sha256:"),
        "{:?}",
        built.outputs
    );
    assert!(
        lines.lock().unwrap().iter().any(|l| l.contains("Step 3/3")),
        "build output streams as log lines: {:?}",
        lines.lock().unwrap()
    );

    // What went into the image: the context minus what .dockerignore excludes.
    let mut list = StageContext::new(run.clone(), "list")
        .with_command("cd /app && ls -a | tr '\\n' ' ' && cat stamp");
    list.with = serde_json::json!({"image": "gitops-test-built:1"})
        .as_object()
        .unwrap()
        .clone();
    let out = Arc::new(std::sync::Mutex::new(Vec::new()));
    let o = out.clone();
    list.log = gitops_core::backend::LogSink::new("list", 1, Vec::new(), move |l| {
        o.lock().unwrap().push(l.line)
    });
    let done = docker.execute(list).await.unwrap();
    assert_eq!(done.outcome, gitops_core::backend::Outcome::Success);
    let text = out.lock().unwrap().join("\n");
    for present in [
        "Dockerfile",
        ".dockerignore",
        "main.txt",
        "keep.log",
        "built",
    ] {
        assert!(
            text.contains(present),
            "{present} missing from the image: {text}"
        );
    }
    for absent in ["secrets", "debug.log"] {
        assert!(
            !text.contains(absent),
            "{absent} was sent despite .dockerignore: {text}"
        );
    }

    // A failing build step is a failed stage saying why (no registry is ever asked: the base
    // image is local); a missing Dockerfile a parameter error.
    write(
        "app/Dockerfile",
        &format!(
            "FROM {}\nRUN [\"/bin/sh\", \"-c\", \"echo broken >&2; exit 3\"]\n",
            image()
        ),
    );
    let mut broken = StageContext::new(run.clone(), "build");
    broken.with = serde_json::json!({"context": "app"})
        .as_object()
        .unwrap()
        .clone();
    let failed = docker.execute(broken).await.unwrap();
    match &failed.outcome {
        gitops_core::backend::Outcome::Failure { message, .. } => assert!(
            message.starts_with("building gitops-conformance-repo:0123456789ab failed"),
            "{message}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    let mut missing = StageContext::new(run, "build");
    missing.with = serde_json::json!({"context": "app", "dockerfile": "Nope"})
        .as_object()
        .unwrap()
        .clone();
    let err = docker.execute(missing).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("Nope is not a file in the build context app"),
        "{err}"
    );
    let remove = bollard::query_parameters::RemoveImageOptionsBuilder::default()
        .force(true)
        .build();
    docker
        .client()
        .remove_image("gitops-test-built:1", Some(remove), None)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_removes_a_crashed_runs_stage_containers_and_leaves_environments() {
    use bollard::models::ContainerCreateBody;
    use bollard::query_parameters::CreateContainerOptionsBuilder;
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let run = format!("crashed-{}", std::process::id());
    let _cleanup = common::EnvGuard(run.clone());
    // What a process killed mid-run leaves: a stage container still running, and the container
    // of an environment it deployed (which is the environment's, not the run's).
    for (name, stage) in [("stage", true), ("env", false)] {
        let mut labels = std::collections::HashMap::from([
            ("gitops.managed".to_owned(), "true".to_owned()),
            ("gitops.run".to_owned(), run.clone()),
        ]);
        if stage {
            labels.insert("gitops.stage".to_owned(), "slow".to_owned());
        } else {
            labels.insert("gitops.environment".to_owned(), run.clone());
        }
        let body = ContainerCreateBody {
            image: Some(image().to_owned()),
            cmd: Some(vec!["sleep".into(), "1000".into()]),
            labels: Some(labels),
            ..Default::default()
        };
        let container = format!("{run}-{name}");
        docker
            .client()
            .create_container(
                Some(
                    CreateContainerOptionsBuilder::default()
                        .name(&container)
                        .build(),
                ),
                body,
            )
            .await
            .unwrap();
        docker
            .client()
            .start_container(&container, None)
            .await
            .unwrap();
    }
    assert_eq!(docker.abandon("some-other-run").await.unwrap(), 0);
    assert_eq!(docker.abandon(&run).await.unwrap(), 1);
    let left = labelled(&docker, &format!("gitops.run={run}")).await;
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(
        left[0]
            .labels
            .as_ref()
            .unwrap()
            .contains_key("gitops.environment")
    );
}
