//! The engine: the facade an embedding application uses. Feed it an event and a repository; it
//! reads the config from the event's commit, plans, checks out, runs on the registered backends
//! and records everything in the ledger of its state dir. Runs can be re-run and, after a crash,
//! resumed.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

mod environments;
mod trust;

pub use environments::{EnvironmentState, StopReason, Stopped};

use crate::backend::{BackendRegistry, RunInfo};
use crate::config::{CONFIG_FILE, Config, LoadOptions};
use crate::environment::Environments;
use crate::event::GitEvent;
use crate::graph::StageId;
use crate::ledger::{GroupDecision, Ledger, RunRecord, RunStatus, new_run_id};
use crate::plan::{Plan, PlannedPipeline, Planner};
use crate::repo::Repository;
use crate::scheduler::{
    Run, RunEvent, RunReport, RunResult, RunSpec, Scheduler, SchedulerOptions, StageResult,
};
use crate::secret::Secret;
use crate::trust::Policy;
use crate::{Error, Result};
use trust::RunSecrets;

/// How runs are started.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Run stages in the repository's own directory instead of a fresh checkout of the commit.
    pub in_place: bool,
    /// Variables every stage gets, also readable as `env.*` in expressions.
    pub env: BTreeMap<String, String>,
    /// Secrets the stages of trusted runs get, as variables of these names (as a policy secret
    /// with no scope: see [`Policy`]); masked wherever they would show.
    pub secrets: BTreeMap<String, Secret>,
    /// Who starts the runs, as the ledger records it (a user name, `webhook`, `watch`) when the
    /// event names no forge user.
    pub actor: Option<String>,
    /// The ref whose `.gitops.yml` defines the environments (`refs/heads/main`,
    /// `refs/remotes/origin/main`); default: the branch the repository's `HEAD` names.
    pub trusted_ref: Option<String>,
}

impl RunOptions {
    /// Gives the stages of trusted runs the secret `name` with `value`, masked in logs.
    pub fn with_secret_env(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), Secret::new(value));
        self
    }
}

/// Plans, runs and records pipelines for events.
#[derive(Debug, Clone)]
pub struct Engine {
    state_dir: PathBuf,
    ledger: Ledger,
    environments: Environments,
    scheduler: Scheduler,
    load: LoadOptions,
    local_runs: LocalRuns,
    policy: Arc<Policy>,
}

/// What [`Engine::handle`] did with an event.
#[derive(Debug)]
#[non_exhaustive]
pub struct Handled {
    /// The report of each run it started.
    pub reports: Vec<RunReport>,
    /// The environments it stopped afterwards (those of a closed pull request).
    pub stopped: Vec<Stopped>,
}

/// A run that is ready: subscribe to its events, then [`execute`](StartedRun::execute) it.
/// Dropped without being executed, it is recorded as cancelled and its checkout removed.
pub struct StartedRun {
    /// The run's id.
    pub id: String,
    /// What it runs.
    pub pipeline: Arc<PlannedPipeline>,
    run: Run,
    /// Ends it in the ledger: when it ends, or when it is dropped before.
    end: RunEnd,
    repo: String,
    /// For a resumed run: the executors of the stages it will run again, asked to remove what
    /// the crashed process left of them.
    abandoned: Vec<Arc<dyn crate::backend::Executor>>,
    /// What the engine wants the people running it to know (see [`Plan::notes`]).
    pub notes: Vec<String>,
}

/// The cancellation tokens of the runs this engine executes now, by run id: a newer run of a
/// `cancel` group stops an older one of this process at once (one of another process sees the
/// request in the ledger).
type LocalRuns = Arc<std::sync::Mutex<std::collections::HashMap<String, CancellationToken>>>;

/// How often a run waiting in its concurrency group, or running in a `cancel` group, looks at
/// the ledger.
const GROUP_POLL: std::time::Duration = std::time::Duration::from_millis(100);

impl Engine {
    /// An engine keeping its state (ledger, checkouts) in `state_dir`, running stages on
    /// `registry`.
    pub fn open(state_dir: impl Into<PathBuf>, registry: BackendRegistry) -> Result<Engine> {
        Self::with_options(state_dir, registry, SchedulerOptions::default())
    }

    /// Like [`open`](Self::open), with scheduler options.
    pub fn with_options(
        state_dir: impl Into<PathBuf>,
        registry: BackendRegistry,
        options: SchedulerOptions,
    ) -> Result<Engine> {
        let state_dir = state_dir.into();
        let ledger = Ledger::open(&state_dir)?;
        let load = registry.load_options();
        Ok(Engine {
            state_dir,
            environments: Environments::new(ledger.clone()),
            ledger,
            scheduler: Scheduler::with_options(registry, options),
            load,
            local_runs: LocalRuns::default(),
            policy: Arc::new(Policy::default()),
        })
    }

