//! The stages of a run and the state of each, from what the ledger recorded, the logs being
//! written, the approvals asked for, and the pipeline in the config the run ran with.

use std::collections::HashSet;

use gitops_core::config::Config;
use gitops_core::engine::Engine;
use gitops_core::ledger::{ApprovalRecord, RunRecord, RunStatus};
use gitops_core::scheduler::{RunResult, StageReport, StageResult};

use super::PageError;
use super::view::State;

/// One stage of a run.
pub struct StageView {
    pub id: String,
    /// The stages it needs, as the config says.
    pub needs: Vec<String>,
    pub state: State,
    /// What the ledger recorded when it ended.
    pub report: Option<StageReport>,
}

/// How a run is doing: running, waiting for an approval, interrupted, or how it ended.
pub fn run_state(run: &RunRecord, waiting: bool) -> State {
    match run.status {
        RunStatus::Running if run.is_interrupted() => State::Interrupted,
        RunStatus::Running if waiting => State::Waiting,
        RunStatus::Running => State::Running,
        RunStatus::Finished(RunResult::Success) => State::Success,
        RunStatus::Finished(RunResult::Cancelled) => State::Cancelled,
        RunStatus::Finished(_) => State::Failure,
    }
}

/// How a recorded stage ended.
pub fn result_state(result: &StageResult) -> State {
    match result {
        StageResult::Success => State::Success,
        StageResult::Failure { .. } => State::Failure,
        StageResult::Skipped { .. } => State::Skipped,
        StageResult::Cancelled => State::Cancelled,
        StageResult::TimedOut { .. } => State::TimedOut,
    }
}

/// The stages of `pipeline` in `config` (the text a run ran with), in file order, each with
/// its needs; `None` when the text does not read as a config with that pipeline.
fn pipeline_stages(config: &str, pipeline: &str) -> Option<Vec<(String, Vec<String>)>> {
    // Read without validation: the run was validated when it started, and a config naming a
    // backend of another app must still show its graph here.
    let config: Config = serde_yaml::from_str(config).ok()?;
    let pipeline = config.pipelines.get(pipeline)?;
    Some(
        pipeline
            .stages
            .iter()
            .map(|(id, stage)| (id.clone(), stage.needs.clone()))
            .collect(),
    )
}

/// The stages of `run`, in the pipeline's order (those recorded but not in the config after
/// them), with their states. `waiting` holds the approvals still pending (of any run).
pub fn stages_of(
    engine: &Engine,
    run: &RunRecord,
    waiting: &[ApprovalRecord],
) -> Result<Vec<StageView>, PageError> {
    let mut recorded = engine.ledger().stage_results(&run.id)?;
    let interrupted = run.is_interrupted();
    let running = run.status == RunStatus::Running && !interrupted;
    // A stage with a log and no result yet is running (or was, when its run was interrupted).
    let logged: HashSet<String> = if run.status == RunStatus::Running {
        engine.logs().stages(&run.id)?.into_iter().collect()
    } else {
        HashSet::new()
    };
    let waits = |id: &str| running && waiting.iter().any(|a| a.run_id == run.id && a.stage == id);
    let state_of = |id: &str| {
        if waits(id) {
            State::Waiting
        } else if logged.contains(id) {
            if running {
                State::Running
            } else {
                State::Interrupted
            }
        } else if running {
            State::Pending
        } else {
            State::NotRun
        }
    };
    let mut out: Vec<StageView> = pipeline_stages(&run.config, &run.pipeline)
        .unwrap_or_default()
        .into_iter()
        .map(|(id, needs)| {
            let report = recorded
                .iter()
                .position(|r| *r.id == *id)
                .map(|i| recorded.remove(i));
            let state = report
                .as_ref()
                .map_or_else(|| state_of(&id), |r| result_state(&r.result));
            StageView {
                id,
                needs,
                state,
                report,
            }
        })
        .collect();
    out.extend(recorded.into_iter().map(|r| StageView {
        id: r.id.to_string(),
        needs: Vec::new(),
        state: result_state(&r.result),
        report: Some(r),
    }));
    // Stages being logged that the config did not list (it could not be read).
    let mut extra: Vec<&String> = logged
        .iter()
        .filter(|s| !out.iter().any(|v| &v.id == *s))
        .collect();
    extra.sort();
    let extra: Vec<StageView> = extra
        .into_iter()
        .map(|id| StageView {
            id: id.clone(),
            needs: Vec::new(),
            state: state_of(id),
            report: None,
        })
        .collect();
    out.extend(extra);
    Ok(out)
}
