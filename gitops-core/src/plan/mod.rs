//! The planner: `event + config -> Plan`, purely and deterministically.
//!
//! A plan says which pipelines an event runs, each with its stages in topological order, the
//! environment instances they deploy to (`preview-pr-7`), the templates that the event alone
//! resolves, and the stages whose `if:` the event already decides. Serialised to JSON it is a dry
//! run of what the event would do.

mod graphs;
pub(crate) mod layout;
mod matcher;
mod planner;

use std::sync::Arc;

use indexmap::IndexMap;
use serde::Serialize;

use crate::backend::BackendRegistry;
use crate::config::{Action, CheckoutMode, Environment, OnConflict, Retry, Stage};
use crate::event::GitEvent;
use crate::graph::StageGraph;

use graphs::PipelineGraph;
pub(crate) use layout::Layout;
pub use planner::Planner;

/// What changed in the event's commits, for `paths:` filters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Changes {
    /// Not known (no repository at hand): `paths` filters match, and the plan says they were not
    /// checked.
    #[default]
    Unknown,
    /// The paths that changed, relative to the repository root.
    Paths(Vec<String>),
}

/// Why an event cannot be planned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlanError {
    /// A stage deploys to or stops a per-pull-request environment, but the event is not a pull
    /// request.
    #[error(
        "pipeline \"{pipeline}\", stage \"{stage}\": environment \"{environment}\" is per pull request, but the event is a {kind}"
    )]
    NotAPullRequest {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// The environment.
        environment: String,
        /// The event's kind.
        kind: String,
    },
    /// An environment's `name` template renders to an unusable name for this event.
    #[error(
        "pipeline \"{pipeline}\", stage \"{stage}\": environment \"{environment}\" has no usable name for this event (rendered \"{rendered}\"; an instance name is lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"
    )]
    BadEnvironmentName {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// The environment.
        environment: String,
        /// What the name template rendered to.
        rendered: String,
    },
    /// An environment's `name` template renders to the name of another environment, whose
    /// instance it would take over.
    #[error(
        "pipeline \"{pipeline}\", stage \"{stage}\": environment \"{environment}\" renders the instance name \"{rendered}\", which is environment \"{rendered}\"'s own"
    )]
    InstanceOfAnother {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// The environment whose name template rendered it.
        environment: String,
        /// What it rendered.
        rendered: String,
    },
    /// A stage names a backend that is not registered, or one that cannot do what the stage
    /// asks (a deploy needs a deployer).
    #[error(
        "pipeline \"{pipeline}\", stage \"{stage}\": backend \"{backend}\" has no {needed} registered (registered backends: {known})"
    )]
    UnknownBackend {
        /// The pipeline.
        pipeline: String,
        /// The stage.
        stage: String,
        /// The backend it names.
        backend: String,
        /// "an executor" or "a deployer".
        needed: &'static str,
        /// The backends registered.
        known: String,
    },
    /// No pipeline has this name.
    #[error("no pipeline \"{pipeline}\" in the config")]
    NoSuchPipeline {
        /// The name asked for.
        pipeline: String,
    },
    /// A stage id that the pipeline does not have.
    #[error("pipeline \"{pipeline}\" has no stage \"{stage}\"")]
    UnknownStage {
        /// The pipeline.
        pipeline: String,
        /// The stage asked for.
        stage: String,
    },
    /// The pipeline's stage graph is unsound (a config changed after it was validated).
    #[error("pipeline \"{pipeline}\": {source}")]
    InvalidGraph {
        /// The pipeline.
        pipeline: String,
        /// What is wrong with its graph.
        source: crate::graph::GraphError,
    },
}

/// What an event runs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The event planned for.
    pub event: GitEvent,
    /// The pipelines it triggers, in config order.
    pub pipelines: Vec<PlannedPipeline>,
    /// What the engine wants the people running it to know (an environment the event's
    /// config defines differently from the trusted ref, which is not used).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// One triggered pipeline.
