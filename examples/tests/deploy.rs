//! The operator's artefacts in `examples/deploy/`: the systemd unit passes `systemd-analyze
//! verify` without a complaint, the Dockerfile builds the package and binary that exist, and
//! (with `GITOPS_TEST_DOCKER_IMAGE=1`, which `scripts/test.sh` sets for a run of its own after
//! the suite) the image is built from it for real, on base images `local-bases.sh` makes from
//! this machine (no registry is reachable here), serves signed deliveries on a published
//! loopback port and runs the pipeline they trigger, as the user it says, and stops cleanly on
//! `docker stop`.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::server::{fixture, github, request, sign};
use common::{docker, docker_ok, git};

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

const WORKSPACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

/// The names this test gives its containers start so.
const PREFIX: &str = "gitops-image-test-";

/// What the test made, removed however it ends: the container (named before it is created, so
/// that one `docker run` failed to start is found too), its volume, the image and the build's
/// intermediate images (which carry the bases' `gitops.local` label).
struct Made {
    image: String,
    container: String,
}

impl Drop for Made {
    fn drop(&mut self) {
        let _ = docker(&["rm", "-f", "-v", &self.container]);
        let _ = docker(&["image", "rm", "-f", &self.image]);
        let _ = docker(&["image", "prune", "-f", "--filter", "label=gitops.local"]);
    }
}

/// What `container` wrote to standard error.
fn container_log(container: &str) -> String {
    common::text(&docker(&["logs", container]).stderr)
}

