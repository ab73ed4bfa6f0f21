//! What a run ends with: per stage its result, attempts, timings and outputs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum StageResult {
    /// It succeeded.
    Success,
    /// It failed (after its retries).
    Failure {
        /// What failed.
        message: String,
        /// The exit code, where there is one.
        exit_code: Option<i32>,
    },
    /// It did not run.
    Skipped {
        /// Why.
        reason: SkipReason,
    },
    /// The run was cancelled while it ran; it was stopped.
    Cancelled,
    /// It ran past its `timeout` and was stopped.
    TimedOut {
        /// The timeout, in seconds.
        after_secs: f64,
    },
}

impl StageResult {
    /// The result's name: `success`, `failure`, `skipped`, `cancelled`, `timed_out`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure { .. } => "failure",
            Self::Skipped { .. } => "skipped",
            Self::Cancelled => "cancelled",
            Self::TimedOut { .. } => "timed_out",
        }
    }

    /// Whether it failed, timed out or was cancelled.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            Self::Failure { .. } | Self::TimedOut { .. } | Self::Cancelled
        )
    }
}

/// Why a stage was skipped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SkipReason {
    /// A stage it needs failed, timed out or was cancelled (and its condition requires success).
    NeedFailed {
        /// That need.
        need: String,
    },
    /// A stage it needs was skipped.
    NeedSkipped {
        /// That need.
        need: String,
    },
    /// Its `if:` was false.
    ConditionFalse {
        /// The condition.
        expr: String,
    },
    /// The run was cancelled before it started.
    RunCancelled,
}

/// One stage in a [`RunReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StageReport {
    /// The stage id (shared with the plan's: a run of many stages copies none of them).
    pub id: Arc<str>,
    /// How it ended.
    #[serde(flatten)]
    pub result: StageResult,
    /// Attempts made (0 when skipped).
    pub attempts: u32,
    /// It succeeded only after a retry.
    pub flaky: bool,
    /// When it started, in seconds since the run started.
    pub started_secs: Option<f64>,
    /// When it ended, in seconds since the run started.
    pub finished_secs: Option<f64>,
    /// Its outputs.
    pub outputs: BTreeMap<String, String>,
    /// The result was reused from an earlier run (rerun, resume) rather than produced now.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reused: bool,
}

impl StageReport {
    /// Stage `id`, ended with `result` after `attempts`.
    pub(super) fn ended(
        id: &Arc<str>,
        result: StageResult,
        attempts: u32,
        started_secs: Option<f64>,
        finished_secs: Option<f64>,
        outputs: BTreeMap<String, String>,
    ) -> StageReport {
        StageReport {
            id: id.clone(),
            result,
            attempts,
            flaky: false,
            started_secs,
            finished_secs,
            outputs,
            reused: false,
        }
    }

    /// How long it ran.
    pub fn duration(&self) -> Option<Duration> {
        match (self.started_secs, self.finished_secs) {
            (Some(s), Some(f)) if f >= s => Some(Duration::from_secs_f64(f - s)),
            _ => None,
        }
    }
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunResult {
    /// Every stage succeeded, was skipped, or failed with `continue_on_error`.
    Success,
    /// Some stage failed or timed out.
    Failure,
    /// The run was cancelled.
    Cancelled,
}

impl RunResult {
    /// `success`, `failure` or `cancelled`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    /// The run's id.
    pub run_id: String,
    /// The pipeline.
    pub pipeline: String,
    /// How it ended.
    pub result: RunResult,
    /// How long it took, in seconds.
    pub duration_secs: f64,
    /// Every stage, in config order.
    pub stages: Vec<StageReport>,
}

impl RunReport {
    /// A stage's report.
    pub fn stage(&self, id: &str) -> Option<&StageReport> {
        self.stages.iter().find(|s| &*s.id == id)
    }
}
