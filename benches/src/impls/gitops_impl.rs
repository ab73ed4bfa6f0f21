//! Our scheduler, through its public API, with an in-memory executor whose stages return at once.

use std::sync::Arc;

use async_trait::async_trait;
use gitops_core::backend::{
    BackendError, BackendRegistry, Completion, Executor, RunInfo, StageContext,
};
use gitops_core::config::{Config, Pipeline, Stage, Triggers};
use gitops_core::event::GitEvent;
use gitops_core::plan::{PlannedPipeline, Planner};
use gitops_core::scheduler::{RunResult, RunSpec, Scheduler, SchedulerOptions};

use super::{Leftover, Prepared};

/// A stage's work that returns at once.
pub struct Noop;

#[async_trait]
impl Executor for Noop {
    async fn execute(&self, _ctx: StageContext) -> Result<Completion, BackendError> {
        Ok(Completion::success())
    }
}

fn event() -> GitEvent {
    gitops_core::event::GitEvent {
        payload: gitops_core::event::EventPayload::Push(gitops_core::event::PushEvent {
            git_ref: "refs/heads/main".into(),
            branch: "main".into(),
            before: None,
            after: Some("abc".into()),
            created: true,
            deleted: false,
            forced: false,
        }),
        repo: "bench/repo".into(),
        sha: Some("abc".into()),
        actor: None,
    }
}

/// The config for `needs`, built in code: one pipeline `bench`, stage `s<i>` needing `s<d>`.
pub fn gitops_config(needs: &[Vec<u32>]) -> Config {
    let mut pipeline = Pipeline::new(Triggers::push());
    for (i, ns) in needs.iter().enumerate() {
        pipeline = pipeline.with_stage(
            format!("s{i}"),
            Stage::run("noop").with_needs(ns.iter().map(|d| format!("s{d}"))),
        );
    }
    Config::new().with_pipeline("bench", pipeline)
}

/// The plan of [`gitops_config`]'s pipeline for a push.
pub fn gitops_plan(config: &Config) -> PlannedPipeline {
    Planner::new()
        .plan_named(&event(), config, "bench")
        .unwrap_or_else(|e| panic!("planning the bench pipeline: {e}"))
}

/// The pipeline for `needs`: config built in code, planned (graph construction included).
pub fn gitops_pipeline(needs: &[Vec<u32>]) -> PlannedPipeline {
    gitops_plan(&gitops_config(needs))
}

pub(super) fn prepare(needs: &[Vec<u32>]) -> Prepared {
    prepare_planned(Arc::new(gitops_pipeline(needs)))
}

/// A run of `pipeline` on the no-op executor.
pub fn prepare_planned(pipeline: Arc<PlannedPipeline>) -> Prepared {
    let registry = BackendRegistry::new().with_executor("local", Arc::new(Noop));
    let scheduler = Scheduler::with_options(
        registry,
        SchedulerOptions::default().with_max_parallel(usize::MAX),
    );
    let spec = RunSpec::new(RunInfo::new("bench", "bench", event(), "."));
    Box::new(move || {
        Box::pin(async move {
            let keep = pipeline.clone();
            let report = scheduler.run(pipeline, spec).execute().await;
            assert_eq!(
                report.result,
                RunResult::Success,
                "gitops: the bench run failed"
            );
            Box::new((keep, report)) as Leftover
        })
    })
}
