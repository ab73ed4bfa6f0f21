//! The tasks that run a run's stages, and what each does when its stage ends.
//!
//! Plain stages (most of them: nothing to render, no environment, no policy) run in runners,
//! tasks that each run one stage after another, at most one runner per worker taking ready
//! stages at a time: a runner whose stage waits parks and hands the ready ones on to a new
//! runner. Every other stage gets a task of its own. The task of a stage that ends books that
//! end itself ([`end_stage`]) and starts what became ready: a stage costs at most one task
//! (none when its backend returns at once: a runner goes on in a new task only when it has
//! spent tokio's budget, every 128 such stages), and no round trip through a driver task
//! that would have to be woken for every stage.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use super::attempts::attempts;
use super::bookkeeping::Handoff;
use super::end::{RanBy, book_end, book_park, book_skipped};
use super::events::RunEvent;
use super::job::Job;
use super::once::once;
use super::report::{StageReport, StageResult};
use super::spec::RunRecorder;
use super::state::Shared;
use crate::backend::ErrorChain;

/// Books the end of stage `index` from its task: records it (when the run has a recorder,
/// before any stage that needs it starts), counts it off its dependents, and starts what
/// became ready. Plain stages (see [`Shared::plain_context`]) started go to the run's
/// `plain` list, and a runner that ends a stage gets the next of them back to run itself: a
/// chain of stages, or a thousand made ready at once whose backends return at once, runs in
/// as many tasks as the runtime has workers, without a task or a wakeup per stage. A
/// runner whose stage waits parks (see [`park`]), and another takes over.
///
/// Without a recorder it is done at once. The task's future holds what is returned across
/// its awaits, so the rest (a recorder's calls) is a boxed future: every stage's task is
/// allocated at its future's size.
pub(super) fn end_stage(
    shared: &Arc<Shared>,
    index: usize,
    report: StageReport,
    ran_by: RanBy,
) -> Next<'_> {
    if let Some(recorder) = &shared.recorder {
        return Next::Later(Box::pin(async move {
            // Recording waits: the ready stages must not wait with it.
            if ran_by == RanBy::Runner {
                park(shared, index);
            }
            record(shared, recorder.as_ref(), &report).await;
            apply(book_end(shared, index, report, ran_by), shared).await
        }));
    }
    let mut out = book_end(shared, index, report, ran_by);
    debug_assert!(
        out.skipped.is_empty(),
        "skips are booked at once without a recorder"
    );
    Next::Now(spawn_tasks(&mut out, shared), out.from)
}

/// What [`end_stage`] returns: the stage to run next, now or once a recorder is done.
pub(super) enum Next<'a> {
    /// The stage, and when it starts: the latest end booked when it was taken. That is no
    /// earlier than the ends of its needs, and earlier than the moment it was taken by no
    /// more than the booking of an end (typically under a microsecond), so that a runner that
    /// goes straight on reads the clock once a stage instead of twice (the read is a large part
    /// of what a stage that returns at once costs).
    Now(Option<usize>, f64),
    Later(Pin<Box<dyn Future<Output = Option<usize>> + Send + 'a>>),
}

impl Next<'_> {
    #[inline]
    pub async fn stage(self) -> Option<usize> {
        match self {
            Next::Now(next, _) => next,
            Next::Later(later) => later.await,
        }
    }
}

/// Spawns the runners and tasks handed off, if any (most ends hand off none); returns the
/// stage for the caller.
#[inline]
fn spawn_tasks(out: &mut Handoff, shared: &Arc<Shared>) -> Option<usize> {
    if !out.runners.is_empty() || !out.tasks.is_empty() {
        spawn_all(out, shared);
    }
    out.next
}

fn spawn_all(out: &mut Handoff, shared: &Arc<Shared>) {
    for i in out.runners.drain(..) {
        spawn_runner(shared.clone(), i as usize);
    }
    for job in out.tasks.drain(..) {
        spawn_task(job);
    }
}

/// Spawns the runners and tasks handed off, then records and books the skipped stages (whose
/// dependents may be skipped or started in turn); returns the stage for the caller.
pub(super) async fn apply(mut out: Handoff, shared: &Arc<Shared>) -> Option<usize> {
    loop {
        spawn_tasks(&mut out, shared);
        if out.skipped.is_empty() {
            return out.next;
        }
        if let Some(recorder) = &shared.recorder {
            for s in &out.skipped {
                record(shared, recorder.as_ref(), &s.report).await;
            }
        }
        out = book_skipped(shared, out.skipped, out.next);
    }
}

async fn record(shared: &Shared, recorder: &dyn RunRecorder, report: &StageReport) {
    if let Err(e) = recorder.stage_finished(&shared.info.id, report).await {
        shared.emit(|at| RunEvent::Warning {
            message: ErrorChain(&e).to_string(),
            at,
        });
    }
}

