//! Environments: what deploy and stop stages pass through on their way to a backend.
//!
//! [`Environments`] is the [`DeploymentGate`] the engine gives every run. Before a deploy or stop
//! stage calls its backend it waits, in this order, for an approval (environments with
//! `approval: required`), for the environment's lock (one deployment per environment at a time,
//! across runs and across processes sharing the state dir), and, for deploys, for a rollback's
//! pin to be lifted; then the deployment is recorded in the ledger, and its result when the
//! backend returns. Every wait is visible in the run's events, and either waits or fails at once
//! as the environment's config says (`on_locked`, `on_pinned`).
//!
//! Locks are rows in the ledger with an owner and an expiry, renewed while the deployment runs:
//! a lock whose process died is free at once, one whose machine vanished when it expires.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::backend::{BackendError, Completion, EnvironmentTarget, Outcome, StageContext};
use crate::config::{Action, Approval, OnBusy};
use crate::ledger::{
    ApprovalStatus, DeploymentInputs, DeploymentResult, Ledger, LedgerError, NewDeployment,
};
use crate::scheduler::{DeploymentGate, GateRefusal, GateTicket, WaitReason};
use crate::secret::Masker;

/// The environments of one state dir, as the runs of an engine see them.
#[derive(Debug, Clone)]
pub struct Environments {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    ledger: Ledger,
    poll: Duration,
    lock_ttl: Duration,
    /// The locks of the deployments in progress, by deployment id.
    held: Mutex<HashMap<i64, LockGuard>>,
}

/// A held environment lock; released with [`Environments::release`].
#[derive(Debug)]
pub struct LockGuard {
    environment: String,
    holder: String,
    heartbeat: JoinHandle<()>,
}

