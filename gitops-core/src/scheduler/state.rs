//! The state a run's tasks share: what is fixed when the run starts (the plan, the backends
//! of its stages, the event and secrets, its limits, who follows it), one allocation per run
//! and not per stage; and, behind one lock, the [`Bookkeeping`] of where the run is, which the
//! task of a stage that ends updates itself (see `bookkeeping.rs`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::context::RuntimeContext;
use super::events::RunEvent;
use super::gate::DeploymentGate;
use super::progress::Progress;
use super::report::StageReport;
use super::spec::{RunRecorder, RunSpec, SchedulerOptions};
use super::target::Target;
use crate::backend::{
    BackendRegistry, Cancellation, LogLine, LogSink, LogTarget, RunInfo, StageContext,
};
use crate::expr::StageStatus;
use crate::plan::PlannedPipeline;
use crate::secret::{Masker, Secret};

/// What every stage task of a run shares: one allocation per run, not per stage.
pub(super) struct Shared {
    /// The run's events, when anyone follows them (fixed when it starts: `Run` is consumed
    /// by `execute`, so no one can subscribe later), so that nothing is built for no one.
    pub events: Option<broadcast::Sender<RunEvent>>,
    pub run_cancel: CancellationToken,
    /// Children of `run_cancel` that stage contexts clone: cloning a token locks its node, so
    /// thousands of stages cloning one token would all queue on one lock.
    pub cancel_shards: Vec<Cancellation>,
    pub start: Instant,
    /// What runs the stages of each of the layout's (backend, action) pairs, resolved once
    /// per run.
    pub targets: Vec<Target>,
    /// Where stage logs go: nowhere when no one keeps or follows them (no line is masked and
    /// copied for no one).
    pub log: Option<Arc<LogTarget>>,
    pub gate: Option<Arc<dyn DeploymentGate>>,
    pub recorder: Option<Arc<dyn RunRecorder>>,
    /// What a plain stage's context is built from, on the worker that runs it.
    pub info: Arc<RunInfo>,
    pub env: BTreeMap<String, String>,
    /// Secrets every stage gets.
    pub secrets: BTreeMap<String, Secret>,
    /// Secrets the deploy and stop stages of an environment get, by its config name.
    pub environment_secrets: BTreeMap<String, BTreeMap<String, Secret>>,
    /// Masks every secret of the run in what its stages return.
    pub masker: Masker,
    pub pipeline: Arc<PlannedPipeline>,
    pub max_parallel: usize,
    /// How many runners may take plain stages at once: the runtime's workers.
    pub max_runners: usize,
    /// Per backend: how many of its stages may run at once.
    pub limits: Vec<usize>,
    /// The bookkeeping, shared by the stage tasks that book their own ends.
    pub books: Mutex<Bookkeeping>,
    /// Notified once every stage has ended.
    pub ended: Notify,
    /// When a runner last yielded to the runtime (see [`Shared::time_to_yield`]): seconds
    /// since the run started, as `f64` bits.
    pub yielded: AtomicU64,
}

/// Where a run is: what changes while it runs, behind [`Shared::books`]'s lock. Its
/// operations are in `bookkeeping.rs`.
pub(super) struct Bookkeeping {
    pub states: Progress,
    /// Per stage: its needs that have not ended yet.
    pub remaining: Vec<u32>,
    pub ready: VecDeque<usize>,
    /// Plain stages started, waiting for a runner to take them.
    pub plain: VecDeque<u32>,
    /// Runners that will take from `plain` when their stage ends: those not parked on a
    /// stage that waits.
    pub runners: usize,
    /// Per backend: stages whose needs have ended, waiting for a slot.
    pub queues: Vec<VecDeque<usize>>,
    /// Stages in all `queues` together: most ends find none, without reading the queues.
    pub queued: usize,
    /// Per backend with a bound: its stages running (not counted for unbounded backends,
    /// so that a stage's end writes no count beside the run's own).
    pub busy: Vec<usize>,
    /// Stages started whose end is not booked yet.
    pub running: usize,
    /// Skipped stages being recorded (outside the lock) before they are booked.
    pub recording: usize,
    pub cancelled: bool,
    /// The run's `execute` future was dropped: nothing more starts.
    pub abandoned: bool,
    pub ended: bool,
    /// A stage task panicked while booking an end (a bug here): the counts cannot be trusted.
    pub broken: bool,
    /// The latest end booked, in seconds since the run started.
    pub latest_end: f64,
}

