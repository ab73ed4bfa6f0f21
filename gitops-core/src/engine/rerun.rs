//! Runs started again from the ledger: re-runs of finished runs, and runs a crash
//! interrupted, resumed.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use super::{Engine, RunOptions, StartedRun, trust};
use crate::config::{Action, CONFIG_FILE, Config};
use crate::graph::StageId;
use crate::ledger::{RunRecord, RunStatus, new_run_id};
use crate::plan::{PlanError, PlannedPipeline, Planner};
use crate::repo::Repository;
use crate::scheduler::StageResult;
use crate::{Error, Result};

impl Engine {
    /// Re-runs a finished run as a new run linked to it: its failed, cancelled and skipped
    /// stages run again, its successful ones are reused with their outputs. With `from`, that
    /// stage and every stage after it run again and everything else is reused.
    pub fn rerun(
        &self,
        run_id: &str,
        from: Option<&str>,
        options: &RunOptions,
    ) -> Result<StartedRun> {
        let old = self.ledger.run(run_id)?;
        let (pipeline, trusted_text) = self.replan(&old, options)?;
        let pipeline = Arc::new(pipeline);
        let results = self.ledger.stage_results(run_id)?;
        let again: HashSet<StageId> = match from {
            Some(stage) => {
                let graph = pipeline.graph();
                let start = graph.get(stage).ok_or_else(|| PlanError::UnknownStage {
                    pipeline: pipeline.name.clone(),
                    stage: stage.to_owned(),
                })?;
                graph
                    .stages()
                    .filter(|&s| s == start || graph.is_transitive_need(s, start))
                    .collect()
            }
            None => HashSet::new(),
        };
        let reuse: BTreeMap<String, _> = results
            .into_iter()
            .filter(|r| match from {
                Some(_) => pipeline
                    .graph()
                    .get(&r.id)
                    .is_some_and(|s| !again.contains(&s)),
                None => r.result == StageResult::Success,
            })
            .map(|mut r| {
                r.reused = true;
                (r.id.to_string(), r)
            })
            .collect();
        let id = new_run_id();
        let repo = old.repo.as_ref().map(Repository::open).transpose()?;
        let level = old
            .trust
            .unwrap_or_else(|| crate::trust::level(&old.event, &self.policy));
        let secrets = self.run_secrets(level, options)?;
        let (workdir, checkout) = match (&repo, &old.commit) {
            (Some(repo), Some(commit)) => self.workdir(
                repo,
                commit,
                &id,
                options,
                pipeline.checkout,
                level,
                &old.event,
            )?,
            _ => (old.workdir.clone(), None),
        };
        let mut record =
            RunRecord::new(&id, &old.pipeline, old.event.clone(), &old.config, &workdir);
        record.repo = old.repo.clone();
        record.commit = old.commit.clone();
        record.rerun_of = Some(old.id.clone());
        record.actor = options.actor.clone().or_else(|| old.actor.clone());
        record.trust = Some(level);
        record.trusted_config = trusted_text;
        self.ledger.begin_run(&record)?;
        for r in reuse.values() {
            self.ledger.record_stage(&id, r)?;
        }
        Ok(self.prepare(record, pipeline, reuse, options, &secrets, checkout))
    }

