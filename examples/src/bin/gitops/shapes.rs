//! The JSON shapes of runs and stages, one definition shared by `runs --json`, `show --json`
//! and the read API (`/api/runs`, `/api/runs/{id}`).

use gitops_core::engine::Engine;
use gitops_core::ledger::{DeploymentRecord, RunRecord, RunStatus, now};
use gitops_core::scheduler::{StageReport, StageResult};

use crate::envs::deployment_json;

fn err(e: impl std::error::Error + 'static) -> String {
    crate::error(&e)
}

/// `running`, `interrupted` (its process is gone), or how it ended.
pub fn result(run: &RunRecord) -> &'static str {
    match run.status {
        RunStatus::Running if run.is_interrupted() => "interrupted",
        RunStatus::Running => "running",
        RunStatus::Finished(r) => r.name(),
    }
}

/// Seconds it ran, or has run so far.
pub fn duration(run: &RunRecord) -> f64 {
    (run.finished_at.unwrap_or_else(now) - run.started_at).max(0.0)
}

/// A run as `runs --json` prints it; the fields `gitops runs --help` lists.
pub fn run_json(run: &RunRecord) -> serde_json::Value {
    serde_json::json!({
        "id": run.id,
        "pipeline": run.pipeline,
        "event": run.event.kind().as_str(),
        "action": run.event.action(),
        "ref": run.event.git_ref(),
        "pull_request": run.event.pull_request().map(|pr| pr.number),
        "sha": run.commit,
        "actor": run.actor,
        "result": result(run),
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "duration_secs": duration(run),
    })
}

/// The stages of a run as `show` lists them: those recorded, in the order they ended, then
/// those that have a log and no result yet (running).
pub fn stages(engine: &Engine, run: &str) -> Result<(Vec<StageReport>, Vec<String>), String> {
    let recorded = engine.ledger().stage_results(run).map_err(err)?;
    let running = engine
        .logs()
        .stages(run)
        .map_err(err)?
        .into_iter()
        .filter(|s| !recorded.iter().any(|r| &*r.id == s))
        .collect();
    Ok((recorded, running))
}

/// A recorded stage as `show --json` lists it.
pub fn stage_json(stage: &StageReport, deployments: &[DeploymentRecord]) -> serde_json::Value {
    let (message, exit_code, skip_reason) = match &stage.result {
        StageResult::Failure { message, exit_code } => (Some(message.clone()), *exit_code, None),
        StageResult::Skipped { reason } => (None, None, serde_json::to_value(reason).ok()),
        _ => (None, None, None),
    };
    let deployment = deployments
        .iter()
        .find(|d| d.stage.as_deref() == Some(&*stage.id));
    serde_json::json!({
        "id": &*stage.id,
        "result": stage.result.name(),
        "message": message,
        "exit_code": exit_code,
        "skip_reason": skip_reason,
        "attempts": stage.attempts,
        "flaky": stage.flaky,
        "reused": stage.reused,
        "duration_secs": stage.duration().map(|d| d.as_secs_f64()),
        "outputs": stage.outputs,
        "environment": deployment.map(|d| d.environment.clone()),
        "deployment": deployment.map(deployment_json),
    })
}

/// A run as `show --json` prints it: [`run_json`] with the whole event, trust, rerun_of, its
/// stages (recorded, then running) and its deployments.
pub fn show_json(engine: &Engine, run: &RunRecord) -> Result<serde_json::Value, String> {
    let (recorded, running) = stages(engine, &run.id)?;
    let deployments = engine.ledger().run_deployments(&run.id).map_err(err)?;
    let mut stages: Vec<_> = recorded
        .iter()
        .map(|s| stage_json(s, &deployments))
        .collect();
    stages.extend(
        running
            .iter()
            .map(|s| serde_json::json!({ "id": s, "result": "running" })),
    );
    let mut value = run_json(run);
    value["event"] = serde_json::to_value(&run.event).map_err(err)?;
    value["trust"] = serde_json::json!(run.trust.map(|t| t.as_str()));
    value["rerun_of"] = serde_json::json!(run.rerun_of);
    value["stages"] = serde_json::Value::Array(stages);
    value["deployments"] = deployments.iter().map(deployment_json).collect();
    Ok(value)
}
