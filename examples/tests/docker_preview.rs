//! The `docker-preview` starter app on a real Docker engine: a pull request's preview built,
//! served on 127.0.0.1, updated and torn down, with nothing left behind.
//!
//! Runs when `GITOPS_TEST_DOCKER=1` (`scripts/test.sh` sets it and starts `dockerd`).

use std::process::Command;

mod common;
use common::text;

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "docker {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn the_preview_starter_serves_updates_and_tears_down_a_pull_requests_preview() {
    if !common::opted_in("GITOPS_TEST_DOCKER", "Docker") {
        return;
    }
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
    let left = docker(&[
        "ps",
        "-aq",
        "--filter",
        "label=gitops.environment=preview-pr-7",
    ]);
    assert_eq!(left.trim(), "", "containers left");
    let networks = docker(&[
        "network",
        "ls",
        "-q",
        "--filter",
        "label=gitops.environment=preview-pr-7",
    ]);
    assert_eq!(networks.trim(), "", "networks left");
    let images = docker(&["images", "-q", "gitops-starter-site"]);
    assert_eq!(images.trim(), "", "site images left");
    // The base image the starter built stays as a cache; this test removes it.
    docker(&["rmi", "gitops-starter-busybox:latest"]);
}
