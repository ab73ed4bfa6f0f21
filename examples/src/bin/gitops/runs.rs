//! `gitops runs`, `show` and `logs`: what ran, how each stage ended, and what it printed, read
//! from the ledger and the stage logs of a state dir.

use gitops_core::engine::Engine;
use gitops_core::event::GitEvent;
use gitops_core::ledger::{DeploymentRecord, RunQuery, RunRecord, RunStatus, now};
use gitops_core::logs::LogEntry;
use gitops_core::scheduler::{StageReport, StageResult};
use gitops_examples::text::count;
use gitops_examples::{errln, outln};

use crate::envs::{deployment_json, print_json, short, time};
use crate::run::{Common, engine};

fn err(e: impl std::error::Error + 'static) -> String {
    crate::error(&e)
}

/// `running`, `interrupted` (its process is gone), or how it ended.
fn result(run: &RunRecord) -> &'static str {
    match run.status {
        RunStatus::Running if run.is_interrupted() => "interrupted",
        RunStatus::Running => "running",
        RunStatus::Finished(r) => r.name(),
    }
}

/// Seconds it ran, or has run so far.
fn duration(run: &RunRecord) -> f64 {
    (run.finished_at.unwrap_or_else(now) - run.started_at).max(0.0)
}

/// What the event was about: a pull request, a branch, a tag.
fn subject(event: &GitEvent) -> String {
    match event.pull_request() {
        Some(pr) => format!("PR #{}", pr.number),
        None => event.git_ref().unwrap_or_else(|| "-".to_owned()),
    }
}

/// A run as `runs --json` prints it; the fields `gitops runs --help` lists.
fn run_json(run: &RunRecord) -> serde_json::Value {
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

/// `gitops runs`: the newest runs first.
pub fn runs(query: &RunQuery, common: Common, json: bool) -> Result<(), String> {
    let runs = engine(&common)?.ledger().find_runs(query).map_err(err)?;
    if json {
        return print_json(&serde_json::Value::Array(
            runs.iter().map(run_json).collect(),
        ));
    }
    if runs.is_empty() {
        outln!("No runs yet: nothing matching was run with this state dir.");
        return Ok(());
    }
    let mut out = format!(
        "{:<16} {:<20} {:<13} {:<22} {:<12} {:<11} {:<20} {}\n",
        "RUN", "PIPELINE", "EVENT", "REF", "ACTOR", "RESULT", "STARTED (UTC)", "DURATION"
    );
    for run in &runs {
        out += &format!(
            "{:<16} {:<20} {:<13} {:<22} {:<12} {:<11} {:<20} {:.1}s\n",
            run.id,
            run.pipeline,
            run.event.kind().as_str(),
            subject(&run.event),
            run.actor.as_deref().unwrap_or("-"),
            result(run),
            time(run.started_at),
            duration(run),
        );
    }
    outln!("{}", out.trim_end());
    Ok(())
}

/// The stages of a run as `show` lists them: those recorded, in the order they ended, then
/// those that have a log and no result yet (running).
fn stages(engine: &Engine, run: &str) -> Result<(Vec<StageReport>, Vec<String>), String> {
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

fn stage_json(stage: &StageReport, deployments: &[DeploymentRecord]) -> serde_json::Value {
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

/// `gitops show RUN`: the run's event, each stage's result, outputs (masked when recorded),
/// and the deployments it made.
pub fn show(run_id: &str, common: Common, json: bool) -> Result<(), String> {
    let engine = engine(&common)?;
    let run = engine.ledger().run(run_id).map_err(err)?;
    let (recorded, running) = stages(&engine, run_id)?;
    let deployments = engine.ledger().run_deployments(run_id).map_err(err)?;
    if json {
        let mut stages: Vec<_> = recorded
            .iter()
            .map(|s| stage_json(s, &deployments))
            .collect();
        stages.extend(
            running
                .iter()
                .map(|s| serde_json::json!({ "id": s, "result": "running" })),
        );
        let mut value = run_json(&run);
        value["event"] = serde_json::to_value(&run.event).map_err(err)?;
        value["trust"] = serde_json::json!(run.trust.map(|t| t.as_str()));
        value["rerun_of"] = serde_json::json!(run.rerun_of);
        value["stages"] = serde_json::Value::Array(stages);
        value["deployments"] = deployments.iter().map(deployment_json).collect();
        return print_json(&value);
    }
    outln!(
        "run {} of pipeline {}: {} ({:.1}s)",
        run.id,
        run.pipeline,
        result(&run),
        duration(&run)
    );
    outln!(
        "  event    {} {} of {} at {}",
        run.event.kind().as_str(),
        subject(&run.event),
        run.event.repo,
        short(run.commit.as_deref())
    );
    outln!(
        "  by       {} at {} UTC",
        run.actor.as_deref().unwrap_or("-"),
        time(run.started_at)
    );
    outln!(
        "  stages   {}",
        count(recorded.len() + running.len(), "stage")
    );
    for stage in &recorded {
        let secs = stage.duration().map_or(0.0, |d| d.as_secs_f64());
        outln!(
            "    {}",
            crate::progress::describe(&stage.id, &stage.result, stage.attempts, stage.flaky, secs)
        );
        if stage.attempts > 1 {
            outln!(
                "        after {}",
                count(stage.attempts as usize, "attempt")
            );
        }
        for (key, value) in &stage.outputs {
            outln!("        {key}={value}");
        }
    }
    for stage in &running {
        outln!("    … {stage} running");
    }
    for d in &deployments {
        outln!("  {}", crate::envs::deployment_line(d));
    }
    Ok(())
}

fn print_line(stage: Option<&str>, entry: &LogEntry) {
    match stage {
        Some(stage) => outln!("{stage} │ {}", entry.line),
        None => outln!("{}", entry.line),
    }
}

/// `gitops logs RUN [STAGE]`: the stored lines of a stage, or of every stage of the run (each
/// line after its stage's name); with `follow`, new lines as they come until the run (or the
/// stage) ends, also when the run is in another process.
pub async fn logs(
    run_id: &str,
    stage: Option<&str>,
    follow: bool,
    common: Common,
) -> Result<(), String> {
    let engine = engine(&common)?;
    // An unknown run is an error, not an empty log.
    engine.ledger().run(run_id).map_err(err)?;
    if follow {
        let mut follower = engine.logs().follow(engine.ledger(), run_id, stage);
        while let Some(lines) = tokio::select! {
            next = follower.next() => next.map_err(err)?,
            _ = gitops_examples::output::closed() => None,
        } {
            for line in &lines {
                print_line(stage.is_none().then_some(line.stage.as_str()), &line.entry);
            }
        }
        return Ok(());
    }
    let stages = match stage {
        Some(stage) => vec![stage.to_owned()],
        None => engine.logs().stages(run_id).map_err(err)?,
    };
    let mut printed = 0;
    for s in &stages {
        for entry in engine.logs().read(run_id, s).map_err(err)? {
            print_line(stage.is_none().then_some(s.as_str()), &entry);
            printed += 1;
        }
    }
    if printed == 0 {
        let whose = stage.map_or_else(String::new, |s| format!("stage \"{s}\" of "));
        errln!("no log lines kept for {whose}run {run_id}");
    }
    Ok(())
}
