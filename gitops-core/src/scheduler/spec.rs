//! What a run is given: the scheduler's limits, and per run its secrets, variables, results to
//! reuse, where its results are recorded and what its deploys pass through.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;

use super::gate::DeploymentGate;
use super::report::StageReport;
use crate::backend::{BoxError, LogLine, RunInfo};
use crate::secret::{Masker, Secret};

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
    /// Called when a stage has ended, before any stage that needs it starts. An error is told
    /// to the run's followers as a warning; the run goes on.
    async fn stage_finished(&self, run_id: &str, stage: &StageReport) -> Result<(), RecordError>;
}

/// Why a [`RunRecorder`] could not record a stage's result.
#[derive(Debug, thiserror::Error)]
#[error("cannot record stage \"{stage}\"")]
#[non_exhaustive]
pub struct RecordError {
    /// The stage.
    pub stage: String,
    /// What failed (the ledger's error, say).
    #[source]
    pub source: BoxError,
}

impl RecordError {
    /// Recording `stage` failed because of `source`.
    pub fn new(stage: impl Into<String>, source: impl Into<BoxError>) -> Self {
        RecordError {
            stage: stage.into(),
            source: source.into(),
        }
    }
}

/// Keeps the log lines of a run's stages as they come (the engine's stage logs in the state
/// dir implement it: see [`crate::logs`]).
pub trait LogRecorder: Send + Sync + 'static {
    /// One line of a stage, secrets already masked. Called on the task that read the line,
    /// in the order the stage wrote its lines: it must not wait on anything slow (a write of
    /// one line to a file is fine; a network call is not).
    fn line(&self, line: &LogLine);
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
    /// Where every log line of its stages is kept, whether or not anyone follows the run.
    pub log: Option<Arc<dyn LogRecorder>>,
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
            log: None,
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

    /// Keeps every log line with `log`.
    pub fn with_log(mut self, log: Arc<dyn LogRecorder>) -> Self {
        self.log = Some(log);
        self
    }

    /// Records results with `recorder`.
    pub fn with_recorder(mut self, recorder: Arc<dyn RunRecorder>) -> Self {
        self.recorder = Some(recorder);
        self
    }
}