    /// Resumes a run that a crash interrupted: the stages it recorded are kept, the others run.
    pub fn resume(&self, run_id: &str, options: &RunOptions) -> Result<StartedRun> {
        let record = self.ledger.run(run_id)?;
        if !record.is_interrupted() {
            let status = match record.status {
                RunStatus::Running => format!("still running in process {}", record.pid),
                RunStatus::Finished(r) => format!("finished ({})", r.name()),
            };
            return Err(Error::NotResumable {
                run: run_id.to_owned(),
                status,
            });
        }
        let (pipeline, _) = self.replan(&record, options)?;
        let pipeline = Arc::new(pipeline);
        let level = record
            .trust
            .unwrap_or_else(|| crate::trust::level(&record.event, &self.policy));
        let secrets = self.run_secrets(level, options)?;
        let reuse: BTreeMap<String, _> = self
            .ledger
            .stage_results(run_id)?
            .into_iter()
            .map(|mut r| {
                r.reused = true;
                (r.id.to_string(), r)
            })
            .collect();
        let mut record = record;
        let mut checkout = None;
        if self.in_pool(&record.workdir) {
            // The crashed process's cached tree, leased to this run and to no other: moved
            // out of the pool (what its finished stages left in it is kept), a run's own from
            // now on. Gone (removed with its dead pool): a fresh checkout of its own.
            let dir = self.state_dir.join("checkouts").join(run_id);
            if record.workdir.is_dir() {
                stop_leftovers(&record.workdir);
            }
            if std::fs::rename(&record.workdir, &dir).is_err() {
                if let (Some(repo), Some(commit)) = (&record.repo, &record.commit) {
                    let _ = std::fs::remove_dir_all(&dir);
                    Repository::open(repo)?.checkout(commit, &dir)?;
                }
            }
            record.workdir = dir.clone();
            checkout = Some(super::Checkout::Dir(dir));
        } else if !record.workdir.is_dir() {
            if let (Some(repo), Some(commit)) = (&record.repo, &record.commit) {
                Repository::open(repo)?.checkout(commit, &record.workdir)?;
                checkout = Some(super::Checkout::Dir(record.workdir.clone()));
            }
        } else if record.workdir.starts_with(self.state_dir.join("checkouts")) {
            // The crashed process could not stop its stages; what they left running still
            // works in the run's own checkout. (Never done for in-place runs: the repository is
            // where people work.)
            stop_leftovers(&record.workdir);
            checkout = Some(super::Checkout::Dir(record.workdir.clone()));
        }
        self.ledger.claim_run(run_id)?;
        let mut backends: Vec<&str> = pipeline
            .stages
            .iter()
            .filter(|s| !reuse.contains_key(&*s.id) && s.action == Action::Run)
            .map(|s| &*s.backend)
            .collect();
        backends.sort_unstable();
        backends.dedup();
        let abandoned = backends
            .iter()
            .filter_map(|b| self.scheduler.registry().executor(b).cloned())
            .collect();
        let mut started = self.prepare(record, pipeline, reuse, options, &secrets, checkout);
        started.abandoned = abandoned;
        Ok(started)
    }

    /// Runs a crash interrupted (started, and their process is gone).
    pub fn interrupted(&self) -> Result<Vec<RunRecord>> {
        Ok(self.ledger.interrupted_runs()?)
    }

    /// The pipeline of a recorded run, planned again: with the environments of the trusted
    /// ref as they are now (those recorded with the run when its repository is gone), and the
    /// stages its trust level refuses. Also the trusted config's text.
    fn replan(
        &self,
        record: &RunRecord,
        options: &RunOptions,
    ) -> Result<(PlannedPipeline, Option<String>)> {
        let config = Config::parse_with(CONFIG_FILE, &record.config, &self.load)?;
        let repo = record.repo.as_ref().and_then(|r| Repository::open(r).ok());
        let trusted = match &repo {
            Some(repo) => self.trusted_environments(repo, options),
            None => self.recorded_environments(record.trusted_config.as_deref()),
        };
        let level = record
            .trust
            .unwrap_or_else(|| crate::trust::level(&record.event, &self.policy));
        let effective = trust::with_trusted_environments(config, &trusted);
        let mut pipeline =
            Planner::new().plan_named(&record.event, &effective, &record.pipeline)?;
        pipeline.check_backends(self.scheduler.registry())?;
        trust::refuse_stages(&mut pipeline, level, &record.event, &trusted);
        Ok((pipeline, trusted.text))
    }
}

/// Kills the process groups that have a process working inside `dir`; returns how many.
pub(super) fn stop_leftovers(dir: &Path) -> usize {
    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::{Pid, getpgid};
    let Ok(dir) = dir.canonicalize() else {
        return 0;
    };
    let ours = getpgid(None).ok();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut groups = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let inside =
            std::fs::read_link(entry.path().join("cwd")).is_ok_and(|cwd| cwd.starts_with(&dir));
        if !inside {
            continue;
        }
        if let Ok(pgid) = getpgid(Some(Pid::from_raw(pid))) {
            if pgid.as_raw() > 1 && Some(pgid) != ours && !groups.contains(&pgid) {
                groups.push(pgid);
            }
        }
    }
    for pgid in &groups {
        let _ = killpg(*pgid, Signal::SIGKILL);
    }
    groups.len()
}
