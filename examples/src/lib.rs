//! Shared pieces of the `gitops` app and the starter apps.
#![warn(missing_docs)]

pub mod output;
pub mod scratch;
pub mod starter;
pub mod text;
