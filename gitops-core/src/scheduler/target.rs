//! What runs a stage: the executor or deployer of its backend, resolved once per run for each
//! (backend, action) pair of the plan.

use std::sync::Arc;

use crate::backend::{BackendRegistry, Deployer, Executor};
use crate::config::Action;

/// What runs a stage.
pub(super) enum Target {
    Execute(Arc<dyn Executor>),
    Deploy(Arc<dyn Deployer>),
    Stop(Arc<dyn Deployer>),
    /// No backend can run it: the stage fails with this message.
    Missing(String),
}

impl Target {
    pub fn new(action: Action, backend: &str, registry: &BackendRegistry) -> Target {
        let missing =
            |what: &str| Target::Missing(format!("no {what} registered for backend \"{backend}\""));
        match action {
            Action::Run => registry
                .executor(backend)
                .map_or_else(|| missing("executor"), |e| Target::Execute(e.clone())),
            Action::Deploy => registry
                .deployer(backend)
                .map_or_else(|| missing("deployer"), |d| Target::Deploy(d.clone())),
            Action::Stop => registry
                .deployer(backend)
                .map_or_else(|| missing("deployer"), |d| Target::Stop(d.clone())),
        }
    }
}
