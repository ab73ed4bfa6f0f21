//! The sender: drains the outbox into the forges, in order, retrying with backoff.
//!
//! Updates go out one at a time, oldest first. When a forge cannot take one now (down, 5xx, rate
//! limited), every later update for that forge waits as long as it does, so that they still
//! arrive in the order they were stored and a rate-limited forge is not pressed further.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Forge, ForgeUpdate, SendError};
use crate::ledger::{Ledger, LedgerError, PendingReport, now};

/// How the [`Sender`] paces itself.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SenderOptions {
    /// How often it looks at the outbox when nothing wakes it.
    pub poll: Duration,
    /// The wait after a first failure; it doubles with each failure (with jitter).
    pub backoff_base: Duration,
    /// The longest wait between two tries that the forge did not set.
    pub backoff_max: Duration,
    /// The longest wait a forge may ask for (`Retry-After`, a rate limit's reset).
    pub max_requested_wait: Duration,
    /// An update not delivered this long after it was stored is dropped.
    pub max_age: Duration,
    /// How many updates it takes from the outbox at a time.
    pub batch: usize,
}

impl Default for SenderOptions {
    fn default() -> Self {
        SenderOptions {
            poll: Duration::from_secs(5),
            backoff_base: Duration::from_secs(2),
            backoff_max: Duration::from_secs(15 * 60),
            max_requested_wait: Duration::from_secs(3600),
            max_age: Duration::from_secs(24 * 3600),
            batch: 20,
        }
    }
}

impl SenderOptions {
    /// Looks at the outbox this often when nothing wakes it.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// Backs off from `base` after a first failure, doubling up to `max`.
    pub fn with_backoff(mut self, base: Duration, max: Duration) -> Self {
        self.backoff_base = base;
        self.backoff_max = max;
        self
    }
}

/// Sends the outbox's updates to their forges: each forge's one at a time and oldest first, the
/// forges side by side; a forge that cannot take one now holds back its later ones as long.
#[derive(Clone)]
pub struct Sender {
    ledger: Ledger,
    forges: HashMap<String, Arc<dyn Forge>>,
    options: SenderOptions,
    wake: Arc<Notify>,
}

impl Sender {
    /// A sender of `ledger`'s outbox, with no forge yet.
    pub fn new(ledger: Ledger) -> Self {
        Sender {
            ledger,
            forges: HashMap::new(),
            options: SenderOptions::default(),
            wake: Arc::new(Notify::new()),
        }
    }

    /// Sends the updates stored for `forge`'s [name](Forge::name).
    pub fn with_forge(mut self, forge: Arc<dyn Forge>) -> Self {
        self.forges.insert(forge.name().to_owned(), forge);
        self
    }

    /// Paces itself so.
    pub fn with_options(mut self, options: SenderOptions) -> Self {
        self.options = options;
        self
    }

    /// Looks at the outbox as soon as `wake` is notified ([`Reporter::wake`](super::Reporter::wake)).
    pub fn with_wake(mut self, wake: Arc<Notify>) -> Self {
        self.wake = wake;
        self
    }

