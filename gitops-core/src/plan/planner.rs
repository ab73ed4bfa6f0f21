//! The planner: an event and a config in, the plan of what the event runs out.

use std::sync::Arc;

use super::graphs::GraphCache;
use super::layout::{self, Layout};
use super::matcher::{Match, matches};
use super::{
    Changes, GraphRef, Plan, PlanError, PlannedConcurrency, PlannedDetails, PlannedPipeline,
    PlannedSkip, PlannedStage,
};
use crate::config::{Config, Environment, Stage, format_duration};
use crate::event::GitEvent;
use crate::expr::{Context, StageStatus, Value, event_value, render_json};

/// Turns events into plans: the same event and config always give the same plan.
///
/// A planner keeps the stage graph of each pipeline it plans, built on the pipeline's first
/// plan, for the plans after it while the pipeline's stages stay the same: plan the events of
/// a config loaded once with one planner (clones share what it keeps), and each pipeline's
/// graph is built once.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    graphs: GraphCache,
}

struct EventContext<'a>(&'a GitEvent);

impl Context for EventContext<'_> {
    fn lookup(&self, path: &[String]) -> Option<Value> {
        (path[0] == "event").then(|| event_value(self.0, &path[1..]))
    }
    fn status(&self) -> Option<StageStatus> {
        None
    }
}

impl Planner {
    /// A planner.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plans `event` against `config`. `changes` feeds `paths:` filters.
    ///
    /// ```
    /// use gitops_core::config::Config;
    /// use gitops_core::event::*;
    /// use gitops_core::plan::{Changes, Planner};
    /// let config = Config::parse(".gitops.yml", "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      test: { run: make test }\n").unwrap();
    /// let push = |branch: &str| GitEvent {
    ///     payload: EventPayload::Push(PushEvent {
    ///         git_ref: format!("refs/heads/{branch}"), branch: branch.into(),
    ///         before: None, after: Some("abc".into()), created: false, deleted: false, forced: false,
    ///     }),
    ///     repo: "o/r".into(), sha: Some("abc".into()), actor: None,
    /// };
    /// let plan = Planner::new().plan(&push("main"), &config, &Changes::Unknown).unwrap();
    /// assert_eq!(plan.pipelines[0].order().collect::<Vec<_>>(), ["test"]);
    /// assert!(Planner::new().plan(&push("dev"), &config, &Changes::Unknown).unwrap().pipelines.is_empty());
    /// ```
    pub fn plan(
        &self,
        event: &GitEvent,
        config: &Config,
        changes: &Changes,
    ) -> Result<Plan, PlanError> {
        let mut pipelines = Vec::new();
        for (index, (name, pipeline)) in config.pipelines.iter().enumerate() {
            if let Match::Yes { paths_checked } = matches(pipeline, event, changes) {
                let planned = self.plan_pipeline(index, name, config, event, paths_checked)?;
                pipelines.push(planned);
            }
        }
        Ok(Plan {
            event: event.clone(),
            pipelines,
            notes: Vec::new(),
        })
    }

    /// Plans the pipeline `name` for `event` whether or not its triggers match: for re-running
    /// and resuming a recorded run.
    pub fn plan_named(
        &self,
        event: &GitEvent,
        config: &Config,
        name: &str,
    ) -> Result<PlannedPipeline, PlanError> {
        let (index, name, _) =
            config
                .pipelines
                .get_full(name)
                .ok_or_else(|| PlanError::NoSuchPipeline {
                    pipeline: name.to_owned(),
                })?;
        self.plan_pipeline(index, name, config, event, None)
    }

    /// Plans pipeline `index` of `config`, named `name`.
    fn plan_pipeline(
        &self,
        index: usize,
        name: &str,
        config: &Config,
        event: &GitEvent,
        paths_checked: Option<bool>,
    ) -> Result<PlannedPipeline, PlanError> {
        let pipeline = &config.pipelines[index];
        let ctx = EventContext(event);
        // A loaded config's graphs are known to be sound; a hand-built one may not be.
        let built =
            self.graphs
                .get(index, &pipeline.stages)
                .map_err(|source| PlanError::InvalidGraph {
                    pipeline: name.to_owned(),
                    source,
                })?;
        let graph = GraphRef(built);
        let mut stages = Vec::with_capacity(pipeline.stages.len());
        let mut backends = Vec::new();
        // The graph's ids are the config's keys, in the same order.
        for (stage, id) in pipeline.stages.values().zip(graph.shared_ids()) {
            stages.push(plan_stage(name, id, stage, config, &mut backends, &ctx)?);
        }
        for &s in graph.order() {
            if stages[s.index()].skip().is_some() {
                continue;
            }
            let requires_success = pipeline.stages[s.index()]
                .condition
                .as_ref()
                .is_none_or(|c| !c.expr.uses_status_function());
            if requires_success {
                if let Some(need) = graph.needs(s).find(|n| stages[n.index()].skip().is_some()) {
                    stages[s.index()].set_skip(PlannedSkip::NeedSkipped {
                        need: graph.id(need).to_owned(),
                    });
                }
            }
        }
        let concurrency = pipeline.concurrency.as_ref().map(|c| PlannedConcurrency {
            group: c.group.template.render_partial(&ctx),
            on_conflict: c.on_conflict,
        });
        let layout = Layout::new(graph.0.clone(), &stages);
        Ok(PlannedPipeline {
            name: name.to_owned(),
            stages,
            concurrency,
            checkout: pipeline.checkout,
            paths_checked,
            graph,
            layout,
        })
    }
}

