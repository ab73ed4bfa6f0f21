//! The run's bookkeeping: in-degree counts, a ready worklist, per-backend queues within the
//! parallelism bounds.
//!
//! The bookkeeping is shared by the run's stage tasks, behind one lock: the task of a stage that
//! ends settles it itself (its report, its dependents' counts) and starts the stages that became
//! ready. Plain stages (most of them) run in runners, tasks that each run one stage after another,
//! at most one runner per worker taking ready stages at a time: a runner whose stage waits hands
//! the ready ones on to a new runner. A stage costs at most one task (none when its backend returns
//! at once: a runner goes on in a new task only when it has spent tokio's budget, every 128 such
//! stages), and no round trip through a driver task that would have to be woken for every stage.
//! The run's own task starts the first stages, handles the run's cancellation and waits for the
//! end. O(stages + edges) bookkeeping, no polling, and no allocation per stage beyond the task and
//! what the stage's own templates need.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use super::attempt::{self, Job, Shared, Target};
use super::context::RuntimeContext;
use super::events::RunEvent;
use super::progress::Progress;
use super::report::{RunReport, RunResult, SkipReason, StageReport, StageResult};
use super::{Run, RunRecorder};
use crate::backend::{EnvironmentPolicy, EnvironmentTarget, LogLine, LogTarget};
use crate::expr::StageStatus;
use crate::plan::layout::{
    CONTINUE_ON_ERROR, ENVIRONMENT, HAS_CONDITION, IMPLICIT_SUCCESS, POLICY, RENDERS,
};

enum Decision {
    Run,
    Skip(SkipReason),
}

/// What changes while a run runs; behind [`Shared::core`]'s lock.
pub(super) struct Core {
    states: Progress,
    /// Per stage: its needs that have not ended yet.
    remaining: Vec<u32>,
    ready: VecDeque<usize>,
    /// Plain stages started, waiting for a runner to take them.
    plain: VecDeque<u32>,
    /// Runners that will take from `plain` when their stage ends: those not parked on a
    /// stage that waits.
    runners: usize,
    /// Per backend: stages whose needs have ended, waiting for a slot.
    queues: Vec<VecDeque<usize>>,
    /// Stages in all `queues` together: most settles find none, without reading the queues.
    queued: usize,
    /// Per backend with a bound: its stages running (not counted for unbounded backends,
    /// so that a stage's end writes no count beside the run's own).
    busy: Vec<usize>,
    /// Stages started whose end is not settled yet.
    running: usize,
    /// Skipped stages being recorded (outside the lock) before they are settled.
    recording: usize,
    cancelled: bool,
    /// The run's `execute` future was dropped: nothing more starts.
    abandoned: bool,
    ended: bool,
    /// A stage task panicked while settling (a bug here): the counts cannot be trusted.
    broken: bool,
    /// The latest end settled, in seconds since the run started.
    latest_end: f64,
}

/// A stage skipped while settling, to be recorded before it is settled in turn.
struct Skipped {
    index: usize,
    report: StageReport,
}

/// Who settles a stage's end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Caller {
    /// The stage's own task (a stage with retries, a timeout, or a context to render).
    Task,
    /// A runner: a task that runs plain stages one after another, taking the next from the
    /// run's `plain` list as each ends.
    Runner,
}

/// What settling leaves to do once the lock is released.
#[derive(Default)]
struct Pumped {
    /// Skipped stages to record, then settle (only with a recorder).
    skipped: Vec<Skipped>,
    /// Runners to spawn, each with the plain stage it runs first.
    spawn: Vec<u32>,
    /// The plain stage a runner that settled takes next.
    next: Option<usize>,
    /// When it starts: the latest end settled when it was taken (see [`Settled::Now`]).
    from: f64,
}

impl Pumped {
    /// Spawns the runners hired; returns the stage for the caller.
    fn spawn_hired(&mut self, shared: &Arc<Shared>) -> Option<usize> {
        for i in self.spawn.drain(..) {
            attempt::spawn_plain(shared.clone(), i as usize);
        }
        self.next
    }

