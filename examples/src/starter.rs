//! What the starter apps share: handling an event through the engine and saying what happened.

use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunEvent, RunReport, RunResult, StageResult};

/// What can go wrong in a starter app.
pub type Error = Box<dyn std::error::Error + Send + Sync>;

/// A starter's exit: success, or `error: ...` (with its causes) on stderr and status 1.
pub fn exit(result: Result<(), Error>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", gitops_core::ErrorChain(&*e));
            std::process::ExitCode::FAILURE
        }
    }
}

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
        print_report(report)?;
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

/// [`step`], printing each stage's log lines (`stage │ line`) under its pipeline's line.
pub async fn step_with_logs(
    engine: &Engine,
    repo: &Repository,
    options: &RunOptions,
    event: &GitEvent,
) -> Result<Vec<RunReport>, Error> {
    let mut reports = Vec::new();
    for run in engine.start(event, repo, options)? {
        let mut events = run.subscribe();
        let lines = tokio::spawn(async move {
            let mut lines = Vec::new();
            while let Ok(event) = events.recv().await {
                if let RunEvent::Log { stage, line, .. } = event {
                    lines.push(format!("{stage} │ {line}"));
                }
            }
            lines
        });
        let report = run.execute().await?;
        let lines = lines.await.unwrap_or_default();
        let printed = print_report(&report);
        for line in lines {
            println!("    {line}");
        }
        printed?;
        reports.push(report);
    }
    for stopped in engine.finish_event(event).await? {
        println!(
            "  {} stopped: {}",
            stopped.environment,
            stopped.reason.describe()
        );
    }
    Ok(reports)
}

/// One line for a run: its pipeline and each stage's result; an error when it did not succeed.
fn print_report(report: &RunReport) -> Result<(), Error> {
    let stages: Vec<String> = report
        .stages
        .iter()
        .map(|s| format!("{} {}", s.id, s.result.name()))
        .collect();
    println!("  pipeline {}: {}", report.pipeline, stages.join(", "));
    if report.result == RunResult::Success {
        return Ok(());
    }
    let why: Vec<String> = report
        .stages
        .iter()
        .filter_map(|s| match &s.result {
            StageResult::Failure { message, .. } => Some(format!("{}: {message}", s.id)),
            _ => None,
        })
        .collect();
    Err(format!("pipeline {} failed: {}", report.pipeline, why.join("; ")).into())
}
