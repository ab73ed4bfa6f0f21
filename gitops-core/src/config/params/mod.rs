//! Checks every `with` of a config at load time against the [`ParamSchema`] its backend declares
//! (`Executor::params`, `Deployer::params`; the schema's types live in
//! [`backend::params`](crate::backend::params) and are re-exported here).
//!
//! A parameter that is a command ([`ParamKind::Command`], [`ParamKind::CommandArgs`]) never holds
//! `${{ }}`: event data reaches commands only as `GITOPS_*` variables and the stage's `env`.
//! Other parameters may hold templates, whose type can only be checked once rendered.
//!
//! ```
//! use gitops_core::config::params::{ParamKind, ParamSchema};
//! use gitops_core::config::{Config, LoadOptions};
//!
//! let deploy = ParamSchema::new()
//!     .with("serve", ParamKind::Command, "the command that serves the release")
//!     .with("port", ParamKind::port(), "the port to serve on");
//! let options = LoadOptions::default().with_deploy_params("local", deploy);
//! let yaml = "version: 1\nenvironments:\n  web: {}\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      d: { deploy: web, with: { serve: \"echo ${{ event.branch }}\" } }\n";
//! let err = Config::parse_with(".gitops.yml", yaml, &options).unwrap_err();
//! assert!(err.to_string().starts_with(".gitops.yml:8:40: pipelines.ci.stages.d.with.serve: "), "{err}");
//! ```

mod check;
#[cfg(test)]
mod tests;

pub use crate::backend::params::{MAX_SECONDS, Param, ParamKind, ParamSchema};
pub(crate) use check::check;
