//! One stage, from its first attempt to its last: timeouts, retries with backoff, and
//! cancellation, the same for every backend.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::events::RunEvent;
use super::report::StageResult;
use crate::backend::{
    BackendError, Completion, Deployer, Executor, LogSink, Outcome, StageContext,
};
use crate::config::{Action, Retry};

/// What runs the stage.
pub(super) enum Target {
    Execute(Arc<dyn Executor>),
    Deploy(Arc<dyn Deployer>),
    Stop(Arc<dyn Deployer>),
    /// No backend can run it: the stage fails with this message.
    Missing(String),
}

impl Target {
    pub fn new(
        action: Action,
        backend: &str,
        registry: &crate::backend::BackendRegistry,
    ) -> Target {
        let missing =
            |what: &str| Target::Missing(format!("no {what} registered for backend \"{backend}\""));
        match action {
            Action::Run => registry
                .executor(backend)
                .map_or_else(|| missing("executor"), |e| Target::Execute(e.clone())),
            Action::Deploy => registry
                .deployer(backend)
                .map_or_else(|| missing("deployer"), |d| Target::Deploy(d.clone())),
            Action::Stop => registry
                .deployer(backend)
                .map_or_else(|| missing("deployer"), |d| Target::Stop(d.clone())),
        }
    }
}

pub(super) struct Job {
    pub index: usize,
    pub target: Target,
    pub backend: String,
    pub ctx: StageContext,
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub run_cancel: CancellationToken,
    pub events: broadcast::Sender<RunEvent>,
    pub log_target: Option<Arc<dyn Fn(crate::backend::LogLine) + Send + Sync>>,
    pub secrets: Arc<[String]>,
    pub start: Instant,
}

pub(super) struct Done {
    pub index: usize,
    pub result: StageResult,
    pub attempts: u32,
    pub outputs: std::collections::BTreeMap<String, String>,
    pub started: Duration,
    pub finished: Duration,
}

enum Attempt {
    Finished(Completion),
    Error(String),
    TimedOut,
    Cancelled,
}

pub(super) async fn run(job: Job) -> Done {
    let started = job.start.elapsed();
    let mut attempt = 0;
    loop {
        attempt += 1;
        if job.events.receiver_count() > 0 {
            let _ = job.events.send(RunEvent::StageStarted {
                stage: job.ctx.stage.clone(),
                attempt,
                backend: job.backend.clone(),
                at: job.start.elapsed().as_secs_f64(),
            });
        }
        let outcome = one_attempt(&job, attempt).await;
        let (result, outputs) = match outcome {
            Attempt::Finished(Completion {
                outcome: Outcome::Success,
                outputs,
            }) => (StageResult::Success, outputs),
            Attempt::Finished(Completion {
                outcome: Outcome::Failure { exit_code, message },
                outputs,
            }) => (StageResult::Failure { message, exit_code }, outputs),
            Attempt::Error(message) => (
                StageResult::Failure {
                    message,
                    exit_code: None,
                },
                Default::default(),
            ),
            Attempt::TimedOut => {
                let after_secs = job.timeout.map_or(0.0, |t| t.as_secs_f64());
                (StageResult::TimedOut { after_secs }, Default::default())
            }
            Attempt::Cancelled => (StageResult::Cancelled, Default::default()),
        };
        if let Some(delay) = retry_delay(&job, attempt, &result) {
            if job.events.receiver_count() > 0 {
                let reason = match &result {
                    StageResult::Failure { message, .. } => message.clone(),
                    other => other.name().to_owned(),
                };
                let _ = job.events.send(RunEvent::StageRetrying {
                    stage: job.ctx.stage.clone(),
                    attempt,
                    reason,
                    delay_secs: delay.as_secs_f64(),
                    at: job.start.elapsed().as_secs_f64(),
                });
            }
            tokio::select! {
                _ = tokio::time::sleep(delay) => continue,
                _ = job.run_cancel.cancelled() => {
                    return done(&job, StageResult::Cancelled, attempt, outputs, started);
                }
            }
        }
        return done(&job, result, attempt, outputs, started);
    }
}

fn done(
    job: &Job,
    result: StageResult,
    attempts: u32,
    outputs: std::collections::BTreeMap<String, String>,
    started: Duration,
) -> Done {
    Done {
        index: job.index,
        result,
        attempts,
        outputs,
        started,
        finished: job.start.elapsed(),
    }
}

/// The wait before the next attempt, when the stage gets one: exponential from `backoff`.
fn retry_delay(job: &Job, attempt: u32, result: &StageResult) -> Option<Duration> {
    let retry = job.retry.as_ref()?;
    if attempt > retry.max || job.run_cancel.is_cancelled() {
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

async fn one_attempt(job: &Job, attempt: u32) -> Attempt {
    if let Target::Missing(message) = &job.target {
        return Attempt::Error(message.clone());
    }
    let token = job.run_cancel.child_token();
    let mut ctx = job.ctx.clone();
    ctx.attempt = attempt;
    ctx.cancel = token.clone();
    ctx.log = match &job.log_target {
        Some(t) => LogSink::from_shared(&job.ctx.stage, attempt, job.secrets.clone(), t.clone()),
        None => LogSink::discard(),
    };
    let call = async {
        match &job.target {
            Target::Execute(e) => e.execute(ctx).await,
            Target::Deploy(d) => d.deploy(ctx).await,
            Target::Stop(d) => d.stop(ctx).await,
            Target::Missing(m) => Err(BackendError::Failed(m.clone())),
        }
    };
    tokio::pin!(call);
    let mut timed_out = false;
    let result = match job.timeout {
        Some(limit) => {
            tokio::select! {
                r = &mut call => r,
                _ = tokio::time::sleep(limit) => {
                    timed_out = true;
                    token.cancel();
                    // The backend stops what it started; wait for it to say so.
                    call.await
                }
            }
        }
        None => call.await,
    };
    if timed_out {
        return Attempt::TimedOut;
    }
    if job.run_cancel.is_cancelled() {
        return Attempt::Cancelled;
    }
    match result {
        Ok(c) => Attempt::Finished(c),
        Err(BackendError::Cancelled) => {
            Attempt::Error("the backend cancelled the stage".to_owned())
        }
        Err(e) => Attempt::Error(e.to_string()),
    }
}