    /// Spawns the runners hired, then records and settles the skipped ones (whose
    /// dependents may be skipped or started in turn); returns the stage for the caller.
    async fn carry_out(mut self, shared: &Arc<Shared>) -> Option<usize> {
        loop {
            self.spawn_hired(shared);
            if self.skipped.is_empty() {
                return self.next;
            }
            if let Some(recorder) = &shared.recorder {
                for s in &self.skipped {
                    record(shared, recorder.as_ref(), &s.report).await;
                }
            }
            let mut more = Pumped {
                next: self.next,
                ..Pumped::default()
            };
            let _settling = Settling(shared);
            let mut core = shared.lock();
            for s in self.skipped {
                core.recording -= 1;
                core.finish(shared, s.index, s.report);
            }
            core.pump(shared, false, &mut more);
            drop(core);
            self = more;
        }
    }
}

/// When the run's `execute` future is dropped before the end: nothing more starts, and the
/// stages still running are stopped through their tokens, as by cancelling the run, so that
/// their backends clean up (kill the process, remove the container) instead of running on
/// for no one.
struct Abandon<'a>(&'a Shared);

impl Drop for Abandon<'_> {
    fn drop(&mut self) {
        let ended = {
            let mut core = self.0.lock();
            core.abandoned = true;
            core.ended
        };
        if !ended {
            self.0.run_cancel.cancel();
        }
    }
}

pub(super) async fn drive(run: Run) -> RunReport {
    drive_shared(start(run)).await
}

async fn drive_shared(shared: Arc<Shared>) -> RunReport {
    let _abandon = Abandon(&shared);
    shared.emit(|at| RunEvent::RunStarted {
        run_id: shared.info.id.clone(),
        pipeline: shared.pipeline.name.clone(),
        stages: shared.pipeline.stages.len(),
        at,
    });
    let mut first = Pumped::default();
    shared.lock().pump(&shared, false, &mut first);
    first.carry_out(&shared).await;
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
                let mut out = Pumped::default();
                shared.lock().cancel(&shared, false, &mut out);
                out.carry_out(&shared).await;
            }
            // A permit is kept when the end comes before this waits.
            _ = shared.ended.notified() => break,
        }
    }
    // Fail as loudly as the bug would have in the run's own task, rather than wait forever.
    assert!(
        !shared.lock().broken,
        "a stage task panicked while settling its stage (a bug in the scheduler); see the panic before this one"
    );
    report(&shared)
}

/// Held while a stage task settles: if it unwinds (a bug in the bookkeeping), the run's task
/// is woken to fail instead of waiting for an end that will not come.
struct Settling<'a>(&'a Shared);

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().broken = true;
            self.0.ended.notify_one();
        }
    }
}

/// Settles the end of stage `index` from its task: records it (when the run has a recorder,
/// before any stage that needs it starts), counts it off its dependents, and starts what
/// became ready. Plain stages (see [`Shared::plain_context`]) started go to the run's
/// `plain` list, and a runner that settles gets the next of them back to run itself: a
/// chain of stages, or a thousand made ready at once whose backends return at once, runs in
/// as many tasks as the runtime has workers, without a task or a wakeup per stage. A
/// runner whose stage waits parks (see [`Shared::park`]), and another takes over.
///
/// Without a recorder it is done at once. The task's future holds what is returned across
/// its awaits, so the rest (a recorder's calls) is a boxed future: every stage's task is
/// allocated at its future's size.
pub(super) fn settle(
    shared: &Arc<Shared>,
    index: usize,
    report: StageReport,
    caller: Caller,
) -> Settled<'_> {
    if let Some(recorder) = &shared.recorder {
        return Settled::Later(Box::pin(async move {
            // Recording waits: the ready stages must not wait with it.
            if caller == Caller::Runner {
                shared.park(index);
            }
            record(shared, recorder.as_ref(), &report).await;
            settled(shared, index, report, caller)
                .carry_out(shared)
                .await
        }));
    }
    let mut out = settled(shared, index, report, caller);
    debug_assert!(
        out.skipped.is_empty(),
        "skips are settled at once without a recorder"
    );
    Settled::Now(out.spawn_hired(shared), out.from)
}

/// What [`settle`] returns: the stage to run next, now or once a recorder is done.
pub(super) enum Settled<'a> {
    /// The stage, and when it starts: the latest end settled when it was taken. That is no
    /// earlier than the ends of its needs, and earlier than the moment it was taken by no
    /// more than the settling of an end (typically under a microsecond), so that a runner that goes
    /// straight on reads the clock once a stage instead of twice (the read is a large part
    /// of what a stage that returns at once costs).
    Now(Option<usize>, f64),
    Later(std::pin::Pin<Box<dyn std::future::Future<Output = Option<usize>> + Send + 'a>>),
}

impl Settled<'_> {
    pub async fn next(self) -> Option<usize> {
        match self {
            Settled::Now(next, _) => next,
            Settled::Later(later) => later.await,
        }
    }
}

