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
//! a lock whose process died is free at once, one whose machine vanished when it expires. A lock
//! is given back however its deployment ends (its [`LockGuard`] releases it when dropped, and the
//! scheduler leaves the gate even when a backend panics); a deployment whose lock cannot be
//! renewed is cancelled and recorded as failed rather than going on unlocked.
//!
//! [`DeploymentGate`]: crate::scheduler::DeploymentGate

mod gate;
mod lock;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use lock::LockGuard;

use crate::backend::{BackendError, Cancellation, Completion, ErrorChain, Outcome, StageContext};
use crate::config::Action;
use crate::ledger::{DeploymentInputs, DeploymentResult, Ledger, LedgerError, NewDeployment};
use crate::scheduler::GateRefusal;
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

impl Environments {
    /// The environments recorded in `ledger`; waits re-check every 100 ms, locks live 30 s
    /// unless renewed.
    pub fn new(ledger: Ledger) -> Self {
        Self::with_timing(ledger, Duration::from_millis(100), Duration::from_secs(30))
    }

    /// With other timings, for tests: waits re-check every `poll`, locks live `lock_ttl`.
    #[doc(hidden)]
    pub fn with_timing(ledger: Ledger, poll: Duration, lock_ttl: Duration) -> Self {
        Environments {
            inner: Arc::new(Inner {
                ledger,
                poll,
                lock_ttl,
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
            Ok(Err(e)) => Err(GateRefusal::Refused(ErrorChain(&e).to_string())),
            Err(e) => Err(GateRefusal::Refused(format!("the ledger task failed: {e}"))),
        }
    }

    /// Sleeps one poll interval; `Cancelled` when `cancel` fires first.
    async fn pause(&self, cancel: &Cancellation) -> Result<(), GateRefusal> {
        tokio::select! {
            _ = tokio::time::sleep(self.inner.poll) => Ok(()),
            _ = cancel.cancelled() => Err(GateRefusal::Cancelled),
        }
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
                Some(ErrorChain(e).to_string()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::{MemoryBackend, Script};
    use crate::backend::{BackendRegistry, EnvironmentTarget, RunInfo};
    use crate::config::{Config, LoadOptions};
    use crate::ledger::DeploymentRecord;
    use crate::plan::{Changes, Planner};
    use crate::scheduler::{RunSpec, Scheduler, StageResult};

    const HOLDER: &str = "run r stage deploy";

    fn push() -> crate::event::GitEvent {
        serde_json::from_str(
            r#"{"kind":"push","repo":"o/r","sha":"abc","ref":"refs/heads/main","branch":"main",
            "before":null,"after":"abc","created":true,"deleted":false,"forced":false}"#,
        )
        .unwrap()
    }

    fn last_deployment(ledger: &Ledger) -> Option<DeploymentRecord> {
        ledger
            .history(Some("staging"), 1)
            .unwrap()
            .into_iter()
            .next()
    }

    async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(5), "{what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// A deploy of 30 s under a lock that lives 300 ms: when someone else takes the lock, the
    /// heartbeat's next renewal fails and the deployment stops at once, failed and saying why.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_deployment_that_loses_its_lock_is_cancelled_and_recorded_as_failed() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(tmp.path()).unwrap();
        let envs = Environments::with_timing(
            ledger.clone(),
            Duration::from_millis(20),
            Duration::from_millis(300),
        );
        let yaml = "version: 1\nenvironments:\n  staging: { backend: mem }\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      deploy: { deploy: staging }\n";
        let config =
            Config::parse_with("f", yaml, &LoadOptions::default().with_backend("mem")).unwrap();
        let plan = Planner::new()
            .plan(&push(), &config, &Changes::Unknown)
            .unwrap();
        let slow =
            MemoryBackend::new().with_script("deploy", Script::ok().delay(Duration::from_secs(30)));
        let registry = BackendRegistry::new().with_deployer("mem", Arc::new(slow));
        let spec = RunSpec::new(RunInfo::new("r", "ci", push(), ".")).with_gate(Arc::new(envs));
        let run = Scheduler::new(registry).run(Arc::new(plan.pipelines[0].clone()), spec);
        let started = std::time::Instant::now();
        let report = tokio::spawn(run.execute());

        eventually("the deployment starts", || {
            last_deployment(&ledger).is_some_and(|d| d.result == DeploymentResult::Running)
        })
        .await;
        // Lived through a few renewals: the heartbeat keeps a lock it holds.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(
            ledger
                .try_lock("staging", "probe", 60.0)
                .unwrap()
                .as_deref(),
            Some(HOLDER)
        );
        ledger.release_lock("staging", HOLDER).unwrap();
        assert_eq!(ledger.try_lock("staging", "thief", 60.0).unwrap(), None);

        let report = tokio::time::timeout(Duration::from_secs(5), report)
            .await
            .expect("the deployment stopped when its lock was lost")
            .unwrap();
        assert!(started.elapsed() < Duration::from_secs(10));
        let expected = "lost the lock on environment \"staging\": it expired or was released, \
                        and is no longer held by this deployment";
        assert_eq!(
            report.stage("deploy").unwrap().result,
            StageResult::Failure {
                message: expected.to_owned(),
                exit_code: None
            }
        );
        let d = last_deployment(&ledger).unwrap();
        assert_eq!(d.result, DeploymentResult::Failure);
        assert_eq!(d.message.as_deref(), Some(expected));
        // The new holder's lock is left alone.
        assert_eq!(
            ledger
                .try_lock("staging", "probe", 60.0)
                .unwrap()
                .as_deref(),
            Some("thief")
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lock_guard_dropped_without_release_releases_the_lock() {
        let tmp = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(tmp.path()).unwrap();
        let envs = Environments::new(ledger.clone());
        let target = EnvironmentTarget::new("staging", "staging", None);
        let cancel = Cancellation::new();
        let guard = envs
            .acquire("staging", HOLDER, &target, false, &cancel, &|_| {})
            .await
            .unwrap();
        assert_eq!(
            ledger
                .try_lock("staging", "probe", 60.0)
                .unwrap()
                .as_deref(),
            Some(HOLDER)
        );
        drop(guard);
        eventually("the dropped guard releases the lock", || {
            ledger.try_lock("staging", "next", 60.0).unwrap().is_none()
        })
        .await;
    }
}
