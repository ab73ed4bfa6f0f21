//! The `docker-preview` starter app on a real Docker engine: a pull request's preview built,
//! served on 127.0.0.1, updated and torn down, with nothing left behind.
//!
//! Runs when `GITOPS_TEST_DOCKER=1` (`scripts/test.sh` sets it and starts `dockerd`).

use std::process::Command;

mod common;
use common::docker_ok;
use common::text;

#[test]
fn the_preview_starter_serves_updates_and_tears_down_a_pull_requests_preview() {
    if !common::opted_in("GITOPS_TEST_DOCKER", "Docker") {
        return;
    }
    // Not there before, so that the starter builds its base image (and must remove it).
    let _ = Command::new("docker")
        .args(["rmi", "-f", "gitops-starter-busybox:latest"])
        .output();
    let out = Command::new(env!("CARGO_BIN_EXE_docker-preview"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    let serves: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("preview-pr-7 serves http://127.0.0.1:"))
        .collect();
    assert_eq!(serves.len(), 2, "{stdout}");
    assert!(serves[0].ends_with(": <h1>welcome</h1>"), "{stdout}");
    assert!(
        serves[1].ends_with(": <h1>welcome, friend</h1>"),
        "{stdout}"
    );
    assert!(
        stdout.contains("pipeline preview-closed: teardown success"),
        "{stdout}"
    );
    assert!(stdout.contains("no longer answers"), "{stdout}");
    let left = docker_ok(&[
        "ps",
        "-aq",
        "--filter",
        "label=gitops.environment=preview-pr-7",
    ]);
    assert_eq!(left.trim(), "", "containers left");
    let networks = docker_ok(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=gitops.environment=preview-pr-7",
    ]);
    assert_eq!(networks.trim(), "", "networks left");
    assert!(
        stdout.contains("Building the base image gitops-starter-busybox:latest"),
        "{stdout}"
    );
    for image in ["gitops-starter-site", "gitops-starter-busybox"] {
        let images = docker_ok(&["images", "-q", image]);
        assert_eq!(images.trim(), "", "{image} images left");
    }
}

/// Containers, running or not, made from `image`.
fn containers_of(image: &str) -> Vec<String> {
    docker_ok(&["ps", "-aq", "--filter", &format!("ancestor={image}")])
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

#[test]
fn resume_removes_the_container_a_killed_run_left_and_finishes_the_run() {
    if !common::opted_in("GITOPS_TEST_DOCKER", "Docker") {
        return;
    }
    let image = format!("gitops-test-resume:{}", std::process::id());
    struct Untag(String);
    impl Drop for Untag {
        fn drop(&mut self) {
            for id in containers_of(&self.0) {
                let _ = Command::new("docker").args(["rm", "-f", &id]).output();
            }
            let _ = Command::new("docker").args(["rmi", "-f", &self.0]).output();
        }
    }
    let _untag = Untag(image.clone());
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let docker = gitops_docker::DockerBackend::from_env().await.unwrap();
        docker.build_busybox_image(&image).await.unwrap();
    });
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir(&repo).unwrap();
    common::git(&repo, &["init", "-q"]);
    std::fs::write(
        repo.join(".gitops.yml"),
        format!(
            "version: 1\npipelines:\n  main:\n    on: {{ push: {{}} }}\n    stages:\n      slow: {{ backend: docker, with: {{ image: \"{image}\" }}, run: \"if [ -e .first ]; then echo second; else touch .first; sleep 1000; fi\" }}\n"
        ),
    )
    .unwrap();
    common::git(&repo, &["add", "-A"]);
    common::git(&repo, &["commit", "-qm", "init"]);
    let sha = common::git(&repo, &["rev-parse", "HEAD"]);
    let event = tmp.path().join("event.json");
    let push = gitops_core::event::GitEvent::push("o/r", "main", None, &sha);
    std::fs::write(&event, serde_json::to_string(&push).unwrap()).unwrap();
    let state = tmp.path().join("state");
    let mut run = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args([
            "run",
            "--event",
            event.to_str().unwrap(),
            "--repo",
            repo.to_str().unwrap(),
        ])
        .args(["--state", state.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while containers_of(&image).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the stage's container never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    std::thread::sleep(std::time::Duration::from_millis(500));
    run.kill().unwrap(); // SIGKILL: the container is left running
    run.wait().unwrap();
    let orphans = containers_of(&image);
    assert_eq!(orphans.len(), 1, "the killed run left its container");

    let out = common::gitops(&["resume", "--state", state.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("second"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        !containers_of(&image).contains(&orphans[0]),
        "resume removed the orphaned container"
    );
    assert!(containers_of(&image).is_empty(), "and left none of its own");
}