/// Stage `index` ended (and is recorded): its report and dependents, under the lock.
fn settled(shared: &Arc<Shared>, index: usize, report: StageReport, caller: Caller) -> Pumped {
    let _settling = Settling(shared);
    let mut out = Pumped::default();
    let mut core = shared.lock();
    if caller == Caller::Runner && core.states.take_parked(index) {
        core.runners += 1;
    }
    core.count_running(shared, index, false);
    core.finish(shared, index, report);
    core.pump(shared, caller == Caller::Runner, &mut out);
    out
}

async fn record(shared: &Shared, recorder: &dyn RunRecorder, report: &StageReport) {
    if let Err(message) = recorder.stage_finished(&shared.info.id, report).await {
        shared.emit(|at| RunEvent::Warning {
            message: format!("cannot record stage \"{}\": {message}", report.id),
            at,
        });
    }
}

impl Shared {
    pub(super) fn lock(&self) -> MutexGuard<'_, Core> {
        // The lock is never held across a backend call; a panic under it (a bug) leaves
        // counts that are still worth reporting from.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The runner of stage `index` waits on it (its backend's future is pending, or a
    /// recorder is): the runner stops counting as one that takes ready stages until the
    /// stage is settled, and another is spawned for the plain stages waiting, if any. Every
    /// stage that waits may so cost a task of its own, as it would have had anyway; those
    /// that return at once cost none.
    pub(super) fn park(self: &Arc<Self>, index: usize) {
        let mut hired = Vec::new();
        {
            let _settling = Settling(self);
            let mut core = self.lock();
            // A stage that waited on its backend may wait again on the recorder.
            if !core.states.park(index) {
                return;
            }
            core.runners -= 1;
            core.hire(self, &mut hired);
        }
        for i in hired {
            attempt::spawn_plain(self.clone(), i as usize);
        }
    }

    /// Sends the event `event` makes of the time since the run started, when anyone follows
    /// the run (nothing is built otherwise).
    pub(super) fn emit(&self, event: impl FnOnce(f64) -> RunEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event(self.now()));
        }
    }
}

/// Ends the stages whose results `run` reuses.
fn reuse(states: &mut Progress, run: &Run) {
    let pipeline = &run.pipeline;
    for (i, stage) in pipeline.stages.iter().enumerate() {
        if let Some(r) = run.spec.reuse.get(&*stage.id) {
            let report = StageReport {
                reused: true,
                ..r.clone()
            };
            states.finish(i, report, stage.continue_on_error, false);
        }
    }
    // Reused stages may have reused ancestors only; propagate ancestry failures in order
    // (the graph's order, which visits the reports at random: only for runs that reuse).
    let graph = pipeline.graph();
    for &s in graph.order() {
        if states.report(s.index()).is_some_and(|r| r.reused)
            && graph.needs(s).any(|n| states.failed_ancestry(n.index()))
        {
            states.mark_failed_ancestry(s.index());
        }
    }
    for i in 0..states.len() {
        if states.finished(i) {
            states.pass_on(i, pipeline.layout.dependents(i));
        }
    }
}

