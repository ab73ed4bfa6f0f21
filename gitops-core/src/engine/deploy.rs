//! Deploying or stopping an environment outside a pipeline (a rollback, a stop): with the
//! inputs recorded for an earlier deployment, under the environment's lock, recorded in the
//! ledger like any deployment.

use std::path::PathBuf;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::{Engine, RunOptions};
use crate::backend::{
    BackendError, Cancellation, Deployer, EnvironmentPolicy, EnvironmentTarget, RunInfo,
    StageContext,
};
use crate::config::Action;
use crate::environment::{Environments, LockGuard};
use crate::ledger::{
    DeploymentInputs, DeploymentRecord, EnvironmentRecord, Ledger, NewDeployment, new_run_id,
};
use crate::repo::Repository;
use crate::scheduler::{DEPLOYER_PANICKED, GateRefusal, WaitReason, masked};
use crate::secret::Masker;
use crate::{Error, Result};

impl Engine {
    /// Deploys or stops `env` directly (not from a pipeline) with the inputs recorded for
    /// deployment `recorded`: under the environment's lock, recorded in the ledger like any
    /// deployment.
    ///
    /// Once the lock is taken, the rest runs in a task of its own, so that however it ends the
    /// deployment is recorded and the lock released: a panicking deployer fails the deployment
    /// (its call is a task too), a lost lock cancels and fails it, and dropping this future
    /// cancels it (the task records that and releases the lock once the deployer has stopped).
    pub(super) async fn deploy_or_stop(
        &self,
        env: &EnvironmentRecord,
        action: Action,
        recorded: &DeploymentRecord,
        rollback_of: Option<i64>,
        actor: &str,
        cancel: Option<CancellationToken>,
    ) -> Result<DeploymentRecord> {
        let fail = |message: String| failed(env, message);
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
        let event = recorded
            .event
            .clone()
            .ok_or_else(|| fail(format!("deployment #{} has no recorded event", recorded.id)))?;
        let (workdir, checkout) = self.workdir_of(recorded, action)?;
        let run_id = format!("{}-{}", action_name(action), new_run_id());
        let info = RunInfo::new(run_id, "gitops", event, workdir).with_actor(actor);
        let cancel = Cancellation::from_token(cancel.unwrap_or_default());
        let (ctx, target, masker) = self.context_of(env, action, recorded, info, &cancel)?;
        let holder = format!("{} of {}", action_name(action), env.name);
        let no_wait_events = |_: WaitReason| {};
        let guard = self
            .environments
            .acquire(&env.name, &holder, &target, false, &cancel, &no_wait_events)
            .await
            .map_err(|r| match r {
                GateRefusal::Cancelled => fail("cancelled while waiting for its lock".to_owned()),
                GateRefusal::Refused(m) => fail(m),
            })?;
        let record = NewDeployment {
            environment: env.name.clone(),
            action,
            backend: env.backend.clone(),
            version: recorded.version.clone(),
            sha: recorded.sha.clone(),
            run_id: None,
            stage: None,
            event: Some(ctx.run.event.clone()),
            triggered_by: Some(actor.to_owned()),
            inputs: DeploymentInputs {
                secrets: ctx.secrets.keys().cloned().collect(),
                ..recorded.inputs.clone()
            }
            .masked(&masker),
            rollback_of,
            repo: env.repo.clone(),
            pull_request: env.pull_request,
            trust: ctx.run.trust,
        };
        let locked = Locked {
            environment: env.name.clone(),
            deployer,
            action,
            ctx,
            record,
            masker,
            checkout,
            cancel: cancel.clone(),
        };
        let stop_if_dropped = cancel.token().clone().drop_guard();
        let task = tokio::spawn(locked.run(guard, self.ledger.clone(), self.environments.clone()));
        let outcome = task
            .await
            .unwrap_or_else(|e| Err(fail(format!("the deployment's task failed: {e}"))));
        stop_if_dropped.disarm();
        outcome
    }

