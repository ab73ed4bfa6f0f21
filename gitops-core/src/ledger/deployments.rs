//! Deployments in the ledger: the record of every deploy and stop, with the inputs that make
//! it again.

use std::collections::BTreeMap;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};

use super::{Ledger, LedgerError, now, process_alive};
use crate::config::Action;
use crate::event::GitEvent;
use crate::secret::Masker;
use crate::trust::TrustLevel;

/// What a deployment was given: enough to make it again (a rollback redeploys these inputs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeploymentInputs {
    /// The environment as named in config (`preview`).
    pub config_name: String,
    /// The stage's command, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<String>,
    /// The rendered `env`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// The rendered `with` (the environment's and the stage's).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub with: serde_json::Map<String, serde_json::Value>,
    /// The environment's `auto_stop_after`, in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_stop_after_secs: Option<f64>,
    /// The names of the secrets it had (never their values: a rollback reads them again from
    /// the host).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
}

impl DeploymentInputs {
    /// The same inputs with every value `masker` knows masked (a secret that reached `env` or
    /// `with` some other way than as a secret is never written to the ledger).
    pub fn masked(mut self, masker: &Masker) -> Self {
        if masker.is_empty() {
            return self;
        }
        masker.mask_values(&mut self.env);
        if let Some(c) = &mut self.command {
            masker.mask_in_place(c);
        }
        let mut with = serde_json::Value::Object(std::mem::take(&mut self.with));
        masker.mask_json(&mut with);
        if let serde_json::Value::Object(w) = with {
            self.with = w;
        }
        self
    }
}

/// A deployment to record as started.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NewDeployment {
    /// The environment instance (`preview-pr-7`).
    pub environment: String,
    /// Deploy or stop.
    pub action: Action,
    /// The backend that carries it out.
    pub backend: String,
    /// The version deployed (a tag's semver), if any.
    pub version: Option<String>,
    /// The commit deployed.
    pub sha: Option<String>,
    /// The run and stage that made it (none for rollbacks and lifecycle stops).
    pub run_id: Option<String>,
    /// The stage.
    pub stage: Option<String>,
    /// The event that caused it.
    pub event: Option<GitEvent>,
    /// Who or what triggered it.
    pub triggered_by: Option<String>,
    /// What the backend was given.
    pub inputs: DeploymentInputs,
    /// The deployment this one rolls back to (its inputs are redeployed).
    pub rollback_of: Option<i64>,
    /// The repository the environment belongs to (`owner/name`).
    pub repo: String,
    /// The pull request that owns the environment.
    pub pull_request: Option<u64>,
    /// The trust level of the event it came from (its secrets, and those of a rollback or a
    /// stop of it, are that level's).
    pub trust: Option<TrustLevel>,
}

/// How a deployment ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeploymentResult {
    /// Still going on.
    Running,
    /// It succeeded.
    Success,
    /// It failed.
    Failure,
    /// It was stopped.
    Cancelled,
    /// The process carrying it out died before it ended.
    Interrupted,
}

impl DeploymentResult {
    /// The result's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Cancelled => "cancelled",
            Self::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "running" => Self::Running,
            "success" => Self::Success,
            "failure" => Self::Failure,
            "cancelled" => Self::Cancelled,
            "interrupted" => Self::Interrupted,
            _ => return None,
        })
    }
}

/// A deployment (or stop) as recorded.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct DeploymentRecord {
    /// Its id (increasing).
    pub id: i64,
    /// The environment instance.
    pub environment: String,
    /// Deploy or stop.
    pub action: Action,
    /// The backend.
    pub backend: String,
    /// The version, if any.
    pub version: Option<String>,
    /// The commit.
    pub sha: Option<String>,
    /// The run that made it.
    pub run_id: Option<String>,
    /// The stage that made it.
    pub stage: Option<String>,
    /// The event that caused it.
    pub event: Option<GitEvent>,
    /// Who or what triggered it.
    pub triggered_by: Option<String>,
    /// What the backend was given.
    pub inputs: DeploymentInputs,
    /// What the backend returned (a URL, ...).
    pub outputs: BTreeMap<String, String>,
    /// How it ended.
    pub result: DeploymentResult,
    /// Why it failed.
    pub message: Option<String>,
    /// The deployment whose inputs this rollback redeployed.
    pub rollback_of: Option<i64>,
    /// Unix time it started.
    pub started_at: f64,
    /// Unix time it ended.
    pub finished_at: Option<f64>,
    /// The trust level of the event it came from (none in ledgers older than trust levels).
    pub trust: Option<TrustLevel>,
}

