//! A run: prepared by the [`Scheduler`], subscribed to, then executed by its own task, which
//! starts the first stages, handles the run's cancellation, waits for the end and reports.

use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use super::bookkeeping::Handoff;
use super::events::RunEvent;
use super::progress::Progress;
use super::report::{RunReport, RunResult};
use super::spec::{RunSpec, SchedulerOptions};
use super::state::{Bookkeeping, Shared};
use super::tasks::apply;
use crate::backend::BackendRegistry;
use crate::plan::PlannedPipeline;

/// Runs pipelines on a [`BackendRegistry`].
#[derive(Debug, Clone)]
pub struct Scheduler {
    registry: Arc<BackendRegistry>,
    options: SchedulerOptions,
}

/// A run that is ready to execute: subscribe to its events and take its cancellation token
/// first, then [`execute`](Run::execute) it.
pub struct Run {
    registry: Arc<BackendRegistry>,
    options: SchedulerOptions,
    pipeline: Arc<PlannedPipeline>,
    spec: RunSpec,
    /// Made by the first subscriber: a run no one follows allocates no event buffer (4096
    /// slots by default, which cost more than a small run itself).
    events: std::sync::OnceLock<broadcast::Sender<RunEvent>>,
    cancel: CancellationToken,
}

impl Scheduler {
    /// A scheduler with default options.
    pub fn new(registry: BackendRegistry) -> Self {
        Self::with_options(registry, SchedulerOptions::default())
    }

    /// A scheduler with `options`.
    pub fn with_options(registry: BackendRegistry, options: SchedulerOptions) -> Self {
        Scheduler {
            registry: Arc::new(registry),
            options,
        }
    }

    /// The backends it runs stages on.
    pub fn registry(&self) -> &BackendRegistry {
        &self.registry
    }

    /// Prepares a run of `pipeline`.
    pub fn run(&self, pipeline: Arc<PlannedPipeline>, spec: RunSpec) -> Run {
        Run {
            registry: self.registry.clone(),
            options: self.options.clone(),
            pipeline,
            spec,
            events: std::sync::OnceLock::new(),
            cancel: CancellationToken::new(),
        }
    }
}

impl Run {
    /// A new subscriber to the run's events (only events sent after this call reach it).
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.events
            .get_or_init(|| broadcast::channel(self.options.event_buffer.max(16)).0)
            .subscribe()
    }

    /// Cancelling this token cancels the run: running stages are stopped, the rest skipped.
    pub fn cancel_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Sends `event` to the run's subscribers (for what happens around the run, such as
    /// waiting in a concurrency group).
    pub fn announce(&self, event: RunEvent) {
        if let Some(events) = self.events.get() {
            let _ = events.send(event);
        }
    }

    /// Runs every stage to its end and reports. Stages whose backend is not registered fail
    /// (check the plan with
    /// [`PlannedPipeline::check_backends`](crate::plan::PlannedPipeline::check_backends) first to refuse such a run up front).
    ///
    /// Dropping the future before the end (a timeout around it, say) cancels the run: nothing
    /// more starts, and the stages still running are stopped through their tokens, so that
    /// their backends clean up after them; no report is made.
    pub async fn execute(self) -> RunReport {
        drive(start(self)).await
    }
}

/// The run's shared state, with the stages it reuses already ended.
fn start(run: Run) -> Arc<Shared> {
    // A run cancelled before it started (superseded while queued) starts nothing.
    let books = Bookkeeping::new(&run.pipeline, &run.spec.reuse, run.cancel.is_cancelled());
    // Whoever subscribed made the channel; the receivers may have been dropped since.
    let events = run.events.into_inner().filter(|e| e.receiver_count() > 0);
    Shared::new(
        &run.registry,
        &run.options,
        run.pipeline,
        run.spec,
        events,
        run.cancel,
        books,
    )
}

/// When the run's `execute` future is dropped before the end: nothing more starts, and the
/// stages still running are stopped through their tokens, as by cancelling the run, so that
/// their backends clean up (kill the process, remove the container) instead of running on
/// for no one.
struct Abandon<'a>(&'a Shared);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let ended = {
            let mut books = self.0.lock();
            books.abandoned = true;
            books.ended
        };
        if !ended {
            self.0.run_cancel.cancel();
        }
    }
}

