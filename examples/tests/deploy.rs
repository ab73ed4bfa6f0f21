//! The operator's artefacts in `examples/deploy/`: the systemd unit passes `systemd-analyze
//! verify` without a complaint, and the Dockerfile builds the package and binary that exist.
//! (The image itself is not built here: its base images come from a registry this machine
//! cannot reach.)

use std::path::Path;
use std::process::Command;

const DEPLOY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy");

#[test]
fn the_systemd_unit_verifies_cleanly() {
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("skipped: systemd-analyze is not installed");
        return;
    };
    assert!(out.status.success());
    let unit = Path::new(DEPLOY).join("gitops.service");
    let out = Command::new("systemd-analyze")
        .args(["verify", unit.to_str().unwrap()])
        .output()
        .unwrap();
    let complaints = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "{complaints}"
    );
    // It would not be checked at all if verify read nothing: a broken copy is refused.
    let text = std::fs::read_to_string(&unit).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("gitops.service");
    std::fs::write(&broken, text.replace("Type=exec", "Type=sometimes")).unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", broken.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("sometimes"),
        "a broken unit is noticed"
    );
    // The secret is read by the shell, not expanded (to nothing) by systemd.
    assert!(text.contains("$${CREDENTIALS_DIRECTORY}"), "{text}");
    assert!(text.contains("--github-secret-env GITHUB_WEBHOOK_SECRET"));
}

#[test]
fn the_dockerfile_builds_the_gitops_binary_of_this_workspace() {
    let dockerfile = std::fs::read_to_string(Path::new(DEPLOY).join("Dockerfile")).unwrap();
    let build = dockerfile
        .lines()
        .find(|l| l.contains("cargo build"))
        .expect("a cargo build step");
    assert!(build.contains("-p gitops-examples --bin gitops"), "{build}");
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    assert!(manifest.contains("name = \"gitops-examples\""));
    assert!(manifest.contains("[[bin]]\nname = \"gitops\""));
    assert!(dockerfile.contains("COPY --from=build /out/gitops /usr/local/bin/gitops"));
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/gitops\"]"));
    // The build context leaves the build output out.
    let ignore =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../.dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l.trim() == "target/"), "{ignore}");
}