pub(super) fn json_col<T: serde::de::DeserializeOwned>(
    row: &rusqlite::Row<'_>,
    i: usize,
) -> rusqlite::Result<T> {
    let text: String = row.get(i)?;
    serde_json::from_str(&text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, Box::new(e))
    })
}

pub(super) fn bad_value(i: usize, what: &str, value: &str) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(
        i,
        rusqlite::types::Type::Text,
        format!("unknown {what} \"{value}\"").into(),
    )
}

const SELECT_DEPLOYMENT: &str = "SELECT id, environment, action, backend, version, sha, run_id, stage, event, triggered_by, inputs, outputs, result, message, rollback_of, started_at, finished_at, pid, trust FROM deployments";

fn deployment_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<DeploymentRecord> {
    let action: String = r.get(2)?;
    let action = match action.as_str() {
        "deploy" => Action::Deploy,
        "stop" => Action::Stop,
        other => return Err(bad_value(2, "action", other)),
    };
    let event: Option<String> = r.get(8)?;
    let event = match event {
        Some(_) => Some(json_col(r, 8)?),
        None => None,
    };
    let result: String = r.get(12)?;
    let mut result =
        DeploymentResult::parse(&result).ok_or_else(|| bad_value(12, "result", &result))?;
    let pid: u32 = r.get(17)?;
    let trust: Option<String> = r.get(18)?;
    let trust = match trust {
        None => None,
        Some(t) => Some(TrustLevel::parse(&t).ok_or_else(|| bad_value(18, "trust level", &t))?),
    };
    if result == DeploymentResult::Running && !process_alive(pid) {
        result = DeploymentResult::Interrupted;
    }
    Ok(DeploymentRecord {
        id: r.get(0)?,
        environment: r.get(1)?,
        action,
        backend: r.get(3)?,
        version: r.get(4)?,
        sha: r.get(5)?,
        run_id: r.get(6)?,
        stage: r.get(7)?,
        event,
        triggered_by: r.get(9)?,
        inputs: json_col(r, 10)?,
        outputs: json_col(r, 11)?,
        result,
        message: r.get(13)?,
        rollback_of: r.get(14)?,
        started_at: r.get(15)?,
        finished_at: r.get(16)?,
        trust,
    })
}

impl Ledger {
    /// Records that a deployment started; returns its id. The environment is created if new, and
    /// is active from now on (whatever the deployment leaves must be stopped some day).
    ///
    /// An instance belongs to the environment, repository and pull request that first deployed
    /// it: a deployment of another one to it (a name template rendering to `production` from a
    /// pull request's branch name, a second repository's `staging`) is refused.
    pub fn begin_deployment(&self, d: &NewDeployment) -> Result<i64, LedgerError> {
        if let Some(owner) = self.environment(&d.environment)? {
            let theirs = (&owner.config_name, &owner.repo, owner.pull_request);
            if theirs != (&d.inputs.config_name, &d.repo, d.pull_request) {
                let of = |config: &str, repo: &str, pr: Option<u64>| match pr {
                    Some(n) => format!("environment \"{config}\" of {repo} pull request #{n}"),
                    None => format!("environment \"{config}\" of {repo}"),
                };
                return Err(LedgerError::NotOwned {
                    instance: d.environment.clone(),
                    owner: of(&owner.config_name, &owner.repo, owner.pull_request),
                    claimant: of(&d.inputs.config_name, &d.repo, d.pull_request),
                });
            }
        }
        let event = d
            .event
            .as_ref()
            .map(serde_json::to_string)
            .transpose()
            .map_err(|e| self.corrupt(e))?;
        let inputs = serde_json::to_string(&d.inputs).map_err(|e| self.corrupt(e))?;
        let action = match d.action {
            Action::Stop => "stop",
            _ => "deploy",
        };
        self.with(|c| {
            let tx = c.transaction()?;
            let at = now();
            tx.execute(
                "INSERT INTO environments (name, config_name, backend, repo, pull_request, status, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
                 ON CONFLICT(name) DO UPDATE SET backend = ?3, updated_at = ?7,
                   status = CASE WHEN ?6 = 'active' THEN 'active' ELSE status END",
                params![
                    d.environment,
                    d.inputs.config_name,
                    d.backend,
                    d.repo,
                    d.pull_request,
                    if d.action == Action::Stop { "stopped" } else { "active" },
                    at
                ],
            )?;
            tx.execute(
                "INSERT INTO deployments (environment, action, backend, version, sha, run_id, stage, event, triggered_by, inputs, outputs, result, rollback_of, pid, started_at, trust)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, '{}', 'running', ?11, ?12, ?13, ?14)",
                params![
                    d.environment,
                    action,
                    d.backend,
                    d.version,
                    d.sha,
                    d.run_id,
                    d.stage,
                    event,
                    d.triggered_by,
                    inputs,
                    d.rollback_of,
                    std::process::id(),
                    at,
                    d.trust.map(TrustLevel::as_str)
                ],
            )?;
            let id = tx.last_insert_rowid();
            tx.commit()?;
            Ok(id)
        })
    }