    /// The same engine under `policy`: the repositories it serves, who may run what, the
    /// secrets (see [`crate::trust`]).
    pub fn with_policy(mut self, policy: Policy) -> Engine {
        self.policy = Arc::new(policy);
        self
    }

    /// The policy it runs under.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The ledger.
    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    /// The state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// What `event` would run in `repo`: the pipelines of the event's commit, the environments
    /// of the trusted ref, the stages its trust level refuses. An event that may not run at all
    /// is an [`Error::Refused`].
    pub fn plan(&self, event: &GitEvent, repo: &Repository, options: &RunOptions) -> Result<Plan> {
        Ok(self.planned(event, repo, options)?.0)
    }

    /// The plan of `event` in `repo`, with its trust level, commit, config text and trusted
    /// environments.
    fn planned(
        &self,
        event: &GitEvent,
        repo: &Repository,
        options: &RunOptions,
    ) -> Result<(Plan, Planned)> {
        let level = self.admit(event)?;
        let commit = repo.commit_for(event)?;
        let text = repo.config_text_at(&commit)?;
        let config = Config::parse_with(CONFIG_FILE, &text, &self.load)?;
        let trusted = self.trusted_environments(repo, options);
        let effective = trust::with_trusted_environments(config.clone(), &trusted);
        let mut plan = Planner::new().plan(event, &effective, &repo.changes_for(event))?;
        for p in &mut plan.pipelines {
            p.check_backends(self.scheduler.registry())?;
            trust::refuse_stages(p, level, event, &trusted);
        }
        plan.notes = trust::notes(&config, &plan.pipelines, &trusted);
        Ok((
            plan,
            Planned {
                level,
                commit,
                text,
                trusted,
            },
        ))
    }

    /// Plans `event` and prepares a run of each pipeline it triggers (none when it triggers
    /// nothing). Nothing is started before every pipeline's backends are known to exist.
    ///
    /// The event's trust level decides what it may do (see [`crate::trust`]): an event of a
    /// repository the policy does not serve, or a pull request from a fork that no one
    /// approved, is an [`Error::Refused`]; deploy and stop stages it may not carry out are
    /// refused (see [`Plan::notes`] and each stage's `refused`), and its stages get the
    /// secrets its level allows.
    pub fn start(
        &self,
        event: &GitEvent,
        repo: &Repository,
        options: &RunOptions,
    ) -> Result<Vec<StartedRun>> {
        let (plan, planned) = self.planned(event, repo, options)?;
        let secrets = self.run_secrets(planned.level, options)?;
        let mut runs = Vec::new();
        for pipeline in plan.pipelines {
            let id = new_run_id();
            let (workdir, checkout) = self.workdir(repo, &planned.commit, &id, options)?;
            let mut record =
                RunRecord::new(&id, &pipeline.name, event.clone(), &planned.text, &workdir);
            record.repo = Some(repo.path().to_path_buf());
            record.commit = Some(planned.commit.clone());
            record.actor = event.actor.clone().or_else(|| options.actor.clone());
            record.trust = Some(planned.level);
            record.trusted_config = planned.trusted.text.clone();
            self.ledger.begin_run(&record)?;
            let mut run = self.prepare(
                record,
                Arc::new(pipeline),
                BTreeMap::new(),
                options,
                &secrets,
                checkout,
            );
            run.notes = plan.notes.clone();
            runs.push(run);
        }
        Ok(runs)
    }

