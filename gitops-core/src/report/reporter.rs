//! The reporter: a run's events, for an event that came from a forge, become commit statuses,
//! deployments and the pull request's comment in the outbox. It never talks to the forge
//! itself.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use tokio::sync::{Notify, broadcast};

use super::comment::{LOG_TAIL_LINES, Section, StageLine, compose, seconds};
use super::{
    CommitStatus, DeploymentState, DeploymentUpdate, ForgeUpdate, MAX_DESCRIPTION_CHARS,
    PullRequestComment, StatusState, truncate_chars,
};
use crate::config::Action;
use crate::event::GitEvent;
use crate::ledger::{DeploymentRecord, DeploymentResult, Ledger, LedgerError, NewReport};
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
    /// The pull request the run is for: it gets the comment.
    pub pull_request: Option<u64>,
    /// The branch or tag the run is of (`main`, `v1.2.0`), and whether it is a tag: GitLab's
    /// deployments name it.
    pub git_ref: Option<(String, bool)>,
}

impl ReportTarget {
    /// Updates for commit `sha` of `repo` on `forge`.
    pub fn new(forge: &str, repo: &str, sha: &str) -> Self {
        ReportTarget {
            forge: forge.to_owned(),
            repo: repo.to_owned(),
            sha: sha.to_owned(),
            pull_request: None,
            git_ref: None,
        }
    }

    /// Updates for the commit of `event` on `forge` (its pull request, its branch or tag);
    /// `None` for an event without a commit (a deletion, a ping).
    pub fn for_event(forge: &str, event: &GitEvent) -> Option<Self> {
        let sha = event.sha.as_deref()?;
        let mut target = ReportTarget::new(forge, &event.repo, sha);
        target.pull_request = event.pull_request().map(|pr| pr.number);
        target.git_ref = event.git_ref().and_then(|r| {
            if let Some(tag) = r.strip_prefix("refs/tags/") {
                Some((tag.to_owned(), true))
            } else {
                r.strip_prefix("refs/heads/").map(|b| (b.to_owned(), false))
            }
        });
        Some(target)
    }

