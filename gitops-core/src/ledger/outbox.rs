//! The outbox: updates for a forge (commit statuses, ...) committed by a run and sent later by a
//! background sender, so that a forge outage never slows a run and nothing is lost across a
//! restart.
//!
//! Each update has a target (`status:{repo}:{sha}:{context}`) on which only the last state
//! matters. Ids grow monotonically, so they order the updates of a target: storing a newer one
//! deletes the older ones not being sent, and marks the one being sent (if any) superseded, so
//! that a failed send of it is not retried.
//!
//! A forge gets its updates in the order they were stored: one is not handed out while an older
//! one of the same forge is being sent or waits for its retry (the failures worth a retry, an
//! outage or a rate limit, are the forge's, not the update's).

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{Ledger, LedgerError, now};

/// How long an update handed out by [`Ledger::due_reports`] stays claimed by its sender: past
/// it (the sender crashed), it is handed out again.
pub const REPORT_CLAIM_SECS: f64 = 120.0;

/// An update to store in the outbox.
#[derive(Debug, Clone, Copy)]
pub struct NewReport<'a> {
    /// The forge it goes to (`github`, ...).
    pub forge: &'a str,
    /// What it updates; the last update stored for a target wins.
    pub target: &'a str,
    /// The update, as the forge's sender reads it.
    pub payload: &'a serde_json::Value,
}

/// An update waiting in the outbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct PendingReport {
    /// Its id: larger for a later update.
    pub id: u64,
    /// The forge it goes to.
    pub forge: String,
    /// What it updates.
    pub target: String,
    /// The update.
    pub payload: serde_json::Value,
    /// Sends that failed so far.
    pub attempts: u32,
    /// Unix time it was stored.
    pub created_at: f64,
    /// Why the last send failed.
    pub last_error: Option<String>,
}