    /// Sends until `cancel` is cancelled. A ledger that cannot be read is logged and tried
    /// again at the next poll.
    pub async fn run(self, cancel: CancellationToken) {
        loop {
            let full = match self.send_due().await {
                Ok(taken) => taken >= self.options.batch,
                Err(e) => {
                    tracing::warn!(error = %crate::ErrorChain(&e), "cannot read the outbox");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = cancel.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(self.options.poll) => {}
            }
        }
    }

    /// One pass: sends the updates due now, each forge's in order, the forges side by side (a
    /// slow forge does not hold back the others). Returns how many it took from the outbox,
    /// unless a forge held some back (then fewer than a batch: the sender waits before its next
    /// pass instead of going round again at once).
    pub async fn send_due(&self) -> Result<usize, LedgerError> {
        let batch = self.options.batch;
        let due = self.ledger(move |l| l.due_reports(now(), batch)).await?;
        let taken = due.len();
        let mut by_forge: Vec<Vec<PendingReport>> = Vec::new();
        for report in due {
            match by_forge.iter_mut().find(|r| r[0].forge == report.forge) {
                Some(reports) => reports.push(report),
                None => by_forge.push(vec![report]),
            }
        }
        let mut forges = tokio::task::JoinSet::new();
        for reports in by_forge {
            let sender = self.clone();
            forges.spawn(async move { sender.send_in_order(reports).await });
        }
        let mut held = false;
        while let Some(sent) = forges.join_next().await {
            match sent {
                Ok(Ok(held_back)) => held |= held_back,
                Ok(Err(e)) => return Err(e),
                // A forge client that panicked: its updates are claimed, and come back later.
                Err(_) => held = true,
            }
        }
        Ok(if held {
            taken.min(batch.saturating_sub(1))
        } else {
            taken
        })
    }

    /// Sends one forge's updates in order; true when the forge held some back.
    async fn send_in_order(&self, reports: Vec<PendingReport>) -> Result<bool, LedgerError> {
        let mut held: Option<f64> = None;
        for report in reports {
            if let Some(until) = held {
                let id = report.id;
                self.ledger(move |l| l.report_deferred(id, until)).await?;
                continue;
            }
            held = self.send(&report).await?;
        }
        Ok(held.is_some())
    }

    /// Sends one update; `Some(time)` when its forge cannot take more before that time.
    async fn send(&self, report: &PendingReport) -> Result<Option<f64>, LedgerError> {
        let id = report.id;
        let Some(forge) = self.forges.get(&report.forge) else {
            // Kept for a server that has that forge, as long as any update is kept.
            if now() - report.created_at > self.options.max_age.as_secs_f64() {
                self.ledger(move |l| l.report_dropped(id)).await?;
                return Ok(None);
            }
            let retry_at = now() + self.options.backoff_max.as_secs_f64();
            let error = format!("no forge named \"{}\" is configured", report.forge);
            self.ledger(move |l| l.report_failed(id, retry_at, &error))
                .await?;
            return Ok(None);
        };
        let mut update: ForgeUpdate = match serde_json::from_value(report.payload.clone()) {
            Ok(update) => update,
            Err(e) => {
                tracing::warn!(target = %report.target, error = %e, "unreadable forge update dropped");
                self.ledger(move |l| l.report_dropped(id)).await?;
                return Ok(None);
            }
        };
        if let ForgeUpdate::Comment(comment) = &mut update {
            // The comment as its sections are now: two runs that stored theirs at once each
            // stored a body that may lack the other's.
            let (forge, repo, number) =
                (report.forge.clone(), comment.repo.clone(), comment.number);
            let sections = self
                .ledger(move |l| l.comment_sections(&forge, &repo, number))
                .await?;
            if !sections.is_empty() {
                comment.body = super::comment::compose(&sections);
            }
        }
        let refs = super::ForgeRefs::new(self.ledger.clone(), &report.forge);
        // Within its claim on the update (a comment may take several requests).
        let deadline = Duration::from_secs(crate::ledger::REPORT_CLAIM_SECS as u64 / 2);
        let sent = match tokio::time::timeout(deadline, forge.send(&update, &refs)).await {
            Ok(sent) => sent,
            Err(_) => Err(SendError::Retry {
                message: format!("the forge took over {deadline:?} for one update"),
                after: None,
            }),
        };
        let (message, after) = match sent {
            Ok(()) => {
                self.ledger(move |l| l.report_sent(id)).await?;
                return Ok(None);
            }
            Err(SendError::Final { status, message }) => {
                tracing::warn!(
                    forge = %report.forge, target = %report.target, status, message = %message,
                    "the forge refused an update; it is dropped"
                );
                self.ledger(move |l| l.report_dropped(id)).await?;
                return Ok(None);
            }
            Err(SendError::Retry { message, after }) => (message, after),
        };
        if now() - report.created_at > self.options.max_age.as_secs_f64() {
            tracing::warn!(
                forge = %report.forge, target = %report.target, attempts = report.attempts + 1,
                error = %message, "gave up on an update the forge did not take in time"
            );
            self.ledger(move |l| l.report_dropped(id)).await?;
            return Ok(None);
        }
        // A wait the forge asks for, but never less than the first backoff (`Retry-After: 0`,
        // a rate limit's reset already passed by our clock).
        let wait = after
            .map(|after| {
                after
                    .min(self.options.max_requested_wait)
                    .max(self.options.backoff_base)
            })
            .unwrap_or_else(|| self.backoff(report.attempts));
        if report.attempts == 0 {
            tracing::info!(
                forge = %report.forge, target = %report.target, error = %message,
                retry_in_secs = wait.as_secs_f64(), "the forge did not take an update; will retry"
            );
        }
        let retry_at = now() + wait.as_secs_f64();
        self.ledger(move |l| l.report_failed(id, retry_at, &message))
            .await?;
        Ok(Some(retry_at))
    }

    /// Runs `f` on the ledger off the async threads (SQLite blocks).
    async fn ledger<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Ledger) -> Result<T, LedgerError> + Send + 'static,
    ) -> Result<T, LedgerError> {
        let ledger = self.ledger.clone();
        let path = ledger.path().to_path_buf();
        tokio::task::spawn_blocking(move || f(&ledger))
            .await
            .unwrap_or_else(|e| {
                Err(LedgerError::Database {
                    path,
                    source: e.into(),
                })
            })
    }

    /// The wait after `failures` failures: exponential, capped, with "equal jitter" (half fixed,
    /// half random) so that senders do not retry in step.
    fn backoff(&self, failures: u32) -> Duration {
        let max = self.options.backoff_max;
        let full = self
            .options
            .backoff_base
            .saturating_mul(1u32 << failures.min(20))
            .min(max);
        full / 2 + full.mul_f64(fastrand::f64() / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_within_its_jitter_and_stops_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let sender = Sender::new(Ledger::open(dir.path()).unwrap());
        for failures in 0..4 {
            let full = Duration::from_secs(2 << failures);
            let wait = sender.backoff(failures);
            assert!(wait >= full / 2 && wait <= full, "{failures}: {wait:?}");
        }
        assert!(sender.backoff(40) <= Duration::from_secs(15 * 60));
        assert!(sender.backoff(40) >= Duration::from_secs(15 * 30));
    }
}
