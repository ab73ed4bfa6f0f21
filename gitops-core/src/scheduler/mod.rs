//! The scheduler: runs a planned pipeline's stage graph on the registered backends.
//!
//! A stage starts the moment its needs have finished (in-degree counts and a ready queue, no
//! polling), within a global parallelism bound and optional bounds per backend. The task of a
//! stage that ends does the bookkeeping itself and starts what became ready, running the next
//! of those stages in the same task, with at most one such task per worker taking ready
//! stages; a task whose stage waits hands the ready ones on to a new task. Stages whose
//! backends return at once (a chain, or thousands in parallel) cost no task and no wakeup
//! each, and every stage that waits still runs concurrently with the others. `if:` is
//! evaluated when a stage becomes ready (default `success()`); retries, timeouts and
//! cancellation are enforced here, so every backend gets them the same way.
//! Everything that happens is published as [`RunEvent`]s to any number of subscribers, and
//! the run ends with a [`RunReport`].
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! use std::sync::Arc;
//! use gitops_core::backend::{BackendRegistry, RunInfo, memory::MemoryBackend};
//! use gitops_core::config::Config;
//! use gitops_core::event::{EventPayload, GitEvent};
//! use gitops_core::plan::{Changes, Planner};
//! use gitops_core::scheduler::{RunResult, RunSpec, Scheduler};
//!
//! let config = Config::parse("f", "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      a: { run: x }\n      b: { run: y, needs: a }\n").unwrap();
//! let event: GitEvent = serde_json::from_str(r#"{"kind":"push","repo":"o/r","sha":"abc","ref":"refs/heads/main",
//!     "branch":"main","before":null,"after":"abc","created":true,"deleted":false,"forced":false}"#).unwrap();
//! let plan = Planner::new().plan(&event, &config, &Changes::Unknown).unwrap();
//! let pipeline = Arc::new(plan.pipelines[0].clone());
//! let registry = BackendRegistry::new().with_executor("local", Arc::new(MemoryBackend::new()));
//! let run = Scheduler::new(registry).run(pipeline, RunSpec::new(RunInfo::new("run-1", "ci", event, ".")));
//! let report = run.execute().await;
//! assert_eq!(report.result, RunResult::Success);
//! # }
//! ```

mod attempt;
mod context;
mod driver;
mod events;
mod progress;
mod report;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

use serde::Serialize;

use crate::backend::{BackendError, BackendRegistry, Completion, RunInfo, StageContext};
use crate::config::Action;
use crate::plan::PlannedPipeline;
use crate::secret::{Masker, Secret};

pub(crate) use attempt::masked;
pub use events::RunEvent;
pub use report::{RunReport, RunResult, SkipReason, StageReport, StageResult};

/// Limits on how much runs at once.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SchedulerOptions {
    /// Stages running at once in one run (default: the number of CPUs, at least 2).
    pub max_parallel: usize,
    /// Stages running at once on one backend, by backend name (default: no bound but the
    /// global one).
    pub per_backend: BTreeMap<String, usize>,
    /// Run events buffered for each subscriber; a subscriber further behind loses the oldest
    /// (default 4096).
    pub event_buffer: usize,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        SchedulerOptions {
            max_parallel: cpus.max(2),
            per_backend: BTreeMap::new(),
            event_buffer: 4096,
        }
    }
}

impl SchedulerOptions {
    /// Sets the global bound.
    pub fn with_max_parallel(mut self, n: usize) -> Self {
        self.max_parallel = n.max(1);
        self
    }

    /// Bounds one backend.
    pub fn with_backend_limit(mut self, backend: impl Into<String>, n: usize) -> Self {
        self.per_backend.insert(backend.into(), n.max(1));
        self
    }
}

/// Records stage results as they happen (the ledger implements it), so that a crashed run can
/// be resumed.
#[async_trait]
pub trait RunRecorder: Send + Sync + 'static {
    /// Called when a stage has ended, before any stage that needs it starts.
    async fn stage_finished(&self, run_id: &str, stage: &StageReport) -> Result<(), String>;
}

/// Why a deploy or stop stage waits before its backend is called.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "for", rename_all = "snake_case")]
#[non_exhaustive]
pub enum WaitReason {
    /// Someone has to approve the deployment (`gitops approve RUN STAGE`).
    Approval {
        /// The environment.
        environment: String,
    },
    /// Another deployment holds the environment's lock.
    Lock {
        /// The environment.
        environment: String,
        /// Who holds it (`run <id> stage <stage>`).
        holder: String,
    },
    /// A rollback pinned the environment (`gitops unpin ENV` releases it).
    Pin {
        /// The environment.
        environment: String,
    },
}

/// The failure a deployment is recorded with when its backend panicked.
pub const DEPLOYER_PANICKED: &str = "the deployer panicked (a bug in its backend)";

/// Why a deploy or stop stage may not go ahead.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GateRefusal {
    /// The stage was cancelled while it waited.
    Cancelled,
    /// It must not go ahead (rejected, locked or pinned with `fail`, the ledger failed).
    Refused(String),
}

/// An entered gate, handed back when the backend returns.
#[derive(Debug)]
#[non_exhaustive]
pub struct GateTicket {
    /// The deployment's id in the gate's records.
    pub deployment: i64,
    /// How the gate may stop the deployment while the backend works (when it loses the
    /// environment's lock): the backend is then given this token instead of the stage's, and a
    /// revoked deployment fails with the revocation's reason.
    pub revocation: Option<Revocation>,
}

