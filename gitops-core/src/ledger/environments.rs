//! Environment instances in the ledger: what each runs (its deployments' record keeps it
//! active until a stop), and the pins rollbacks put on them.

use rusqlite::{OptionalExtension, params};
use serde::Serialize;

use super::deployments::bad_value;
use super::{Ledger, LedgerError, now};

/// Whether an environment runs something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EnvironmentStatus {
    /// Something was deployed to it (or was being deployed) and it was not stopped since.
    Active,
    /// It was stopped; its record stays.
    Stopped,
}

/// An environment instance as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct EnvironmentRecord {
    /// The instance (`preview-pr-7`).
    pub name: String,
    /// The environment as named in config.
    pub config_name: String,
    /// The backend that deploys it.
    pub backend: String,
    /// The repository (`owner/name`).
    pub repo: String,
    /// The pull request that owns it.
    pub pull_request: Option<u64>,
    /// Active or stopped.
    pub status: EnvironmentStatus,
    /// Who pinned it (a rollback), while it is pinned.
    pub pinned_by: Option<String>,
    /// Unix time of the last deploy or stop.
    pub updated_at: f64,
}

const SELECT_ENVIRONMENT: &str = "SELECT name, config_name, backend, repo, pull_request, status, pinned_by, updated_at FROM environments";

fn environment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<EnvironmentRecord> {
    let status: String = r.get(5)?;
    let status = match status.as_str() {
        "active" => EnvironmentStatus::Active,
        "stopped" => EnvironmentStatus::Stopped,
        other => return Err(bad_value(5, "status", other)),
    };
    Ok(EnvironmentRecord {
        name: r.get(0)?,
        config_name: r.get(1)?,
        backend: r.get(2)?,
        repo: r.get(3)?,
        pull_request: r.get(4)?,
        status,
        pinned_by: r.get(6)?,
        updated_at: r.get(7)?,
    })
}

impl Ledger {
    /// Every environment, by name.
    pub fn environments(&self) -> Result<Vec<EnvironmentRecord>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!("{SELECT_ENVIRONMENT} ORDER BY name"))?;
            stmt.query_map([], environment_row)?.collect()
        })
    }

    /// One environment.
    pub fn environment(&self, name: &str) -> Result<Option<EnvironmentRecord>, LedgerError> {
        self.with(|c| {
            c.query_row(
                &format!("{SELECT_ENVIRONMENT} WHERE name = ?1"),
                [name],
                environment_row,
            )
            .optional()
        })
    }

    /// Pins an environment (after a rollback): pipeline deploys to it wait until it is unpinned.
    pub fn pin(&self, environment: &str, by: &str) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE environments SET pinned_by = ?2, pinned_at = ?3 WHERE name = ?1",
                params![environment, by, now()],
            )
            .map(|_| ())
        })
    }

    /// Unpins an environment; false when it was not pinned.
    pub fn unpin(&self, environment: &str) -> Result<bool, LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE environments SET pinned_by = NULL, pinned_at = NULL WHERE name = ?1 AND pinned_by IS NOT NULL",
                [environment],
            )
            .map(|n| n > 0)
        })
    }
}
