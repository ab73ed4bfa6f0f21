//! What the starter apps share: handling an event through the engine and saying what happened.

use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunReport, RunResult, StageResult};

/// What can go wrong in a starter app.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// Runs what `event` triggers and stops what it ends ([`Engine::handle`]), printing one line per
/// pipeline with its stages' results and one per environment stopped; a run that did not succeed
/// is an error naming its failed stages.
pub async fn step(
    engine: &Engine,
    repo: &Repository,
    options: &RunOptions,
    event: &GitEvent,
) -> Result<Vec<RunReport>, Error> {
    let handled = engine.handle(event, repo, options).await?;
    for report in &handled.reports {
        let stages: Vec<String> = report
            .stages
            .iter()
            .map(|s| format!("{} {}", s.id, s.result.name()))
            .collect();
        println!("  pipeline {}: {}", report.pipeline, stages.join(", "));
        if report.result != RunResult::Success {
            let why: Vec<String> = report
                .stages
                .iter()
                .filter_map(|s| match &s.result {
                    StageResult::Failure { message, .. } => Some(format!("{}: {message}", s.id)),
                    _ => None,
                })
                .collect();
            return Err(format!("pipeline {} failed: {}", report.pipeline, why.join("; ")).into());
        }
    }
    for stopped in &handled.stopped {
        println!(
            "  {} stopped: {}",
            stopped.environment,
            stopped.reason.describe()
        );
    }
    Ok(handled.reports)
}