/// The run's shared state, with the stages it reuses already ended.
pub(super) fn start(run: Run) -> Arc<Shared> {
    let pipeline = &run.pipeline;
    let mut states = Progress::new(pipeline.stages.len());
    if !run.spec.reuse.is_empty() {
        reuse(&mut states, &run);
    }
    let layout = &pipeline.layout;
    let remaining: Vec<u32> = (0..states.len())
        .map(|i| {
            layout
                .needs(i)
                .iter()
                .filter(|&&n| !states.finished(n as usize))
                .count() as u32
        })
        .collect();
    let ready = (0..states.len())
        .filter(|&i| !states.finished(i) && remaining[i] == 0)
        .collect();

    // Backends and their targets, resolved once per run.
    let backend_names = layout.backends();
    let targets = layout
        .targets()
        .iter()
        .map(|&(b, action)| Target::new(action, &backend_names[b as usize], &run.registry))
        .collect();
    let limits = backend_names
        .iter()
        .map(|n| {
            run.options
                .per_backend
                .get(&**n)
                .copied()
                .unwrap_or(usize::MAX)
        })
        .collect();
    let core = Core {
        states,
        remaining,
        ready,
        plain: VecDeque::new(),
        runners: 0,
        queues: backend_names.iter().map(|_| VecDeque::new()).collect(),
        queued: 0,
        busy: vec![0; backend_names.len()],
        running: 0,
        recording: 0,
        // A run cancelled before it started (superseded while queued) starts nothing.
        cancelled: run.cancel.is_cancelled(),
        abandoned: false,
        ended: false,
        broken: false,
        latest_end: 0.0,
    };

    let start = Instant::now();
    // Whoever subscribed made the channel; the receivers may have been dropped since.
    let events = run.events.into_inner().filter(|e| e.receiver_count() > 0);
    let masker = run.spec.masker();
    let log = events.clone().map(|events| {
        LogTarget::new(masker.clone(), move |l: LogLine| {
            let at = start.elapsed().as_secs_f64();
            let _ = events.send(RunEvent::Log {
                stage: l.stage,
                attempt: l.attempt,
                stream: l.stream,
                line: l.line,
                at,
            });
        })
    });
    Arc::new(Shared {
        events,
        // A shard for every 256 stages, up to 64: a small run makes one token, not 64.
        cancel_shards: (0..(run.pipeline.stages.len() / 256).clamp(1, 64))
            .map(|_| Arc::new(run.cancel.child_token()))
            .collect(),
        run_cancel: run.cancel,
        start,
        targets,
        log,
        gate: run.spec.gate,
        recorder: run.spec.recorder,
        info: run.spec.info,
        env: run.spec.env,
        secrets: run.spec.secrets,
        environment_secrets: run.spec.environment_secrets,
        masker,
        max_parallel: run.options.max_parallel.max(1),
        // More runners than workers would only take turns at the lock.
        width: tokio::runtime::Handle::try_current()
            .map_or(1, |h| h.metrics().num_workers())
            .max(1),
        limits,
        core: Mutex::new(core),
        ended: tokio::sync::Notify::new(),
        yielded: std::sync::atomic::AtomicU64::new(0f64.to_bits()),
        pipeline: run.pipeline,
    })
}

impl Core {
    /// Decides the ready stages and starts what may start. Without a recorder, stages it skips
    /// are settled at once; with one, they are returned, to be recorded outside the lock and
    /// settled then. With `take` (the caller is a runner), the next plain stage started is
    /// returned for the caller to run, or, when there is none, the runner is counted out.
    fn pump(&mut self, shared: &Arc<Shared>, take: bool, out: &mut Pumped) {
        if self.abandoned {
            return;
        }
        // A stage ending while the run is being cancelled must not start the next one before
        // the run's task sees it: every child token is cancelled with the run's, and a shard
        // is a lock few stages share.
        let waiting = !self.ready.is_empty() || self.queued > 0 || !self.plain.is_empty();
        if waiting && !self.cancelled && shared.cancel_shard(self.running).is_cancelled() {
            return self.cancel(shared, take, out);
        }
        while let Some(i) = self.ready.pop_front() {
            match self.decide(shared, i) {
                Decision::Skip(reason) => self.skip(shared, i, reason, &mut out.skipped),
                Decision::Run => {
                    self.queues[shared.pipeline.layout.backend(i)].push_back(i);
                    self.queued += 1;
                    shared.emit(|at| RunEvent::StageQueued {
                        stage: shared.pipeline.stages[i].id.to_string(),
                        at,
                    });
                }
            }
        }
        while self.running < shared.max_parallel {
            let Some(i) = self.next_launchable(shared) else {
                break;
            };
            if shared
                .pipeline
                .layout
                .has(i, RENDERS | ENVIRONMENT | POLICY)
            {
                attempt::spawn(self.job(shared, i));
            } else {
                self.plain.push_back(i as u32);
            }
            self.count_running(shared, i, true);
        }
        if take {
            out.next = self.plain.pop_front().map(|i| i as usize);
            out.from = self.latest_end;
            if out.next.is_none() {
                self.runners -= 1;
            }
        }
        self.hire(shared, &mut out.spawn);
        if !self.ended && self.running == 0 && self.recording == 0 {
            self.ended = true;
            shared.ended.notify_one();
        }
    }

    /// Hires runners for the plain stages waiting, up to one per worker, each with the stage
    /// it runs first.
    fn hire(&mut self, shared: &Shared, spawn: &mut Vec<u32>) {
        while self.runners < shared.width {
            let Some(i) = self.plain.pop_front() else {
                break;
            };
            self.runners += 1;
            spawn.push(i);
        }
    }