/// The run's own task: starts the first stages, waits for the end (cancelling what runs when
/// the run is cancelled), and reports.
async fn drive(shared: Arc<Shared>) -> RunReport {
    let _abandon = Abandon(&shared);
    shared.emit(|at| RunEvent::RunStarted {
        run_id: shared.info.id.clone(),
        pipeline: shared.pipeline.name.clone(),
        stages: shared.pipeline.stages.len(),
        at,
    });
    let mut first = Handoff::default();
    shared.lock().start_ready(&shared, false, &mut first);
    apply(first, &shared).await;
    // One wait for the run's cancellation for the whole run.
    let token = shared.run_cancel.clone();
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    let mut seen = false;
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled, if !seen => {
                seen = true;
                let mut out = Handoff::default();
                shared.lock().cancel(&shared, false, &mut out);
                apply(out, &shared).await;
            }
            // A permit is kept when the end comes before this waits.
            _ = shared.ended.notified() => break,
        }
    }
    // Fail as loudly as the bug would have in the run's own task, rather than wait forever.
    assert!(
        !shared.lock().broken,
        "a stage task panicked while booking its stage's end (a bug in the scheduler); see the panic before this one"
    );
    report(&shared)
}

fn report(shared: &Shared) -> RunReport {
    let states = std::mem::replace(&mut shared.lock().states, Progress::new(0));
    // Cancelling the run wakes its stages before its own task: the last ones can end, stopped
    // by it, before that task sees the cancellation. A stage ends `Cancelled` only when the
    // run was cancelled.
    let cancelled = shared.lock().cancelled || states.stopped();
    let result = if cancelled {
        RunResult::Cancelled
    } else if states.failed() {
        RunResult::Failure
    } else {
        RunResult::Success
    };
    let duration_secs = shared.now();
    shared.emit(|at| RunEvent::RunFinished {
        run_id: shared.info.id.clone(),
        result,
        duration_secs,
        at,
    });
    // The reports were filled in place as stages ended.
    RunReport {
        run_id: shared.info.id.clone(),
        pipeline: shared.pipeline.name.clone(),
        result,
        duration_secs,
        stages: states.into_reports(|i| shared.pipeline.layout.id(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::RunInfo;
    use crate::backend::memory::MemoryBackend;
    use crate::scheduler::end::RanBy;
    use crate::scheduler::tasks::{end_stage, run_plain};

    /// The shared state of a run of one stage `a` on the in-memory backend.
    fn one_stage_run() -> Arc<Shared> {
        let config = crate::config::Config::parse(
            "f",
            "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      a: { run: x }\n",
        )
        .unwrap();
        let event: crate::event::GitEvent = serde_json::from_str(
            r#"{"kind":"push","repo":"o/r","sha":"abc","ref":"refs/heads/main","branch":"main",
            "before":null,"after":"abc","created":true,"deleted":false,"forced":false}"#,
        )
        .unwrap();
        let plan = crate::plan::Planner::new()
            .plan(&event, &config, &crate::plan::Changes::Unknown)
            .unwrap();
        let registry =
            BackendRegistry::new().with_executor("local", Arc::new(MemoryBackend::new()));
        start(Scheduler::new(registry).run(
            Arc::new(plan.pipelines[0].clone()),
            RunSpec::new(RunInfo::new("r", "ci", event, ".")),
        ))
    }

    /// tokio allocates a task in steps of 128 bytes, and with its header and trailer a future
    /// of up to about 152 bytes fits in 256; at 168 every plain stage's task took 384.
    #[test]
    fn a_plain_stage_task_stays_small() {
        let task = run_plain(one_stage_run(), 0);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 152, "a plain stage's future is {size} bytes");
    }

    #[tokio::test]
    async fn a_panic_while_booking_fails_the_run_instead_of_hanging() {
        let shared = one_stage_run();
        // Booking a stage that does not exist panics under the lock, as a bug there would.
        let report = Progress::new(1)
            .into_reports(|_| shared.pipeline.layout.id(0))
            .remove(0);
        let bug = tokio::spawn({
            let shared = shared.clone();
            async move { end_stage(&shared, 99, report, RanBy::OwnTask).stage().await }
        });
        assert!(bug.await.unwrap_err().is_panic());
        let run = tokio::spawn(drive(shared));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), run)
            .await
            .expect("the run ends instead of waiting forever");
        assert!(ended.unwrap_err().is_panic());
    }
}
