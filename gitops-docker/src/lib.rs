//! The Docker backend of gitops (to come): stages run in containers and environments are sets
//! of containers on a network of their own, through the Docker Engine API (bollard).
//!
//! This crate is a placeholder in the workspace until the Docker backend issue lands: it
//! compiles against `gitops-core` and exports nothing yet.
#![warn(missing_docs)]
