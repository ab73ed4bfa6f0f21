//! What a backend is told about the stage it runs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{BackendError, Cancellation, EnvironmentTarget, LogSink, Params};
use crate::event::GitEvent;
use crate::secret::Secret;

/// What all stages of one run share.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunInfo {
    /// The run's id.
    pub id: String,
    /// The pipeline being run.
    pub pipeline: String,
    /// The event that caused the run.
    pub event: GitEvent,
    /// The checkout of the event's commit the stages run in.
    pub workdir: PathBuf,
    /// Who or what caused the run (the event's forge user, else a user name, `webhook`,
    /// `watch`), as the ledger shows it.
    pub actor: Option<String>,
    /// How far the engine trusts the run's event (none for runs made without an engine).
    pub trust: Option<TrustLevel>,
}

impl RunInfo {
    /// Run information for `pipeline` in `workdir`.
    pub fn new(
        id: impl Into<String>,
        pipeline: impl Into<String>,
        event: GitEvent,
        workdir: impl Into<PathBuf>,
    ) -> Self {
        RunInfo {
            id: id.into(),
            pipeline: pipeline.into(),
            event,
            workdir: workdir.into(),
            actor: None,
            trust: None,
        }
    }

    /// Sets who caused the run.
    pub fn with_actor(mut self, actor: impl Into<String>) -> Self {
        self.actor = Some(actor.into());
        self
    }
}

/// How far the engine trusts an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TrustLevel {
    /// The repository's own pushes, tags and releases, and operator commands.
    Trusted,
    /// A pull request from a branch of the repository itself.
    Member,
    /// A pull request from another repository, or from one the engine cannot tell.
    Fork,
}

impl TrustLevel {
    /// `trusted`, `member` or `fork`.
    pub fn as_str(self) -> &'static str {
        match self {
            TrustLevel::Trusted => "trusted",
            TrustLevel::Member => "member",
            TrustLevel::Fork => "fork",
        }
    }

    /// The level named `name` (`trusted`, `member`, `fork`).
    pub fn parse(name: &str) -> Option<TrustLevel> {
        match name {
            "trusted" => Some(TrustLevel::Trusted),
            "member" => Some(TrustLevel::Member),
            "fork" => Some(TrustLevel::Fork),
            _ => None,
        }
    }
}

impl fmt::Display for TrustLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One call to a backend: one attempt of one stage.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct StageContext {
    /// The run this stage belongs to.
    pub run: Arc<RunInfo>,
    /// The stage id.
    pub stage: Arc<str>,
    /// 1 for the first attempt, 2 for the first retry, ...
    pub attempt: u32,
    /// The stage's `run` command, exactly as written (never template-expanded).
    pub command: Option<Arc<str>>,
    /// The stage's `env`, rendered.
    pub env: BTreeMap<String, String>,
    /// The secrets this stage may have, by the name of the variable that carries each. A
    /// backend hands them to what it runs like `env` (or as the platform's secret objects),
    /// and never writes them where others can read them.
    pub secrets: BTreeMap<String, Secret>,
    /// The stage's (and, for deployments, its environment's) `with` parameters, rendered.
    pub with: serde_json::Map<String, serde_json::Value>,
    /// For `deploy` and `stop` stages: the environment (boxed: most stages have none, and
    /// every stage's context is moved into its backend's future).
    pub environment: Option<Box<EnvironmentTarget>>,
    /// The stage's `timeout`, for backends that also tell the platform (a Kubernetes Job's
    /// deadline); the scheduler enforces it in any case by cancelling.
    pub timeout: Option<std::time::Duration>,
    /// Fires when the stage must stop (timeout, run cancelled): read it through
    /// [`cancelled`](Self::cancelled) and [`is_cancelled`](Self::is_cancelled).
    pub(crate) cancel: Cancellation,
    /// Where log lines go.
    pub log: LogSink,
}

impl StageContext {
    /// `with.<key>` as a string (`None` when absent or null); any other value is an
    /// [`InvalidParameters`](BackendError::InvalidParameters) error naming the key.
    pub fn param_str(&self, key: &str) -> Result<Option<&str>, BackendError> {
        self.params().str(key)
    }

    /// `with.<key>` as a whole number (a number, or a string of digits); `None` when absent or
    /// null; anything else is an [`InvalidParameters`](BackendError::InvalidParameters) error.
    pub fn param_u64(&self, key: &str) -> Result<Option<u64>, BackendError> {
        self.params().u64(key)
    }

    /// `with.<key>` as a number of seconds, up to 7 days; see [`Params::seconds`].
    pub fn param_seconds(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        self.params().seconds(key)
    }