    /// Records how a deployment ended; a successful stop marks its environment stopped.
    pub fn finish_deployment(
        &self,
        id: i64,
        result: DeploymentResult,
        message: Option<&str>,
        outputs: &BTreeMap<String, String>,
    ) -> Result<(), LedgerError> {
        let outputs = serde_json::to_string(outputs).map_err(|e| self.corrupt(e))?;
        self.with(|c| {
            let tx = c.transaction()?;
            let at = now();
            tx.execute(
                "UPDATE deployments SET result = ?2, message = ?3, outputs = ?4, finished_at = ?5 WHERE id = ?1",
                params![id, result.name(), message, outputs, at],
            )?;
            if result == DeploymentResult::Success {
                tx.execute(
                    "UPDATE environments SET status = 'stopped', updated_at = ?2
                     WHERE name = (SELECT environment FROM deployments WHERE id = ?1 AND action = 'stop')",
                    params![id, at],
                )?;
            }
            tx.commit()
        })
    }

    /// A deployment by id.
    pub fn deployment(&self, id: i64) -> Result<Option<DeploymentRecord>, LedgerError> {
        self.with(|c| {
            c.query_row(
                &format!("{SELECT_DEPLOYMENT} WHERE id = ?1"),
                [id],
                deployment_row,
            )
            .optional()
        })
    }

