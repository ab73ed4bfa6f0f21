//! Environment locks: rows in the ledger with an owner and an expiry, renewed while their
//! deployment runs, and given back however it ends.

use std::time::Duration;

use tokio::task::JoinHandle;

use super::Environments;
use crate::backend::{Cancellation, EnvironmentTarget, ErrorChain};
use crate::config::OnBusy;
use crate::ledger::Ledger;
use crate::scheduler::{GateRefusal, Revocation, WaitReason};

/// A held environment lock, renewed until released with [`Environments::release`]; dropped
/// without that (its deployment panicked, or its future was dropped), it releases the lock from
/// a blocking task of the runtime.
#[derive(Debug)]
pub struct LockGuard {
    environment: String,
    holder: String,
    heartbeat: JoinHandle<()>,
    ledger: Ledger,
    released: bool,
    lost: Revocation,
}

impl LockGuard {
    /// Revoked when the lock could not be renewed, saying so: give its token to what works
    /// under the lock, and fail the work with its reason.
    pub fn revocation(&self) -> &Revocation {
        &self.lost
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        let ledger = self.ledger.clone();
        let (e, h) = (
            std::mem::take(&mut self.environment),
            std::mem::take(&mut self.holder),
        );
        let release = move || {
            let _ = ledger.release_lock(&e, &h);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => drop(runtime.spawn_blocking(release)),
            Err(_) => release(),
        }
    }
}

impl Environments {
    /// Takes `environment`'s lock for `holder`, waiting while someone else holds it (or failing,
    /// with `on_locked: fail`); with `respect_pin`, also waits while the environment is pinned.
    /// The guard's [`revocation`](LockGuard::revocation) is a child of `cancel`.
    pub async fn acquire(
        &self,
        environment: &str,
        holder: &str,
        target: &EnvironmentTarget,
        respect_pin: bool,
        cancel: &Cancellation,
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
            let guard = self.guard(environment, holder, cancel);
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

    /// A guard for a lock just taken, renewing it until released; when it cannot, the guard's
    /// revocation (a child of `cancel`) is revoked.
    fn guard(&self, environment: &str, holder: &str, cancel: &Cancellation) -> LockGuard {
        let ledger = self.inner.ledger.clone();
        let ttl = self.inner.lock_ttl;
        let lost = Revocation::child_of(cancel);
        let (e, h, revoke) = (environment.to_owned(), holder.to_owned(), lost.clone());
        let heartbeat = tokio::spawn(async move {
            let why = renew_until_lost(&ledger, &e, &h, ttl).await;
            revoke.revoke(format!("lost the lock on environment \"{e}\": {why}"));
        });
        LockGuard {
            environment: environment.to_owned(),
            holder: holder.to_owned(),
            heartbeat,
            ledger: self.inner.ledger.clone(),
            released: false,
            lost,
        }
    }

    /// Releases a lock.
    pub async fn release(&self, mut guard: LockGuard) {
        guard.heartbeat.abort();
        guard.released = true;
        let (e, h) = (guard.environment.clone(), guard.holder.clone());
        let _ = self.blocking(move |l| l.release_lock(&e, &h)).await;
    }
}

/// Renews `holder`'s lock on `environment` every third of `ttl` until it cannot; says why.
/// A renewal that fails (the database busy, say) is tried again while the lock still has time
/// left; one that finds the lock no longer ours is final.
async fn renew_until_lost(
    ledger: &Ledger,
    environment: &str,
    holder: &str,
    ttl: Duration,
) -> String {
    let mut renewed = tokio::time::Instant::now();
    let mut wait = ttl / 3;
    loop {
        tokio::time::sleep(wait).await;
        let (l, e, h) = (ledger.clone(), environment.to_owned(), holder.to_owned());
        let result =
            tokio::task::spawn_blocking(move || l.renew_lock(&e, &h, ttl.as_secs_f64())).await;
        let error = match result {
            Ok(Ok(true)) => {
                renewed = tokio::time::Instant::now();
                wait = ttl / 3;
                continue;
            }
            Ok(Ok(false)) => {
                return "it expired or was released, and is no longer held by this deployment"
                    .to_owned();
            }
            Ok(Err(e)) => ErrorChain(&e).to_string(),
            Err(e) => e.to_string(),
        };
        if renewed.elapsed() + ttl / 3 >= ttl {
            return format!("cannot renew it: {error}");
        }
        wait = ttl / 10;
    }
}
