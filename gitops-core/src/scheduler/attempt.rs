//! One stage, from its first attempt to its last: timeouts, retries with backoff, and
//! cancellation, the same for every backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::driver::{self, Caller, Core, Settled};
use super::events::RunEvent;
use super::report::{StageReport, StageResult};
use super::{DEPLOYER_PANICKED, DeploymentGate, GateRefusal, GateTicket, RunRecorder, WaitReason};
use crate::backend::{
    BackendError, BackendRegistry, Completion, Deployer, Executor, LogSink, LogTarget, Outcome,
    RunInfo, StageContext,
};
use crate::config::{Action, Retry};
use crate::plan::PlannedPipeline;
use crate::secret::{Masker, Secret};

/// What runs a stage.
pub(super) enum Target {
    Execute(Arc<dyn Executor>),
    Deploy(Arc<dyn Deployer>),
    Stop(Arc<dyn Deployer>),
    /// No backend can run it: the stage fails with this message.
    Missing(String),
}

impl Target {
    pub fn new(action: Action, backend: &str, registry: &BackendRegistry) -> Target {
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

/// What every stage task of a run shares: one allocation per run, not per stage.
pub(super) struct Shared {
    /// The run's events, when anyone follows them (fixed when it starts: `Run` is consumed
    /// by `execute`, so no one can subscribe later), so that nothing is built for no one.
    pub events: Option<broadcast::Sender<RunEvent>>,
    pub run_cancel: CancellationToken,
    /// Children of `run_cancel` that stage contexts clone: cloning a token locks its node, so
    /// thousands of stages cloning one token would all queue on one lock.
    pub cancel_shards: Vec<Arc<CancellationToken>>,
    pub start: Instant,
    /// What runs the stages of each of the layout's (backend, action) pairs, resolved once
    /// per run (`driver::start`).
    pub targets: Vec<Target>,
    /// Where stage logs go: nowhere when no one follows the run (no line is masked and
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
    pub width: usize,
    /// Per backend: how many of its stages may run at once.
    pub limits: Vec<usize>,
    /// The bookkeeping, shared by the stage tasks that settle their own ends.
    pub core: std::sync::Mutex<Core>,
    /// Notified once every stage has ended.
    pub ended: Notify,
    /// When a runner last yielded to the runtime (see [`Shared::time_to_yield`]): seconds
    /// since the run started, as `f64` bits.
    pub yielded: AtomicU64,
}

pub(super) struct Job {
    pub index: usize,
    pub backend: usize,
    pub target: usize,
    pub ctx: StageContext,
    pub retry: Option<Retry>,
    pub timeout: Option<Duration>,
    pub shared: Arc<Shared>,
}

impl Shared {
    /// The name of the layout's backend `b`.
    pub fn backend_name(&self, b: usize) -> &Arc<str> {
        &self.pipeline.layout.backends()[b]
    }

    /// Seconds since the run started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Whether a runner whose budget is spent yields to the runtime, rather than handing its
    /// next stage to a task of its own (see [`run_plain`]): when none has for a millisecond.
    fn time_to_yield(&self) -> bool {
        let now = self.now();
        let last = f64::from_bits(self.yielded.load(Ordering::Relaxed));
        if now - last < 0.001 {
            return false;
        }
        self.yielded.store(now.to_bits(), Ordering::Relaxed);
        true
    }

    pub fn cancel_shard(&self, index: usize) -> &Arc<CancellationToken> {
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
}

/// Settles the stage as failed if its task unwinds (a bug in its backend) before it ended.
struct PanicGuard<'a> {
    index: usize,
    shared: &'a Arc<Shared>,
    caller: Caller,
    reported: bool,
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
        let (shared, index, caller) = (self.shared.clone(), self.index, self.caller);
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
            if let Some(next) = driver::settle(&shared, index, report, caller).next().await {
                run_plain(shared, next).await;
            }
        });
    }
}

