//! The gitops engine: Git events in, pipelines of stages planned as a DAG, run on backends,
//! deployed to environments, recorded in a ledger.
//!
//! The data flow, one module each:
//!
//! ```text
//! source (webhooks) ─► event::GitEvent ─► plan::Planner ─► plan::Plan ─► scheduler ─► backend
//!                                            ▲                               │   (Executor,
//!                      config (.gitops.yml, read from the event's commit)    │    Deployer)
//!                                                                environment ┘ (locks, approvals,
//!                                                                               pins) ─► ledger
//! ```
//!
//! [`config`] parses and validates `.gitops.yml`, [`graph`] holds each pipeline's stages as a
//! DAG, [`expr`] is the `${{ }}` language, [`release`] the semver rules of tag triggers, and
//! [`plan`] decides, purely, what an event runs. [`scheduler`] runs a plan on the backends of
//! [`backend`]; deploy and stop stages pass through [`environment`]; [`ledger`] records runs and
//! deployments, [`logs`] keeps their stages' logs, [`report`] sends forge-triggered runs' results
//! back to the forge; [`engine`] ties them together for an application.
//!
//! Each module imports only modules before it in this order: `release`, `event`, `expr`,
//! `graph`, `secret`, `backend` (the contract a backend author reads alone: it imports only
//! `event` and `secret`), `config`, `trust`, `plan`, `scheduler`, `ledger`, `logs`,
//! `environment`, `repo`, `source`, `report`, then the crate's `Error` and `engine`.
#![warn(missing_docs)]

pub mod backend;
pub mod config;
pub mod engine;
pub mod environment;
mod error;
pub mod event;
pub mod expr;
pub mod graph;
pub mod ledger;
pub mod logs;
pub mod plan;
pub mod release;
pub mod repo;
pub mod report;
pub mod scheduler;
pub mod secret;
pub mod source;
#[cfg(feature = "testing")]
pub mod testing;
pub mod trust;

pub use backend::ErrorChain;
pub use error::{Error, Result};
pub use semver;
