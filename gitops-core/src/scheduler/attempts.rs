//! A stage with a retry policy or a timeout: its attempts, each within the timeout, with
//! backoff between them, the same for every backend.

use std::collections::BTreeMap;
use std::time::Duration;

use super::call::{call, stopped_by_run};
use super::events::RunEvent;
use super::job::Job;
use super::mask::classify;
use super::report::{StageReport, StageResult};
use super::target::Target;
use crate::backend::{BackendError, Completion, LogSink, StageContext};

enum Attempt {
    /// The backend returned.
    Returned(Result<Completion, BackendError>),
    TimedOut,
    Cancelled,
}

/// Runs `job`'s attempts until one succeeds, its policy allows no more, or the run is
/// cancelled.
pub(super) async fn attempts(mut job: Job) -> StageReport {
    let shared = job.shared.clone();
    let started = shared.now();
    let mut attempt = 0;
    loop {
        attempt += 1;
        shared.emit(|at| RunEvent::StageStarted {
            stage: job.ctx.stage.to_string(),
            attempt,
            backend: shared.backend_name(job.backend).to_string(),
            at,
        });
        let (result, outputs) = match one_attempt(&mut job, attempt).await {
            Attempt::Returned(returned) => classify(returned, &shared.masker),
            Attempt::TimedOut => {
                let after_secs = job.timeout.map_or(0.0, |t| t.as_secs_f64());
                (StageResult::TimedOut { after_secs }, BTreeMap::new())
            }
            Attempt::Cancelled => (StageResult::Cancelled, BTreeMap::new()),
        };
        let done = |result, outputs| {
            let finished = shared.now();
            let id = &job.ctx.stage;
            StageReport::ended(id, result, attempt, Some(started), Some(finished), outputs)
        };
        let Some(delay) = retry_delay(&job, attempt, &result) else {
            return done(result, outputs);
        };
        shared.emit(|at| RunEvent::StageRetrying {
            stage: job.ctx.stage.to_string(),
            attempt,
            reason: match &result {
                StageResult::Failure { message, .. } => message.clone(),
                other => other.name().to_owned(),
            },
            delay_secs: delay.as_secs_f64(),
            at,
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = shared.run_cancel.cancelled() => return done(StageResult::Cancelled, outputs),
        }
    }
}

/// The wait before the next attempt, when the stage gets one: exponential from `backoff`.
fn retry_delay(job: &Job, attempt: u32, result: &StageResult) -> Option<Duration> {
    let retry = job.retry.as_ref()?;
    if attempt > retry.max
        || job.shared.run_cancel.is_cancelled()
        || job.shared.pipeline.stages[job.index].refused().is_some()
    {
        return None;
    }
    let exit_code = match result {
        StageResult::Failure { exit_code, .. } => *exit_code,
        _ => return None,
    };
    if !retry.on_exit_codes.is_empty()
        && !exit_code.is_some_and(|c| retry.on_exit_codes.contains(&c))
    {
        return None;
    }
    let factor = 1u32.checked_shl(attempt - 1).unwrap_or(u32::MAX);
    Some(
        retry
            .backoff
            .saturating_mul(factor)
            .min(Duration::from_secs(3600)),
    )
}

async fn one_attempt(job: &mut Job, attempt: u32) -> Attempt {
    let shared = job.shared.clone();
    let target = &shared.targets[job.target];
    if let Target::Missing(message) = target {
        return Attempt::Returned(Err(BackendError::failed(message.clone())));
    }
    // Without a timeout the stage stops only when the run does: its token is the run's.
    let token = match job.timeout {
        Some(_) => shared.cancel_shard(job.index).child(),
        None => shared.cancel_shard(job.index).clone(),
    };
    let mut ctx = if job.retry.is_some() {
        job.ctx.clone()
    } else {
        let rest = placeholder(&job.ctx);
        std::mem::replace(&mut job.ctx, rest)
    };
    ctx.attempt = attempt;
    ctx.cancel = token.clone();
    ctx.log = LogSink::shared(shared.log.as_ref(), &ctx.stage, attempt);
    let (result, timed_out) = call(&shared, job.index, target, job.backend, ctx, job.timeout).await;
    if timed_out {
        return Attempt::TimedOut;
    }
    if stopped_by_run(&shared, &result) {
        return Attempt::Cancelled;
    }
    Attempt::Returned(result)
}

/// What is left in a job whose context was handed to its only attempt.
fn placeholder(ctx: &StageContext) -> StageContext {
    StageContext {
        run: ctx.run.clone(),
        stage: ctx.stage.clone(),
        attempt: ctx.attempt,
        command: None,
        env: BTreeMap::new(),
        secrets: BTreeMap::new(),
        with: serde_json::Map::new(),
        environment: None,
        timeout: ctx.timeout,
        cancel: ctx.cancel.clone(),
        log: ctx.log.clone(),
    }
}
