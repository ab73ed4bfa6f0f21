//! The Docker backend as a deployer on a real engine: environments served from busybox `httpd`
//! on 127.0.0.1, replaced, made of several services with volumes, gated by a HEALTHCHECK, and
//! stopped with nothing left carrying their label.
//!
//! Runs when `GITOPS_TEST_DOCKER=1` (`scripts/test.sh` sets it and starts `dockerd`).

use std::collections::HashMap;
use std::sync::Arc;

use bollard::query_parameters::{ListNetworksOptionsBuilder, ListVolumesOptionsBuilder};
use gitops_core::backend::{
    BackendError, Completion, Deployer, EnvironmentTarget, Executor, Outcome, RunInfo, StageContext,
};
use gitops_core::testing::push_event;
use gitops_docker::DockerBackend;

mod common;
use common::{EnvGuard, backend, get, image, labelled};

/// A deploy (or stop) context for `env` with `with`.
fn context(run: &Arc<RunInfo>, env: &str, with: serde_json::Value) -> StageContext {
    let mut c = StageContext::new(run.clone(), "deploy").with_environment(EnvironmentTarget::new(
        env.to_owned(),
        "preview",
        None,
    ));
    c.with = with.as_object().unwrap().clone();
    c
}

/// A shell command serving `text` with busybox httpd on port 8080.
fn serve(text: &str) -> serde_json::Value {
    let script =
        format!("mkdir -p /www && echo {text} > /www/index.html && exec httpd -f -p 8080 -h /www");
    serde_json::json!(["/bin/sh", "-c", script])
}