    /// Ends stage `i` as skipped: at once, or (with a recorder) once it is recorded.
    fn skip(&mut self, shared: &Shared, i: usize, reason: SkipReason, out: &mut Vec<Skipped>) {
        let finished = shared.now();
        let report = StageReport::ended(
            shared.pipeline.layout.id(i),
            StageResult::Skipped { reason },
            0,
            None,
            Some(finished),
            BTreeMap::new(),
        );
        if shared.recorder.is_some() {
            self.recording += 1;
            out.push(Skipped { index: i, report });
        } else {
            self.finish(shared, i, report);
            // Its dependents are decided by the caller's loop.
        }
    }

    /// The run was cancelled: queued stages and plain ones no runner took yet are skipped,
    /// running ones stop through their tokens, and nothing more starts. `take` as for
    /// [`pump`](Core::pump).
    fn cancel(&mut self, shared: &Arc<Shared>, take: bool, out: &mut Pumped) {
        if self.ended {
            // Every stage had ended before the run's task saw the cancellation.
            return;
        }
        self.cancelled = true;
        let queued: Vec<usize> = self.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.queued = 0;
        for i in queued {
            self.skip(shared, i, SkipReason::RunCancelled, &mut out.skipped);
        }
        for i in std::mem::take(&mut self.plain) {
            let i = i as usize;
            self.count_running(shared, i, false);
            self.skip(shared, i, SkipReason::RunCancelled, &mut out.skipped);
        }
        self.pump(shared, take, out);
    }

    fn decide(&self, shared: &Shared, i: usize) -> Decision {
        if self.cancelled {
            return Decision::Skip(SkipReason::RunCancelled);
        }
        let layout = &shared.pipeline.layout;
        // Its own byte, not its needs': most stages' needs all succeeded.
        let needs_succeeded = self.states.needs_ok(i);
        debug_assert_eq!(
            needs_succeeded,
            layout.needs(i).iter().all(|&n| self.states.ok(n as usize))
        );
        if layout.has(i, IMPLICIT_SUCCESS) && !needs_succeeded {
            // The first need, in config order, that did not succeed.
            let need = layout
                .needs(i)
                .iter()
                .map(|&n| n as usize)
                .find(|&n| !self.states.ok(n))
                .unwrap_or(i);
            let name = shared.pipeline.stages[need].id.to_string();
            return Decision::Skip(match self.states.result(need) {
                Some(StageResult::Skipped { .. }) => SkipReason::NeedSkipped { need: name },
                _ => SkipReason::NeedFailed { need: name },
            });
        }
        if layout.has(i, HAS_CONDITION) {
            let status = StageStatus {
                needs_succeeded,
                need_failed: self.states.need_failed(i),
                cancelled: false,
            };
            if let Some(c) = &shared.pipeline.stages[i].source.condition {
                let ctx = self.context(shared, i, status);
                if !c.expr.eval(&ctx).is_some_and(|v| v.truthy()) {
                    return Decision::Skip(SkipReason::ConditionFalse {
                        expr: c.source.clone(),
                    });
                }
            }
        }
        Decision::Run
    }