impl GateTicket {
    /// A ticket for `deployment`.
    pub fn new(deployment: i64) -> Self {
        GateTicket {
            deployment,
            revocation: None,
        }
    }

    /// Lets the gate stop the deployment through `revocation`.
    pub fn with_revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = Some(revocation);
        self
    }
}

/// How a gate stops a deployment it let in while the backend works: it cancels the token the
/// backend was given (a child of the stage's), saying why. Cheap to clone; clones share it.
#[derive(Debug, Clone, Default)]
pub struct Revocation {
    token: CancellationToken,
    reason: Arc<std::sync::OnceLock<String>>,
}

impl Revocation {
    /// A revocation whose token is a child of `parent` (the stage's): it is cancelled with the
    /// stage, and revoking it cancels only the deployment.
    pub fn child_of(parent: &CancellationToken) -> Self {
        Revocation {
            token: parent.child_token(),
            reason: Arc::default(),
        }
    }

    /// The token to give the backend.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Records why (the first reason given stays) and cancels the token.
    pub fn revoke(&self, reason: impl Into<String>) {
        let _ = self.reason.set(reason.into());
        self.token.cancel();
    }

    /// Why it was revoked; `None` while it was not.
    pub fn reason(&self) -> Option<&str> {
        self.reason.get().map(String::as_str)
    }
}

/// Guards deploy and stop stages (the engine's [`Environments`](crate::environment::Environments)
/// implement it): one deployment per environment at a time, approvals, pins, and the record of
/// every deployment.
#[async_trait]
pub trait DeploymentGate: Send + Sync + 'static {
    /// Called before the backend is: returns when the stage may go ahead, telling `waiting` why
    /// it waits meanwhile; gives up when `ctx.cancel` is cancelled.
    async fn enter(
        &self,
        ctx: &StageContext,
        action: Action,
        backend: &str,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<GateTicket, GateRefusal>;

    /// Called when the backend returned; `cancelled` when the stage was stopped. Called once for
    /// every ticket that `enter` handed out, whatever happens to the backend: when it panics,
    /// `returned` is an error saying so; when the stage's future is dropped before it returned,
    /// `cancelled` is true. (Those two calls come from a task of their own.)
    async fn leave(
        &self,
        ticket: GateTicket,
        returned: &Result<Completion, BackendError>,
        cancelled: bool,
    );
}

/// What one run needs besides the plan.
#[derive(Clone)]
#[non_exhaustive]
pub struct RunSpec {
    /// The run's id, pipeline, event and checkout.
    pub info: Arc<RunInfo>,
    /// Secrets every stage gets, as variables named by their keys (never readable as `env.*`
    /// in expressions).
    pub secrets: BTreeMap<String, Secret>,
    /// Secrets that only the deploy and stop stages of an environment get, by the
    /// environment's name in config.
    pub environment_secrets: BTreeMap<String, BTreeMap<String, Secret>>,
    /// More values to mask (the host's secrets this run does not get). Every secret above is
    /// masked too: in log lines, outputs, failure messages and the report.
    pub masked: Vec<Secret>,
    /// Values of `env.*` in expressions (a stage's literal `env` values take precedence).
    pub env: BTreeMap<String, String>,
    /// Results of an earlier run to reuse instead of running those stages (rerun, resume).
    pub reuse: BTreeMap<String, StageReport>,
    /// Where stage results are recorded as they end.
    pub recorder: Option<Arc<dyn RunRecorder>>,
    /// What deploy and stop stages pass through (none: they call their backend at once).
    pub gate: Option<Arc<dyn DeploymentGate>>,
}

impl RunSpec {
    /// A run of `info`, with nothing else set.
    pub fn new(info: RunInfo) -> Self {
        RunSpec {
            info: Arc::new(info),
            secrets: BTreeMap::new(),
            environment_secrets: BTreeMap::new(),
            masked: Vec::new(),
            env: BTreeMap::new(),
            reuse: BTreeMap::new(),
            recorder: None,
            gate: None,
        }
    }

    /// Passes deploy and stop stages through `gate`.
    pub fn with_gate(mut self, gate: Arc<dyn DeploymentGate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Gives every stage the secret `name` (a variable of that name), masked wherever it
    /// would show.
    pub fn with_secret(mut self, name: impl Into<String>, value: Secret) -> Self {
        self.secrets.insert(name.into(), value);
        self
    }

    /// Every value this run masks: its secrets and the others it was told of.
    pub fn masker(&self) -> Masker {
        Masker::new(
            self.secrets
                .values()
                .chain(self.environment_secrets.values().flat_map(|m| m.values()))
                .chain(&self.masked),
        )
    }

    /// Reuses these results.
    pub fn with_reuse(mut self, reuse: BTreeMap<String, StageReport>) -> Self {
        self.reuse = reuse;
        self
    }

    /// Records results with `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<dyn RunRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }
}

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
    /// (check the plan with [`PlannedPipeline::check_backends`] first to refuse such a run up front).
    ///
    /// Dropping the future before the end (a timeout around it, say) cancels the run: nothing
    /// more starts, and the stages still running are stopped through their tokens, so that
    /// their backends clean up after them; no report is made.
    pub async fn execute(self) -> RunReport {
        driver::drive(self).await
    }
}
