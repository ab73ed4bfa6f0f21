//! When a service of a new release is ready: its HEALTHCHECK, else an HTTP answer on its
//! published port, else that it runs.

use std::time::Duration;

use gitops_core::backend::{BackendError, StageContext};

use super::failed;
use super::service::Service;
use crate::DockerBackend;

impl DockerBackend {
    /// The host port the service's port was published on.
    pub(super) async fn published(
        &self,
        name: &str,
        service: &Service,
    ) -> Result<Option<u16>, BackendError> {
        let Some(port) = service.port else {
            return Ok(None);
        };
        let info = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| failed("inspecting the container", e))?;
        let running = info.state.as_ref().and_then(|s| s.running) == Some(true);
        let ports = info.network_settings.and_then(|n| n.ports);
        let published = ports
            .as_ref()
            .and_then(|p| p.get(&format!("{port}/tcp")).cloned().flatten())
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok());
        match published {
            Some(p) => Ok(Some(p)),
            None if !running => Err(BackendError::failed(format!(
                "service {}: the container exited before it was ready{}",
                service.name,
                self.tail(name).await
            ))),
            None => Err(BackendError::failed(format!(
                "service {}: port {port} of the container was not published: {ports:?}",
                service.name
            ))),
        }
    }

    /// The container's exit code and last lines of output, for an error message.
    async fn tail(&self, id: &str) -> String {
        use futures_util::StreamExt;
        let code = self
            .docker
            .inspect_container(id, None)
            .await
            .ok()
            .and_then(|i| i.state)
            .and_then(|s| s.exit_code)
            .unwrap_or(-1);
        let options = bollard::query_parameters::LogsOptionsBuilder::default()
            .stdout(true)
            .stderr(true)
            .tail("5")
            .build();
        let mut out = String::new();
        let mut logs = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = logs.next().await {
            out.push_str(&chunk.to_string());
        }
        let out = out.trim().replace('\n', " | ");
        if out.is_empty() {
            format!(" (exit code {code})")
        } else {
            format!(" (exit code {code}): {out}")
        }
    }

    /// Waits until the container is healthy (its HEALTHCHECK), answers HTTP on its published
    /// port, or, with neither, runs.
    pub(super) async fn ready(
        &self,
        id: &str,
        published: Option<u16>,
        service: &Service,
        deadline: tokio::time::Instant,
        timeout: Duration,
        ctx: &StageContext,
    ) -> Result<(), BackendError> {
        let path = &service.health_path;
        loop {
            let state = self
                .docker
                .inspect_container(id, None)
                .await
                .map_err(|e| failed("inspecting the container", e))?
                .state;
            let running = state.as_ref().and_then(|s| s.running).unwrap_or(false);
            if !running {
                return Err(BackendError::failed(format!(
                    "the container exited before it was ready{}",
                    self.tail(id).await
                )));
            }
            let health = state
                .and_then(|s| s.health)
                .and_then(|h| h.status)
                .map(|s| s.to_string())
                .filter(|h| !h.is_empty() && h != "none");
            let ok = match (health.as_deref(), published) {
                (Some(h), _) => h == "healthy",
                (None, Some(port)) => http_ok(port, path).await,
                (None, None) => true,
            };
            if ok {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackendError::failed(format!(
                    "not ready within {}s: {}",
                    timeout.as_secs(),
                    match (health, published) {
                        (Some(h), _) => format!("its health check says {h}"),
                        (None, port) => format!(
                            "http://127.0.0.1:{}{path} did not answer",
                            port.unwrap_or_default()
                        ),
                    }
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = ctx.cancelled() => return Err(BackendError::Cancelled),
            }
        }
    }
}

/// Whether an HTTP GET of `path` on 127.0.0.1:`port` answers with a status below 500.
async fn http_ok(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
        s.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        let status: u16 = std::str::from_utf8(&head[9..12]).ok()?.parse().ok()?;
        Some(status < 500)
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}
