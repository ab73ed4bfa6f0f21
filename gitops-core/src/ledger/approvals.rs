//! Approvals in the ledger: a deploy to an environment that requires one waits for its
//! request to be approved (or fails when it is rejected).

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::deployments::bad_value;
use super::{Ledger, LedgerError, now};

/// A decision on a deployment waiting for approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalStatus {
    /// No one decided yet.
    Pending,
    /// Approved.
    Approved,
    /// Rejected.
    Rejected,
}

/// An approval request.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ApprovalRecord {
    /// The run.
    pub run_id: String,
    /// The deploy stage.
    pub stage: String,
    /// The environment.
    pub environment: String,
    /// The decision so far.
    pub status: ApprovalStatus,
    /// Who decided.
    pub decided_by: Option<String>,
    /// Unix time it was requested.
    pub requested_at: f64,
}

impl Ledger {
    /// Asks for an approval of `stage` of `run_id` (kept if already asked); returns the
    /// decision so far.
    pub fn request_approval(
        &self,
        run_id: &str,
        stage: &str,
        environment: &str,
    ) -> Result<ApprovalStatus, LedgerError> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO approvals (run_id, stage, environment, status, requested_at) VALUES (?1, ?2, ?3, 'pending', ?4)",
                params![run_id, stage, environment, now()],
            )?;
            Ok(())
        })?;
        Ok(self
            .approval(run_id, stage)?
            .map_or(ApprovalStatus::Pending, |a| a.status))
    }

    /// The approval request of `stage` of `run_id`.
    pub fn approval(
        &self,
        run_id: &str,
        stage: &str,
    ) -> Result<Option<ApprovalRecord>, LedgerError> {
        self.with(|c| {
            c.query_row(
                "SELECT run_id, stage, environment, status, decided_by, requested_at FROM approvals WHERE run_id = ?1 AND stage = ?2",
                [run_id, stage],
                approval_row,
            )
            .optional()
        })
    }

    /// Requests still waiting for a decision, oldest first.
    pub fn pending_approvals(&self) -> Result<Vec<ApprovalRecord>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(
                "SELECT run_id, stage, environment, status, decided_by, requested_at FROM approvals WHERE status = 'pending' ORDER BY requested_at",
            )?;
            stmt.query_map([], approval_row)?.collect()
        })
    }

    /// Approves or rejects a pending request; false when there is no pending request.
    pub fn decide_approval(
        &self,
        run_id: &str,
        stage: &str,
        approved: bool,
        by: &str,
    ) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE approvals SET status = ?3, decided_by = ?4, decided_at = ?5 WHERE run_id = ?1 AND stage = ?2 AND status = 'pending'",
                params![run_id, stage, if approved { "approved" } else { "rejected" }, by, now()],
            )
            .map(|n| n > 0)
        })
    }
}

fn approval_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ApprovalRecord> {
    let status: String = r.get(3)?;
    let status = match status.as_str() {
        "pending" => ApprovalStatus::Pending,
        "approved" => ApprovalStatus::Approved,
        "rejected" => ApprovalStatus::Rejected,
        other => return Err(bad_value(3, "approval status", other)),
    };
    Ok(ApprovalRecord {
        run_id: r.get(0)?,
        stage: r.get(1)?,
        environment: r.get(2)?,
        status,
        decided_by: r.get(4)?,
        requested_at: r.get(5)?,
    })
}
