//! The Kubernetes backend of gitops (to come): stages run as Jobs, environments are namespaces,
//! manifests are applied server-side (kube, k8s-openapi).
//!
//! This crate is a placeholder in the workspace until the Kubernetes backend issue lands: it
//! compiles against `gitops-core` and exports nothing yet.
#![warn(missing_docs)]
