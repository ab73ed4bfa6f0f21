//! Building configs in code, for applications that generate their pipelines rather than read
//! them from `.gitops.yml`. A built config is checked with [`Config::validate`].

use std::sync::Arc;

use indexmap::IndexMap;

use super::model::{
    CheckoutMode, Config, Environment, Pipeline, PullRequestTrigger, PushTrigger, Stage,
    TagTrigger, Triggers,
};
use crate::backend::{Approval, OnBusy};

impl Config {
    /// An empty version 1 config.
    pub fn new() -> Config {
        Config {
            version: 1,
            environments: IndexMap::new(),
            pipelines: IndexMap::new(),
        }
    }

    /// Adds (or replaces) a pipeline.
    pub fn with_pipeline(mut self, name: impl Into<String>, pipeline: Pipeline) -> Config {
        self.pipelines.insert(name.into(), pipeline);
        self
    }

    /// Adds (or replaces) an environment.
    pub fn with_environment(mut self, name: impl Into<String>, environment: Environment) -> Config {
        self.environments.insert(name.into(), environment);
        self
    }
}

impl Default for Config {
    fn default() -> Self {
        Config::new()
    }
}

impl Environment {
    /// An environment deployed by `backend`.
    pub fn new(backend: impl Into<String>) -> Environment {
        Environment {
            per_pull_request: false,
            backend: backend.into(),
            name: None,
            with: IndexMap::new(),
            approval: Approval::None,
            on_locked: OnBusy::Wait,
            on_pinned: OnBusy::Wait,
            auto_stop_after: None,
            deploy_from: None,
            production: false,
        }
    }

    /// It serves the product's users (`production: true`).
    pub fn production(mut self) -> Environment {
        self.production = true;
        self
    }

    /// Deployments wait for an approval.
    pub fn with_approval(mut self) -> Environment {
        self.approval = Approval::Required;
        self
    }

    /// What a deployment does while another one holds the environment.
    pub fn with_on_locked(mut self, on_locked: OnBusy) -> Environment {
        self.on_locked = on_locked;
        self
    }

    /// A backend parameter for every deployment.
    pub fn with_param(mut self, key: impl Into<String>, value: serde_json::Value) -> Environment {
        self.with.insert(key.into(), value);
        self
    }

    /// One instance per pull request.
    pub fn per_pull_request(mut self) -> Environment {
        self.per_pull_request = true;
        self
    }
}

impl Triggers {
    /// Pushes to any branch.
    pub fn push() -> Triggers {
        Triggers {
            push: Some(PushTrigger::default()),
            ..Triggers::default()
        }
    }

    /// Pull requests opened, synchronized or reopened.
    pub fn pull_request() -> Triggers {
        Triggers {
            pull_request: Some(PullRequestTrigger::default()),
            ..Triggers::default()
        }
    }

    /// Created tags.
    pub fn tag() -> Triggers {
        Triggers {
            tag: Some(TagTrigger::default()),
            ..Triggers::default()
        }
    }
}

impl Pipeline {
    /// A pipeline with no stages yet.
    pub fn new(on: Triggers) -> Pipeline {
        Pipeline {
            on,
            concurrency: None,
            checkout: CheckoutMode::default(),
            stages: IndexMap::new(),
        }
    }

    /// Adds (or replaces) a stage.
    pub fn with_stage(mut self, id: impl Into<String>, stage: Stage) -> Pipeline {
        self.stages.insert(id.into(), Arc::new(stage));
        self
    }
}

impl Stage {
    /// A stage that runs `command` on the default backend.
    pub fn run(command: impl Into<String>) -> Stage {
        Stage {
            run: Some(command.into()),
            ..Stage::default()
        }
    }

    /// A stage that deploys to `environment`.
    pub fn deploy(environment: impl Into<String>) -> Stage {
        Stage {
            deploy: Some(environment.into()),
            ..Stage::default()
        }
    }

    /// A stage that stops `environment`.
    pub fn stop(environment: impl Into<String>) -> Stage {
        Stage {
            stop: Some(environment.into()),
            ..Stage::default()
        }
    }

    /// Sets the stages it needs.
    pub fn with_needs<I: IntoIterator<Item = S>, S: Into<String>>(mut self, needs: I) -> Stage {
        self.needs = needs.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the backend.
    pub fn with_backend(mut self, backend: impl Into<String>) -> Stage {
        self.backend = Some(backend.into());
        self
    }
}
