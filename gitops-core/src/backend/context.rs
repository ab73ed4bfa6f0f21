//! What a backend is told about the stage it runs.

use std::collections::BTreeMap;
use std::path::{Component, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::{BackendError, Cancellation, LogSink};
use crate::config::{Approval, Environment, MAX_DURATION, OnBusy};
use crate::event::GitEvent;
use crate::secret::Secret;
use crate::trust::TrustLevel;

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

/// The environment a deploy or stop stage acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvironmentTarget {
    /// The instance (`preview-pr-7`, `staging`).
    pub name: String,
    /// The environment as named in config (`preview`).
    pub config_name: String,
    /// The version being deployed (the tag's semver), when there is one.
    pub version: Option<String>,
    /// The pull request that owns it (per-pull-request environments).
    pub pull_request: Option<u64>,
    /// How deployments to it wait (approval, lock, pin), from its config.
    pub policy: EnvironmentPolicy,
}

/// How deployments to an environment wait, from its config.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EnvironmentPolicy {
    /// Each deployment waits for someone's approval.
    pub approval: Approval,
    /// What a deployment does while another one holds the environment.
    pub on_locked: OnBusy,
    /// What a pipeline's deployment does while a rollback pins the environment.
    pub on_pinned: OnBusy,
    /// Stop the environment after this long without a deployment.
    pub auto_stop_after: Option<std::time::Duration>,
}

impl EnvironmentPolicy {
    /// The policy an environment's config sets.
    pub fn of(env: &Environment) -> Self {
        EnvironmentPolicy {
            approval: env.approval,
            on_locked: env.on_locked,
            on_pinned: env.on_pinned,
            auto_stop_after: env.auto_stop_after,
        }
    }
}

impl EnvironmentTarget {
    /// A target.
    pub fn new(
        name: impl Into<String>,
        config_name: impl Into<String>,
        version: Option<String>,
    ) -> Self {
        EnvironmentTarget {
            name: name.into(),
            config_name: config_name.into(),
            version,
            pull_request: None,
            policy: EnvironmentPolicy::default(),
        }
    }

    /// Sets the owning pull request.
    pub fn with_pull_request(mut self, number: Option<u64>) -> Self {
        self.pull_request = number;
        self
    }

    /// Sets the policy.
    pub fn with_policy(mut self, policy: EnvironmentPolicy) -> Self {
        self.policy = policy;
        self
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

/// `rel`, a path from `with.<key>`, when it stays inside the checkout (no `..`, not absolute).
///
/// This checks the text only; open what a config names through
/// [`Checkout`](super::paths::Checkout), which also refuses links leading out and special files.
pub fn checkout_path(key: &str, rel: &str) -> Result<PathBuf, BackendError> {
    let path = PathBuf::from(rel);
    let inside = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    if inside {
        Ok(path)
    } else {
        Err(BackendError::InvalidParameters(format!(
            "`with.{key}`: \"{rel}\" is not a path inside the checkout"
        )))
    }
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

    /// `with.<key>` as a number of seconds, up to [`MAX_DURATION`]; see [`Params::seconds`].
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

/// Typed reads of a map of backend parameters (a stage's `with`, or a map inside it), whose
/// errors name the parameter by its whole path (`with.services.web.port`).
#[derive(Debug, Clone, Copy)]
pub struct Params<'a> {
    map: &'a serde_json::Map<String, serde_json::Value>,
    path: &'a str,
}

impl<'a> Params<'a> {
    /// The parameters in `map`, found at `path` (`with`, `with.services.web`).
    pub fn new(map: &'a serde_json::Map<String, serde_json::Value>, path: &'a str) -> Self {
        Params { map, path }
    }

    /// Where these parameters are.
    pub fn path(&self) -> &'a str {
        self.path
    }

    /// The raw value of `key`; `None` when absent or null.
    pub fn get(&self, key: &str) -> Option<&'a serde_json::Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    /// The keys present.
    pub fn keys(&self) -> impl Iterator<Item = &'a str> {
        self.map.keys().map(String::as_str)
    }

    /// An [`InvalidParameters`](BackendError::InvalidParameters) error about `key`: "`<path>.<key>`
    /// must be `expected`, found VALUE".
    pub fn invalid(&self, key: &str, expected: &str) -> BackendError {
        let found = self
            .map
            .get(key)
            .map_or_else(|| "nothing".to_owned(), ToString::to_string);
        BackendError::InvalidParameters(format!(
            "`{}.{key}` must be {expected}, found {found}",
            self.path
        ))
    }

    /// `key` as a string (`None` when absent or null), else an error naming it.
    pub fn str(&self, key: &str) -> Result<Option<&'a str>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(self.invalid(key, "a string")),
        }
    }

    /// `key` as a whole number (a number, or a string of digits); `None` when absent or null.
    pub fn u64(&self, key: &str) -> Result<Option<u64>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(serde_json::Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
            Some(_) => Err(self.invalid(key, "a whole number")),
        }
    }

    /// `key` as a number of seconds (a whole number, or a string of digits) up to
    /// [`MAX_DURATION`] (7 days); `None` when absent or null; a longer one is an error naming
    /// the key, so that no deadline made from it can overflow.
    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        match self.u64(key)? {
            None => Ok(None),
            Some(secs) if secs <= MAX_DURATION.as_secs() => Ok(Some(Duration::from_secs(secs))),
            Some(_) => Err(self.invalid(
                key,
                &format!(
                    "a number of seconds up to {} (7 days)",
                    MAX_DURATION.as_secs()
                ),
            )),
        }
    }

    /// `key` as a list of strings (`None` when absent or null).
    pub fn strings(&self, key: &str) -> Result<Option<Vec<String>>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect::<Option<Vec<_>>>()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "a list of strings")),
            Some(_) => Err(self.invalid(key, "a list of strings")),
        }
    }

    /// `key` as a map of names to strings (numbers and booleans are written out), such as an
    /// `env`; `None` when absent or null.
    pub fn string_map(&self, key: &str) -> Result<Option<BTreeMap<String, String>>, BackendError> {
        match self.get(key) {
            None => Ok(None),
            Some(serde_json::Value::Object(map)) => map
                .iter()
                .map(|(k, v)| match v {
                    serde_json::Value::String(s) => Some((k.clone(), s.clone())),
                    serde_json::Value::Number(_) | serde_json::Value::Bool(_) => {
                        Some((k.clone(), v.to_string()))
                    }
                    _ => None,
                })
                .collect::<Option<BTreeMap<_, _>>>()
                .map(Some)
                .ok_or_else(|| self.invalid(key, "a map of names to strings")),
            Some(_) => Err(self.invalid(key, "a map of names to strings")),
        }
    }
}
