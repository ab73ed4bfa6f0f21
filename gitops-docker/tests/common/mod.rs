//! What the Docker tests share: the engine (or a skip), a busybox image built `FROM scratch`,
//! label queries and an HTTP client for loopback.
#![allow(dead_code)]

use bollard::query_parameters::ListContainersOptionsBuilder;
use gitops_docker::DockerBackend;

/// The test image: a tag of this test process's own, so that tests running at once never
/// rebuild an image another one uses.
pub fn image() -> &'static str {
    static TAG: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TAG.get_or_init(|| format!("gitops-test-busybox:{}", std::process::id()))
}

/// Tests of this process using the test image now.
static USERS: std::sync::Mutex<usize> = std::sync::Mutex::new(0);

/// Held while the test image is built, so that the tests of one process build it once, never two
/// at a time.
static BUILDING: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// One test's use of the test image: the last one to end removes it (while another test of the
/// process still uses it, it stays).
pub struct ImageGuard;

impl Drop for ImageGuard {
    fn drop(&mut self) {
        // Held while removing: a test starting meanwhile waits, then builds the image again.
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users -= 1;
        if *users == 0 {
            let _ = std::process::Command::new("docker")
                .args(["rmi", "-f", image()])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// The engine, or `None` (with `skipped: ...`) when the Docker tests are not asked for.
pub async fn backend() -> Option<(DockerBackend, ImageGuard)> {
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
    let _building = BUILDING.lock().await;
    let first = {
        let mut users = USERS.lock().unwrap_or_else(|e| e.into_inner());
        *users += 1;
        *users == 1
    };
    let guard = ImageGuard;
    if first {
        docker
            .build_busybox_image(image())
            .await
            .unwrap_or_else(|e| panic!("{e} (scripts/test.sh installs busybox-static)"));
    }
    Some((docker, guard))
}

/// The containers (running or not) carrying `label` (`key=value`).
pub async fn labelled(
    docker: &DockerBackend,
    label: &str,
) -> Vec<bollard::models::ContainerSummary> {
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

/// An HTTP GET on loopback: the body, or `None` when nothing answers.
pub fn get(url: &str) -> Option<String> {
    use std::io::{Read, Write};
    let addr = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    write!(s, "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split("\r\n\r\n").nth(1).map(str::to_owned)
}

/// An image no test builds.
pub const MISSING_IMAGE: &str = "gitops-no-such-image:never";

/// `err` says that [`MISSING_IMAGE`] is not on the engine.
pub fn assert_missing_image(err: &gitops_core::backend::BackendError) {
    let want = format!("image \"{MISSING_IMAGE}\" is not on the Docker engine");
    assert!(err.to_string().contains(&want), "{err}");
}

/// Removes what carries `gitops.environment=<name>` when dropped, so that a failing test leaves
/// nothing behind either (with the docker CLI: a panicking test has no runtime to use).
pub struct EnvGuard(pub String);

impl Drop for EnvGuard {
    fn drop(&mut self) {
        let filter = format!("label=gitops.environment={}", self.0);
        for (list, remove) in [
            (&["ps", "-aq"][..], &["rm", "-f"][..]),
            (&["network", "ls", "-q"][..], &["network", "rm"][..]),
            (&["volume", "ls", "-q"][..], &["volume", "rm", "-f"][..]),
        ] {
            let Ok(out) = std::process::Command::new("docker")
                .args(list)
                .args(["--filter", &filter])
                .output()
            else {
                return;
            };
            let ids = String::from_utf8_lossy(&out.stdout).into_owned();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = std::process::Command::new("docker")
                    .args(remove)
                    .args(&ids)
                    .output();
            }
        }
    }
}
