//! Environment locks in the ledger: one deployment per environment at a time, across runs and
//! processes sharing the state dir; a lock whose process is gone, or that expired, is free.

use rusqlite::{OptionalExtension, params};

use super::{Ledger, LedgerError, now, process_alive};

/// Who holds an environment's lock, when it is not free.
pub type LockHolder = String;

impl Ledger {
    /// Takes `environment`'s lock for `holder` until `ttl_secs` from now, in one transaction:
    /// free, expired, or held by a process that is gone counts as free. Returns who holds it
    /// when it is taken.
    pub fn try_lock(
        &self,
        environment: &str,
        holder: &str,
        ttl_secs: f64,
    ) -> Result<Option<LockHolder>, LedgerError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let at = now();
            let current: Option<(String, u32, f64)> = tx
                .query_row(
                    "SELECT holder, pid, expires_at FROM locks WHERE environment = ?1",
                    [environment],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            if let Some((who, pid, expires)) = current {
                let stale = expires < at || (pid != std::process::id() && !process_alive(pid));
                if who != holder && !stale {
                    return Ok(Some(who));
                }
            }
            tx.execute(
                "INSERT OR REPLACE INTO locks (environment, holder, pid, acquired_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![environment, holder, std::process::id(), at, at + ttl_secs],
            )?;
            tx.commit()?;
            Ok(None)
        })
    }

    /// Extends a held lock; false when `holder` no longer holds it.
    pub fn renew_lock(
        &self,
        environment: &str,
        holder: &str,
        ttl_secs: f64,
    ) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE locks SET expires_at = ?3 WHERE environment = ?1 AND holder = ?2",
                params![environment, holder, now() + ttl_secs],
            )
            .map(|n| n > 0)
        })
    }

    /// Releases a lock `holder` holds.
    pub fn release_lock(&self, environment: &str, holder: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM locks WHERE environment = ?1 AND holder = ?2",
                params![environment, holder],
            )
            .map(|_| ())
        })
    }
}
