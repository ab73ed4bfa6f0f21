//! A very long chain of stages plans and runs (nothing recurses once per stage).

use std::sync::Arc;

use gitops_core::backend::memory::MemoryBackend;
use gitops_core::backend::{BackendRegistry, RunInfo};
use gitops_core::config::{Config, Pipeline, Stage, Triggers};
use gitops_core::plan::Planner;
use gitops_core::scheduler::{RunResult, RunSpec, Scheduler, SchedulerOptions};

#[test]
fn a_chain_of_100_000_stages_plans_and_runs() {
    let n = 100_000;
    let mut pipeline = Pipeline::new(Triggers::push());
    for i in 0..n {
        let stage = Stage::run("x");
        let stage = if i == 0 {
            stage
        } else {
            stage.with_needs([format!("s{}", i - 1)])
        };
        pipeline = pipeline.with_stage(format!("s{i}"), stage);
    }
    let config = Config::new().with_pipeline("p", pipeline);
    let event: gitops_core::event::GitEvent = serde_json::from_str(r#"{"kind":"push","repo":"o/r","sha":"a","ref":"refs/heads/main","branch":"main","before":null,"after":"a","created":true,"deleted":false,"forced":false}"#).unwrap();
    let planned = Planner::new().plan_named(&event, &config, "p").unwrap();
    assert_eq!(planned.order().len(), n);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let registry = BackendRegistry::new().with_executor("local", Arc::new(MemoryBackend::new()));
    let report = rt.block_on(
        Scheduler::with_options(registry, SchedulerOptions::default())
            .run(
                Arc::new(planned),
                RunSpec::new(RunInfo::new("r", "p", event, ".")),
            )
            .execute(),
    );
    assert_eq!(report.result, RunResult::Success);
}

#[test]
fn a_ring_of_100_000_stages_is_reported_as_one_cycle() {
    let n = 100_000;
    let stages: Vec<(String, Vec<String>)> = (0..n)
        .map(|i| (format!("s{i}"), vec![format!("s{}", (i + 1) % n)]))
        .collect();
    let err =
        gitops_core::graph::StageGraph::from_needs(stages.iter().map(|(s, n)| (s, n))).unwrap_err();
    assert_eq!(err.problems.len(), 1);
    let text = err.to_string();
    assert!(
        text.starts_with("cycle in needs: s0 -> s1 -> s2 -> "),
        "{}",
        &text[..100]
    );
    assert!(text.ends_with(" -> s99999 -> s0"));
}
