//! Live progress of runs: a spinner line per running stage on a terminal, plain lines
//! otherwise; log lines prefixed with their stage either way.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use gitops_core::scheduler::{RunEvent, RunReport, RunResult, SkipReason, StageResult, WaitReason};
use gitops_examples::outln;
use gitops_examples::text::count;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::broadcast::{Receiver, error::RecvError};

/// Follows one run's events until it finishes, printing as it goes.
pub async fn follow(mut events: Receiver<RunEvent>, run_id: String, multi: MultiProgress) {
    let fancy = std::io::stdout().is_terminal();
    let style = ProgressStyle::with_template("  {spinner} {msg} {elapsed:>4}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: HashMap<String, ProgressBar> = HashMap::new();
    let say = |line: String| {
        if fancy {
            let _ = multi.println(line);
        } else {
            outln!("{line}");
        }
    };
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(n)) => {
                say(format!(
                    "  ({} not shown: output could not keep up)",
                    count(n as usize, "event")
                ));
                continue;
            }
            Err(RecvError::Closed) => break,
        };
        match event {
            RunEvent::StageStarted {
                stage,
                attempt,
                backend,
                ..
            } => {
                let what = if attempt > 1 {
                    format!("{stage} [{backend}] attempt {attempt}")
                } else {
                    format!("{stage} [{backend}]")
                };
                if fancy {
                    let bar = multi.add(
                        ProgressBar::new_spinner()
                            .with_style(style.clone())
                            .with_message(what),
                    );
                    bar.enable_steady_tick(Duration::from_millis(100));
                    bars.insert(stage, bar);
                } else {
                    say(format!("  ▸ {what} started"));
                }
            }
            RunEvent::Log { stage, line, .. } => say(format!("    {stage} │ {line}")),
            RunEvent::StageRetrying {
                stage,
                attempt,
                reason,
                delay_secs,
                ..
            } => {
                if let Some(bar) = bars.remove(&stage) {
                    bar.finish_and_clear();
                }
                say(format!(
                    "  ↻ {stage} attempt {attempt} failed ({reason}); retrying in {delay_secs:.1}s"
                ));
            }
            RunEvent::StageFinished {
                stage,
                result,
                attempts,
                flaky,
                duration_secs,
                ..
            } => {
                if let Some(bar) = bars.remove(&stage) {
                    bar.finish_and_clear();
                }
                say(format!(
                    "  {}",
                    describe(&stage, &result, attempts, flaky, duration_secs)
                ));
            }
            RunEvent::RunQueued {
                group, position, ..
            } => say(format!(
                "  ⧗ queued in concurrency group {group}: {position} run{} ahead",
                if position == 1 { "" } else { "s" }
            )),
            RunEvent::RunSuperseded { group, .. } => say(format!(
                "  ⤳ superseded by a newer run of concurrency group {group}"
            )),
            RunEvent::StageWaiting { stage, waiting, .. } => say(format!(
                "  ⏸ {stage} {}",
                waiting_for(&waiting, &run_id, &stage)
            )),
            RunEvent::Warning { message, .. } => say(format!("  ! {message}")),
            RunEvent::RunFinished { .. } => break,
            _ => {}
        }
    }
    for bar in bars.into_values() {
        bar.finish_and_clear();
    }
}

/// What a waiting stage waits for, and how to end the wait.
pub fn waiting_for(waiting: &WaitReason, run_id: &str, stage: &str) -> String {
    match waiting {
        WaitReason::Approval { environment } => format!(
            "waits for approval to deploy to {environment}: `gitops approve {run_id} {stage}` (or `gitops reject ...`)"
        ),
        WaitReason::Lock {
            environment,
            holder,
        } => format!("waits for {environment}, which {holder} is deploying"),
        WaitReason::Pin { environment } => format!(
            "waits: {environment} is pinned by a rollback (`gitops unpin {environment}` lets it through)"
        ),
        _ => "waits".to_owned(),
    }
}

