//! The local backend passes the executor and deployer conformance suites: environments as
//! directories, releases served from their files (always) and by a `busybox httpd` on a
//! loopback port (when busybox is installed, as `scripts/test.sh` makes sure).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::Completion;
use gitops_core::backend::local::LocalBackend;
use gitops_core::testing::{
    DeployerSetup, EnvironmentProbe, Setup, deployer_conformance, executor_conformance,
};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    executor_conformance(
        Arc::new(LocalBackend::new()),
        // One pipe for stdout and stderr, so that lines keep the order they were written in.
        &Setup::new(dir.path()).with_merged_streams(),
        "local",
    )
    .await;
}

/// Looks at the environments directory, and at what a release serves.
struct Probe {
    envs: PathBuf,
}

/// The body of `url` + `file`, over loopback; `None` when nothing answers.
async fn http_get(url: &str, file: &str) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://")?.trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    let request = format!("GET /{file} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
    s.write_all(request.as_bytes()).await.ok()?;
    let mut out = String::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_string(&mut out))
        .await
        .ok()?
        .ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    (head.starts_with("HTTP/1.") && head.get(8..12) == Some(" 200")).then(|| body.trim().to_owned())
}

#[async_trait]
impl EnvironmentProbe for Probe {
    async fn serving(&self, _environment: &str, deployed: &Completion) -> Option<String> {
        let url = deployed.outputs.get("url")?;
        match url.strip_prefix("file://") {
            Some(path) => std::fs::read_to_string(Path::new(path).join("marker.txt"))
                .ok()
                .map(|m| m.trim().to_owned()),
            None => http_get(url, "marker.txt").await,
        }
    }

    async fn leftovers(&self, environment: &str) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.envs.join(environment)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

/// Runs the deployer suite with releases of `site/` whose build writes their marker, served by
/// `serve` (or from their files).
async fn deployer_suite(name: &str, serve: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("site")).unwrap();
    std::fs::write(dir.path().join("site/index.html"), "hello").unwrap();
    let envs = dir.path().join("envs");
    let backend = LocalBackend::builder()
        .with_environments_dir(&envs)
        .with_kill_grace(Duration::from_secs(1))
        .build();
    let release = move |build: String| {
        let serve = serve.clone();
        move |marker: &str| {
            let mut with =
                json!({"files": "site", "build": format!("{build}echo {marker} > marker.txt")});
            if let Some(serve) = &serve {
                with["serve"] = json!(serve);
            }
            with.as_object().unwrap().clone()
        }
    };
    let setup = DeployerSetup::new(
        dir.path(),
        name,
        release(String::new()),
        // Slow to build: cancelled while it builds.
        release("sleep 30; ".to_owned()),
        Probe { envs: envs.clone() },
    )
    .with_bad_params([
        json!({"files": 3}),
        json!({"files": "no/such/dir"}),
        json!({"files": "../outside"}),
        json!({"serve": "x", "port": 70000}),
        json!({"ready_timeout": "soon"}),
        json!({"build": "echo ${{ event.sha }}"}),
    ])
    .with_cancel_timing(Duration::from_secs(1), Duration::from_secs(10));
    deployer_conformance(Arc::new(backend), &setup).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_deployer_conforms_with_releases_served_from_their_files() {
    deployer_suite("conformance-files", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_deployer_conforms_with_releases_served_over_http() {
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
    else {
        eprintln!(
            "skipped: no busybox for an HTTP server (scripts/test.sh installs busybox-static)"
        );
        return;
    };
    let serve = format!("exec {busybox} httpd -f -p 127.0.0.1:$PORT -h .");
    deployer_suite("conformance-http", Some(serve)).await;
}