impl Ledger {
    /// Stores an update for the forge, replacing the updates of the same target that wait. Its
    /// id is returned.
    pub fn enqueue_report(&self, report: NewReport<'_>) -> Result<u64, LedgerError> {
        let payload = report.payload.to_string();
        let now = super::now();
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM outbox WHERE forge = ?1 AND target = ?2
                 AND (claimed_until IS NULL OR claimed_until < ?3)",
                params![report.forge, report.target, now],
            )?;
            tx.execute(
                "UPDATE outbox SET superseded = 1 WHERE forge = ?1 AND target = ?2",
                params![report.forge, report.target],
            )?;
            tx.execute(
                "INSERT INTO outbox (forge, target, payload, next_attempt_at, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?4)",
                params![report.forge, report.target, payload, now],
            )?;
            let id = tx.last_insert_rowid() as u64;
            tx.commit()?;
            Ok(id)
        })
    }

    /// Up to `limit` updates due at `now` (Unix time), oldest first, claimed for
    /// [`REPORT_CLAIM_SECS`]: each must then be passed to [`report_sent`](Self::report_sent),
    /// [`report_failed`](Self::report_failed) or [`report_dropped`](Self::report_dropped). An
    /// update waits while an older one of its forge is being sent or waits for its retry.
    pub fn due_reports(&self, now: f64, limit: usize) -> Result<Vec<PendingReport>, LedgerError> {
        let rows = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            // Superseded updates whose sender died are of no more use.
            tx.execute(
                "DELETE FROM outbox WHERE superseded = 1 AND claimed_until < ?1",
                [now],
            )?;
            let rows = {
                let mut stmt = tx.prepare(
                    "SELECT id, forge, target, payload, attempts, created_at, last_error
                     FROM outbox o
                     WHERE next_attempt_at <= ?1 AND superseded = 0
                     AND (claimed_until IS NULL OR claimed_until < ?1)
                     AND NOT EXISTS (SELECT 1 FROM outbox b WHERE b.forge = o.forge
                         AND b.id < o.id AND (b.claimed_until >= ?1
                             OR (b.superseded = 0 AND b.next_attempt_at > ?1)))
                     ORDER BY id LIMIT ?2",
                )?;
                stmt.query_map(params![now, limit as i64], |r| {
                    Ok((
                        r.get::<_, u64>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                        r.get::<_, u32>(4)?,
                        r.get::<_, f64>(5)?,
                        r.get::<_, Option<String>>(6)?,
                    ))
                })?
                .collect::<rusqlite::Result<Vec<_>>>()?
            };
            for row in &rows {
                tx.execute(
                    "UPDATE outbox SET claimed_until = ?1 WHERE id = ?2",
                    params![now + REPORT_CLAIM_SECS, row.0],
                )?;
            }
            tx.commit()?;
            Ok(rows)
        })?;
        rows.into_iter()
            .map(
                |(id, forge, target, payload, attempts, created_at, last_error)| {
                    let payload =
                        serde_json::from_str(&payload).map_err(|e| LedgerError::Corrupt {
                            run: format!("outbox update {id}"),
                            message: e.to_string(),
                        })?;
                    Ok(PendingReport {
                        id,
                        forge,
                        target,
                        payload,
                        attempts,
                        created_at,
                        last_error,
                    })
                },
            )
            .collect()
    }

    /// The forge accepted update `id`: it leaves the outbox.
    pub fn report_sent(&self, id: u64) -> Result<(), LedgerError> {
        self.delete_report(id)
    }

    /// Sending update `id` failed for now: it is tried again at `retry_at` (Unix time), unless a
    /// newer update of its target was stored meanwhile.
    pub fn report_failed(&self, id: u64, retry_at: f64, error: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute("DELETE FROM outbox WHERE id = ?1 AND superseded = 1", [id])?;
            c.execute(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2,
                 claimed_until = NULL, last_error = ?3 WHERE id = ?1",
                params![id, retry_at, error],
            )
            .map(|_| ())
        })
    }

    /// Update `id` was not tried (its forge is held back, by the failure of an older update):
    /// it is handed out again at `until` (Unix time), its attempts unchanged.
    pub fn report_deferred(&self, id: u64, until: f64) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE outbox SET next_attempt_at = ?2, claimed_until = NULL WHERE id = ?1",
                params![id, until],
            )
            .map(|_| ())
        })
    }

    /// The forge refused update `id` for good (the sender logs why): it leaves the outbox.
    pub fn report_dropped(&self, id: u64) -> Result<(), LedgerError> {
        self.delete_report(id)
    }

    /// How many updates the outbox holds (waiting or being sent).
    pub fn outbox_len(&self) -> Result<u64, LedgerError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
    }

    fn delete_report(&self, id: u64) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute("DELETE FROM outbox WHERE id = ?1", [id])
                .map(|_| ())
        })
    }
}

impl Ledger {
    /// What `forge` calls the thing gitops knows as `key` (a deployment's id on the forge, a
    /// comment's id), if it was recorded.
    pub fn forge_ref(&self, forge: &str, key: &str) -> Result<Option<String>, LedgerError> {
        self.with(|c| {
            c.prepare_cached("SELECT remote FROM forge_refs WHERE forge = ?1 AND key = ?2")?
                .query_row(params![forge, key], |r| r.get(0))
                .optional()
        })
    }