impl Environments {
    /// The environments recorded in `ledger`; waits re-check every 100 ms, locks live 30 s
    /// unless renewed.
    pub fn new(ledger: Ledger) -> Self {
        Environments {
            inner: Arc::new(Inner {
                ledger,
                poll: Duration::from_millis(100),
                lock_ttl: Duration::from_secs(30),
                held: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.inner.ledger
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, GateRefusal> {
        let ledger = self.inner.ledger.clone();
        match tokio::task::spawn_blocking(move || f(&ledger)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(GateRefusal::Refused(e.to_string())),
            Err(e) => Err(GateRefusal::Refused(format!("the ledger task failed: {e}"))),
        }
    }

    /// Sleeps one poll interval; `Cancelled` when `cancel` fires first.
    async fn pause(&self, cancel: &CancellationToken) -> Result<(), GateRefusal> {
        tokio::select! {
            _ = tokio::time::sleep(self.inner.poll) => Ok(()),
            _ = cancel.cancelled() => Err(GateRefusal::Cancelled),
        }
    }

    /// Waits for the approval of `stage` of `run_id` (asking for it if no one has).
    async fn approved(
        &self,
        run_id: &str,
        stage: &str,
        environment: &str,
        cancel: &CancellationToken,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<(), GateRefusal> {
        let mut told = false;
        loop {
            let (r, s, e) = (run_id.to_owned(), stage.to_owned(), environment.to_owned());
            let status = self
                .blocking(move |l| l.request_approval(&r, &s, &e))
                .await?;
            match status {
                ApprovalStatus::Approved => return Ok(()),
                ApprovalStatus::Rejected => {
                    let (r, s) = (run_id.to_owned(), stage.to_owned());
                    let by = self
                        .blocking(move |l| l.approval(&r, &s))
                        .await?
                        .and_then(|a| a.decided_by)
                        .unwrap_or_else(|| "someone".to_owned());
                    return Err(GateRefusal::Refused(format!(
                        "the deployment to \"{environment}\" was rejected by {by}"
                    )));
                }
                ApprovalStatus::Pending => {
                    if !told {
                        told = true;
                        waiting(WaitReason::Approval {
                            environment: environment.to_owned(),
                        });
                    }
                    self.pause(cancel).await?;
                }
            }
        }
    }

    /// Takes `environment`'s lock for `holder`, waiting while someone else holds it (or failing,
    /// with `on_locked: fail`); with `respect_pin`, also waits while the environment is pinned.
    pub async fn acquire(
        &self,
        environment: &str,
        holder: &str,
        target: &EnvironmentTarget,
        respect_pin: bool,
        cancel: &CancellationToken,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<LockGuard, GateRefusal> {
        let ttl = self.inner.lock_ttl.as_secs_f64();
        let (mut told_lock, mut told_pin) = (false, false);
        loop {
            let (e, h) = (environment.to_owned(), holder.to_owned());
            let taken = self.blocking(move |l| l.try_lock(&e, &h, ttl)).await?;
            if let Some(other) = taken {
                if target.policy.on_locked == OnBusy::Fail {
                    return Err(GateRefusal::Refused(format!(
                        "environment \"{environment}\" is locked by {other} (on_locked: fail)"
                    )));
                }
                if !told_lock {
                    told_lock = true;
                    waiting(WaitReason::Lock {
                        environment: environment.to_owned(),
                        holder: other,
                    });
                }
                self.pause(cancel).await?;
                continue;
            }
            let guard = self.guard(environment, holder);
            if respect_pin {
                let e = environment.to_owned();
                let pinned = self
                    .blocking(move |l| l.environment(&e))
                    .await
                    .map(|r| r.and_then(|r| r.pinned_by));
                let pinned = match pinned {
                    Ok(p) => p,
                    Err(refusal) => {
                        self.release(guard).await;
                        return Err(refusal);
                    }
                };
                if let Some(by) = pinned {
                    self.release(guard).await;
                    if target.policy.on_pinned == OnBusy::Fail {
                        return Err(GateRefusal::Refused(format!(
                            "environment \"{environment}\" is pinned by a rollback ({by}); `gitops unpin {environment}` releases it"
                        )));
                    }
                    if !told_pin {
                        told_pin = true;
                        waiting(WaitReason::Pin {
                            environment: environment.to_owned(),
                        });
                    }
                    self.pause(cancel).await?;
                    continue;
                }
            }
            return Ok(guard);
        }
    }

    /// A guard for a lock just taken, renewing it until released.
    fn guard(&self, environment: &str, holder: &str) -> LockGuard {
        let ledger = self.inner.ledger.clone();
        let ttl = self.inner.lock_ttl;
        let (e, h) = (environment.to_owned(), holder.to_owned());
        let heartbeat = tokio::spawn(async move {
            loop {
                tokio::time::sleep(ttl / 3).await;
                let (l, e, h) = (ledger.clone(), e.clone(), h.clone());
                let renewed =
                    tokio::task::spawn_blocking(move || l.renew_lock(&e, &h, ttl.as_secs_f64()))
                        .await;
                if !matches!(renewed, Ok(Ok(true))) {
                    return;
                }
            }
        });
        LockGuard {
            environment: environment.to_owned(),
            holder: holder.to_owned(),
            heartbeat,
        }
    }

    /// Releases a lock.
    pub async fn release(&self, guard: LockGuard) {
        guard.heartbeat.abort();
        let _ = self
            .blocking(move |l| l.release_lock(&guard.environment, &guard.holder))
            .await;
    }

    /// Records the end of deployment `id` from what its backend returned.
    pub async fn finish(
        &self,
        id: i64,
        returned: &Result<Completion, BackendError>,
        cancelled: bool,
    ) -> Result<(), GateRefusal> {
        let (result, message, outputs) = match returned {
            _ if cancelled => (DeploymentResult::Cancelled, None, BTreeMap::new()),
            Ok(Completion {
                outcome: Outcome::Success,
                outputs,
            }) => (DeploymentResult::Success, None, outputs.clone()),
            Ok(Completion {
                outcome: Outcome::Failure { message, .. },
                outputs,
            }) => (
                DeploymentResult::Failure,
                Some(message.clone()),
                outputs.clone(),
            ),
            Err(BackendError::Cancelled) => (DeploymentResult::Cancelled, None, BTreeMap::new()),
            Err(e) => (
                DeploymentResult::Failure,
                Some(e.to_string()),
                BTreeMap::new(),
            ),
        };
        self.blocking(move |l| l.finish_deployment(id, result, message.as_deref(), &outputs))
            .await
    }
}

/// The record of a deployment a stage is about to make.
pub fn new_deployment(ctx: &StageContext, action: Action, backend: &str) -> Option<NewDeployment> {
    let env = ctx.environment.as_ref()?;
    let event = &ctx.run.event;
    Some(NewDeployment {
        environment: env.name.clone(),
        action,
        backend: backend.to_owned(),
        version: env.version.clone(),
        sha: event.sha.clone(),
        run_id: Some(ctx.run.id.clone()),
        stage: Some(ctx.stage.to_string()),
        event: Some(event.clone()),
        triggered_by: ctx.run.actor.clone(),
        inputs: DeploymentInputs {
            config_name: env.config_name.clone(),
            command: ctx.command.as_deref().map(str::to_owned),
            env: ctx.env.clone(),
            with: ctx.with.clone(),
            auto_stop_after_secs: env.policy.auto_stop_after.map(|d| d.as_secs_f64()),
            secrets: ctx.secrets.keys().cloned().collect(),
        }
        .masked(&Masker::new(ctx.secrets.values())),
        rollback_of: None,
        repo: event.repo.clone(),
        pull_request: env.pull_request,
        trust: ctx.run.trust,
    })
}

#[async_trait]
impl DeploymentGate for Environments {
    async fn enter(
        &self,
        ctx: &StageContext,
        action: Action,
        backend: &str,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<GateTicket, GateRefusal> {
        let Some(record) = new_deployment(ctx, action, backend) else {
            return Err(GateRefusal::Refused(format!(
                "stage \"{}\" deploys or stops no environment",
                ctx.stage
            )));
        };
        let Some(target) = &ctx.environment else {
            return Err(GateRefusal::Refused("no environment".to_owned()));
        };
        let cancel = ctx.cancel.as_ref();
        if action == Action::Deploy && target.policy.approval == Approval::Required {
            self.approved(&ctx.run.id, &ctx.stage, &target.name, cancel, waiting)
                .await?;
        }
        let holder = format!("run {} stage {}", ctx.run.id, ctx.stage);
        let guard = self
            .acquire(
                &target.name,
                &holder,
                target,
                action == Action::Deploy,
                cancel,
                waiting,
            )
            .await?;
        let id = match self.blocking(move |l| l.begin_deployment(&record)).await {
            Ok(id) => id,
            Err(refusal) => {
                self.release(guard).await;
                return Err(refusal);
            }
        };
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, guard);
        Ok(GateTicket::new(id))
    }

    async fn leave(
        &self,
        ticket: GateTicket,
        returned: &Result<Completion, BackendError>,
        cancelled: bool,
    ) {
        let _ = self.finish(ticket.deployment, returned, cancelled).await;
        let held = self
            .inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ticket.deployment);
        if let Some(guard) = held {
            self.release(guard).await;
        }
    }
}
