//! Concurrency groups in the ledger: the runs of one group, in arrival order, and which of them
//! may run. Decided in one write transaction each time, so that runs in several processes
//! sharing the state dir agree.

use rusqlite::params;

use super::{Ledger, LedgerError, now, process_alive};
use crate::config::OnConflict;

/// What a run of a concurrency group may do now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GroupDecision {
    /// Run now.
    Start {
        /// Older runs of the group asked to stop (`cancel`): they end as cancelled.
        cancelled: Vec<String>,
    },
    /// Wait: `position` runs are ahead of this one.
    Wait {
        /// How many runs are ahead (1: next).
        position: usize,
        /// Older runs asked to stop (`cancel`) or dropped from the queue (`queue`).
        displaced: Vec<String>,
    },
    /// A newer run took its place (`queue`), or it was asked to stop before it started
    /// (`cancel`): it must not run.
    Superseded,
}

fn mode_name(mode: OnConflict) -> &'static str {
    match mode {
        OnConflict::Cancel => "cancel",
        OnConflict::Queue => "queue",
        OnConflict::Fifo => "fifo",
    }
}

impl Ledger {
    /// Puts a run at the end of its group.
    pub fn join_group(
        &self,
        run_id: &str,
        repo: &str,
        group: &str,
        mode: OnConflict,
    ) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT OR REPLACE INTO run_groups (run_id, repo, grp, mode, state, pid, joined_at)
                 VALUES (?1, ?2, ?3, ?4, 'waiting', ?5, ?6)",
                params![
                    run_id,
                    repo,
                    group,
                    mode_name(mode),
                    std::process::id(),
                    now()
                ],
            )
            .map(|_| ())
        })
    }

    /// Decides whether a run of a group may start now, applying its mode to the runs before
    /// it. Runs whose process is gone count as finished.
    pub fn group_decision(
        &self,
        run_id: &str,
        mode: OnConflict,
    ) -> Result<GroupDecision, LedgerError> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let (seq, repo, group, state): (i64, String, String, String) = tx.query_row(
                "SELECT rowid, repo, grp, state FROM run_groups WHERE run_id = ?1",
                [run_id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?;
            if state == "superseded" || state == "cancel_requested" {
                return Ok(GroupDecision::Superseded);
            }
            if state == "running" {
                return Ok(GroupDecision::Start { cancelled: Vec::new() });
            }
            // The others still in the group, oldest first; those of dead processes are done.
            let mut others: Vec<(i64, String, String)> = Vec::new();
            {
                let mut stmt = tx.prepare(
                    "SELECT rowid, run_id, state, pid FROM run_groups
                     WHERE repo = ?1 AND grp = ?2 AND run_id != ?3 AND state IN ('waiting', 'running', 'cancel_requested')
                     ORDER BY rowid",
                )?;
                let rows = stmt.query_map(params![repo, group, run_id], |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?, r.get::<_, u32>(3)?))
                })?;
                for row in rows {
                    let (rowid, id, state, pid) = row?;
                    if pid != std::process::id() && !process_alive(pid) {
                        tx.execute("UPDATE run_groups SET state = 'done' WHERE rowid = ?1", [rowid])?;
                    } else {
                        others.push((rowid, id, state));
                    }
                }
            }
            let mut displaced = Vec::new();
            let older = |others: &[(i64, String, String)]| -> Vec<(i64, String, String)> {
                others.iter().filter(|o| o.0 < seq).cloned().collect()
            };
            let decision = match mode {
                OnConflict::Cancel => {
                    for (rowid, id, state) in older(&others) {
                        if state != "cancel_requested" {
                            tx.execute(
                                "UPDATE run_groups SET state = 'cancel_requested' WHERE rowid = ?1",
                                [rowid],
                            )?;
                            displaced.push(id);
                        }
                    }
                    // Start once the older runs have stopped, so that runs never overlap.
                    let still = others.iter().filter(|o| o.0 < seq).count();
                    if still == 0 { None } else { Some(still) }
                }
                OnConflict::Queue => {
                    for (rowid, id, state) in older(&others) {
                        if state == "waiting" {
                            tx.execute(
                                "UPDATE run_groups SET state = 'superseded' WHERE rowid = ?1",
                                [rowid],
                            )?;
                            displaced.push(id);
                        }
                    }
                    let busy = others.iter().any(|o| o.2 != "waiting");
                    if busy { Some(1) } else { None }
                }
                OnConflict::Fifo => {
                    let ahead = others.iter().filter(|o| o.0 < seq).count();
                    if ahead == 0 { None } else { Some(ahead) }
                }
            };
            let decision = match decision {
                None => {
                    tx.execute(
                        "UPDATE run_groups SET state = 'running' WHERE run_id = ?1",
                        [run_id],
                    )?;
                    GroupDecision::Start { cancelled: displaced }
                }
                Some(position) => GroupDecision::Wait { position, displaced },
            };
            tx.commit()?;
            Ok(decision)
        })
    }

    /// Whether someone asked the (running) run to stop: a newer run of a `cancel` group.
    pub fn group_cancel_requested(&self, run_id: &str) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.query_row(
                "SELECT count(*) FROM run_groups WHERE run_id = ?1 AND state IN ('cancel_requested', 'superseded')",
                [run_id],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n > 0)
        })
    }

    /// Takes a run out of its group (it ended, or will not run).
    pub fn leave_group(&self, run_id: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE run_groups SET state = 'done' WHERE run_id = ?1",
                [run_id],
            )
            .map(|_| ())
        })
    }
}