/// The runner of stage `index` waits on it (its backend's future is pending, or a recorder
/// is): the runner stops counting as one that takes ready stages until the stage's end is
/// booked, and another is spawned for the plain stages waiting, if any. Every stage that
/// waits may so cost a task of its own, as it would have had anyway; those that return at
/// once cost none.
fn park(shared: &Arc<Shared>, index: usize) {
    for i in book_park(shared, index) {
        spawn_runner(shared.clone(), i as usize);
    }
}

/// Books the stage as failed if its task unwinds (a bug in its backend) before it ended.
struct PanicGuard<'a> {
    index: usize,
    shared: &'a Arc<Shared>,
    ran_by: RanBy,
    reported: bool,
}

impl<'a> PanicGuard<'a> {
    fn new(index: usize, shared: &'a Arc<Shared>, ran_by: RanBy) -> Self {
        PanicGuard {
            index,
            shared,
            ran_by,
            reported: false,
        }
    }

    /// Books the stage's end (its report, its dependents); for a runner, the plain stage it
    /// runs next comes back from it.
    fn report(mut self, report: StageReport) -> Next<'a> {
        self.reported = true;
        end_stage(self.shared, self.index, report, self.ran_by)
    }
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        // A task dropped without a panic is one the runtime shut down: no one waits for it.
        if self.reported || !std::thread::panicking() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (shared, index, ran_by) = (self.shared.clone(), self.index, self.ran_by);
        let report = StageReport::ended(
            shared.pipeline.layout.id(index),
            StageResult::Failure {
                message: "the stage's task panicked (a bug in its backend)".to_owned(),
                exit_code: None,
            },
            1,
            None,
            Some(shared.now()),
            BTreeMap::new(),
        );
        runtime.spawn(async move {
            // A runner's stage: this task takes over as the runner.
            if let Some(next) = end_stage(&shared, index, report, ran_by).stage().await {
                run_plain(shared, next).await;
            }
        });
    }
}

/// Spawns a runner that runs plain stage `index` first (see [`Shared::plain_context`]), most
/// stages of most pipelines: its task carries the stage's index instead of a context, and
/// builds the context on the worker that runs it, straight into the backend's call.
pub(super) fn spawn_runner(shared: Arc<Shared>, index: usize) {
    tokio::spawn(run_plain(shared, index));
}

/// A runner: runs plain stage `index`, then each plain stage that its end hands back, in this
/// task. When a stage's future is first pending, the runner parks: the stages that become
/// ready meanwhile go to another.
pub(super) async fn run_plain(shared: Arc<Shared>, mut index: usize) {
    // When the next stage starts, when the runner goes straight on to it (see `Next::Now`);
    // NaN: read the clock.
    let mut from = f64::NAN;
    loop {
        let guard = PanicGuard::new(index, &shared, RanBy::Runner);
        let started = if from.is_nan() { shared.now() } else { from };
        let done = once(
            &shared,
            index as u32,
            started,
            true,
            park,
            Shared::plain_context,
        )
        .await;
        let next = guard.report(done);
        // Not after waiting for a recorder, nor after giving up the worker below.
        from = match next {
            Next::Now(_, from) => from,
            Next::Later(_) => f64::NAN,
        };
        let Some(next) = next.stage().await else {
            return;
        };
        index = next;
        // A long chain in one task still gives the worker's other tasks their turns: a stage
        // spends a unit of the task's budget, and once it is spent the runner hands its next
        // stage to a new runner, a task that the worker queues behind the others. Only once a
        // millisecond does it yield to the runtime instead, which also lets the runtime poll
        // its driver (I/O, timers) and run the tasks that yielded: on an otherwise idle worker
        // that wakes another worker too, and when that happened every 128 stages (every time
        // the budget was spent), the wakeups cost more than the stages.
        if tokio::task::coop::has_budget_remaining() {
            tokio::task::coop::consume_budget().await;
        } else if shared.time_to_yield() {
            from = f64::NAN;
            tokio::task::yield_now().await;
        } else {
            spawn_runner(shared, index);
            return;
        }
    }
}

/// Starts the task of a stage that is not plain, which books the stage's end.
///
/// Stages with neither retries nor a timeout get a task of their own type whose future is a
/// fraction of the size.
fn spawn_task(job: Job) {
    if job.retry.is_none() && job.timeout.is_none() {
        tokio::spawn(async move {
            let Job {
                index, ctx, shared, ..
            } = job;
            let ctx = move |_: &Shared, _| ctx;
            let done = once(&shared, index as u32, shared.now(), false, park, ctx);
            end_when_done(&shared, index, done).await;
        });
    } else {
        tokio::spawn(async move {
            let (index, shared) = (job.index, job.shared.clone());
            end_when_done(&shared, index, attempts(job)).await;
        });
    }
}

/// Awaits `done` under a panic guard and books its end; the plain stages it starts go to
/// runners (this task's future is larger than a runner's).
async fn end_when_done(
    shared: &Arc<Shared>,
    index: usize,
    done: impl Future<Output = StageReport>,
) {
    let guard = PanicGuard::new(index, shared, RanBy::OwnTask);
    let next = guard.report(done.await).stage().await;
    debug_assert!(next.is_none(), "only runners are handed stages");
}
