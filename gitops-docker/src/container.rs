//! What the executor and the deployer share about containers: removing them (also when a future
//! is dropped), the error of creating one, and names that never collide.

use bollard::errors::Error as ApiError;
use bollard::query_parameters::RemoveContainerOptionsBuilder;
use gitops_core::backend::BackendError;

/// Removes the containers when dropped unless `done`: a future dropped mid-stage (its runtime
/// shutting down) leaves nothing behind either.
pub(crate) struct Cleanup {
    pub(crate) docker: bollard::Docker,
    pub(crate) names: Vec<String>,
    pub(crate) done: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (docker, names) = (self.docker.clone(), std::mem::take(&mut self.names));
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                for name in names {
                    remove(&docker, &name).await;
                }
            });
        }
    }
}

/// The error of creating a container from `image`: a missing image says so.
pub(crate) fn create_error(image: &str, e: ApiError) -> BackendError {
    match e {
        ApiError::DockerResponseServerError {
            status_code: 404,
            message,
        } => BackendError::failed(format!(
            "image \"{image}\" is not on the Docker engine (build or pull it first): {message}"
        )),
        e => BackendError::failed_with(format!("cannot create a container of {image}"), e),
    }
}

/// Removes a container and its anonymous volumes, if it is there.
pub(crate) async fn remove(docker: &bollard::Docker, name: &str) {
    let options = RemoveContainerOptionsBuilder::default()
        .force(true)
        .v(true)
        .build();
    let _ = docker.remove_container(name, Some(options)).await;
}

/// A few random bits for container names (two attempts of one stage never collide).
pub(crate) fn rand_suffix() -> u32 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() as u32
}
