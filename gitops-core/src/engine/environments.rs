//! What the engine does to environments outside of pipelines: stopping the environments of a
//! closed pull request, reconciling with the pull requests still open, stopping idle
//! environments, rolling back, pinning, approvals; and the ledger's queries about them.

use super::Engine;
use crate::backend::ErrorChain;
use crate::config::Action;
use crate::event::GitEvent;
use crate::ledger::{
    DeploymentRecord, DeploymentResult, EnvironmentRecord, EnvironmentStatus, now,
};
use crate::{Error, Result};

/// An environment as `gitops envs` shows it: its record and what runs there now.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct EnvironmentState {
    /// The environment's record.
    pub record: EnvironmentRecord,
    /// The deployment running there (none when stopped or never deployed successfully).
    pub current: Option<DeploymentRecord>,
}

impl EnvironmentState {
    /// The URL its current deployment returned.
    pub fn url(&self) -> Option<&str> {
        self.current
            .as_ref()
            .and_then(|d| d.outputs.get("url"))
            .map(String::as_str)
    }
}

/// Why an environment is stopped outside a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum StopReason {
    /// Its pull request was closed.
    PullRequestClosed,
    /// Its pull request is no longer open (found by a reconcile).
    PullRequestGone,
    /// Nothing was deployed to it for longer than its `auto_stop_after`.
    Idle,
    /// Someone asked.
    Requested,
}

impl StopReason {
    /// Why, in words (`its pull request was closed`).
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::PullRequestClosed => "its pull request was closed",
            StopReason::PullRequestGone => "its pull request is no longer open",
            StopReason::Idle => "it was idle longer than its auto_stop_after",
            StopReason::Requested => "requested",
        }
    }
}

/// An environment the engine stopped, and how that went.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Stopped {
    /// The environment.
    pub environment: String,
    /// Why.
    pub reason: StopReason,
    /// The stop's record in the ledger.
    pub deployment: DeploymentRecord,
}

impl Engine {
    /// Every environment with what runs there, by name.
    pub fn environments(&self) -> Result<Vec<EnvironmentState>> {
        let mut out = Vec::new();
        for record in self.ledger.environments()? {
            let current = match record.status {
                EnvironmentStatus::Active => self.ledger.current_deployment(&record.name)?,
                EnvironmentStatus::Stopped => None,
            };
            out.push(EnvironmentState { record, current });
        }
        Ok(out)
    }

    /// The deployments and stops of `environment`, newest first.
    pub fn history(&self, environment: &str) -> Result<Vec<DeploymentRecord>> {
        self.known(environment)?;
        Ok(self.ledger.history(Some(environment), usize::MAX >> 1)?)
    }

    fn known(&self, environment: &str) -> Result<EnvironmentRecord> {
        self.ledger
            .environment(environment)?
            .ok_or_else(|| Error::Environment {
                environment: environment.to_owned(),
                message: "no such environment in the ledger (nothing was ever deployed to it)"
                    .to_owned(),
            })
    }

    /// Stops, after the runs of `event` (whatever its pipelines did), what the event ends:
    /// when it closes a pull request, every environment that pull request owns.
    pub async fn finish_event(&self, event: &GitEvent) -> Result<Vec<Stopped>> {
        let Some(pr) = event.pull_request() else {
            return Ok(Vec::new());
        };
        if pr.action != "closed" {
            return Ok(Vec::new());
        }
        let owned: Vec<EnvironmentRecord> = self
            .ledger
            .environments()?
            .into_iter()
            .filter(|e| {
                e.status == EnvironmentStatus::Active
                    && e.repo == event.repo
                    && e.pull_request == Some(pr.number)
            })
            .collect();
        self.stop_all(owned, StopReason::PullRequestClosed, None)
            .await
    }

    /// Stops what should no longer run: the per-pull-request environments of `repo` whose pull
    /// request is not in `open_prs` (a missed close event or a failed teardown), and every
    /// environment idle for longer than its `auto_stop_after`.
    pub async fn reconcile(&self, repo: &str, open_prs: &[u64]) -> Result<Vec<Stopped>> {
        let mut gone = Vec::new();
        let mut idle = Vec::new();
        for env in self.ledger.environments()? {
            if env.status != EnvironmentStatus::Active {
                continue;
            }
            if env.repo == repo && env.pull_request.is_some_and(|n| !open_prs.contains(&n)) {
                gone.push(env);
                continue;
            }
            let last = self.ledger.history(Some(&env.name), 1)?.into_iter().next();
            let idle_for = last
                .as_ref()
                .and_then(|d| Some((d.inputs.auto_stop_after_secs?, d.finished_at?)));
            if idle_for.is_some_and(|(limit, finished)| now() - finished > limit) {
                idle.push(env);
            }
        }
        let mut stopped = self
            .stop_all(gone, StopReason::PullRequestGone, None)
            .await?;
        stopped.extend(self.stop_all(idle, StopReason::Idle, None).await?);
        Ok(stopped)
    }

