//! What the engine does to environments outside of pipelines: stopping the environments of a
//! closed pull request, reconciling with the pull requests still open, stopping idle
//! environments, rolling back, pinning, approvals; and the ledger's queries about them.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::Engine;
use crate::backend::{BackendError, EnvironmentPolicy, EnvironmentTarget, RunInfo, StageContext};
use crate::config::Action;
use crate::event::GitEvent;
use crate::ledger::{
    DeploymentInputs, DeploymentRecord, DeploymentResult, EnvironmentRecord, EnvironmentStatus,
    NewDeployment, now,
};
use crate::repo::Repository;
use crate::scheduler::{DEPLOYER_PANICKED, GateRefusal, WaitReason};
use crate::secret::Masker;
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
    pub async fn settle(&self, event: &GitEvent) -> Result<Vec<Stopped>> {
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
                .direct(&env, Action::Stop, &last, None, &actor, None)
                .await
            {
                Ok(deployment) => out.push(Stopped {
                    environment: env.name.clone(),
                    reason,
                    deployment,
                }),
                Err(e) => errors.push(e.to_string()),
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
            .direct(&env, Action::Deploy, &target, Some(target.id), actor, None)
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

    /// Deploys or stops `env` directly (not from a pipeline) with the inputs of `like`: under
    /// the environment's lock, recorded in the ledger like any deployment.
    ///
    /// Once the lock is taken, the rest runs in a task of its own, so that however it ends the
    /// deployment is recorded and the lock released: a panicking deployer fails the deployment
    /// (its call is a task too), a lost lock cancels and fails it, and dropping this future
    /// cancels it (the task records that and releases the lock once the deployer has stopped).
    async fn direct(
        &self,
        env: &EnvironmentRecord,
        action: Action,
        like: &DeploymentRecord,
        rollback_of: Option<i64>,
        actor: &str,
        cancel: Option<CancellationToken>,
    ) -> Result<DeploymentRecord> {
        let fail = |message: String| Error::Environment {
            environment: env.name.clone(),
            message,
        };
        let deployer = self
            .scheduler
            .registry()
            .deployer(&env.backend)
            .cloned()
            .ok_or_else(|| {
                fail(format!(
                    "no deployer registered for backend \"{}\"",
                    env.backend
                ))
            })?;
        let event = like
            .event
            .clone()
            .ok_or_else(|| fail(format!("deployment #{} has no recorded event", like.id)))?;
        // A deploy needs the files of the commit it deploys, and a stop may need them too (a
        // terraform destroy reads the configuration): a checkout of it, as its run had.
        let mut checkout: Option<PathBuf> = None;
        let workdir = {
            let run = like
                .run_id
                .as_deref()
                .map(|id| self.ledger.run(id))
                .transpose()?;
            match run
                .as_ref()
                .and_then(|r| Some((r.repo.clone()?, r.commit.clone()?)))
            {
                Some((repo, commit)) => {
                    let dir = self
                        .state_dir
                        .join("checkouts")
                        .join(format!("deployment-{}", crate::ledger::new_run_id()));
                    let made = Repository::open(&repo).and_then(|r| r.checkout(&commit, &dir));
                    match made {
                        Ok(_) => {
                            checkout = Some(dir.clone());
                            dir
                        }
                        Err(e) if action == Action::Deploy => return Err(e.into()),
                        // A stop goes ahead without the files (most deployers need none).
                        Err(_) => {
                            let _ = std::fs::remove_dir_all(&dir);
                            self.state_dir.clone()
                        }
                    }
                }
                None => run.map_or_else(|| self.state_dir.clone(), |r| r.workdir),
            }
        };
        let run_id = format!("{}-{}", action_name(action), crate::ledger::new_run_id());
        let info = RunInfo::new(run_id, "gitops", event.clone(), workdir).with_actor(actor);
        let target = EnvironmentTarget::new(
            env.name.clone(),
            like.inputs.config_name.clone(),
            like.version.clone(),
        )
        .with_pull_request(env.pull_request)
        .with_policy(EnvironmentPolicy::default());
        // The secrets of the level the deployment was made at, read from the host again: a
        // pull request's preview is stopped with its own secrets, not with production's.
        let level = like
            .trust
            .unwrap_or_else(|| crate::trust::level(&event, &self.policy));
        let (secrets, masked) = match self.direct_secrets(
            level,
            &like.inputs.config_name,
            &super::RunOptions::default(),
        ) {
            Ok(s) => s,
            Err(e) => {
                remove(checkout);
                return Err(e);
            }
        };
        let masker = Masker::new(masked.iter());
        let mut info = info;
        info.trust = Some(level);
        let cancel = Arc::new(cancel.unwrap_or_default());
        let mut ctx = StageContext::new(Arc::new(info), action_name(action));
        ctx.command = like.inputs.command.as_deref().map(Arc::from);
        ctx.env = like.inputs.env.clone();
        ctx.secrets = secrets;
        ctx.with = like.inputs.with.clone();
        ctx.environment = Some(Box::new(target.clone()));
        ctx.cancel = cancel.clone();

        let holder = format!("{} of {}", action_name(action), env.name);
        let no_wait_events = |_: WaitReason| {};
        let guard = self
            .environments
            .acquire(&env.name, &holder, &target, false, &cancel, &no_wait_events)
            .await
            .map_err(|r| match r {
                GateRefusal::Cancelled => fail("cancelled while waiting for its lock".to_owned()),
                GateRefusal::Refused(m) => fail(m),
            });
        let guard = match guard {
            Ok(g) => g,
            Err(e) => {
                remove(checkout);
                return Err(e);
            }
        };
        let record = NewDeployment {
            environment: env.name.clone(),
            action,
            backend: env.backend.clone(),
            version: like.version.clone(),
            sha: like.sha.clone(),
            run_id: None,
            stage: None,
            event: Some(event),
            triggered_by: Some(actor.to_owned()),
            inputs: DeploymentInputs {
                secrets: ctx.secrets.keys().cloned().collect(),
                ..like.inputs.clone()
            }
            .masked(&masker),
            rollback_of,
            repo: env.repo.clone(),
            pull_request: env.pull_request,
            trust: Some(level),
        };
        ctx.cancel = Arc::new(guard.revocation().token().clone());
        let (ledger, environments) = (self.ledger.clone(), self.environments.clone());
        let name = env.name.clone();
        let stop_if_dropped = CancellationToken::clone(&cancel).drop_guard();
        let locked = tokio::spawn(async move {
            let outcome = async {
                let id = ledger.begin_deployment(&record)?;
                let call = tokio::spawn(async move {
                    match action {
                        Action::Stop => deployer.stop(ctx).await,
                        _ => deployer.deploy(ctx).await,
                    }
                });
                let returned = match call.await {
                    Ok(returned) => returned,
                    Err(e) if e.is_panic() => {
                        Err(BackendError::Failed(DEPLOYER_PANICKED.to_owned()))
                    }
                    Err(_) => Err(BackendError::Cancelled),
                };
                let lost = guard.revocation().reason();
                let returned = match lost {
                    Some(reason) => Err(BackendError::Failed(reason.to_owned())),
                    None => returned,
                };
                let returned = crate::scheduler::masked(returned, &masker);
                let cancelled = cancel.is_cancelled() && lost.is_none();
                let _ = environments.finish(id, &returned, cancelled).await;
                ledger.deployment(id)?.ok_or_else(|| Error::Environment {
                    environment: name.clone(),
                    message: format!("deployment #{id} vanished from the ledger"),
                })
            }
            .await;
            environments.release(guard).await;
            remove(checkout);
            outcome
        });
        let outcome = locked
            .await
            .unwrap_or_else(|e| Err(fail(format!("the deployment's task failed: {e}"))));
        stop_if_dropped.disarm();
        outcome
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Stop => "stop",
        _ => "deploy",
    }
}

fn remove(dir: Option<PathBuf>) {
    if let Some(dir) = dir {
        let _ = std::fs::remove_dir_all(dir);
    }
}