/// What a backend returned, with every secret masked in its outputs and messages: what it
/// returns is shown (report, events) and recorded (ledger).
pub(crate) fn masked(
    returned: Result<Completion, BackendError>,
    masker: &Masker,
) -> Result<Completion, BackendError> {
    if masker.is_empty() {
        return returned;
    }
    match returned {
        Ok(mut completion) => {
            masker.mask_values(&mut completion.outputs);
            if let Outcome::Failure { message, .. } = &mut completion.outcome {
                masker.mask_in_place(message);
            }
            Ok(completion)
        }
        Err(BackendError::Cancelled) => Err(BackendError::Cancelled),
        Err(e) => {
            let mut text = e.to_string();
            if masker.mask_in_place(&mut text) {
                Err(BackendError::Failed(text))
            } else {
                Err(e)
            }
        }
    }
}

enum Attempt {
    /// The backend returned.
    Returned(Result<Completion, BackendError>),
    TimedOut,
    Cancelled,
}

/// A stage's result from what its backend returned, secrets masked.
fn classify(
    returned: Result<Completion, BackendError>,
    masker: &Masker,
) -> (StageResult, BTreeMap<String, String>) {
    let returned = masked(returned, masker);
    match returned {
        Ok(Completion {
            outcome: Outcome::Success,
            outputs,
        }) => (StageResult::Success, outputs),
        Ok(Completion {
            outcome: Outcome::Failure { exit_code, message },
            outputs,
        }) => (StageResult::Failure { message, exit_code }, outputs),
        Err(e) => {
            let message = match e {
                BackendError::Cancelled => "the backend cancelled the stage".to_owned(),
                e => e.to_string(),
            };
            (
                StageResult::Failure {
                    message,
                    exit_code: None,
                },
                BTreeMap::new(),
            )
        }
    }
}

impl<'a> PanicGuard<'a> {
    fn new(index: usize, shared: &'a Arc<Shared>, caller: Caller) -> Self {
        PanicGuard {
            index,
            shared,
            caller,
            reported: false,
        }
    }

    /// Settles the stage's end (its report, its dependents); for a runner, the plain stage
    /// it runs next comes back from it.
    fn report(mut self, report: StageReport) -> Settled<'a> {
        self.reported = true;
        driver::settle(self.shared, self.index, report, self.caller)
    }
}

/// Spawns a runner (see [`driver::settle`]) that runs plain stage `index` first (see
/// [`Shared::plain_context`]), most stages of most pipelines: its task carries the stage's
/// index instead of a context, and builds the context on the worker that runs it, straight
/// into the backend's call.
pub(super) fn spawn_plain(shared: Arc<Shared>, index: usize) {
    tokio::spawn(run_plain(shared, index));
}

/// A runner: runs plain stage `index`, then each plain stage that its end hands back, in this
/// task. When a stage's future is first pending, the runner parks: the stages that become
/// ready meanwhile go to another.
async fn run_plain(shared: Arc<Shared>, mut index: usize) {
    // When the next stage starts, when the runner goes straight on to it (see
    // `Settled::Now`); NaN: read the clock.
    let mut from = f64::NAN;
    loop {
        let guard = PanicGuard::new(index, &shared, Caller::Runner);
        let started = if from.is_nan() { shared.now() } else { from };
        let done = once(&shared, index as u32, started, true, Shared::plain_context).await;
        let settled = guard.report(done);
        // Not after waiting for a recorder, nor after giving up the worker below.
        from = match settled {
            Settled::Now(_, from) => from,
            Settled::Later(_) => f64::NAN,
        };
        let Some(next) = settled.next().await else {
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
            spawn_plain(shared, index);
            return;
        }
    }
}

/// Starts the stage's task, which settles the stage's end.
///
/// Stages with neither retries nor a timeout get a task of their own type whose future is a
/// fraction of the size.
pub(super) fn spawn(job: Job) {
    if job.retry.is_none() && job.timeout.is_none() {
        tokio::spawn(async move {
            let Job {
                index, ctx, shared, ..
            } = job;
            let done = once(
                &shared,
                index as u32,
                shared.now(),
                false,
                move |_: &Shared, _| ctx,
            );
            settle_then_next(&shared, index, done).await;
        });
    } else {
        tokio::spawn(async move {
            let (index, shared) = (job.index, job.shared.clone());
            settle_then_next(&shared, index, attempts(job)).await;
        });
    }
}

/// Awaits `done` under a panic guard and settles it; the plain stages it starts go to
/// runners (this task's future is larger than a runner's).
async fn settle_then_next(
    shared: &Arc<Shared>,
    index: usize,
    done: impl std::future::Future<Output = StageReport>,
) {
    let guard = PanicGuard::new(index, shared, Caller::Task);
    let next = guard.report(done.await).next().await;
    debug_assert!(next.is_none(), "only runners are handed stages");
}