    /// The deployments and stops of `environment` (every environment when `None`), newest first.
    pub fn history(
        &self,
        environment: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeploymentRecord>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_DEPLOYMENT} WHERE ?1 IS NULL OR environment = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            stmt.query_map(params![environment, limit as i64], deployment_row)?
                .collect()
        })
    }

    /// The deployments and stops a run made, oldest first.
    pub fn run_deployments(&self, run_id: &str) -> Result<Vec<DeploymentRecord>, LedgerError> {
        self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_DEPLOYMENT} WHERE run_id = ?1 ORDER BY id"
            ))?;
            stmt.query_map([run_id], deployment_row)?.collect()
        })
    }

    /// The deployment running in `environment` now: its last successful deploy, unless it was
    /// stopped since.
    pub fn current_deployment(
        &self,
        environment: &str,
    ) -> Result<Option<DeploymentRecord>, LedgerError> {
        let last = self.with(|c| {
            c.query_row(
                &format!(
                    "{SELECT_DEPLOYMENT} WHERE environment = ?1 AND result = 'success' ORDER BY id DESC LIMIT 1"
                ),
                [environment],
                deployment_row,
            )
            .optional()
        })?;
        Ok(last.filter(|d| d.action == Action::Deploy))
    }

    fn corrupt(&self, e: impl std::fmt::Display) -> LedgerError {
        LedgerError::Database {
            path: self.path.clone(),
            source: e.to_string().into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::EnvironmentStatus;

    /// A pid that no process has: one just reaped.
    fn dead_pid() -> u32 {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid
    }

    fn deployment() -> NewDeployment {
        NewDeployment {
            environment: "staging".into(),
            action: Action::Deploy,
            backend: "local".into(),
            version: None,
            sha: Some("abc".into()),
            run_id: Some("r1".into()),
            stage: Some("deploy".into()),
            event: None,
            triggered_by: None,
            inputs: DeploymentInputs {
                config_name: "staging".into(),
                ..Default::default()
            },
            rollback_of: None,
            repo: "o/r".into(),
            pull_request: None,
            trust: None,
        }
    }

    #[test]
    fn a_lock_is_exclusive_until_released_expired_or_its_process_is_gone() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        assert_eq!(ledger.try_lock("staging", "a", 30.0).unwrap(), None);
        assert_eq!(
            ledger.try_lock("staging", "b", 30.0).unwrap(),
            Some("a".into())
        );
        assert_eq!(ledger.try_lock("production", "b", 30.0).unwrap(), None);
        ledger.release_lock("staging", "a").unwrap();
        assert_eq!(ledger.try_lock("staging", "b", 30.0).unwrap(), None);

        // Expired: its holder stopped renewing it.
        assert_eq!(ledger.try_lock("expired", "a", -1.0).unwrap(), None);
        assert_eq!(ledger.try_lock("expired", "b", 30.0).unwrap(), None);
        assert!(
            !ledger.renew_lock("expired", "a", 30.0).unwrap(),
            "a lost it"
        );

        // Held by a process that died: free at once, long before it expires.
        let dead = dead_pid();
        ledger
            .with(|c| {
                c.execute(
                    "INSERT INTO locks VALUES ('crashed', 'someone', ?1, 0, 1e12)",
                    [dead],
                )
            })
            .unwrap();
        assert_eq!(ledger.try_lock("crashed", "b", 30.0).unwrap(), None);
    }

    #[test]
    fn a_deployment_whose_process_died_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let id = ledger.begin_deployment(&deployment()).unwrap();
        assert_eq!(
            ledger.deployment(id).unwrap().unwrap().result,
            DeploymentResult::Running
        );
        let dead = dead_pid();
        ledger
            .with(|c| c.execute("UPDATE deployments SET pid = ?1", [dead]))
            .unwrap();
        assert_eq!(
            ledger.deployment(id).unwrap().unwrap().result,
            DeploymentResult::Interrupted
        );
        // An environment with an unfinished deployment is active: something may run there.
        let env = ledger.environment("staging").unwrap().unwrap();
        assert_eq!(env.status, EnvironmentStatus::Active);
        assert_eq!(ledger.current_deployment("staging").unwrap(), None);
    }

    #[test]
    fn a_successful_stop_marks_the_environment_stopped_and_keeps_its_history() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let deploy = ledger.begin_deployment(&deployment()).unwrap();
        let mut outputs = BTreeMap::new();
        outputs.insert("url".to_owned(), "http://127.0.0.1:1/".to_owned());
        ledger
            .finish_deployment(deploy, DeploymentResult::Success, None, &outputs)
            .unwrap();
        assert_eq!(
            ledger
                .current_deployment("staging")
                .unwrap()
                .unwrap()
                .outputs,
            outputs
        );
        let stop = ledger
            .begin_deployment(&NewDeployment {
                action: Action::Stop,
                ..deployment()
            })
            .unwrap();
        ledger
            .finish_deployment(
                stop,
                DeploymentResult::Failure,
                Some("boom"),
                &BTreeMap::new(),
            )
            .unwrap();
        let env = ledger.environment("staging").unwrap().unwrap();
        assert_eq!(
            env.status,
            EnvironmentStatus::Active,
            "a failed stop stopped nothing"
        );
        let stop = ledger
            .begin_deployment(&NewDeployment {
                action: Action::Stop,
                ..deployment()
            })
            .unwrap();
        ledger
            .finish_deployment(stop, DeploymentResult::Success, None, &BTreeMap::new())
            .unwrap();
        let env = ledger.environment("staging").unwrap().unwrap();
        assert_eq!(env.status, EnvironmentStatus::Stopped);
        assert_eq!(ledger.current_deployment("staging").unwrap(), None);
        let history = ledger.history(Some("staging"), 10).unwrap();
        assert_eq!(history.len(), 3);
        assert_eq!(history[1].message.as_deref(), Some("boom"));
    }
}
