//! The engine: the facade an embedding application uses. Feed it an event and a repository; it
//! reads the config from the event's commit, plans, checks out, runs on the registered backends
//! and records everything in the ledger of its state dir. Runs can be re-run and, after a crash,
//! resumed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

mod checkouts;
mod deploy;
mod environments;
mod logs;
mod rerun;
mod started;
mod trust;

pub use environments::{EnvironmentState, StopReason, Stopped};
pub use started::StartedRun;

use checkouts::{Checkout, LazyPool};
use started::{LocalRuns, RunEnd};

use crate::Result;
use crate::backend::{BackendRegistry, RunInfo};
use crate::config::{CONFIG_FILE, Config, LoadOptions};
use crate::environment::Environments;
use crate::event::GitEvent;
use crate::ledger::{Ledger, RunRecord, new_run_id};
use crate::logs::LogStore;
use crate::plan::{Plan, PlannedPipeline, Planner};
use crate::repo::Repository;
use crate::scheduler::{RunReport, RunSpec, Scheduler, SchedulerOptions};
use crate::secret::Secret;
use crate::trust::Policy;
use trust::RunSecrets;

/// How runs are started.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RunOptions {
    /// Run stages in the repository's own directory instead of a checkout of the commit.
    pub in_place: bool,
    /// Give every run a fresh checkout, as `checkout: fresh` does for a pipeline, never a
    /// cached working tree.
    pub fresh_checkout: bool,
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
    /// The inbox delivery (`gitops serve`) whose event the runs serve, by its sequence number:
    /// recorded with each run, so that a server restarted after a crash resumes them.
    pub delivery: Option<u64>,
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
    logs: LogStore,
    environments: Environments,
    scheduler: Scheduler,
    load: LoadOptions,
    local_runs: LocalRuns,
    policy: Arc<Policy>,
    pool: LazyPool,
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
        let load = LoadOptions::from_registry(&registry);
        Ok(Engine {
            logs: LogStore::new(&state_dir),
            state_dir,
            environments: Environments::new(ledger.clone()),
            ledger,
            scheduler: Scheduler::with_options(registry, options),
            load,
            local_runs: LocalRuns::default(),
            policy: Arc::new(Policy::default()),
            pool: LazyPool::default(),
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
    ///
    /// [`Error::Refused`]: crate::Error::Refused
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
        // A release names its tag, not a commit: from here on the event carries the tag's
        // commit (`event.sha`, `GITOPS_SHA`, what the ledger records).
        let mut event = event.clone();
        event.sha.get_or_insert_with(|| commit.clone());
        let text = repo.config_text_at(&commit)?;
        let config = Config::parse_with(CONFIG_FILE, &text, &self.load)?;
        let trusted = self.trusted_environments(repo, options);
        let effective = trust::with_trusted_environments(config.clone(), &trusted);
        let mut plan = Planner::new().plan(&event, &effective, &repo.changes_for(&event))?;
        for p in &mut plan.pipelines {
            p.check_backends(self.scheduler.registry())?;
            trust::refuse_stages(p, level, &event, &trusted);
        }
        plan.notes = trust::notes(&config, &plan.pipelines, &trusted);
        Ok((
            plan,
            Planned {
                event,
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
    ///
    /// [`Error::Refused`]: crate::Error::Refused
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
            let (workdir, checkout) = self.workdir(
                repo,
                &planned.commit,
                &id,
                options,
                pipeline.checkout,
                planned.level,
                &planned.event,
            )?;
            let event = &planned.event;
            let mut record =
                RunRecord::new(&id, &pipeline.name, event.clone(), &planned.text, &workdir);
            record.repo = Some(repo.path().to_path_buf());
            record.commit = Some(planned.commit.clone());
            record.actor = event.actor.clone().or_else(|| options.actor.clone());
            record.trust = Some(planned.level);
            record.trusted_config = planned.trusted.text.clone();
            record.delivery = options.delivery;
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
    /// ends ([`finish_event`](Self::finish_event)). To follow runs, [`start`](Self::start) them,
    /// subscribe, execute, then finish the event. Dropping the future before the end cancels
    /// the runs.
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
        let stopped = self.finish_event(event).await?;
        Ok(Handled { reports, stopped })
    }

    fn prepare(
        &self,
        record: RunRecord,
        pipeline: Arc<PlannedPipeline>,
        reuse: BTreeMap<String, crate::scheduler::StageReport>,
        options: &RunOptions,
        secrets: &RunSecrets,
        checkout: Option<Checkout>,
    ) -> StartedRun {
        let mut info = RunInfo::new(
            record.id.clone(),
            record.pipeline.clone(),
            record.event,
            record.workdir,
        );
        info.actor = record.actor.clone().or_else(|| options.actor.clone());
        info.trust = record.trust;
        // Every run's ids name a folder; were one not to, its stages' lines would not be kept.
        let log = self.logs.writer(&record.id).ok().map(Arc::new);
        let recorder = logs::Recorder {
            ledger: self.ledger.clone(),
            log: log.clone(),
        };
        let mut spec = RunSpec::new(info)
            .with_reuse(reuse)
            .with_recorder(Arc::new(recorder))
            .with_gate(Arc::new(self.environments.clone()));
        if let Some(log) = &log {
            spec = spec.with_log(log.clone());
        }
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
                log,
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
    /// The event, with the commit it was resolved to.
    event: GitEvent,
    level: crate::trust::TrustLevel,
    commit: String,
    text: String,
    trusted: trust::TrustedEnvironments,
}