#[derive(Debug, Clone)]
pub struct PlannedPipeline {
    /// The pipeline's name.
    pub name: String,
    /// Its stages, in config order.
    pub stages: Vec<PlannedStage>,
    /// The rendered concurrency group.
    pub concurrency: Option<PlannedConcurrency>,
    /// How its run gets its working tree.
    pub checkout: CheckoutMode,
    /// With a `paths` filter: whether it was checked (false when the changed paths were unknown).
    pub paths_checked: Option<bool>,
    graph: GraphRef,
    pub(crate) layout: Layout,
}

impl PlannedPipeline {
    /// The stage graph.
    pub fn graph(&self) -> &StageGraph {
        &self.graph.0.graph
    }

    /// A stage by id.
    pub fn stage(&self, id: &str) -> Option<&PlannedStage> {
        self.graph.get(id).map(|s| &self.stages[s.index()])
    }

    /// Checks, before anything runs, that every stage has a backend in `registry` that can do
    /// what it asks: an executor for `run` stages, a deployer for `deploy` and `stop` stages.
    pub fn check_backends(&self, registry: &BackendRegistry) -> Result<(), PlanError> {
        for stage in &self.stages {
            let (ok, needed) = match stage.action {
                Action::Run => (registry.executor(&stage.backend).is_some(), "an executor"),
                Action::Deploy | Action::Stop => {
                    (registry.deployer(&stage.backend).is_some(), "a deployer")
                }
            };
            if !ok {
                return Err(PlanError::UnknownBackend {
                    pipeline: self.name.clone(),
                    stage: stage.id.to_string(),
                    backend: stage.backend.to_string(),
                    needed,
                    known: registry.names().join(", "),
                });
            }
        }
        Ok(())
    }

    /// Stage ids in an order where each comes after its needs (read from the graph, which the
    /// plan shares with its pipeline: a plan of many stages copies no id).
    pub fn order(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        let graph = self.graph();
        graph.order().iter().map(move |&s| graph.id(s))
    }
}

impl Serialize for PlannedPipeline {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            name: &'a str,
            stages: &'a [PlannedStage],
            order: Vec<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            concurrency: &'a Option<PlannedConcurrency>,
            #[serde(skip_serializing_if = "Option::is_none")]
            paths_checked: Option<bool>,
        }
        Json {
            name: &self.name,
            stages: &self.stages,
            order: self.order().collect(),
            concurrency: &self.concurrency,
            paths_checked: self.paths_checked,
        }
        .serialize(s)
    }
}

/// The stage graph a plan shares with the other plans of its pipeline.
#[derive(Debug, Clone)]
struct GraphRef(Arc<PipelineGraph>);

impl std::ops::Deref for GraphRef {
    type Target = StageGraph;
    fn deref(&self) -> &StageGraph {
        &self.0.graph
    }
}

/// A pipeline's concurrency group, rendered for the event.
#[derive(Debug, Clone, Serialize)]
pub struct PlannedConcurrency {
    /// The group.
    pub group: String,
    /// What a new run does when the group is busy.
    pub on_conflict: OnConflict,
}

/// One stage of a triggered pipeline. What the event cannot change (its needs, its command) is
/// read from the stage as configured, which the plan shares; its id is the graph's, and its
/// backend's name is one allocation shared by the plan's stages of that backend.
#[derive(Debug, Clone)]
pub struct PlannedStage {
    /// The stage id.
    pub id: Arc<str>,
    /// The backend that runs it.
    pub backend: Arc<str>,
    /// What it does.
    pub action: Action,
    /// The environment instance it deploys to or stops (`preview-pr-7`).
    pub environment: Option<String>,
    /// A failure does not fail the run.
    pub continue_on_error: bool,
    /// What most stages do not have (read it with [`details`](Self::details)): allocated only
    /// for a stage that has some, so that a plan of many plain stages stays small.
    pub(crate) details: Option<Box<PlannedDetails>>,
    /// The stage as configured: the scheduler renders its templates from this, never from the
    /// partly rendered text above (event data must not be read as template syntax).
    pub(crate) source: Arc<Stage>,
    /// The environment it deploys to or stops, as configured.
    pub(crate) environment_settings: Option<Arc<Environment>>,
}