/// A stage with one attempt and no timeout; its context is made by `ctx` when the backend is
/// called, so that it lives in the backend's future rather than in the task's.
///
/// Every stage's task holds this future across the backend's call, so it keeps little: the
/// backend and target are looked up, not carried, and times are seconds.
///
/// A runner (`runner`) parks when the backend's future is first pending. The stage started
/// at `started`, in seconds since the run started.
async fn once(
    shared: &Arc<Shared>,
    index: u32,
    started: f64,
    runner: bool,
    ctx: impl FnOnce(&Shared, usize) -> StageContext,
) -> StageReport {
    let returned = {
        let index = index as usize;
        let backend = shared.pipeline.layout.backend(index);
        shared.emit(|at| RunEvent::StageStarted {
            stage: shared.pipeline.layout.id(index).to_string(),
            attempt: 1,
            backend: shared.backend_name(backend).to_string(),
            at,
        });
        // The common case calls the executor directly: every task is allocated (and moved) at
        // the size of its future, and the gate's path would make all of them larger. Deploys,
        // rare, take that path boxed.
        match &shared.targets[shared.pipeline.layout.target(index)] {
            Target::Execute(e) => e.execute(ctx(shared, index)),
            Target::Missing(m) => {
                Box::pin(std::future::ready(Err(BackendError::Failed(m.clone()))))
            }
            gated => {
                let ctx = ctx(shared, index);
                Box::pin(async move { call(shared, index, gated, backend, ctx, None).await.0 })
            }
        }
    };
    let result = Parking {
        returned,
        shared,
        park: runner.then_some(index),
    }
    .await;
    let (result, outputs) = if stopped_by_run(shared, &result) {
        (StageResult::Cancelled, BTreeMap::new())
    } else {
        classify(result, &shared.masker)
    };
    let finished = shared.now();
    let id = shared.pipeline.layout.id(index as usize);
    StageReport::ended(id, result, 1, Some(started), Some(finished), outputs)
}

type Returned<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Completion, BackendError>> + Send + 'a>,
>;

/// A backend's call that parks the runner of stage `park` (see [`Shared::park`]) when it is
/// first pending.
struct Parking<'a> {
    returned: Returned<'a>,
    shared: &'a Arc<Shared>,
    park: Option<u32>,
}

impl std::future::Future for Parking<'_> {
    type Output = Result<Completion, BackendError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.get_mut();
        let polled = this.returned.as_mut().poll(cx);
        if polled.is_pending()
            && let Some(index) = this.park.take()
        {
            this.shared.park(index as usize);
        }
        polled
    }
}

