//! The Docker backend on a real engine: the executor conformance suite in a busybox image built
//! `FROM scratch` (no registry is needed), and containers never left behind.
//!
//! Runs when `GITOPS_TEST_DOCKER=1` (`scripts/test.sh` sets it and starts `dockerd`); then a
//! missing engine or busybox is a failure, not a skip.

use std::sync::Arc;

use bollard::query_parameters::{BuildImageOptionsBuilder, ListContainersOptionsBuilder};
use futures_util::StreamExt;
use gitops_core::backend::{BackendError, Executor, RunInfo, StageContext};
use gitops_core::testing::{Setup, executor_conformance, push_event};
use gitops_docker::DockerBackend;

/// The test image: a tag of this test process's own, so that tests running at once never
/// rebuild an image another one uses.
fn image() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("gitops-test-busybox:{}", std::process::id()))
}

/// Removes the test image when the test ends.
struct ImageGuard;

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let _ = std::process::Command::new("docker")
            .args(["rmi", "-f", image()])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// The engine, or `None` (with `skipped: ...`) when the Docker tests are not asked for.
async fn backend() -> Option<(DockerBackend, ImageGuard)> {
    if std::env::var_os("GITOPS_TEST_DOCKER").is_none() {
        eprintln!(
            "skipped: set GITOPS_TEST_DOCKER=1 (scripts/test.sh does) to run the Docker tests"
        );
        return None;
    }
    let docker = DockerBackend::builder()
        .with_stop_grace_secs(1)
        .build()
        .await
        .unwrap_or_else(|e| panic!("GITOPS_TEST_DOCKER is set but {e}"));
    build_busybox(&docker).await;
    Some((docker, ImageGuard))
}

/// Builds the test image: a static busybox on an empty image, its applets linked into /bin.
async fn build_busybox(docker: &DockerBackend) {
    let busybox = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("busybox is installed (scripts/test.sh installs busybox-static)");
    let mut tar = tar::Builder::new(Vec::new());
    let dockerfile = b"FROM scratch\nCOPY busybox /bin/busybox\nRUN [\"/bin/busybox\", \"--install\", \"-s\", \"/bin\"]\n";
    let mut header = tar::Header::new_gnu();
    header.set_size(dockerfile.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "Dockerfile", &dockerfile[..])
        .unwrap();
    tar.append_path_with_name(busybox, "busybox").unwrap();
    let context = tar.into_inner().unwrap();
    let options = BuildImageOptionsBuilder::default()
        .dockerfile("Dockerfile")
        .t(image())
        .rm(true)
        .build();
    let mut build =
        docker
            .client()
            .build_image(options, None, Some(bollard::body_full(context.into())));
    while let Some(step) = build.next().await {
        let step = step.unwrap_or_else(|e| panic!("building {}: {e}", image()));
        if let Some(err) = step.error_detail.and_then(|d| d.message) {
            panic!("building {}: {err}", image());
        }
    }
}

/// The containers (running or not) carrying `label` (`key=value`).
async fn labelled(docker: &DockerBackend, label: &str) -> Vec<bollard::models::ContainerSummary> {
    let filters = std::collections::HashMap::from([("label".to_owned(), vec![label.to_owned()])]);
    let options = ListContainersOptionsBuilder::default()
        .all(true)
        .filters(&filters)
        .build();
    docker
        .client()
        .list_containers(Some(options))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_backend_conforms_and_leaves_no_container() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let setup = Setup::new(dir.path()).with_param("image", serde_json::json!(image()));
    executor_conformance(Arc::new(docker.clone()), &setup, "docker").await;
    // The suite's runs are all named like its push event's; none left a container.
    let all = labelled(&docker, "gitops.managed=true").await;
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
        .execute(ctx(
            serde_json::json!({"image": "gitops-no-such-image:never"}),
        ))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("image \"gitops-no-such-image:never\" is not on the Docker engine"),
        "{err}"
    );
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
    assert!(
        err.to_string()
            .starts_with("no Docker engine answered at unix:///nonexistent/docker.sock: "),
        "{err}"
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

/// An HTTP GET on loopback: the body, or `None` when nothing answers.
fn get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_served_replaced_and_stopped_without_leftovers() {
    use gitops_core::backend::{Deployer, EnvironmentTarget};
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = format!("preview-pr-{}", std::process::id());
    let run = Arc::new(RunInfo::new("docker-deploy", "p", push_event(), dir.path()));
    let ctx = |version: &str| {
        let mut c = StageContext::new(run.clone(), "deploy");
        let script = format!(
            "mkdir -p /www && echo {version} > /www/index.html && exec httpd -f -p 8080 -h /www"
        );
        c.with = serde_json::json!({"image": image(), "port": 8080, "command": ["/bin/sh", "-c", script], "ready_timeout": 20})
            .as_object()
            .unwrap()
            .clone();
        c.environment = Some(EnvironmentTarget::new(env.clone(), "preview", None));
        c
    };
    let first = docker.deploy(ctx("v1")).await.unwrap();
    let url = first.outputs["url"].clone();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    assert_eq!(get(&url).as_deref(), Some("v1\n"));

    let second = docker.deploy(ctx("v2")).await.unwrap();
    let url2 = second.outputs["url"].clone();
    assert_eq!(get(&url2).as_deref(), Some("v2\n"));
    let label = format!("gitops.environment={env}");
    let containers = labelled(&docker, &label).await;
    assert_eq!(containers.len(), 1, "redeploying replaced the container");

    // A release that never becomes ready fails the deploy and is not left running.
    let mut broken = ctx("v3");
    broken.with.insert(
        "command".into(),
        serde_json::json!(["/bin/sh", "-c", "exit 4"]),
    );
    let err = docker.deploy(broken).await.unwrap_err();
    assert!(
        err.to_string().contains("exited before it was ready"),
        "{err}"
    );

    let mut stop = StageContext::new(run.clone(), "teardown");
    stop.environment = Some(EnvironmentTarget::new(env.clone(), "preview", None));
    docker.stop(stop).await.unwrap();
    assert!(get(&url2).is_none(), "nothing answers after the stop");
    let left = labelled(&docker, &label).await;
    assert!(left.is_empty(), "containers left: {left:?}");
    let networks = docker
        .client()
        .list_networks(Some(
            bollard::query_parameters::ListNetworksOptionsBuilder::default()
                .filters(&std::collections::HashMap::from([(
                    "label".to_owned(),
                    vec![label.clone()],
                )]))
                .build(),
        ))
        .await
        .unwrap();
    assert!(networks.is_empty(), "networks left: {networks:?}");
}
