//! A run the engine started: executed within its concurrency group, ended in the ledger
//! however it ends (its result recorded, its group left, its checkout removed).

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use crate::Result;
use crate::backend::Executor;
use crate::ledger::{GroupDecision, Ledger};
use crate::plan::{PlannedConcurrency, PlannedPipeline};
use crate::scheduler::{Run, RunEvent, RunReport, RunResult};

/// A run that is ready: subscribe to its events, then [`execute`](StartedRun::execute) it.
/// Dropped without being executed, it is recorded as cancelled and its checkout removed.
pub struct StartedRun {
    /// The run's id.
    pub id: String,
    /// What it runs.
    pub pipeline: Arc<PlannedPipeline>,
    pub(super) run: Run,
    /// Ends it in the ledger: when it ends, or when it is dropped before.
    pub(super) end: RunEnd,
    pub(super) repo: String,
    /// For a resumed run: the executors of the stages it will run again, asked to remove what
    /// the crashed process left of them.
    pub(super) abandoned: Vec<Arc<dyn Executor>>,
    /// What the engine wants the people running it to know (see
    /// [`Plan::notes`](crate::plan::Plan::notes)).
    pub notes: Vec<String>,
}

/// The cancellation tokens of the runs this engine executes now, by run id: a newer run of a
/// `cancel` group stops an older one of this process at once (one of another process sees the
/// request in the ledger).
pub(super) type LocalRuns =
    Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>;

/// How often a run waiting in its concurrency group, or running in a `cancel` group, looks at
/// the ledger.
const GROUP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

/// How a [`StartedRun`] ends: its group's watcher stops, it leaves its group, its result is
/// recorded and its checkout removed. A run dropped before its end (its `execute` future
/// dropped, which cancels the scheduler's run, or never executed) ends so on drop, as
/// cancelled: otherwise it would look running, and hold its group's turn, for as long as
/// this process lives.
pub(super) struct RunEnd {
    pub id: String,
    pub ledger: Ledger,
    pub local_runs: LocalRuns,
    pub checkout: Option<super::Checkout>,
    pub grouped: bool,
    pub watcher: Option<tokio::task::JoinHandle<()>>,
    /// Its stages' logs, closed before its end is recorded.
    pub log: Option<Arc<crate::logs::RunLogWriter>>,
    pub ended: bool,
}

impl RunEnd {
    fn end(&mut self, result: RunResult) -> Result<()> {
        self.ended = true;
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        if self.grouped {
            leave_group(&self.local_runs, &self.ledger, &self.id);
        }
        if let Some(log) = &self.log {
            log.close_all();
        }
        let recorded = self.ledger.finish_run(&self.id, result);
        if let Some(checkout) = self.checkout.take() {
            checkout.release();
        }
        recorded?;
        Ok(())
    }
}

impl Drop for RunEnd {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.end(RunResult::Cancelled);
        }
    }
}

/// Takes a run out of its concurrency group, here and in the ledger.
fn leave_group(local_runs: &LocalRuns, ledger: &Ledger, id: &str) {
    local_runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    let _ = ledger.leave_group(id);
}

impl StartedRun {
    /// A subscriber to the run's events.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.run.subscribe()
    }

    /// Cancelling it cancels the run.
    pub fn cancel_token(&self) -> CancellationToken {
        self.run.cancel_token()
    }

    /// Runs it to its end, records how it ended, and removes its checkout. A run of a
    /// concurrency group first waits for its turn (its position is announced in its events);
    /// one superseded meanwhile ends as cancelled without running a stage. Dropping the future
    /// before the end cancels the run (see [`Run::execute`]) and records it as cancelled.
    pub async fn execute(mut self) -> Result<RunReport> {
        // A resumed run first clears what its crashed process left running on its backends
        // (best effort: a backend that cannot be reached fails its stages, saying why).
        for executor in &self.abandoned {
            let _ = executor.abandon(&self.id).await;
        }
        let token = self.run.cancel_token();
        if let Some(group) = &self.pipeline.concurrency {
            self.end
                .local_runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.id.clone(), token.clone());
            if let Err(e) = self.wait_for_turn(group, &token).await {
                // The run never started: recorded as cancelled, not left to look interrupted.
                let _ = self.end.end(RunResult::Cancelled);
                return Err(e);
            }
            let (ledger, id, token) = (self.end.ledger.clone(), self.id.clone(), token.clone());
            self.end.watcher = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(GROUP_POLL).await;
                    if ledger.group_cancel_requested(&id).unwrap_or(false) {
                        token.cancel();
                        return;
                    }
                }
            }));
        }
        let report = self.run.execute().await;
        self.end.end(report.result)?;
        Ok(report)
    }

    /// Executes `runs` at once and returns how each ended, in their order. Cancelling `stop`
    /// cancels them all (their stages are stopped, and they end as cancelled); dropping the
    /// future cancels them too.
    pub async fn execute_all(
        runs: Vec<StartedRun>,
        stop: &CancellationToken,
    ) -> Vec<Result<RunReport>> {
        let cancels: Vec<_> = runs.iter().map(StartedRun::cancel_token).collect();
        // In a set, so that dropping this future drops the runs too, which cancels them.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, run) in runs.into_iter().enumerate() {
            tasks.spawn(async move { (i, run.execute().await) });
        }
        let mut ended = Vec::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                task = tasks.join_next() => match task {
                    None => break,
                    Some(Ok(run)) => ended.push(run),
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // Cancelled by the runtime shutting down: the run was recorded as cancelled.
                    Some(Err(_)) => {}
                },
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    cancels.iter().for_each(CancellationToken::cancel);
                }
            }
        }
        ended.sort_by_key(|(i, _)| *i);
        ended.into_iter().map(|(_, report)| report).collect()
    }

    /// Waits until the run's concurrency group lets it start; cancels it when it is superseded.
    async fn wait_for_turn(
        &self,
        group: &PlannedConcurrency,
        token: &CancellationToken,
    ) -> Result<()> {
        self.end
            .ledger
            .join_group(&self.id, &self.repo, &group.group, group.on_conflict)?;
        let mut announced = None;
        loop {
            let displaced = match self
                .end
                .ledger
                .group_decision(&self.id, group.on_conflict)?
            {
                GroupDecision::Start { cancelled } => {
                    self.cancel_local(&cancelled);
                    return Ok(());
                }
                GroupDecision::Superseded => {
                    self.run.announce(RunEvent::RunSuperseded {
                        group: group.group.clone(),
                        at: 0.0,
                    });
                    token.cancel();
                    return Ok(());
                }
                GroupDecision::Wait {
                    position,
                    displaced,
                } => {
                    if announced != Some(position) {
                        announced = Some(position);
                        self.run.announce(RunEvent::RunQueued {
                            group: group.group.clone(),
                            position,
                            at: 0.0,
                        });
                    }
                    displaced
                }
            };
            self.cancel_local(&displaced);
            tokio::select! {
                _ = tokio::time::sleep(GROUP_POLL) => {}
                // Cancelled while queued (by a newer run of this process, or by the user):
                // it runs nothing.
                _ = token.cancelled() => {
                    if self.end.ledger.group_cancel_requested(&self.id).unwrap_or(false) {
                        self.run.announce(RunEvent::RunSuperseded {
                            group: group.group.clone(),
                            at: 0.0,
                        });
                    }
                    return Ok(());
                }
            }
        }
    }

    fn cancel_local(&self, runs: &[String]) {
        let local = self
            .end
            .local_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for id in runs {
            if let Some(token) = local.get(id) {
                token.cancel();
            }
        }
    }
}