async fn attempts(mut job: Job) -> StageReport {
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
        return Attempt::Returned(Err(BackendError::Failed(message.clone())));
    }
    // Without a timeout the stage stops only when the run does: its token is the run's.
    let token = match job.timeout {
        Some(_) => Arc::new(shared.cancel_shard(job.index).child_token()),
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

/// Whether a stage that returned `result` was stopped by the run's cancellation: it did not
/// succeed, and the run is cancelled. (A stage that succeeded did its work either way; and
/// success is checked first because asking the run's token takes a lock that every stage of
/// the run shares.)
fn stopped_by_run(shared: &Shared, result: &Result<Completion, BackendError>) -> bool {
    let succeeded = matches!(
        result,
        Ok(Completion {
            outcome: Outcome::Success,
            ..
        })
    );
    !succeeded && shared.run_cancel.is_cancelled()
}

/// Calls the backend of stage `index` within `limit`, cancelling its token when the limit
/// passes (and then waiting for the backend to stop); true when it timed out. Deploy and stop
/// stages pass through the run's gate first: time spent waiting there (for an approval, a lock,
/// a pin) does not count against the limit. One that its plan refuses (see
/// [`PlannedStage::refused`](crate::plan::PlannedStage::refused)) fails before either.
async fn call(
    shared: &Shared,
    index: usize,
    target: &Target,
    backend: usize,
    ctx: StageContext,
    limit: Option<Duration>,
) -> (Result<Completion, BackendError>, bool) {
    let token = ctx.cancel.clone();
    let (deployer, action) = match target {
        Target::Execute(e) => return bounded(e.execute(ctx), limit, &token).await,
        Target::Missing(m) => return (Err(BackendError::Failed(m.clone())), false),
        Target::Deploy(d) => (d, Action::Deploy),
        Target::Stop(d) => (d, Action::Stop),
    };
    if let Some(why) = shared.pipeline.stages[index].refused() {
        return (Err(BackendError::Failed(why.to_owned())), false);
    }
    let invoke = |ctx| async move {
        match action {
            Action::Stop => deployer.stop(ctx).await,
            _ => deployer.deploy(ctx).await,
        }
    };
    let Some(gate) = &shared.gate else {
        return bounded(invoke(ctx), limit, &token).await;
    };
    let waiting = |waiting: WaitReason| {
        shared.emit(|at| RunEvent::StageWaiting {
            stage: ctx.stage.to_string(),
            waiting,
            at,
        });
    };
    let entered = gate
        .enter(&ctx, action, shared.backend_name(backend), &waiting)
        .await;
    let ticket = match entered {
        Ok(ticket) => ticket,
        Err(GateRefusal::Cancelled) => return (Err(BackendError::Cancelled), false),
        Err(GateRefusal::Refused(message)) => return (Err(BackendError::Failed(message)), false),
    };
    let mut ctx = ctx;
    let revocation = ticket.revocation.clone();
    if let Some(r) = &revocation {
        ctx.cancel = Arc::new(r.token().clone());
    }
    let entered = Entered {
        gate: gate.clone(),
        ticket: Some(ticket),
    };
    let (mut returned, timed_out) = bounded(invoke(ctx), limit, &token).await;
    if let Some(reason) = revocation.as_ref().and_then(|r| r.reason()) {
        returned = Err(BackendError::Failed(reason.to_owned()));
    }
    let returned = masked(returned, &shared.masker);
    entered.leave(&returned, token.is_cancelled()).await;
    (returned, timed_out)
}

/// An entered gate, left when the backend returns, or else when this is dropped: the backend
/// panicked (the stage's task unwinds through here) or the stage's future was dropped. The gate
/// is then left from a task of its own, so that what it holds for the deployment (an
/// environment's lock) is given back at once rather than kept for as long as the process lives.
struct Entered {
    gate: Arc<dyn DeploymentGate>,
    ticket: Option<GateTicket>,
}

impl Entered {
    async fn leave(mut self, returned: &Result<Completion, BackendError>, cancelled: bool) {
        if let Some(ticket) = self.ticket.take() {
            self.gate.leave(ticket, returned, cancelled).await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let panicked = std::thread::panicking();
        let gate = self.gate.clone();
        runtime.spawn(async move {
            let returned = if panicked {
                Err(BackendError::Failed(DEPLOYER_PANICKED.to_owned()))
            } else {
                Err(BackendError::Cancelled)
            };
            gate.leave(ticket, &returned, !panicked).await;
        });
    }
}

/// Runs `work` within `limit`; past it, cancels `token` and waits for `work` to end.
async fn bounded<R>(
    work: impl std::future::Future<Output = R>,
    limit: Option<Duration>,
    token: &CancellationToken,
) -> (R, bool) {
    let Some(limit) = limit else {
        return (work.await, false);
    };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => (r, false),
        _ = tokio::time::sleep(limit) => {
            token.cancel();
            // The backend stops what it started; wait for it to say so.
            (work.await, true)
        }
    }
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::scheduler::{Run, RunSpec, Scheduler};

    /// A run of one stage `a` on the in-memory backend.
    pub(in crate::scheduler) fn one_stage_run() -> Run {
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
        Scheduler::new(registry).run(
            Arc::new(plan.pipelines[0].clone()),
            RunSpec::new(RunInfo::new("r", "ci", event, ".")),
        )
    }

    /// tokio allocates a task in steps of 128 bytes, and with its header and trailer a future
    /// of up to about 152 bytes fits in 256; at 168 every plain stage's task took 384.
    #[test]
    fn a_plain_stage_task_stays_small() {
        let task = run_plain(driver::start(one_stage_run()), 0);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 152, "a plain stage's future is {size} bytes");
    }
}