/// A line for a finished stage.
pub fn describe(
    stage: &str,
    result: &StageResult,
    attempts: u32,
    flaky: bool,
    secs: f64,
) -> String {
    match result {
        StageResult::Success if flaky => {
            format!("✓ {stage} succeeded in {secs:.1}s, flaky: passed on attempt {attempts}")
        }
        StageResult::Success => format!("✓ {stage} succeeded in {secs:.1}s"),
        StageResult::Failure { message, .. } => {
            format!("✗ {stage} failed after {secs:.1}s: {message}")
        }
        StageResult::TimedOut { after_secs } => {
            format!("✗ {stage} timed out after {after_secs}s and was stopped")
        }
        StageResult::Cancelled => format!("✗ {stage} cancelled after {secs:.1}s"),
        StageResult::Skipped { reason } => format!("– {stage} skipped: {}", skip_reason(reason)),
    }
}

pub fn skip_reason(reason: &SkipReason) -> String {
    match reason {
        SkipReason::NeedFailed { need } => format!("needs {need}, which failed"),
        SkipReason::NeedSkipped { need } => format!("needs {need}, which was skipped"),
        SkipReason::ConditionFalse { expr } => format!("`if: {expr}` is false"),
        SkipReason::RunCancelled => "the run was cancelled".to_owned(),
    }
}

/// The closing line of a run: how it ended, how many stages ended how, and which stages
/// failed or timed out, with their exit codes (the one line `watch` and `serve` print per run).
pub fn summary(report: &RunReport) -> String {
    let ended = |name: &str| {
        report
            .stages
            .iter()
            .filter(|s| s.result.name() == name)
            .count()
    };
    let reused = report.stages.iter().filter(|s| s.reused).count();
    let mut parts = vec![format!("{} succeeded", ended("success"))];
    for (name, label) in [
        ("failure", "failed"),
        ("timed_out", "timed out"),
        ("cancelled", "cancelled"),
        ("skipped", "skipped"),
    ] {
        let n = ended(name);
        if n > 0 {
            parts.push(format!("{n} {label}"));
        }
    }
    if reused > 0 {
        parts.push(format!("{reused} reused from the earlier run"));
    }
    let (mark, word) = match report.result {
        RunResult::Success => ("✓", "succeeded"),
        RunResult::Failure => ("✗", "failed"),
        RunResult::Cancelled => ("✗", "was cancelled"),
    };
    let failed: Vec<String> = report
        .stages
        .iter()
        .filter(|s| !s.reused)
        .filter_map(|s| failure(&s.id, &s.result))
        .collect();
    format!(
        "{mark} pipeline {} {word} in {:.1}s (run {}: {}){}",
        report.pipeline,
        report.duration_secs,
        report.run_id,
        parts.join(", "),
        if failed.is_empty() {
            String::new()
        } else {
            format!(": {}", failed.join("; "))
        }
    )
}

/// An `error:` line for each stage of `report` that failed (not one reused from an earlier run):
/// its message, which holds what caused it.
pub fn failures(report: &RunReport) -> impl Iterator<Item = String> + '_ {
    report
        .stages
        .iter()
        .filter(|s| !s.reused)
        .filter_map(|s| match &s.result {
            StageResult::Failure { message, .. } => Some(format!(
                "error: stage \"{}\" of pipeline {} failed: {message}",
                s.id, report.pipeline
            )),
            _ => None,
        })
}

/// A failed or timed-out stage for [`summary`]: `test failed with exit code 3`, or its message
/// when there is no exit code.
fn failure(stage: &str, result: &StageResult) -> Option<String> {
    match result {
        StageResult::Failure {
            exit_code: Some(code),
            ..
        } => Some(format!("{stage} failed with exit code {code}")),
        StageResult::Failure { message, .. } => {
            let first = message.lines().next().unwrap_or_default();
            Some(format!("{stage} failed: {}", shortened(first, 120)))
        }
        StageResult::TimedOut { after_secs } => {
            Some(format!("{stage} timed out after {after_secs}s"))
        }
        _ => None,
    }
}

/// `text`, cut to `max` characters with `...` when longer.
fn shortened(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}...", &text[..end]),
        None => text.to_owned(),
    }
}

/// The progress area shared by the runs of one command.
pub fn multi() -> MultiProgress {
    if std::io::stdout().is_terminal() {
        MultiProgress::new()
    } else {
        MultiProgress::with_draw_target(ProgressDrawTarget::hidden())
    }
}
