//! The engine's stage logs: every run it prepares keeps its stages' lines in the state dir
//! (closing each stage's log as the stage's result is recorded), and old runs go with their
//! logs by a retention rule.

use std::sync::Arc;

use async_trait::async_trait;

use super::Engine;
use crate::Result;
use crate::ledger::{Ledger, LedgerError, Retention};
use crate::logs::{LogStore, RunLogWriter};
use crate::scheduler::{RecordError, RunRecorder, StageReport};

/// Records a stage's result in the ledger once its log is closed: whoever sees the result
/// (`gitops logs --follow`, in another process) then finds the whole log.
pub(super) struct Recorder {
    pub ledger: Ledger,
    pub log: Option<Arc<RunLogWriter>>,
}

#[async_trait]
impl RunRecorder for Recorder {
    async fn stage_finished(&self, run_id: &str, stage: &StageReport) -> Result<(), RecordError> {
        if let Some(log) = &self.log {
            log.close_stage(&stage.id);
        }
        self.ledger.stage_finished(run_id, stage).await
    }
}

impl Engine {
    /// The stage logs of its state dir.
    pub fn logs(&self) -> &LogStore {
        &self.logs
    }

    /// The same engine with each stage's log capped at `max_bytes` (see
    /// [`LogStore::with_max_bytes`]).
    pub fn with_max_log_bytes(mut self, max_bytes: u64) -> Engine {
        self.logs = self.logs.with_max_bytes(max_bytes);
        self
    }

    /// Removes the finished runs that `retention` lets go, with their logs, and the logs of
    /// runs the ledger no longer knows; returns the ids of the runs removed.
    pub fn prune(&self, retention: &Retention) -> Result<Vec<String>> {
        let removed = self.ledger.prune_runs(retention)?;
        for run in &removed {
            self.logs.remove_run(run)?;
        }
        for run in self.logs.runs()? {
            // A run's logs are written after it is in the ledger: none here is a run starting.
            if let Err(LedgerError::UnknownRun(_)) = self.ledger.run(&run) {
                self.logs.remove_run(&run)?;
            }
        }
        Ok(removed)
    }
}