    /// The run is for pull request `number`: its comment shows the run.
    pub fn with_pull_request(mut self, number: u64) -> Self {
        self.pull_request = Some(number);
        self
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
            stages: Vec::new(),
            deploying: HashMap::new(),
            logs: HashMap::new(),
            created_at: crate::ledger::now(),
        }
    }

    fn run_url(&self, run_id: &str) -> Option<String> {
        (self.public_url.as_ref()).map(|url| format!("{url}/runs/{run_id}"))
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
            // A log line only joins the stage's tail: no ledger, no thread (a stage that floods
            // its log must not make the reporter lag behind the run's other events).
            if let RunEvent::Log { .. } = &event {
                let _ = run.observe(&event);
                continue;
            }
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

    /// Reports a rollback (a deployment that redeploys an earlier one, made outside any run:
    /// `gitops rollback`) to the forges that were sent the deployment it redeploys, as a new
    /// deployment whose description says so. It is stored in the outbox: a sender on the same
    /// ledger (`gitops serve`) sends it. Returns how many forges it is stored for.
    pub fn rollback(
        &self,
        record: &DeploymentRecord,
        production: bool,
    ) -> Result<usize, LedgerError> {
        let (Some(of), Some(sha)) = (record.rollback_of, &record.sha) else {
            return Ok(0);
        };
        let forges = self.ledger.forges_of_deployment(of)?;
        let state = match record.result {
            DeploymentResult::Success => DeploymentState::Success,
            DeploymentResult::Failure => DeploymentState::Failure,
            _ => DeploymentState::Error,
        };
        let short: String = sha.chars().take(7).collect();
        let by = record.triggered_by.as_deref().unwrap_or("someone");
        for (forge, repo) in &forges {
            let git_ref = (record.event.as_ref())
                .and_then(|e| ReportTarget::for_event(forge, e))
                .and_then(|t| t.git_ref);
            let update = ForgeUpdate::Deployment(DeploymentUpdate {
                repo: repo.clone(),
                sha: sha.clone(),
                deployment: record.id,
                environment: record.environment.clone(),
                transient: false,
                production,
                state,
                description: truncate_chars(
                    &format!("rollback by {by}: redeploys deployment {of} ({short})"),
                    MAX_DESCRIPTION_CHARS,
                ),
                environment_url: (state == DeploymentState::Success)
                    .then(|| record.outputs.get("url").cloned())
                    .flatten()
                    .filter(|u| u.starts_with("https://") || u.starts_with("http://")),
                log_url: None,
                tag: git_ref.as_ref().is_some_and(|(_, tag)| *tag),
                git_ref: git_ref.map(|(name, _)| name),
            });
            self.enqueue(forge, &update)?;
        }
        Ok(forges.len())
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

/// A deploy or stop stage's deployment, as the gate announced it.
#[derive(Debug)]
struct Deploying {
    deployment: i64,
    environment: String,
    transient: bool,
    production: bool,
    /// For a stop: the deployment it ends (set `inactive` once the stop succeeds).
    ends: Option<DeploymentRecord>,
}

/// The reporter of one run: shown its events in order, it stores a `pending` status when the
/// run starts and the final one when it ends, each deployment's state as it goes, and the run's
/// section of its pull request's comment.
#[derive(Debug)]
pub struct RunReporter {
    reporter: Reporter,
    target: ReportTarget,
    run_id: String,
    pipeline: String,
    /// The first stage that failed, and how.
    failed: Option<(String, String)>,
    superseded: bool,
    /// The stages seen, in the order they started.
    stages: Vec<StageLine>,
    /// The deploy and stop stages that passed their gate, by stage.
    deploying: HashMap<String, Deploying>,
    /// The last log lines of each stage (masked by the scheduler).
    logs: HashMap<String, VecDeque<String>>,
    /// When the reporter was made (as its run started): of two runs of a pipeline, the later
    /// one's section of the comment stays, whichever ends last.
    created_at: f64,
}

impl RunReporter {
    /// Takes the next event of the run, storing an update when it changes what the forge shows.
    pub fn observe(&mut self, event: &RunEvent) -> Result<(), LedgerError> {
        match event {
            RunEvent::RunStarted { stages, .. } => {
                let plural = if *stages == 1 { "" } else { "s" };
                self.status(
                    StatusState::Pending,
                    format!("{stages} stage{plural} queued"),
                )?;
                self.comment(None, None)
            }
            RunEvent::RunSuperseded { .. } => {
                self.superseded = true;
                Ok(())
            }
            RunEvent::StageStarted { stage, .. } => {
                self.stage(stage);
                Ok(())
            }
            RunEvent::Log { stage, line, .. } => {
                let tail = self.logs.entry(stage.clone()).or_default();
                if tail.len() == LOG_TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(truncate_chars(line, 1000));
                Ok(())
            }
            RunEvent::Deploying {
                stage,
                deployment,
                environment,
                transient,
                production,
                ..
            } => self.deploying(stage, *deployment, environment, *transient, *production),
            RunEvent::StageFinished {
                stage,
                result,
                duration_secs,
                ..
            } => {
                let line = self.stage(stage);
                line.result = Some(result.clone());
                line.duration_secs = Some(*duration_secs);
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
                self.deployed(stage)
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
                self.status(state, description)?;
                let words = match result {
                    RunResult::Success => ("passed", true),
                    RunResult::Failure => ("failed", false),
                    RunResult::Cancelled if self.superseded => ("superseded", false),
                    RunResult::Cancelled => ("cancelled", false),
                };
                self.comment(Some(words), Some(*duration_secs))
            }
            _ => Ok(()),
        }
    }

    fn stage(&mut self, stage: &str) -> &mut StageLine {
        let at = match self.stages.iter().position(|s| s.id == stage) {
            Some(at) => at,
            None => {
                self.stages.push(StageLine {
                    id: stage.to_owned(),
                    result: None,
                    duration_secs: None,
                });
                self.stages.len() - 1
            }
        };
        &mut self.stages[at]
    }

    fn status(&self, state: StatusState, description: String) -> Result<(), LedgerError> {
        let update = ForgeUpdate::Status(CommitStatus {
            repo: self.target.repo.clone(),
            sha: self.target.sha.clone(),
            context: format!("gitops/{}", self.pipeline),
            state,
            description: truncate_chars(&description, MAX_DESCRIPTION_CHARS),
            target_url: self.reporter.run_url(&self.run_id),
        });
        self.reporter.enqueue(&self.target.forge, &update)
    }

    /// A deploy's deployment is `in_progress`; a stop's is noted with what it ends.
    fn deploying(
        &mut self,
        stage: &str,
        deployment: i64,
        environment: &str,
        transient: bool,
        production: bool,
    ) -> Result<(), LedgerError> {
        let ledger = &self.reporter.ledger;
        let Some(record) = ledger.deployment(deployment)? else {
            return Ok(());
        };
        let ends = match record.action {
            Action::Stop => ledger
                .history(Some(environment), 50)?
                .into_iter()
                .find(|d| {
                    d.id < deployment
                        && d.action == Action::Deploy
                        && d.result == DeploymentResult::Success
                }),
            _ => None,
        };
        let deploying = Deploying {
            deployment,
            environment: environment.to_owned(),
            transient,
            production,
            ends,
        };
        if record.action == Action::Deploy {
            self.deployment(&deploying, &record, DeploymentState::InProgress)?;
        }
        self.deploying.insert(stage.to_owned(), deploying);
        Ok(())
    }

    /// A deploy stage ended: its deployment's final state; a stop that succeeded: the
    /// deployment it ended is `inactive`.
    fn deployed(&mut self, stage: &str) -> Result<(), LedgerError> {
        let Some(deploying) = self.deploying.remove(stage) else {
            return Ok(());
        };
        let Some(record) = self.reporter.ledger.deployment(deploying.deployment)? else {
            return Ok(());
        };
        match (record.action, record.result) {
            (Action::Stop, DeploymentResult::Success) => match &deploying.ends {
                Some(ended) => self.deployment(&deploying, ended, DeploymentState::Inactive),
                None => Ok(()),
            },
            (Action::Stop, _) => Ok(()),
            (_, result) => {
                let state = match result {
                    DeploymentResult::Success => DeploymentState::Success,
                    DeploymentResult::Failure => DeploymentState::Failure,
                    _ => DeploymentState::Error,
                };
                self.deployment(&deploying, &record, state)
            }
        }
    }

    fn deployment(
        &self,
        deploying: &Deploying,
        record: &DeploymentRecord,
        state: DeploymentState,
    ) -> Result<(), LedgerError> {
        let sha = record
            .sha
            .clone()
            .unwrap_or_else(|| self.target.sha.clone());
        let short: String = sha.chars().take(7).collect();
        let mut description = match (state, record.rollback_of) {
            (DeploymentState::Inactive, _) => "stopped".to_owned(),
            (_, Some(of)) => format!("rollback: redeploys deployment {of} ({short})"),
            _ => format!("{} of {short}", self.pipeline),
        };
        if state == DeploymentState::Failure
            && let Some(message) = &record.message
        {
            description = format!("{description}: {message}");
        }
        // The run that made the deployment: for `inactive`, the one that deployed it.
        let run = record.run_id.as_deref().unwrap_or(&self.run_id);
        let environment_url = (state == DeploymentState::Success)
            .then(|| record.outputs.get("url").cloned())
            .flatten()
            .filter(|u| u.starts_with("https://") || u.starts_with("http://"));
        let update = ForgeUpdate::Deployment(DeploymentUpdate {
            repo: self.target.repo.clone(),
            sha,
            deployment: record.id,
            environment: deploying.environment.clone(),
            transient: deploying.transient,
            production: deploying.production,
            state,
            description: truncate_chars(&description, MAX_DESCRIPTION_CHARS),
            environment_url,
            log_url: self.reporter.run_url(run),
            git_ref: self.target.git_ref.as_ref().map(|(name, _)| name.clone()),
            tag: self.target.git_ref.as_ref().is_some_and(|(_, tag)| *tag),
        });
        self.reporter.enqueue(&self.target.forge, &update)
    }

    /// Stores this run's section of its pull request's comment, and the comment.
    fn comment(
        &self,
        finished: Option<(&'static str, bool)>,
        duration_secs: Option<f64>,
    ) -> Result<(), LedgerError> {
        let Some(number) = self.target.pull_request else {
            return Ok(());
        };
        let ledger = &self.reporter.ledger;
        let mut section = Section {
            pipeline: self.pipeline.clone(),
            run_id: self.run_id.clone(),
            run_url: self.reporter.run_url(&self.run_id),
            sha: self.target.sha.clone(),
            finished,
            duration_secs,
            stages: self.stages.clone(),
            ..Section::default()
        };
        if finished.is_some() {
            for stage in ledger.stage_results(&self.run_id)? {
                if let Some(plan) = stage.outputs.get("markdown") {
                    section.plans.push((stage.id.to_string(), plan.clone()));
                }
            }
            for d in ledger.run_deployments(&self.run_id)? {
                if d.action == Action::Deploy && d.result == DeploymentResult::Success {
                    section
                        .deployed
                        .push((d.environment, d.outputs.get("url").cloned()));
                }
            }
            for stage in &self.stages {
                let failed = matches!(
                    stage.result,
                    Some(StageResult::Failure { .. } | StageResult::TimedOut { .. })
                );
                if let (true, Some(tail)) = (failed, self.logs.get(&stage.id)) {
                    section
                        .failed_logs
                        .push((stage.id.clone(), tail.iter().cloned().collect()));
                }
            }
        }
        let sections = ledger.set_comment_section(
            &self.target.forge,
            &self.target.repo,
            number,
            &self.pipeline,
            &section.render(),
            self.created_at,
        )?;
        let update = ForgeUpdate::Comment(PullRequestComment {
            repo: self.target.repo.clone(),
            number,
            body: compose(&sections),
        });
        self.reporter.enqueue(&self.target.forge, &update)
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
                    other => panic!("not a status: {other:?}"),
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

    #[test]
    fn a_rollback_goes_to_the_forge_that_got_the_deployment_it_redeploys() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone());
        ledger
            .set_forge_ref("github", "deployment:o/r:5", "77")
            .unwrap();
        ledger
            .set_forge_ref("github", "deployment:o/r:15", "78")
            .unwrap();
        let record = DeploymentRecord {
            id: 9,
            environment: "production".into(),
            action: Action::Deploy,
            backend: "local".into(),
            version: None,
            sha: Some("abcdef0123".into()),
            run_id: None,
            stage: None,
            event: None,
            triggered_by: Some("alice".into()),
            inputs: Default::default(),
            outputs: [("url".to_owned(), "https://app.example/".to_owned())].into(),
            result: DeploymentResult::Success,
            message: None,
            rollback_of: Some(5),
            started_at: 0.0,
            finished_at: Some(1.0),
            trust: None,
        };
        assert_eq!(reporter.rollback(&record, true).unwrap(), 1);
        let due = ledger.due_reports(now(), 10).unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].forge, "github");
        let ForgeUpdate::Deployment(d) = serde_json::from_value(due[0].payload.clone()).unwrap()
        else {
            panic!("not a deployment");
        };
        assert_eq!((d.repo.as_str(), d.deployment), ("o/r", 9));
        assert_eq!(d.state, DeploymentState::Success);
        assert!(d.production);
        assert_eq!(
            d.description,
            "rollback by alice: redeploys deployment 5 (abcdef0)"
        );
        assert_eq!(d.environment_url.as_deref(), Some("https://app.example/"));
        // A deployment no forge was sent: nothing to tell.
        let mut other = record.clone();
        other.rollback_of = Some(1);
        assert_eq!(reporter.rollback(&other, true).unwrap(), 0);
    }

    #[test]
    fn an_older_run_ending_late_does_not_replace_a_newer_runs_section() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let reporter = Reporter::new(ledger.clone());
        let target = ReportTarget::new("github", "o/r", "abc").with_pull_request(3);
        let mut old = reporter.run(target.clone(), "r1", "ci");
        std::thread::sleep(std::time::Duration::from_millis(5));
        let mut new = reporter.run(target, "r2", "ci");
        new.observe(&RunEvent::RunStarted {
            run_id: "r2".into(),
            pipeline: "ci".into(),
            stages: 1,
            at: 0.0,
        })
        .unwrap();
        old.observe(&RunEvent::RunSuperseded {
            group: "g".into(),
            at: 0.0,
        })
        .unwrap();
        old.observe(&finished(RunResult::Cancelled)).unwrap();
        let comments: Vec<String> = (ledger.due_reports(now(), 100).unwrap().into_iter())
            .filter_map(|r| match serde_json::from_value(r.payload).unwrap() {
                ForgeUpdate::Comment(c) => Some(c.body),
                _ => None,
            })
            .collect();
        let last = comments.last().unwrap();
        assert!(
            last.contains("run `r2`") && last.contains("running"),
            "{last}"
        );
        assert!(!last.contains("superseded"), "{last}");
    }
}
