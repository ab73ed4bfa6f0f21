//! `gitops runs`, `show` and `logs`: what ran, how each stage ended, and what it printed, read
//! from the ledger and the stage logs of a state dir.

use gitops_core::event::GitEvent;
use gitops_core::ledger::RunQuery;
use gitops_core::logs::LogEntry;
use gitops_examples::text::count;
use gitops_examples::{errln, outln};

use crate::envs::{print_json, short, time};
use crate::run::{Common, engine};
use crate::shapes::{duration, result, run_json, show_json, stages};

fn err(e: impl std::error::Error + 'static) -> String {
    crate::error(&e)
}

/// What the event was about: a pull request, a branch, a tag.
fn subject(event: &GitEvent) -> String {
    match event.pull_request() {
        Some(pr) => format!("PR #{}", pr.number),
        None => event.git_ref().unwrap_or_else(|| "-".to_owned()),
    }
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

/// `gitops show RUN`: the run's event, each stage's result, outputs (masked when recorded),
/// and the deployments it made.
pub fn show(run_id: &str, common: Common, json: bool) -> Result<(), String> {
    let engine = engine(&common)?;
    let run = engine.ledger().run(run_id).map_err(err)?;
    if json {
        return print_json(&show_json(&engine, &run)?);
    }
    let (recorded, running) = stages(&engine, run_id)?;
    let deployments = engine.ledger().run_deployments(run_id).map_err(err)?;
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