    /// Records what `forge` calls `key` (replacing what was recorded).
    pub fn set_forge_ref(&self, forge: &str, key: &str, remote: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO forge_refs (forge, key, remote, updated_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (forge, key) DO UPDATE SET remote = ?3, updated_at = ?4",
            )?
            .execute(params![forge, key, remote, now()])
            .map(drop)
        })
    }

    /// The forges that know deployment `id` (that were sent one of its updates), with the
    /// repository it was reported in: `(forge, repo)`.
    pub fn forges_of_deployment(&self, id: i64) -> Result<Vec<(String, String)>, LedgerError> {
        let suffix = format!(":{id}");
        let rows: Vec<(String, String)> = self.with(|c| {
            c.prepare_cached(
                "SELECT forge, key FROM forge_refs WHERE key LIKE 'deployment:%' AND key LIKE ?1 ESCAPE '\\'",
            )?
            .query_map([format!("%{suffix}")], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })?;
        Ok(rows
            .into_iter()
            .filter_map(|(forge, key)| {
                let repo = key.strip_prefix("deployment:")?.strip_suffix(&suffix)?;
                Some((forge, repo.to_owned()))
            })
            .collect())
    }

    /// The sections of pull request `number`'s comment, by pipeline name.
    pub fn comment_sections(
        &self,
        forge: &str,
        repo: &str,
        number: u64,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        self.with(|c| {
            c.prepare_cached(
                "SELECT pipeline, body FROM comment_sections
                 WHERE forge = ?1 AND repo = ?2 AND number = ?3 ORDER BY pipeline",
            )?
            .query_map(params![forge, repo, number], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect()
        })
    }

    /// Stores `pipeline`'s section of pull request `number`'s comment, made by a run that
    /// started at `run_started` (Unix time): a section of a run that started later is kept. Returns
    /// every section of that comment, by pipeline name.
    pub fn set_comment_section(
        &self,
        forge: &str,
        repo: &str,
        number: u64,
        pipeline: &str,
        body: &str,
        run_started: f64,
    ) -> Result<Vec<(String, String)>, LedgerError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.prepare_cached(
                "INSERT INTO comment_sections (forge, repo, number, pipeline, body, run_started, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (forge, repo, number, pipeline) DO UPDATE SET body = ?5, run_started = ?6, updated_at = ?7
                 WHERE run_started <= ?6",
            )?
            .execute(params![forge, repo, number, pipeline, body, run_started, now()])?;
            let sections = tx
                .prepare_cached(
                    "SELECT pipeline, body FROM comment_sections
                     WHERE forge = ?1 AND repo = ?2 AND number = ?3 ORDER BY pipeline",
                )?
                .query_map(params![forge, repo, number], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<rusqlite::Result<Vec<_>>>()?;
            tx.commit()?;
            Ok(sections)
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ledger::now;

    fn ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        (dir, ledger)
    }

    fn enqueue(ledger: &Ledger, target: &str, state: &str) -> u64 {
        let payload = json!({ "state": state });
        let report = NewReport {
            forge: "github",
            target,
            payload: &payload,
        };
        ledger.enqueue_report(report).unwrap()
    }

    fn states(reports: &[PendingReport]) -> Vec<&str> {
        reports
            .iter()
            .map(|r| r.payload["state"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn due_updates_come_oldest_first_and_are_claimed() {
        let (_dir, ledger) = ledger();
        let a = enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        let b = enqueue(&ledger, "status:o/r:1:gitops/b", "pending");
        assert!(b > a);
        let due = ledger.due_reports(now(), 10).unwrap();
        assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [a, b]);
        assert_eq!(due[0].forge, "github");
        assert_eq!(due[0].target, "status:o/r:1:gitops/a");
        assert!(ledger.due_reports(now(), 10).unwrap().is_empty());
        // A sender that died: its claim runs out.
        let later = now() + REPORT_CLAIM_SECS + 1.0;
        assert_eq!(ledger.due_reports(later, 1).unwrap().len(), 1);
    }

    #[test]
    fn a_newer_update_replaces_the_waiting_one_of_its_target() {
        let (_dir, ledger) = ledger();
        enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        enqueue(&ledger, "status:o/r:1:gitops/b", "pending");
        enqueue(&ledger, "status:o/r:1:gitops/a", "success");
        let due = ledger.due_reports(now(), 10).unwrap();
        assert_eq!(states(&due), ["pending", "success"]);
        assert_eq!(due[0].target, "status:o/r:1:gitops/b");
        assert_eq!(ledger.outbox_len().unwrap(), 2);
    }

    #[test]
    fn a_late_failure_of_a_superseded_update_is_not_retried() {
        let (_dir, ledger) = ledger();
        let target = "status:o/r:1:gitops/a";
        let pending = enqueue(&ledger, target, "pending");
        assert_eq!(ledger.due_reports(now(), 10).unwrap().len(), 1);
        // While `pending` is being sent, the run ends.
        let success = enqueue(&ledger, target, "success");
        // Not handed out before the older send ends: the forge must see them in order.
        assert!(ledger.due_reports(now(), 10).unwrap().is_empty());
        ledger.report_failed(pending, now(), "502").unwrap();
        let due = ledger.due_reports(now() + 1.0, 10).unwrap();
        assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [success]);
        ledger.report_sent(success).unwrap();
        assert_eq!(ledger.outbox_len().unwrap(), 0);
    }

    #[test]
    fn later_updates_of_a_forge_wait_behind_one_waiting_for_its_retry() {
        let (_dir, ledger) = ledger();
        let first = enqueue(&ledger, "status:o/r:1:gitops/a", "success");
        ledger.due_reports(now(), 10).unwrap();
        let retry_at = now() + 30.0;
        ledger
            .report_failed(first, retry_at, "forge answered 502")
            .unwrap();
        let second = enqueue(&ledger, "status:o/r:2:gitops/a", "success");
        let other_forge = NewReport {
            forge: "gitlab",
            target: "status:o/r:2:gitops/a",
            payload: &json!({ "state": "success" }),
        };
        let gitlab = ledger.enqueue_report(other_forge).unwrap();
        let due = ledger.due_reports(now(), 10).unwrap();
        assert_eq!(due.iter().map(|r| r.id).collect::<Vec<_>>(), [gitlab]);
        let due = ledger.due_reports(retry_at, 10).unwrap();
        assert_eq!(
            due.iter().map(|r| r.id).collect::<Vec<_>>(),
            [first, second]
        );
    }

    #[test]
    fn a_failed_update_waits_for_its_retry_time() {
        let (_dir, ledger) = ledger();
        let id = enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        ledger.due_reports(now(), 10).unwrap();
        let retry_at = now() + 30.0;
        ledger
            .report_failed(id, retry_at, "forge answered 502")
            .unwrap();
        assert!(ledger.due_reports(now(), 10).unwrap().is_empty());
        let due = ledger.due_reports(retry_at, 10).unwrap();
        assert_eq!(due[0].attempts, 1);
        assert_eq!(due[0].last_error.as_deref(), Some("forge answered 502"));
    }

    #[test]
    fn a_deferred_update_keeps_its_attempts() {
        let (_dir, ledger) = ledger();
        let id = enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        ledger.due_reports(now(), 10).unwrap();
        let until = now() + 30.0;
        ledger.report_deferred(id, until).unwrap();
        assert!(ledger.due_reports(now(), 10).unwrap().is_empty());
        assert_eq!(ledger.due_reports(until, 10).unwrap()[0].attempts, 0);
    }

    #[test]
    fn sent_and_dropped_updates_leave_the_outbox() {
        let (_dir, ledger) = ledger();
        let a = enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        let b = enqueue(&ledger, "status:o/r:1:gitops/b", "pending");
        ledger.due_reports(now(), 10).unwrap();
        ledger.report_sent(a).unwrap();
        ledger.report_dropped(b).unwrap();
        assert_eq!(ledger.outbox_len().unwrap(), 0);
        assert!(ledger.due_reports(now() + 1e6, 10).unwrap().is_empty());
    }

    #[test]
    fn updates_survive_reopening_the_ledger() {
        let (dir, ledger) = ledger();
        enqueue(&ledger, "status:o/r:1:gitops/a", "pending");
        drop(ledger);
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(states(&ledger.due_reports(now(), 10).unwrap()), ["pending"]);
    }
}