/// Plans one stage. `id` is the graph's (shared with the plan); `backends` the backend names
/// already in the plan, to share.
fn plan_stage(
    pipeline: &str,
    id: &Arc<str>,
    stage: &Arc<Stage>,
    config: &Config,
    backends: &mut Vec<Arc<str>>,
    ctx: &EventContext<'_>,
) -> Result<PlannedStage, PlanError> {
    let event = ctx.0;
    let env_config = stage
        .environment()
        .and_then(|e| config.environments.get_key_value(e));
    let environment = match env_config {
        Some((key, env)) => {
            let name = instance_name(pipeline, id, key, env, event, ctx)?;
            // Another environment's own instance: a name template fed with event data (a branch
            // named `production`) must not reach it.
            if name != *key && config.environments.contains_key(&name) {
                return Err(PlanError::InstanceOfAnother {
                    pipeline: pipeline.to_owned(),
                    stage: id.to_string(),
                    environment: key.clone(),
                    rendered: name,
                });
            }
            Some(name)
        }
        None => None,
    };
    let backend = stage
        .backend
        .as_deref()
        .or_else(|| env_config.map(|(_, e)| e.backend.as_str()))
        .unwrap_or("local");
    let b = layout::index_or_push(backends, |b| **b == *backend, || Arc::from(backend));
    let backend = backends[b].clone();
    let skip = stage
        .condition
        .as_ref()
        .and_then(|c| match c.expr.eval(ctx) {
            Some(v) if !v.truthy() => Some(PlannedSkip::ConditionFalse {
                expr: c.source.clone(),
            }),
            _ => None,
        });
    let details = PlannedDetails {
        environment_config: env_config.map(|(k, _)| k.clone()),
        env: stage
            .env
            .iter()
            .map(|(k, t)| (k.clone(), t.template.render_partial(ctx)))
            .collect(),
        with: stage
            .with
            .iter()
            .map(|(k, v)| (k.clone(), render_json(v, &|t| t.render_partial(ctx))))
            .collect(),
        condition: stage.condition.as_ref().map(|c| c.source.clone()),
        skip,
        timeout: stage.timeout.map(format_duration),
        retry: stage.retry.as_deref().cloned(),
        refused: None,
    };
    Ok(PlannedStage {
        id: id.clone(),
        backend,
        action: stage.action(),
        environment,
        continue_on_error: stage.continue_on_error,
        details: (!details.is_empty()).then(|| Box::new(details)),
        source: stage.clone(),
        environment_settings: env_config.map(|(_, e)| Arc::new(e.clone())),
    })
}

/// The instance of an environment that an event deploys to.
fn instance_name(
    pipeline: &str,
    stage: &str,
    key: &str,
    env: &Environment,
    event: &GitEvent,
    ctx: &EventContext<'_>,
) -> Result<String, PlanError> {
    let pr = event.pull_request();
    if env.per_pull_request && pr.is_none() {
        return Err(PlanError::NotAPullRequest {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            environment: key.to_owned(),
            kind: event.kind().to_string(),
        });
    }
    let name = match (&env.name, pr) {
        (Some(t), _) => t.template.render(ctx).unwrap_or_default(),
        (None, Some(pr)) if env.per_pull_request => format!("{key}-pr-{}", pr.number),
        _ => key.to_owned(),
    };
    if !crate::config::is_instance_name(&name) {
        return Err(PlanError::BadEnvironmentName {
            pipeline: pipeline.to_owned(),
            stage: stage.to_owned(),
            environment: key.to_owned(),
            rendered: name,
        });
    }
    Ok(name)
}
