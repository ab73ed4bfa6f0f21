//! Forgetting old runs: which finished runs a retention rule removes, with their stage results.

use rusqlite::params;

use super::{Ledger, LedgerError, now};

/// Which runs are kept; a finished run that either rule lets go is removed (with its stage
/// results, approvals and concurrency record; deployments stay, as the environments' history).
/// A run still running (or interrupted, waiting to be resumed) is always kept.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
#[non_exhaustive]
pub struct Retention {
    /// Keep the newest this many runs.
    pub keep_runs: Option<usize>,
    /// Keep the runs started within this many days.
    pub keep_days: Option<f64>,
}

impl Retention {
    /// Keeps the newest `n` runs.
    pub fn with_keep_runs(mut self, n: usize) -> Self {
        self.keep_runs = Some(n);
        self
    }

    /// Keeps the runs started within `days` days.
    pub fn with_keep_days(mut self, days: f64) -> Self {
        self.keep_days = Some(days);
        self
    }

    /// Whether it keeps every run.
    pub fn keeps_all(&self) -> bool {
        self.keep_runs.is_none() && self.keep_days.is_none()
    }
}

impl Ledger {
    /// Removes the finished runs that `retention` lets go; returns their ids.
    pub fn prune_runs(&self, retention: &Retention) -> Result<Vec<String>, LedgerError> {
        if retention.keeps_all() {
            return Ok(Vec::new());
        }
        let keep = retention.keep_runs.map_or(i64::MAX, |n| n as i64);
        let cutoff = retention
            .keep_days
            .map_or(f64::MIN, |days| now() - days * 86_400.0);
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let ids = {
                let mut stmt = tx.prepare(
                    "SELECT id FROM (SELECT id, status, started_at, ROW_NUMBER() OVER (ORDER BY started_at DESC, id DESC) AS n FROM runs)
                     WHERE status != 'running' AND (n > ?1 OR started_at < ?2)",
                )?;
                stmt.query_map(params![keep, cutoff], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()?
            };
            for id in &ids {
                tx.execute("UPDATE runs SET rerun_of = NULL WHERE rerun_of = ?1", [id])?;
                for table in ["stage_results", "approvals", "run_groups"] {
                    tx.execute(&format!("DELETE FROM {table} WHERE run_id = ?1"), [id])?;
                }
                tx.execute("DELETE FROM runs WHERE id = ?1", [id])?;
            }
            tx.commit()?;
            Ok(ids)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::GitEvent;
    use crate::ledger::RunRecord;
    use crate::scheduler::RunResult;

    #[test]
    fn keeps_the_newest_runs_and_every_running_one() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let event = GitEvent::push("acme/app", "main", None, "abc");
        for i in 0..5 {
            let mut run = RunRecord::new(&format!("r{i}"), "p", event.clone(), "", dir.path());
            run.started_at = 1000.0 + f64::from(i);
            if i == 1 {
                run.rerun_of = Some("r0".to_owned());
            }
            ledger.begin_run(&run).unwrap();
            if i != 0 {
                ledger.finish_run(&run.id, RunResult::Success).unwrap();
            }
        }
        let keep_two = Retention::default().with_keep_runs(2);
        // r0 is running: kept however old.
        assert_eq!(ledger.prune_runs(&keep_two).unwrap(), ["r2", "r1"]);
        let left: Vec<_> = ledger.runs(10).unwrap().into_iter().map(|r| r.id).collect();
        assert_eq!(left, ["r4", "r3", "r0"]);
        assert!(ledger.prune_runs(&Retention::default()).unwrap().is_empty());
        // Started in 1970: older than a day.
        let a_day = Retention::default().with_keep_days(1.0);
        assert_eq!(ledger.prune_runs(&a_day).unwrap(), ["r4", "r3"]);
    }
}
