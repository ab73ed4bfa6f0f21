//! Backend names to implementations.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{Deployer, Executor};

/// Maps the backend names used in config to [`Executor`]s and [`Deployer`]s.
#[derive(Clone, Default)]
pub struct BackendRegistry {
    executors: BTreeMap<String, Arc<dyn Executor>>,
    deployers: BTreeMap<String, Arc<dyn Deployer>>,
}

impl std::fmt::Debug for BackendRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackendRegistry")
            .field("executors", &self.executors.keys().collect::<Vec<_>>())
            .field("deployers", &self.deployers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl BackendRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `executor` under `name`, replacing any earlier one.
    pub fn with_executor(mut self, name: impl Into<String>, executor: Arc<dyn Executor>) -> Self {
        self.executors.insert(name.into(), executor);
        self
    }

    /// Registers `deployer` under `name`, replacing any earlier one.
    pub fn with_deployer(mut self, name: impl Into<String>, deployer: Arc<dyn Deployer>) -> Self {
        self.deployers.insert(name.into(), deployer);
        self
    }

    /// The executor registered as `name`.
    pub fn executor(&self, name: &str) -> Option<&Arc<dyn Executor>> {
        self.executors.get(name)
    }

    /// The deployer registered as `name`.
    pub fn deployer(&self, name: &str) -> Option<&Arc<dyn Deployer>> {
        self.deployers.get(name)
    }

    /// Every backend name known, for config validation.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .executors
            .keys()
            .chain(self.deployers.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// The executors, by name.
    pub fn executors(&self) -> impl Iterator<Item = (&str, &Arc<dyn Executor>)> {
        self.executors.iter().map(|(name, e)| (name.as_str(), e))
    }

    /// The deployers, by name.
    pub fn deployers(&self) -> impl Iterator<Item = (&str, &Arc<dyn Deployer>)> {
        self.deployers.iter().map(|(name, d)| (name.as_str(), d))
    }
}