    /// Everything `event` does, for applications that need not follow progress: runs the
    /// pipelines it triggers (at once, each within its concurrency group), then stops what it
    /// ends ([`settle`](Self::settle)). To follow runs, [`start`](Self::start) them, subscribe,
    /// execute, then settle. Dropping the future before the end cancels the runs.
    pub async fn handle(
        &self,
        event: &GitEvent,
        repo: &Repository,
        options: &RunOptions,
    ) -> Result<Handled> {
        let runs = self.start(event, repo, options)?;
        let reports = StartedRun::execute_all(runs, &CancellationToken::new())
            .await
            .into_iter()
            .collect::<Result<Vec<_>>>()?;
        let stopped = self.settle(event).await?;
        Ok(Handled { reports, stopped })
    }

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
                let start =
                    graph
                        .get(stage)
                        .ok_or_else(|| crate::plan::PlanError::UnknownStage {
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
            (Some(repo), Some(commit)) => self.workdir(repo, commit, &id, options)?,
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
        let mut checkout = None;
        if !record.workdir.is_dir() {
            if let (Some(repo), Some(commit)) = (&record.repo, &record.commit) {
                Repository::open(repo)?.checkout(commit, &record.workdir)?;
                checkout = Some(record.workdir.clone());
            }
        } else if record.workdir.starts_with(self.state_dir.join("checkouts")) {
            // The crashed process could not stop its stages; what they left running still
            // works in the run's own checkout. (Never done for in-place runs: the repository is
            // where people work.)
            stop_leftovers(&record.workdir);
            checkout = Some(record.workdir.clone());
        }
        self.ledger.claim_run(run_id)?;
        let mut backends: Vec<&str> = pipeline
            .stages
            .iter()
            .filter(|s| !reuse.contains_key(&*s.id) && s.action == crate::config::Action::Run)
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

    fn workdir(
        &self,
        repo: &Repository,
        commit: &str,
        id: &str,
        options: &RunOptions,
    ) -> Result<(PathBuf, Option<PathBuf>)> {
        if options.in_place {
            return Ok((repo.path().to_path_buf(), None));
        }
        let dir = self.state_dir.join("checkouts").join(id);
        repo.checkout(commit, &dir)?;
        Ok((dir.clone(), Some(dir)))
    }

    fn prepare(
        &self,
        record: RunRecord,
        pipeline: Arc<PlannedPipeline>,
        reuse: BTreeMap<String, crate::scheduler::StageReport>,
        options: &RunOptions,
        secrets: &RunSecrets,
        checkout: Option<PathBuf>,
    ) -> StartedRun {
        let mut info = RunInfo::new(
            record.id.clone(),
            record.pipeline.clone(),
            record.event,
            record.workdir,
        );
        info.actor = record.actor.clone().or_else(|| options.actor.clone());
        info.trust = record.trust;
        let mut spec = RunSpec::new(info)
            .with_reuse(reuse)
            .with_recorder(Arc::new(self.ledger.clone()))
            .with_gate(Arc::new(self.environments.clone()));
        spec.env = self.stage_env(options);
        spec.secrets = secrets.all.clone();
        spec.environment_secrets = secrets.by_environment.clone();
        spec.masked = secrets.masked.clone();
        StartedRun {
            id: record.id.clone(),
            repo: spec.info.event.repo.clone(),
            pipeline: pipeline.clone(),
            end: RunEnd {
                id: record.id,
                ledger: self.ledger.clone(),
                local_runs: self.local_runs.clone(),
                checkout,
                grouped: pipeline.concurrency.is_some(),
                watcher: None,
                ended: false,
            },
            run: self.scheduler.run(pipeline, spec),
            abandoned: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// The variables every stage gets: `options.env`, and the host's variables that the
    /// policy passes on (`pass_env`).
    fn stage_env(&self, options: &RunOptions) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for name in &self.policy.pass_env {
            if let Ok(value) = std::env::var(name) {
                env.insert(name.clone(), value);
            }
        }
        env.extend(options.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }
}

/// What planning an event found besides its plan.
struct Planned {
    level: crate::trust::TrustLevel,
    commit: String,
    text: String,
    trusted: trust::TrustedEnvironments,
}

/// Kills the process groups that have a process working inside `dir`; returns how many.
fn stop_leftovers(dir: &Path) -> usize {
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

/// How a [`StartedRun`] ends: its group's watcher stops, it leaves its group, its result is
/// recorded and its checkout removed. A run dropped before its end (its `execute` future
/// dropped, which cancels the scheduler's run, or never executed) ends so on drop, as
/// cancelled: otherwise it would look running, and hold its group's turn, for as long as
/// this process lives.
struct RunEnd {
    id: String,
    ledger: Ledger,
    local_runs: LocalRuns,
    checkout: Option<PathBuf>,
    grouped: bool,
    watcher: Option<tokio::task::JoinHandle<()>>,
    ended: bool,
}

impl RunEnd {
    fn end(&mut self, result: RunResult) -> Result<()> {
        self.ended = true;
        if let Some(watcher) = self.watcher.take() {
            watcher.abort();
        }
        if self.grouped {
            leave_group(&self.local_runs, &self.ledger, &self.id);
        }
        let recorded = self.ledger.finish_run(&self.id, result);
        if let Some(dir) = &self.checkout {
            let _ = std::fs::remove_dir_all(dir);
        }
        recorded?;
        Ok(())
    }
}

impl Drop for RunEnd {
    fn drop(&mut self) {
        if !self.ended {
            let _ = self.end(RunResult::Cancelled);
        }
    }
}

/// Takes a run out of its concurrency group, here and in the ledger.
fn leave_group(local_runs: &LocalRuns, ledger: &Ledger, id: &str) {
    local_runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id);
    let _ = ledger.leave_group(id);
}

impl StartedRun {
    /// A subscriber to the run's events.
    pub fn subscribe(&self) -> broadcast::Receiver<RunEvent> {
        self.run.subscribe()
    }

    /// Cancelling it cancels the run.
    pub fn cancel_token(&self) -> CancellationToken {
        self.run.cancel_token()
    }

    /// Runs it to its end, records how it ended, and removes its checkout. A run of a
    /// concurrency group first waits for its turn (its position is announced in its events);
    /// one superseded meanwhile ends as cancelled without running a stage. Dropping the future
    /// before the end cancels the run (see [`Run::execute`]) and records it as cancelled.
    pub async fn execute(mut self) -> Result<RunReport> {
        // A resumed run first clears what its crashed process left running on its backends
        // (best effort: a backend that cannot be reached fails its stages, saying why).
        for executor in &self.abandoned {
            let _ = executor.abandon(&self.id).await;
        }
        let token = self.run.cancel_token();
        if let Some(group) = &self.pipeline.concurrency {
            self.end
                .local_runs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(self.id.clone(), token.clone());
            if let Err(e) = self.wait_for_turn(group, &token).await {
                // The run never started: recorded as cancelled, not left to look interrupted.
                let _ = self.end.end(RunResult::Cancelled);
                return Err(e);
            }
            let (ledger, id, token) = (self.end.ledger.clone(), self.id.clone(), token.clone());
            self.end.watcher = Some(tokio::spawn(async move {
                loop {
                    tokio::time::sleep(GROUP_POLL).await;
                    if ledger.group_cancel_requested(&id).unwrap_or(false) {
                        token.cancel();
                        return;
                    }
                }
            }));
        }
        let report = self.run.execute().await;
        self.end.end(report.result)?;
        Ok(report)
    }

    /// Executes `runs` at once and returns how each ended, in their order. Cancelling `stop`
    /// cancels them all (their stages are stopped, and they end as cancelled); dropping the
    /// future cancels them too.
    pub async fn execute_all(
        runs: Vec<StartedRun>,
        stop: &CancellationToken,
    ) -> Vec<Result<RunReport>> {
        let cancels: Vec<_> = runs.iter().map(StartedRun::cancel_token).collect();
        // In a set, so that dropping this future drops the runs too, which cancels them.
        let mut tasks = tokio::task::JoinSet::new();
        for (i, run) in runs.into_iter().enumerate() {
            tasks.spawn(async move { (i, run.execute().await) });
        }
        let mut ended = Vec::new();
        let mut stopping = false;
        loop {
            tokio::select! {
                task = tasks.join_next() => match task {
                    None => break,
                    Some(Ok(run)) => ended.push(run),
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    // Cancelled by the runtime shutting down: the run was recorded as cancelled.
                    Some(Err(_)) => {}
                },
                _ = stop.cancelled(), if !stopping => {
                    stopping = true;
                    cancels.iter().for_each(CancellationToken::cancel);
                }
            }
        }
        ended.sort_by_key(|(i, _)| *i);
        ended.into_iter().map(|(_, report)| report).collect()
    }

    /// Waits until the run's concurrency group lets it start; cancels it when it is superseded.
    async fn wait_for_turn(
        &self,
        group: &crate::plan::PlannedConcurrency,
        token: &CancellationToken,
    ) -> Result<()> {
        self.end
            .ledger
            .join_group(&self.id, &self.repo, &group.group, group.on_conflict)?;
        let mut announced = None;
        loop {
            let displaced = match self
                .end
                .ledger
                .group_decision(&self.id, group.on_conflict)?
            {
                GroupDecision::Start { cancelled } => {
                    self.cancel_local(&cancelled);
                    return Ok(());
                }
                GroupDecision::Superseded => {
                    self.run.announce(RunEvent::RunSuperseded {
                        group: group.group.clone(),
                        at: 0.0,
                    });
                    token.cancel();
                    return Ok(());
                }
                GroupDecision::Wait {
                    position,
                    displaced,
                } => {
                    if announced != Some(position) {
                        announced = Some(position);
                        self.run.announce(RunEvent::RunQueued {
                            group: group.group.clone(),
                            position,
                            at: 0.0,
                        });
                    }
                    displaced
                }
            };
            self.cancel_local(&displaced);
            tokio::select! {
                _ = tokio::time::sleep(GROUP_POLL) => {}
                // Cancelled while queued (by a newer run of this process, or by the user):
                // it runs nothing.
                _ = token.cancelled() => {
                    if self.end.ledger.group_cancel_requested(&self.id).unwrap_or(false) {
                        self.run.announce(RunEvent::RunSuperseded {
                            group: group.group.clone(),
                            at: 0.0,
                        });
                    }
                    return Ok(());
                }
            }
        }
    }

    fn cancel_local(&self, runs: &[String]) {
        let local = self
            .end
            .local_runs
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for id in runs {
            if let Some(token) = local.get(id) {
                token.cancel();
            }
        }
    }
}
