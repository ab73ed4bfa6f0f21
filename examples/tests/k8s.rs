//! The `k8s-release` starter app on the in-memory Kubernetes API: a release deployed to its
//! namespace, a smoke-test Job run there, and the namespace deleted.

use std::process::Command;

mod common;
use common::text;

#[test]
fn the_k8s_starter_deploys_a_release_runs_a_smoke_test_and_stops() {
    let out = Command::new(env!("CARGO_BIN_EXE_k8s-release"))
        .arg("--in-memory")
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "  pipeline release: deploy success, smoke success",
        "    deploy │ Deployment web rolled out",
        "    smoke │ smoke test against http://web.gitops-production.svc.cluster.local:80/",
        "    url = http://web.gitops-production.svc.cluster.local:80/",
        "    deployment web: 2 of 2 available, image busybox:1.36",
        "  production stopped (deployment #2: success)",
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "no line {want:?} in:\n{stdout}"
        );
    }
    let err = Command::new(env!("CARGO_BIN_EXE_k8s-release"))
        .arg("--bogus")
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(2), "clap's usage error");
    assert!(
        text(&err.stderr).starts_with("error: unexpected argument '--bogus' found"),
        "{}",
        text(&err.stderr)
    );
}
