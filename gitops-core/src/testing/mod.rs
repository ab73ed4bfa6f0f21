//! The backend conformance suite (feature `testing`): plain `pub async fn`s, one per clause of
//! the [`Executor`](crate::backend::Executor) and [`Deployer`](crate::backend::Deployer)
//! contracts, and [`executor_conformance`] and [`deployer_conformance`] that run them all.
//!
//! Every backend runs both suites against itself from its crate's `tests/conformance.rs`: the
//! local backend from `gitops-core/tests/conformance.rs`; Docker from
//! `gitops-docker/tests/conformance.rs` (with `GITOPS_TEST_DOCKER=1`); Terraform from
//! `gitops-terraform/tests/conformance.rs` (with `GITOPS_TEST_TERRAFORM=1`); Kubernetes from
//! `gitops-k8s/tests/conformance.rs`, always against the in-memory API of
//! `gitops_k8s::testing` and, with `GITOPS_K8S_E2E=1`, against the cluster `KUBECONFIG` names.
//!
//! What is optional is switched by what the test passes in ([`Setup`], [`DeployerSetup`]): an
//! image to run commands in, merged log streams, releases and how to look at them, never by
//! what the backend says of itself, so that a backend cannot skip a clause by claiming less.
//!
//! ```no_run
//! # async fn f() {
//! use std::sync::Arc;
//! use gitops_core::backend::local::LocalBackend;
//! use gitops_core::testing::{Setup, executor_conformance};
//! let dir = tempfile::tempdir().unwrap();
//! executor_conformance(Arc::new(LocalBackend::new()), &Setup::new(dir.path()), "local").await;
//! # }
//! ```

pub mod deployer;
pub mod executor;

pub use deployer::{DeployerSetup, EnvironmentProbe, deployer_conformance};
pub use executor::{
    Setup, collects_outputs, executor_conformance, fails_with_exit_code, passes_env, push_event,
    stops_on_cancel, streams_logs, succeeds, times_out,
};