/// `check` every 200 ms until it gives a value, for 60 s at most; then fails with `failure` and
/// what `container` said.
fn poll<T>(container: &str, failure: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{failure}; serve said: {}",
            container_log(container)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Containers an earlier run of this test left (killed before it cleaned up).
fn remove_leftovers() {
    let listed = docker(&["ps", "-a", "-q", "--filter", &format!("name=^{PREFIX}")]);
    for id in common::text(&listed.stdout).split_whitespace() {
        let _ = docker(&["rm", "-f", "-v", id]);
    }
}

#[test]
fn the_image_builds_and_serves_signed_deliveries_as_an_unprivileged_user() {
    if !common::opted_in("GITOPS_TEST_DOCKER_IMAGE", "image build") {
        return;
    }
    let bases = Command::new(Path::new(DEPLOY).join("local-bases.sh"))
        .output()
        .unwrap();
    assert!(bases.status.success(), "{}", common::text(&bases.stderr));
    let build_args = common::text(&bases.stdout);
    remove_leftovers();
    let unique = format!(
        "{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let made = Made {
        image: format!("gitops-local/gitops:test-{unique}"),
        container: format!("{PREFIX}{unique}"),
    };
    let dockerfile = format!("{DEPLOY}/Dockerfile");
    // --force-rm: a failed step's container (with a half-built target dir) goes too.
    let mut args = vec!["build", "-q", "--force-rm", "-f", &dockerfile, "-t"];
    args.push(&made.image);
    args.extend(build_args.split_whitespace());
    args.push(WORKSPACE);
    docker_ok(&args);

    // The documented `docker run`, on a published loopback port, with a clone on a volume: a
    // repository whose pipeline runs on a push to main, the pushed commit fetched into it (the
    // clone's origin is a path on this machine, which the container cannot fetch from: serve
    // says so and goes on with what the clone holds).
    let fx = fixture(
        "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      whoami: { run: \"id -u > /var/lib/gitops/whoami\" }\n",
    );
    git(&fx.clone, &["fetch", "-q", "origin"]);
    let clone = &fx.clone;
    const SECRET: &str = "image-test-secret";
    let mount = format!("{}:/var/lib/gitops/clone:ro", clone.display());
    let container = made.container.as_str();
    docker_ok(&[
        "run",
        "-d",
        "--name",
        container,
        "-p",
        "127.0.0.1::8080",
        "-v",
        &mount,
        "-e",
        &format!("GITHUB_WEBHOOK_SECRET={SECRET}"),
        &made.image,
        "serve",
        "--listen",
        "0.0.0.0:8080",
        "--repo",
        "/var/lib/gitops/clone",
        "--repo-name",
        "o/upstream",
        "--state",
        "/var/lib/gitops/state",
        "--github-secret-env",
        "GITHUB_WEBHOOK_SECRET",
        "--log-format",
        "json",
    ]);
    let port = docker_ok(&["port", container, "8080/tcp"]);
    let addr: std::net::SocketAddr = port
        .lines()
        .find(|l| l.starts_with("127.0.0.1:"))
        .unwrap_or_else(|| panic!("published on loopback: {port}"))
        .parse()
        .unwrap();
    poll(
        container,
        "serve in the container did not answer /healthz",
        || {
            (std::net::TcpStream::connect(addr).is_ok()
                && request(addr, "GET", "/healthz", &[], b"").0 == 200)
                .then_some(())
        },
    );

    let body = fx.push("image");
    let signature = sign(SECRET, &body);
    let (status, answer) = github(addr, "push", "image-1", &body, Some(&signature));
    assert_eq!(status, 202, "{answer}");
    let (status, answer) = github(addr, "push", "image-1", &body, Some(&signature));
    assert_eq!(status, 200, "a redelivery is a duplicate: {answer}");
    let (status, _) = github(addr, "push", "image-2", &body, Some("sha256=00"));
    assert_eq!(status, 401, "a bad signature is refused");
    let (status, metrics) = request(addr, "GET", "/metrics", &[], b"");
    assert_eq!(status, 200);
    let accepted = metrics
        .lines()
        .find(|l| l.contains("deliveries") && l.contains("outcome=\"accepted\""))
        .unwrap_or_else(|| panic!("accepted deliveries counted: {metrics}"));
    assert!(accepted.ends_with(" 1"), "{accepted}");

    // The delivery's run: its stage ran, as serve's user.
    let ended = poll(container, "the run did not end", || {
        let (_, metrics) = request(addr, "GET", "/metrics", &[], b"");
        metrics
            .lines()
            .find(|l| l.starts_with("gitops_runs_total{"))
            .map(str::to_owned)
    });
    assert_eq!(
        ended,
        r#"gitops_runs_total{pipeline="main",result="success"} 1"#,
        "{}",
        container_log(container)
    );
    let whoami = docker_ok(&["exec", container, "cat", "/var/lib/gitops/whoami"]);
    assert_eq!(whoami, "65534", "the stage ran as serve's user");

    // Not root in the container (serve itself, PID 1: its real, effective, saved and file
    // system ids); the state on the volume is its own.
    let status = docker_ok(&["exec", container, "cat", "/proc/1/status"]);
    let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(
        uid.split_whitespace().skip(1).collect::<Vec<_>>(),
        ["65534"; 4],
        "serve runs unprivileged: {uid}"
    );
    let owner = docker_ok(&[
        "exec",
        container,
        "stat",
        "-c",
        "%u %a",
        "/var/lib/gitops/state",
    ]);
    assert_eq!(owner, "65534 700", "the state dir is private to it");

    // `docker stop` is a SIGTERM to serve (PID 1): it shuts down gracefully and exits 0.
    docker_ok(&["stop", "-t", "30", container]);
    let exit = docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", container]);
    let logs = docker(&["logs", container]);
    let log = common::text(&logs.stderr) + &common::text(&logs.stdout);
    assert_eq!(exit, "0", "{log}");
    let delivery = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|j| j["fields"]["delivery"] == "image-1" || j["delivery"] == "image-1")
        .unwrap_or_else(|| panic!("a JSON log line for the delivery: {log}"));
    assert!(delivery.to_string().contains("o/upstream"), "{delivery}");
    assert!(
        log.lines()
            .any(|l| l.contains(r#""result":"success""#) && l.contains(r#""delivery":"image-1""#)),
        "a JSON log line for the run: {log}"
    );
}
