//! Run events: what happens during a run, in order, for progress display, logs and tests.

use serde::Serialize;

use super::gate::WaitReason;
use super::report::{RunResult, StageResult};
use crate::backend::LogStream;

/// Something that happened in a run. `at` is seconds since the run started.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum RunEvent {
    /// The run began.
    RunStarted {
        /// The run.
        run_id: String,
        /// The pipeline.
        pipeline: String,
        /// Its number of stages.
        stages: usize,
        /// Seconds since the start.
        at: f64,
    },
    /// The run waits for its concurrency group: `position` runs are ahead of it.
    RunQueued {
        /// The group.
        group: String,
        /// Runs ahead of this one (1: it is next).
        position: usize,
        /// Seconds since the start (0: it has not started).
        at: f64,
    },
    /// A newer run of its concurrency group took its place: it does not run (`queue`), or it
    /// is stopped (`cancel`).
    RunSuperseded {
        /// The group.
        group: String,
        /// Seconds since the start.
        at: f64,
    },
    /// A stage's needs are done and it waits for a free slot.
    StageQueued {
        /// The stage.
        stage: String,
        /// Seconds since the start.
        at: f64,
    },
    /// An attempt of a stage began.
    StageStarted {
        /// The stage.
        stage: String,
        /// The attempt (1-based).
        attempt: u32,
        /// The backend running it.
        backend: String,
        /// Seconds since the start.
        at: f64,
    },
    /// A deploy or stop stage waits before its backend is called.
    StageWaiting {
        /// The stage.
        stage: String,
        /// What it waits for.
        waiting: WaitReason,
        /// Seconds since the start.
        at: f64,
    },
    /// A deploy or stop stage passed its gate: its deployment is recorded (in the ledger, when
    /// the run has one) and its backend is called.
    Deploying {
        /// The stage.
        stage: String,
        /// The deployment's id in the gate's records.
        deployment: i64,
        /// The environment instance.
        environment: String,
        /// A per-pull-request instance.
        transient: bool,
        /// Its config or policy marks it `production`.
        production: bool,
        /// Seconds since the start.
        at: f64,
    },
    /// A line of a stage's log (secrets masked).
    Log {
        /// The stage.
        stage: String,
        /// The attempt.
        attempt: u32,
        /// The stream.
        stream: LogStream,
        /// The text.
        line: String,
        /// Seconds since the start.
        at: f64,
    },
    /// An attempt failed and the stage will be tried again.
    StageRetrying {
        /// The stage.
        stage: String,
        /// The attempt that failed.
        attempt: u32,
        /// Why it failed.
        reason: String,
        /// Seconds until the next attempt.
        delay_secs: f64,
        /// Seconds since the start.
        at: f64,
    },
    /// A stage ended (or was skipped).
    StageFinished {
        /// The stage.
        stage: String,
        /// How it ended.
        result: StageResult,
        /// Attempts made.
        attempts: u32,
        /// It passed only after a retry.
        flaky: bool,
        /// Seconds it ran.
        duration_secs: f64,
        /// Seconds since the start.
        at: f64,
    },
    /// Something went wrong around the run (recording to the ledger, ...), not in a stage.
    Warning {
        /// What.
        message: String,
        /// Seconds since the start.
        at: f64,
    },
    /// The run ended.
    RunFinished {
        /// The run.
        run_id: String,
        /// How it ended.
        result: RunResult,
        /// Seconds it took.
        duration_secs: f64,
        /// Seconds since the start.
        at: f64,
    },
}