    fn context<'a>(
        &'a self,
        shared: &'a Shared,
        i: usize,
        status: StageStatus,
    ) -> RuntimeContext<'a> {
        RuntimeContext {
            event: &shared.info.event,
            env: &shared.env,
            stage: &shared.pipeline.stages[i].source,
            graph: shared.pipeline.graph(),
            states: &self.states,
            status,
        }
    }

    /// Counts stage `i` as started (`true`) or as ended: in the run's count, and in its
    /// backend's when that backend has a bound (`next_launchable` reads the others' as 0).
    fn count_running(&mut self, shared: &Shared, i: usize, started: bool) {
        if started {
            self.running += 1;
        } else {
            self.running -= 1;
        }
        let b = shared.pipeline.layout.backend(i);
        // Unbounded backends' counts are never written: a stage's end touches no more memory
        // shared with the other workers than it must.
        if shared.limits[b] != usize::MAX {
            if started {
                self.busy[b] += 1;
            } else {
                self.busy[b] -= 1;
            }
        }
    }

    fn next_launchable(&mut self, shared: &Shared) -> Option<usize> {
        if self.queued == 0 {
            return None;
        }
        let b = (0..self.queues.len())
            .find(|&b| !self.queues[b].is_empty() && self.busy[b] < shared.limits[b])?;
        self.queued -= 1;
        self.queues[b].pop_front()
    }

    fn job(&self, shared: &Arc<Shared>, i: usize) -> Job {
        let layout = &shared.pipeline.layout;
        let planned = &shared.pipeline.stages[i];
        // What every stage's context has; the rest is filled in below.
        let mut ctx = shared.plain_context(i);
        if layout.has(i, RENDERS) {
            let source = &planned.source;
            let rt = self.context(
                shared,
                i,
                StageStatus {
                    needs_succeeded: true,
                    ..Default::default()
                },
            );
            ctx.env.extend(
                source
                    .env
                    .iter()
                    .map(|(k, t)| (k.clone(), rt.render(&t.template))),
            );
            if let Some(settings) = &planned.environment_settings {
                for (k, v) in settings.with.iter() {
                    ctx.with.insert(k.clone(), rt.render_json(v));
                }
            }
            for (k, v) in &source.with {
                ctx.with.insert(k.clone(), rt.render_json(v));
            }
        }
        if layout.has(i, ENVIRONMENT) {
            if let (Some(name), Some(config)) =
                (&planned.environment, &planned.details().environment_config)
            {
                let event = &shared.info.event;
                let settings = planned.environment_settings.as_deref();
                if let Some(secrets) = shared.environment_secrets.get(config) {
                    ctx.secrets
                        .extend(secrets.iter().map(|(k, v)| (k.clone(), v.clone())));
                }
                ctx.environment = Some(Box::new(
                    EnvironmentTarget::new(
                        name.clone(),
                        config.clone(),
                        event.version().map(|v| v.to_string()),
                    )
                    .with_pull_request(
                        event
                            .pull_request()
                            .filter(|_| settings.is_some_and(|s| s.per_pull_request))
                            .map(|pr| pr.number),
                    )
                    .with_policy(settings.map(EnvironmentPolicy::of).unwrap_or_default()),
                ));
            }
        }
        let timeout = if layout.has(i, POLICY) {
            planned.source.timeout
        } else {
            None
        };
        ctx.timeout = timeout;
        Job {
            index: i,
            backend: shared.pipeline.layout.backend(i),
            target: shared.pipeline.layout.target(i),
            ctx,
            retry: if layout.has(i, POLICY) {
                planned.source.retry.as_deref().cloned()
            } else {
                None
            },
            timeout,
            shared: shared.clone(),
        }
    }

    /// Stores stage `i`'s report and counts it off its dependents' needs.
    fn finish(&mut self, shared: &Shared, i: usize, report: StageReport) {
        let layout = &shared.pipeline.layout;
        let failed_need = self.states.need_failed(i);
        debug_assert_eq!(
            failed_need,
            layout
                .needs(i)
                .iter()
                .any(|&n| self.states.failed_ancestry(n as usize))
        );
        let flaky = matches!(report.result, StageResult::Success) && report.attempts > 1;
        if let Some(end) = report.finished_secs {
            self.latest_end = self.latest_end.max(end);
        }
        self.states.finish(
            i,
            StageReport { flaky, ..report },
            layout.has(i, CONTINUE_ON_ERROR),
            failed_need,
        );
        if let (Some(_), Some(report)) = (&shared.events, self.states.report(i)) {
            let duration_secs = report.duration().map_or(0.0, |d| d.as_secs_f64());
            shared.emit(|at| RunEvent::StageFinished {
                stage: report.id.to_string(),
                result: report.result.clone(),
                attempts: report.attempts,
                flaky: report.flaky,
                duration_secs,
                at,
            });
        }
        self.states.pass_on(i, layout.dependents(i));
        for &d in layout.dependents(i) {
            let d = d as usize;
            self.remaining[d] -= 1;
            if self.remaining[d] == 0 && !self.states.finished(d) {
                self.ready.push_back(d);
            }
        }
    }
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

    #[tokio::test]
    async fn a_panic_while_settling_fails_the_run_instead_of_hanging() {
        let shared = start(super::super::attempt::tests::one_stage_run());
        // Settling a stage that does not exist panics under the lock, as a bug there would.
        let report = Progress::new(1)
            .into_reports(|_| shared.pipeline.layout.id(0))
            .remove(0);
        let bug = tokio::spawn({
            let shared = shared.clone();
            async move { settle(&shared, 99, report, Caller::Task).next().await }
        });
        assert!(bug.await.unwrap_err().is_panic());
        let run = tokio::spawn(drive_shared(shared));
        let ended = tokio::time::timeout(std::time::Duration::from_secs(5), run)
            .await
            .expect("the run ends instead of waiting forever");
        assert!(ended.unwrap_err().is_panic());
    }
}