    /// Where a deploy or stop of `recorded`'s inputs runs: a checkout of the commit it deployed,
    /// as its run had (a deploy needs the files, and a stop may need them too: a terraform
    /// destroy reads the configuration), else the run's own directory, else the state dir.
    fn workdir_of(
        &self,
        recorded: &DeploymentRecord,
        action: Action,
    ) -> Result<(PathBuf, Checkout)> {
        let run = recorded
            .run_id
            .as_deref()
            .map(|id| self.ledger.run(id))
            .transpose()?;
        let Some((repo, commit)) = run
            .as_ref()
            .and_then(|r| Some((r.repo.clone()?, r.commit.clone()?)))
        else {
            let dir = run.map_or_else(|| self.state_dir.clone(), |r| r.workdir);
            return Ok((dir, Checkout(None)));
        };
        let dir = self
            .state_dir
            .join("checkouts")
            .join(format!("deployment-{}", new_run_id()));
        match Repository::open(&repo).and_then(|r| r.checkout(&commit, &dir)) {
            Ok(_) => Ok((dir.clone(), Checkout(Some(dir)))),
            Err(e) if action == Action::Deploy => Err(e.into()),
            // A stop goes ahead without the files (most deployers need none).
            Err(_) => {
                let _ = std::fs::remove_dir_all(&dir);
                Ok((self.state_dir.clone(), Checkout(None)))
            }
        }
    }

    /// The context a deploy or stop of `recorded`'s inputs, run as `info`, calls its deployer
    /// with, the environment it targets, and what masks its secrets: those of the trust level
    /// the deployment was made at, read from the host again (a pull request's preview is
    /// stopped with its own secrets, not with production's).
    fn context_of(
        &self,
        env: &EnvironmentRecord,
        action: Action,
        recorded: &DeploymentRecord,
        mut info: RunInfo,
        cancel: &Cancellation,
    ) -> Result<(StageContext, EnvironmentTarget, Masker)> {
        let level = recorded
            .trust
            .unwrap_or_else(|| crate::trust::level(&info.event, &self.policy));
        let (secrets, masked) = self.secrets_for_environment(
            level,
            &recorded.inputs.config_name,
            &RunOptions::default(),
        )?;
        info.trust = Some(level);
        let target = EnvironmentTarget::new(
            env.name.clone(),
            recorded.inputs.config_name.clone(),
            recorded.version.clone(),
        )
        .with_pull_request(env.pull_request)
        .with_policy(EnvironmentPolicy::default());
        let mut ctx = StageContext::new(Arc::new(info), action_name(action));
        ctx.command = recorded.inputs.command.as_deref().map(Arc::from);
        ctx.env = recorded.inputs.env.clone();
        ctx.secrets = secrets;
        ctx.with = recorded.inputs.with.clone();
        ctx.environment = Some(Box::new(target.clone()));
        ctx.cancel = cancel.clone();
        Ok((ctx, target, Masker::new(masked.iter())))
    }
}

/// A deployment outside a pipeline whose environment's lock is taken.
struct Locked {
    environment: String,
    deployer: Arc<dyn Deployer>,
    action: Action,
    ctx: StageContext,
    record: NewDeployment,
    masker: Masker,
    checkout: Checkout,
    cancel: Cancellation,
}

impl Locked {
    /// Records the deployment, calls the deployer (in a task of its own, so that a panic fails
    /// the deployment), records how it ended, and releases `guard`; the lock's loss fails it.
    async fn run(
        self,
        guard: LockGuard,
        ledger: Ledger,
        environments: Environments,
    ) -> Result<DeploymentRecord> {
        let Locked {
            environment,
            deployer,
            action,
            mut ctx,
            record,
            masker,
            checkout,
            cancel,
        } = self;
        ctx.cancel = guard.revocation().cancellation().clone();
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
                Err(e) if e.is_panic() => Err(BackendError::failed(DEPLOYER_PANICKED.to_owned())),
                Err(_) => Err(BackendError::Cancelled),
            };
            let lost = guard.revocation().reason();
            let returned = match lost {
                Some(reason) => Err(BackendError::failed(reason.to_owned())),
                None => returned,
            };
            let returned = masked(returned, &masker);
            let cancelled = cancel.is_cancelled() && lost.is_none();
            let _ = environments.finish(id, &returned, cancelled).await;
            ledger.deployment(id)?.ok_or_else(|| Error::Environment {
                environment: environment.clone(),
                message: format!("deployment #{id} vanished from the ledger"),
            })
        }
        .await;
        environments.release(guard).await;
        drop(checkout);
        outcome
    }
}

/// A checkout made for a deployment outside a pipeline, removed when dropped.
struct Checkout(Option<PathBuf>);

impl Drop for Checkout {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn failed(env: &EnvironmentRecord, message: String) -> Error {
    Error::Environment {
        environment: env.name.clone(),
        message,
    }
}

fn action_name(action: Action) -> &'static str {
    match action {
        Action::Stop => "stop",
        _ => "deploy",
    }
}