impl Bookkeeping {
    /// The bookkeeping of a run of `pipeline` that starts now, with the stages whose results it
    /// `reuse`s already ended; `cancelled` for a run cancelled before it started (superseded
    /// while queued), which starts nothing.
    pub fn new(
        pipeline: &PlannedPipeline,
        reuse: &BTreeMap<String, StageReport>,
        cancelled: bool,
    ) -> Bookkeeping {
        let mut states = Progress::new(pipeline.stages.len());
        if !reuse.is_empty() {
            end_reused(&mut states, pipeline, reuse);
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
        let backends = layout.backends().len();
        Bookkeeping {
            states,
            remaining,
            ready,
            plain: VecDeque::new(),
            runners: 0,
            queues: (0..backends).map(|_| VecDeque::new()).collect(),
            queued: 0,
            busy: vec![0; backends],
            running: 0,
            recording: 0,
            cancelled,
            abandoned: false,
            ended: false,
            broken: false,
            latest_end: 0.0,
        }
    }
}

/// Ends the stages whose results a run reuses.
fn end_reused(
    states: &mut Progress,
    pipeline: &PlannedPipeline,
    reuse: &BTreeMap<String, StageReport>,
) {
    for (i, stage) in pipeline.stages.iter().enumerate() {
        if let Some(r) = reuse.get(&*stage.id) {
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

impl Shared {
    /// The state of a run of `pipeline` on `registry`, starting from `books`; `events` is the
    /// channel of those who follow it, if anyone does.
    pub fn new(
        registry: &BackendRegistry,
        options: &SchedulerOptions,
        pipeline: Arc<PlannedPipeline>,
        spec: RunSpec,
        events: Option<broadcast::Sender<RunEvent>>,
        cancel: CancellationToken,
        books: Bookkeeping,
    ) -> Arc<Shared> {
        // Backends and their targets, resolved once per run.
        let layout = &pipeline.layout;
        let backend_names = layout.backends();
        let targets = layout
            .targets()
            .iter()
            .map(|&(b, action)| Target::new(action, &backend_names[b as usize], registry))
            .collect();
        let limits = backend_names
            .iter()
            .map(|n| options.per_backend.get(&**n).copied().unwrap_or(usize::MAX))
            .collect();
        let start = Instant::now();
        let masker = spec.masker();
        // Lines are masked and handed on only when someone keeps or follows them.
        let (kept, followers) = (spec.log.clone(), events.clone());
        let log = (kept.is_some() || followers.is_some()).then(|| {
            LogTarget::new(masker.clone(), move |l: LogLine| {
                if let Some(kept) = &kept {
                    kept.line(&l);
                }
                if let Some(events) = &followers {
                    let at = start.elapsed().as_secs_f64();
                    let _ = events.send(RunEvent::Log {
                        stage: l.stage,
                        attempt: l.attempt,
                        stream: l.stream,
                        line: l.line,
                        at,
                    });
                }
            })
        });
        Arc::new(Shared {
            events,
            // A shard for every 256 stages, up to 64: a small run makes one token, not 64.
            cancel_shards: (0..(pipeline.stages.len() / 256).clamp(1, 64))
                .map(|_| Cancellation::from_token(cancel.child_token()))
                .collect(),
            run_cancel: cancel,
            start,
            targets,
            log,
            gate: spec.gate,
            recorder: spec.recorder,
            info: spec.info,
            env: spec.env,
            secrets: spec.secrets,
            environment_secrets: spec.environment_secrets,
            masker,
            max_parallel: options.max_parallel.max(1),
            // More runners than workers would only take turns at the lock.
            max_runners: tokio::runtime::Handle::try_current()
                .map_or(1, |h| h.metrics().num_workers())
                .max(1),
            limits,
            books: Mutex::new(books),
            ended: Notify::new(),
            yielded: AtomicU64::new(0f64.to_bits()),
            pipeline,
        })
    }

    pub fn lock(&self) -> MutexGuard<'_, Bookkeeping> {
        // The lock is never held across a backend call; a panic under it (a bug) leaves
        // counts that are still worth reporting from.
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The name of the layout's backend `b`.
    pub fn backend_name(&self, b: usize) -> &Arc<str> {
        &self.pipeline.layout.backends()[b]
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Sends the event `event` makes of the time since the run started, when anyone follows
    /// the run (nothing is built otherwise).
    pub fn emit(&self, event: impl FnOnce(f64) -> RunEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event(self.now()));
        }
    }

    /// Whether a runner whose budget is spent yields to the runtime, rather than handing its
    /// next stage to a task of its own (see `tasks::run_plain`): when none has for a
    /// millisecond.
    pub fn time_to_yield(&self) -> bool {
        let now = self.now();
        let last = f64::from_bits(self.yielded.load(Ordering::Relaxed));
        if now - last < 0.001 {
            return false;
        }
        self.yielded.store(now.to_bits(), Ordering::Relaxed);
        true
    }

    pub fn cancel_shard(&self, index: usize) -> &Cancellation {
        &self.cancel_shards[index % self.cancel_shards.len()]
    }

    /// The first attempt's context of stage `index` with what every stage has: the run, its
    /// `env`, the stage's id and command, its cancellation and log. A plain stage (nothing to
    /// render, no environment, no policy) needs no more.
    pub fn plain_context(&self, index: usize) -> StageContext {
        let layout = &self.pipeline.layout;
        let stage = layout.id(index);
        StageContext {
            run: self.info.clone(),
            stage: stage.clone(),
            attempt: 1,
            command: layout.command(index).clone(),
            env: self.env.clone(),
            secrets: self.secrets.clone(),
            with: serde_json::Map::new(),
            environment: None,
            timeout: None,
            cancel: self.cancel_shard(index).clone(),
            log: LogSink::shared(self.log.as_ref(), stage, 1),
        }
    }

    /// The expression context of stage `i` (its `if:`, its templates), reading the outputs and
    /// results of its needs from `states`.
    pub fn expr_context<'a>(
        &'a self,
        states: &'a Progress,
        i: usize,
        status: StageStatus,
    ) -> RuntimeContext<'a> {
        RuntimeContext {
            event: &self.info.event,
            env: &self.env,
            stage: &self.pipeline.stages[i].source,
            graph: self.pipeline.graph(),
            states,
            status,
        }
    }
}
