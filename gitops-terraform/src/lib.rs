//! The Terraform backend of gitops (to come): `plan` stages on pull requests, `apply` of exactly
//! that plan on deploy, one workspace per environment, driven through the `terraform` (or
//! `tofu`) CLI's JSON interfaces.
//!
//! This crate is a placeholder in the workspace until the Terraform backend issue lands: it
//! compiles against `gitops-core` and exports nothing yet.
#![warn(missing_docs)]