/// Stops `env` and checks that no container, network or volume with its label is left.
async fn stop_and_check_nothing_left(docker: &DockerBackend, run: &Arc<RunInfo>, env: &str) {
    docker
        .stop(context(run, env, serde_json::json!({})))
        .await
        .unwrap();
    let label = format!("gitops.environment={env}");
    let left = labelled(docker, &label).await;
    assert!(left.is_empty(), "containers left: {left:?}");
    let filters = HashMap::from([("label".to_owned(), vec![label.clone()])]);
    let networks = docker
        .client()
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert!(networks.is_empty(), "networks left: {networks:?}");
    let volumes = docker
        .client()
        .list_volumes(Some(
            ListVolumesOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default();
    assert!(volumes.is_empty(), "volumes left: {volumes:?}");
}

fn url(done: &Completion, key: &str) -> String {
    done.outputs
        .get(key)
        .unwrap_or_else(|| panic!("no output {key}: {:?}", done.outputs))
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_environment_is_served_replaced_and_stopped_without_leftovers() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = format!("preview-pr-{}", std::process::id());
    let _cleanup = EnvGuard(env.clone());
    let run = Arc::new(RunInfo::new("docker-deploy", "p", push_event(), dir.path()));
    let release = |version: &str| {
        context(
            &run,
            &env,
            serde_json::json!({"image": image(), "port": 8080, "command": serve(version), "ready_timeout": 20}),
        )
    };
    let first = docker.deploy(release("v1")).await.unwrap();
    let url1 = url(&first, "url");
    assert!(url1.starts_with("http://127.0.0.1:"), "{url1}");
    assert_eq!(url(&first, "url_app"), url1);
    assert_eq!(get(&url1).as_deref(), Some("v1\n"));

    let second = docker.deploy(release("v2")).await.unwrap();
    let url2 = url(&second, "url");
    assert_eq!(get(&url2).as_deref(), Some("v2\n"));
    assert!(get(&url1).is_none(), "the first release is gone");
    let label = format!("gitops.environment={env}");
    let containers = labelled(&docker, &label).await;
    assert_eq!(containers.len(), 1, "redeploying replaced the container");

    // A release that never becomes ready fails the deploy, is not left running, and the
    // previous release goes on serving.
    let mut broken = release("v3");
    broken.with.insert(
        "command".into(),
        serde_json::json!(["/bin/sh", "-c", "echo no config; exit 4"]),
    );
    let err = docker.deploy(broken).await.unwrap_err().to_string();
    assert!(
        err.contains(
            "service app: the container exited before it was ready (exit code 4): no config"
        ),
        "{err}"
    );
    assert_eq!(get(&url2).as_deref(), Some("v2\n"));
    assert_eq!(labelled(&docker, &label).await.len(), 1);

    stop_and_check_nothing_left(&docker, &run, &env).await;
    assert!(get(&url2).is_none(), "nothing answers after the stop");
}

/// A port nothing listens on now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_reach_each_other_by_name_and_volumes_outlive_redeploys() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = format!("staging-{}", std::process::id());
    let _cleanup = EnvGuard(env.clone());
    let run = Arc::new(RunInfo::new(
        "docker-services",
        "p",
        push_event(),
        dir.path(),
    ));
    // `api` counts its starts in a volume and serves the count on the environment's network
    // only; `web` fetches it from `api` by name and serves it on 127.0.0.1.
    let api = "n=$(cat /data/count 2>/dev/null || echo 0); n=$((n+1)); echo $n > /data/count; \
               mkdir -p /www && echo api-start-$n > /www/index.html && exec httpd -f -p 8080 -h /www";
    let web = "mkdir -p /www; until wget -q -O /www/index.html http://api:8080/; do sleep 0.2; done; \
               exec httpd -f -p 8080 -h /www";
    let with = |host_port: Option<u16>| {
        let mut web =
            serde_json::json!({"image": image(), "port": 8080, "command": ["/bin/sh", "-c", web]});
        if let Some(p) = host_port {
            web["host_port"] = p.into();
        }
        serde_json::json!({
            "ready_timeout": 30,
            "services": {
                "api": {"image": image(), "command": ["/bin/sh", "-c", api], "volumes": ["data:/data"], "env": {"ROLE": "api"}},
                "web": web,
            }
        })
    };
    let first = docker
        .deploy(context(&run, &env, with(None)))
        .await
        .unwrap();
    assert_eq!(get(&url(&first, "url")).as_deref(), Some("api-start-1\n"));
    assert_eq!(url(&first, "url"), url(&first, "url_web"));
    assert!(
        !first.outputs.contains_key("url_api"),
        "{:?}",
        first.outputs
    );
    assert!(first.outputs["container_api"].contains("-api-"));

    // A fixed host port: the old release goes first, and the volume keeps the count.
    let port = free_port();
    let second = docker
        .deploy(context(&run, &env, with(Some(port))))
        .await
        .unwrap();
    assert_eq!(url(&second, "url"), format!("http://127.0.0.1:{port}/"));
    assert_eq!(get(&url(&second, "url")).as_deref(), Some("api-start-2\n"));
    let label = format!("gitops.environment={env}");
    let mut services: Vec<String> = labelled(&docker, &label)
        .await
        .into_iter()
        .map(|c| c.labels.unwrap()["gitops.service"].clone())
        .collect();
    services.sort();
    assert_eq!(services, ["api", "web"], "one container per service");

    stop_and_check_nothing_left(&docker, &run, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_waits_for_the_images_healthcheck() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("gitops-test-health:{}", std::process::id());
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!(
            "FROM {}\nHEALTHCHECK --interval=1s --timeout=2s --retries=2 CMD [\"test\", \"-f\", \"/tmp/ready\"]\n",
            image()
        ),
    )
    .unwrap();
    let run = Arc::new(RunInfo::new("docker-health", "p", push_event(), dir.path()));
    let mut build = StageContext::new(run.clone(), "build");
    build.with = serde_json::json!({"dockerfile": "Dockerfile", "tag": tag})
        .as_object()
        .unwrap()
        .clone();
    assert_eq!(
        docker.execute(build).await.unwrap().outcome,
        Outcome::Success
    );
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", &self.0])
                .output();
        }
    }
    let _untag = Untag(tag.clone());

    let env = format!("health-{}", std::process::id());

    let _cleanup = EnvGuard(env.clone());
    // Healthy only after two seconds; no port, so only the health check can say it is ready.
    let slow = serde_json::json!({
        "services": {"worker": {"image": tag, "command": ["/bin/sh", "-c", "sleep 2; mkdir -p /tmp; touch /tmp/ready; exec sleep 600"]}}
    });
    let done = docker.deploy(context(&run, &env, slow)).await.unwrap();
    assert!(!done.outputs.contains_key("url"), "{:?}", done.outputs);
    let health = docker
        .client()
        .inspect_container(&done.outputs["container_worker"], None)
        .await
        .unwrap()
        .state
        .and_then(|s| s.health)
        .and_then(|h| h.status)
        .map(|s| s.to_string());
    assert_eq!(health.as_deref(), Some("healthy"), "deployed once healthy");

    // Never healthy: the deploy fails saying so, and the healthy release stays.
    let never = serde_json::json!({
        "ready_timeout": 5,
        "services": {"worker": {"image": tag, "command": ["/bin/sh", "-c", "exec sleep 600"]}}
    });
    let err = docker
        .deploy(context(&run, &env, never))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("service worker: not ready within 5s: its health check says "),
        "{err}"
    );
    let left = labelled(&docker, &format!("gitops.environment={env}")).await;
    assert_eq!(left.len(), 1);
    assert_eq!(
        left[0].names.as_ref().unwrap()[0].trim_start_matches('/'),
        done.outputs["container_worker"]
    );
    stop_and_check_nothing_left(&docker, &run, &env).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_deploy_parameters_are_clear_errors_and_create_nothing() {
    let Some((docker, _image)) = backend().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let env = format!("bad-{}", std::process::id());
    let _cleanup = EnvGuard(env.clone());
    let run = Arc::new(RunInfo::new("docker-bad", "p", push_event(), dir.path()));
    let cases = [
        (
            serde_json::json!({"image": image(), "prot": 80}),
            "invalid parameters: unknown parameter `with.prot` (a docker deployment knows image, port, host_port, command, env, health_path, volumes, services, primary, ready_timeout)",
        ),
        (
            serde_json::json!({"port": 80}),
            "invalid parameters: `with.image` must be an image name, found nothing",
        ),
        (
            serde_json::json!({"services": ["web"]}),
            "invalid parameters: `with.services` must be a map of service names to services, found [\"web\"]",
        ),
        (
            serde_json::json!({"services": {"web": {"image": image(), "port": 70000}}}),
            "invalid parameters: `with.services.web.port` must be a port number (1 to 65535), found 70000",
        ),
        (
            serde_json::json!({"services": {"web": {"image": image(), "volumes": ["/data"]}}}),
            "invalid parameters: `with.services.web.volumes` must be a list of `name:/path` (name: letters, digits, - and _), found [\"/data\"]",
        ),
        (
            serde_json::json!({"services": {"web": {"image": image()}}, "primary": "db"}),
            "invalid parameters: `with.primary`: there is no service db",
        ),
        (
            serde_json::json!({"services": {"a b": {"image": image()}}}),
            "invalid parameters: `with.services.a b`: a service name has letters, digits, - and _ only",
        ),
        (
            serde_json::json!({"image": image(), "env": {"A": [1]}}),
            "invalid parameters: `with.env` must be a map of names to strings, found {\"A\":[1]}",
        ),
    ];
    for (with, want) in cases {
        let err = docker.deploy(context(&run, &env, with)).await.unwrap_err();
        assert!(matches!(err, BackendError::InvalidParameters(_)));
        assert_eq!(err.to_string(), want);
    }
    let err = docker
        .deploy(context(
            &run,
            &env,
            serde_json::json!({"image": common::MISSING_IMAGE}),
        ))
        .await
        .unwrap_err();
    common::assert_missing_image(&err);
    // Not even the environment's network: the image is looked for first.
    let filters = HashMap::from([(
        "label".to_owned(),
        vec![format!("gitops.environment={env}")],
    )]);
    let networks = docker
        .client()
        .list_networks(Some(
            ListNetworksOptionsBuilder::default()
                .filters(&filters)
                .build(),
        ))
        .await
        .unwrap();
    assert!(networks.is_empty(), "{networks:?}");
    stop_and_check_nothing_left(&docker, &run, &env).await;
}