    /// The stage's `with` as typed [`Params`].
    pub fn params(&self) -> Params<'_> {
        Params::new(&self.with, "with")
    }

    /// A context for `stage` of `run`, first attempt, with nothing else set.
    pub fn new(run: Arc<RunInfo>, stage: impl AsRef<str>) -> Self {
        StageContext {
            run,
            stage: Arc::from(stage.as_ref()),
            attempt: 1,
            command: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            with: serde_json::Map::new(),
            environment: None,
            timeout: None,
            cancel: Cancellation::new(),
            log: LogSink::discard(),
        }
    }

    /// Sets the command.
    pub fn with_command(mut self, command: impl AsRef<str>) -> Self {
        self.command = Some(Arc::from(command.as_ref()));
        self
    }

    /// Adds an environment variable.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Adds a secret variable.
    pub fn with_secret(mut self, key: impl Into<String>, value: Secret) -> Self {
        self.secrets.insert(key.into(), value);
        self
    }

    /// Sets a `with` parameter.
    pub fn with_param(mut self, key: impl Into<String>, value: serde_json::Value) -> Self {
        self.with.insert(key.into(), value);
        self
    }

    /// Sets what tells the backend to stop.
    pub fn with_cancel(mut self, cancel: Cancellation) -> Self {
        self.cancel = cancel;
        self
    }

    /// Completes when the stage must stop (it timed out, or its run was cancelled); at once when
    /// it already must. Cancel-safe: use it in `tokio::select!` beside the stage's work.
    pub fn cancelled(&self) -> impl std::future::Future<Output = ()> + Send + '_ {
        self.cancel.cancelled()
    }

    /// Whether the stage must stop.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// What tells the stage to stop, to hand to a helper or a task of the backend's own.
    pub fn cancellation(&self) -> &Cancellation {
        &self.cancel
    }

    /// Sets the stage's timeout.
    pub fn with_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Sets the log sink.
    pub fn with_log(mut self, log: LogSink) -> Self {
        self.log = log;
        self
    }

    /// Sets the environment target.
    pub fn with_environment(mut self, target: EnvironmentTarget) -> Self {
        self.environment = Some(Box::new(target));
        self
    }

    /// Every variable of what the stage runs, later ones winning: the `GITOPS_*` variables,
    /// the stage's `env`, and its secrets (exposed: hand them only to the process or
    /// platform object that needs them, never to a log or record).
    pub fn variables(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = self
            .gitops_env()
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        vars.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        vars.extend(
            self.secrets
                .iter()
                .map(|(k, v)| (k.clone(), v.expose().to_owned())),
        );
        vars
    }

    /// The `GITOPS_*` variables every backend passes to what it runs: the event's data, which
    /// must reach commands only this way (never spliced into a command line).
    pub fn gitops_env(&self) -> Vec<(&'static str, String)> {
        let e = &self.run.event;
        let mut vars = vec![
            ("GITOPS_RUN_ID", self.run.id.clone()),
            ("GITOPS_PIPELINE", self.run.pipeline.clone()),
            ("GITOPS_STAGE", self.stage.to_string()),
            ("GITOPS_ATTEMPT", self.attempt.to_string()),
            ("GITOPS_EVENT_KIND", e.kind().as_str().to_owned()),
            ("GITOPS_REPO", e.repo.clone()),
        ];
        let mut opt = |k: &'static str, v: Option<String>| {
            if let Some(v) = v {
                vars.push((k, v));
            }
        };
        opt("GITOPS_SHA", e.sha.clone());
        opt("GITOPS_REF", e.git_ref());
        opt("GITOPS_BRANCH", e.branch().map(str::to_owned));
        opt("GITOPS_ACTION", e.action().map(str::to_owned));
        opt("GITOPS_TAG", e.tag().map(str::to_owned));
        opt("GITOPS_VERSION", e.version().map(|v| v.to_string()));
        if let Some(pr) = e.pull_request() {
            opt("GITOPS_PR_NUMBER", Some(pr.number.to_string()));
            opt("GITOPS_PR_TITLE", Some(pr.title.clone()));
            opt("GITOPS_PR_HEAD_REF", Some(pr.head.git_ref.clone()));
            opt("GITOPS_PR_BASE_REF", Some(pr.base.git_ref.clone()));
        }
        if let Some(t) = &self.environment {
            opt("GITOPS_ENVIRONMENT", Some(t.name.clone()));
            opt("GITOPS_DEPLOY_VERSION", t.version.clone());
        }
        vars
    }
}
