//! The local backend passes the executor conformance suite.

use std::sync::Arc;

use gitops_core::backend::local::LocalBackend;
use gitops_core::testing::{Setup, executor_conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_backend_conforms() {
    let dir = tempfile::tempdir().unwrap();
    executor_conformance(
        Arc::new(LocalBackend::new()),
        &Setup::new(dir.path()),
        "local",
    )
    .await;
}