    /// Stops one environment now.
    pub async fn stop_environment(&self, environment: &str, actor: &str) -> Result<Stopped> {
        let env = self.known(environment)?;
        let mut stopped = self
            .stop_all(vec![env], StopReason::Requested, Some(actor))
            .await?
            .into_iter();
        stopped.next().ok_or_else(|| Error::Environment {
            environment: environment.to_owned(),
            message: "it could not be stopped".to_owned(),
        })
    }

    async fn stop_all(
        &self,
        envs: Vec<EnvironmentRecord>,
        reason: StopReason,
        actor: Option<&str>,
    ) -> Result<Vec<Stopped>> {
        let mut out = Vec::new();
        let mut errors = Vec::new();
        for env in envs {
            let last = self.ledger.history(Some(&env.name), 1)?.into_iter().next();
            let Some(last) = last else { continue };
            let actor = match actor {
                Some(a) => a.to_owned(),
                None => format!("gitops ({})", reason.describe()),
            };
            match self
                .deploy_or_stop(&env, Action::Stop, &last, None, &actor, None)
                .await
            {
                Ok(deployment) => out.push(Stopped {
                    environment: env.name.clone(),
                    reason,
                    deployment,
                }),
                Err(e) => errors.push(ErrorChain(&e).to_string()),
            }
        }
        if !errors.is_empty() && out.is_empty() {
            return Err(Error::Environment {
                environment: "(several)".to_owned(),
                message: errors.join("; "),
            });
        }
        Ok(out)
    }

    /// Redeploys the previous successful release of `environment` (or its last successful
    /// deployment of `to`, a version or commit) with the inputs recorded for it, as a new
    /// deployment marked as a rollback, and pins the environment: pipeline deploys to it wait
    /// until [`unpin`](Self::unpin).
    pub async fn rollback(
        &self,
        environment: &str,
        to: Option<&str>,
        actor: &str,
    ) -> Result<DeploymentRecord> {
        let env = self.known(environment)?;
        let history = self.ledger.history(Some(environment), usize::MAX >> 1)?;
        let deploys: Vec<&DeploymentRecord> = history
            .iter()
            .filter(|d| d.action == Action::Deploy && d.result == DeploymentResult::Success)
            .collect();
        let fail = |message: String| Error::Environment {
            environment: environment.to_owned(),
            message,
        };
        let same =
            |a: &DeploymentRecord, b: &DeploymentRecord| a.version == b.version && a.sha == b.sha;
        let target = match to {
            Some(wanted) => {
                let bare = wanted.strip_prefix('v').unwrap_or(wanted);
                deploys
                    .iter()
                    .find(|d| {
                        d.version.as_deref() == Some(bare)
                            || d.sha.as_deref().is_some_and(|s| s.starts_with(wanted))
                    })
                    .copied()
                    .ok_or_else(|| {
                        fail(format!(
                            "no successful deployment of \"{wanted}\" to roll back to"
                        ))
                    })?
            }
            None => {
                let current = self
                    .ledger
                    .current_deployment(environment)?
                    .ok_or_else(|| fail("nothing runs there to roll back from".to_owned()))?;
                deploys
                    .iter()
                    .find(|d| d.id < current.id && !same(d, &current))
                    .copied()
                    .ok_or_else(|| {
                        fail("no earlier successful release to roll back to".to_owned())
                    })?
            }
        };
        let target = target.clone();
        let record = self
            .deploy_or_stop(&env, Action::Deploy, &target, Some(target.id), actor, None)
            .await?;
        if record.result != DeploymentResult::Success {
            return Err(fail(format!(
                "the rollback to deployment #{} failed: {}",
                target.id,
                record.message.as_deref().unwrap_or("no reason given")
            )));
        }
        self.ledger.pin(environment, actor)?;
        Ok(record)
    }

    /// Lets pipeline deploys reach `environment` again after a rollback; false when it was not
    /// pinned.
    pub fn unpin(&self, environment: &str) -> Result<bool> {
        self.known(environment)?;
        Ok(self.ledger.unpin(environment)?)
    }

    /// Approves the deployment that `stage` of `run_id` waits to make.
    pub fn approve(&self, run_id: &str, stage: &str, by: &str) -> Result<()> {
        self.decide(run_id, stage, true, by)
    }

    /// Rejects it: the stage fails, saying who rejected it.
    pub fn reject(&self, run_id: &str, stage: &str, by: &str) -> Result<()> {
        self.decide(run_id, stage, false, by)
    }

    fn decide(&self, run_id: &str, stage: &str, approved: bool, by: &str) -> Result<()> {
        if self.ledger.decide_approval(run_id, stage, approved, by)? {
            Ok(())
        } else {
            Err(Error::NoPendingApproval {
                run: run_id.to_owned(),
                stage: stage.to_owned(),
            })
        }
    }
}
