//! The reporter: a run's events, for an event that came from a forge, become commit statuses in
//! the outbox. It never talks to the forge itself.

use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use super::{CommitStatus, ForgeUpdate, MAX_DESCRIPTION_CHARS, StatusState, truncate_chars};
use crate::ledger::{Ledger, LedgerError, NewReport};
use crate::scheduler::{RunEvent, RunResult, StageResult};

/// Where a run's updates go: the forge its event came from and the commit it ran.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReportTarget {
    /// The forge's name in the outbox (`github`): a [`Forge`](super::Forge) of that name sends.
    pub forge: String,
    /// `owner/name`.
    pub repo: String,
    /// The commit.
    pub sha: String,
}

impl ReportTarget {
    /// Updates for commit `sha` of `repo` on `forge`.
    pub fn new(forge: &str, repo: &str, sha: &str) -> Self {
        ReportTarget {
            forge: forge.to_owned(),
            repo: repo.to_owned(),
            sha: sha.to_owned(),
        }
    }
}

/// Turns runs into forge updates in the ledger's outbox. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Reporter {
    ledger: Ledger,
    public_url: Option<String>,
    wake: Arc<Notify>,
}

impl Reporter {
    /// A reporter writing to `ledger`'s outbox.
    pub fn new(ledger: Ledger) -> Self {
        Reporter {
            ledger,
            public_url: None,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Statuses link to `{url}/runs/{run_id}`.
    pub fn with_public_url(mut self, url: &str) -> Self {
        self.public_url = Some(url.trim_end_matches('/').to_owned());
        self
    }

    /// Notified each time an update is stored: give it to the [`Sender`](super::Sender) so that
    /// it sends at once instead of at its next poll.
    pub fn wake(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// A reporter for run `run_id` of `pipeline`, to be shown its events in order.
    pub fn run(&self, target: ReportTarget, run_id: &str, pipeline: &str) -> RunReporter {
        RunReporter {
            reporter: self.clone(),
            target,
            run_id: run_id.to_owned(),
            pipeline: pipeline.to_owned(),
            failed: None,
            superseded: false,
        }
    }

    /// Reports a run from its event stream until the run ends (or the stream closes). A
    /// failure to write to the ledger is logged; the run is never affected.
    pub async fn follow(
        &self,
        target: ReportTarget,
        run_id: &str,
        pipeline: &str,
        mut events: broadcast::Receiver<RunEvent>,
    ) {
        let mut run = self.run(target, run_id, pipeline);
        loop {
            let event = match events.recv().await {
                Ok(event) => event,
                // Lost events are log lines in practice; the start and end are what counts.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            let end = matches!(event, RunEvent::RunFinished { .. });
            // Off the async threads: SQLite blocks.
            let observed = tokio::task::spawn_blocking(move || {
                let result = run.observe(&event);
                (run, result)
            })
            .await;
            run = match observed {
                Ok((run, Ok(()))) => run,
                Ok((run, Err(e))) => {
                    tracing::warn!(run = run_id, error = %crate::ErrorChain(&e), "cannot store a forge update");
                    run
                }
                Err(_) => return,
            };
            if end {
                return;
            }
        }
    }

    fn enqueue(&self, forge: &str, update: &ForgeUpdate) -> Result<(), LedgerError> {
        let payload = serde_json::to_value(update).map_err(|e| LedgerError::Corrupt {
            run: update.target(),
            message: e.to_string(),
        })?;
        self.ledger.enqueue_report(NewReport {
            forge,
            target: &update.target(),
            payload: &payload,
        })?;
        self.wake.notify_one();
        Ok(())
    }
}

/// The reporter of one run: shown its events in order, it stores a `pending` status when the
/// run starts and the final one when it ends.
#[derive(Debug)]
pub struct RunReporter {
    reporter: Reporter,
    target: ReportTarget,
    run_id: String,
    pipeline: String,
    /// The first stage that failed, and how.
    failed: Option<(String, String)>,
    superseded: bool,
}

impl RunReporter {
    /// Takes the next event of the run, storing an update when it changes the run's status.
    pub fn observe(&mut self, event: &RunEvent) -> Result<(), LedgerError> {
        match event {
            RunEvent::RunStarted { stages, .. } => {
                let plural = if *stages == 1 { "" } else { "s" };
                self.status(
                    StatusState::Pending,
                    format!("{stages} stage{plural} queued"),
                )
            }
            RunEvent::RunSuperseded { .. } => {
                self.superseded = true;
                Ok(())
            }
            RunEvent::StageFinished { stage, result, .. } => {
                if self.failed.is_none() {
                    let how = match result {
                        StageResult::Failure { message, .. } => Some(format!("failed: {message}")),
                        StageResult::TimedOut { after_secs } => {
                            Some(format!("timed out after {after_secs}s"))
                        }
                        _ => None,
                    };
                    self.failed = how.map(|how| (stage.clone(), how));
                }
                Ok(())
            }
            RunEvent::RunFinished {
                result,
                duration_secs,
                ..
            } => {
                let (state, description) = match (result, &self.failed) {
                    (RunResult::Success, _) => (
                        StatusState::Success,
                        format!("passed in {}", seconds(*duration_secs)),
                    ),
                    (RunResult::Failure, Some((stage, how))) => {
                        (StatusState::Failure, format!("stage \"{stage}\" {how}"))
                    }
                    (RunResult::Failure, None) => (StatusState::Error, "run failed".to_owned()),
                    (RunResult::Cancelled, _) if self.superseded => {
                        (StatusState::Error, "superseded by a newer run".to_owned())
                    }
                    (RunResult::Cancelled, _) => (StatusState::Error, "run cancelled".to_owned()),
                };
                self.status(state, description)
            }
            _ => Ok(()),
        }
    }

    fn status(&self, state: StatusState, description: String) -> Result<(), LedgerError> {
        let target_url =
            (self.reporter.public_url.as_ref()).map(|url| format!("{url}/runs/{}", self.run_id));
        let update = ForgeUpdate::Status(CommitStatus {
            repo: self.target.repo.clone(),
            sha: self.target.sha.clone(),
            context: format!("gitops/{}", self.pipeline),
            state,
            description: truncate_chars(&description, MAX_DESCRIPTION_CHARS),
            target_url,
        });
        self.reporter.enqueue(&self.target.forge, &update)
    }
}

fn seconds(secs: f64) -> String {
    if secs < 60.0 {
        format!("{secs:.0}s")
    } else {
        format!("{}m {:.0}s", (secs / 60.0).floor(), secs % 60.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::now;

    /// The statuses due, taken as sent.
    fn statuses(ledger: &Ledger) -> Vec<CommitStatus> {
        (ledger.due_reports(now(), 100).unwrap().into_iter())
            .map(|r| {
                ledger.report_sent(r.id).unwrap();
                match serde_json::from_value(r.payload).unwrap() {
                    ForgeUpdate::Status(s) => s,
                }
            })
            .collect()
    }

    fn finished(result: RunResult) -> RunEvent {
        RunEvent::RunFinished {
            run_id: "r1".into(),
            result,
            duration_secs: 75.0,
            at: 75.0,
        }
    }

    #[test]
    fn a_run_is_pending_then_ends_with_its_result() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone()).with_public_url("https://ci.example/");
        let mut run = reporter.run(ReportTarget::new("github", "o/r", "abc"), "r1", "ci");
        run.observe(&RunEvent::RunStarted {
            run_id: "r1".into(),
            pipeline: "ci".into(),
            stages: 3,
            at: 0.0,
        })
        .unwrap();
        let pending = statuses(&ledger);
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].state, StatusState::Pending);
        assert_eq!(pending[0].description, "3 stages queued");
        assert_eq!(pending[0].context, "gitops/ci");
        assert_eq!(
            pending[0].target_url.as_deref(),
            Some("https://ci.example/runs/r1")
        );
        run.observe(&finished(RunResult::Success)).unwrap();
        let done = statuses(&ledger);
        assert_eq!(done[0].state, StatusState::Success);
        assert_eq!(done[0].description, "passed in 1m 15s");
    }

    #[test]
    fn a_failure_names_the_first_failed_stage_within_140_characters() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone());
        let mut run = reporter.run(ReportTarget::new("github", "o/r", "abc"), "r1", "ci");
        for (stage, message) in [("test", "x".repeat(300)), ("lint", "exit 2".to_owned())] {
            run.observe(&RunEvent::StageFinished {
                stage: stage.into(),
                result: StageResult::Failure {
                    message,
                    exit_code: Some(1),
                },
                attempts: 1,
                flaky: false,
                duration_secs: 1.0,
                at: 1.0,
            })
            .unwrap();
        }
        run.observe(&finished(RunResult::Failure)).unwrap();
        let status = &statuses(&ledger)[0];
        assert_eq!(status.state, StatusState::Failure);
        assert!(status.description.starts_with("stage \"test\" failed: xxx"));
        assert_eq!(status.description.chars().count(), MAX_DESCRIPTION_CHARS);
        assert_eq!(status.target_url, None);
    }

    #[test]
    fn a_superseded_run_ends_in_error() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone());
        let mut run = reporter.run(ReportTarget::new("github", "o/r", "abc"), "r1", "ci");
        run.observe(&RunEvent::RunSuperseded {
            group: "g".into(),
            at: 0.0,
        })
        .unwrap();
        run.observe(&finished(RunResult::Cancelled)).unwrap();
        let status = &statuses(&ledger)[0];
        assert_eq!(status.state, StatusState::Error);
        assert_eq!(status.description, "superseded by a newer run");
    }
}