impl Serialize for PlannedStage {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Json<'a> {
            id: &'a str,
            needs: &'a [String],
            backend: &'a str,
            action: Action,
            environment: &'a Option<String>,
            #[serde(skip_serializing_if = "Option::is_none")]
            run: Option<&'a str>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            continue_on_error: bool,
            #[serde(flatten)]
            details: Option<&'a PlannedDetails>,
        }
        Json {
            id: &self.id,
            needs: self.needs(),
            backend: &self.backend,
            action: self.action,
            environment: &self.environment,
            run: self.run(),
            continue_on_error: self.continue_on_error,
            details: self.details.as_deref(),
        }
        .serialize(s)
    }
}

/// The parts of a [`PlannedStage`] that most stages do not have.
#[derive(Debug, Clone, Default, Serialize)]
#[non_exhaustive]
pub struct PlannedDetails {
    /// The environment as named in config (`preview`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment_config: Option<String>,
    /// Environment variables; what the event resolves is filled in, the rest stays `${{ }}`.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub env: IndexMap<String, String>,
    /// Backend parameters, resolved like `env`.
    #[serde(skip_serializing_if = "IndexMap::is_empty")]
    pub with: IndexMap<String, serde_json::Value>,
    /// The `if:` condition as written.
    #[serde(rename = "if", skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Set when the event alone already decides that the stage will be skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skip: Option<PlannedSkip>,
    /// Timeout (`90s`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Retry policy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    /// Why the stage may not do what it asks (deploy to or stop an environment that its
    /// event's trust level or the environment's protection does not allow): it fails with this
    /// message before its backend is called.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

impl PlannedDetails {
    fn is_empty(&self) -> bool {
        self.environment_config.is_none()
            && self.env.is_empty()
            && self.with.is_empty()
            && self.condition.is_none()
            && self.skip.is_none()
            && self.timeout.is_none()
            && self.retry.is_none()
            && self.refused.is_none()
    }
}

static NO_DETAILS: std::sync::LazyLock<PlannedDetails> =
    std::sync::LazyLock::new(PlannedDetails::default);

impl PlannedStage {
    /// Its direct needs.
    pub fn needs(&self) -> &[String] {
        &self.source.needs
    }

    /// The command, exactly as written.
    pub fn run(&self) -> Option<&str> {
        self.source.run.as_deref()
    }

    /// Its environment's config name, rendered `env` and `with`, condition, skip, timeout and
    /// retry policy (all empty for a plain stage).
    pub fn details(&self) -> &PlannedDetails {
        self.details.as_deref().unwrap_or(&NO_DETAILS)
    }

    /// Set when the event alone already decides that the stage will be skipped.
    pub fn skip(&self) -> Option<&PlannedSkip> {
        self.details().skip.as_ref()
    }

    fn set_skip(&mut self, skip: PlannedSkip) {
        self.details.get_or_insert_with(Default::default).skip = Some(skip);
    }

    /// The environment it deploys to or stops, as named in config (`preview`).
    pub fn configured_environment(&self) -> Option<&str> {
        self.source.environment()
    }

    /// Why the stage may not do what it asks, when it may not (see [`PlannedDetails::refused`]).
    pub fn refused(&self) -> Option<&str> {
        self.details().refused.as_deref()
    }

    /// Refuses the stage: it will fail with `why` before its backend is called.
    pub(crate) fn refuse(&mut self, why: String) {
        self.details.get_or_insert_with(Default::default).refused = Some(why);
    }
}

/// Why a planned stage will be skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum PlannedSkip {
    /// Its `if:` is false for this event.
    ConditionFalse {
        /// The condition.
        expr: String,
    },
    /// A stage it needs will be skipped (and its condition requires success).
    NeedSkipped {
        /// That need.
        need: String,
    },
}
