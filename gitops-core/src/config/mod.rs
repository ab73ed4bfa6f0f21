//! `.gitops.yml`: parsing with serde_yaml (unknown keys rejected) and validation of everything
//! that can be checked before an event arrives, every error located as `file:line:col`.
//!
//! ```
//! use gitops_core::config::Config;
//! let yaml = "version: 1\npipelines:\n  ci:\n    on: { push: { branches: [main] } }\n    stages:\n      test: { run: cargo test }\n";
//! let config = Config::parse(".gitops.yml", yaml).unwrap();
//! assert_eq!(config.pipelines["ci"].stages["test"].run.as_deref(), Some("cargo test"));
//!
//! let err = Config::parse(".gitops.yml", &yaml.replace("run:", "runs:")).unwrap_err();
//! assert!(err.to_string().starts_with(".gitops.yml:6:15: "), "{err}");
//! ```

mod build;
mod de;
mod locate;
mod model;
pub mod params;
mod patterns;
mod suggest;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use crate::backend::BackendRegistry;

pub use crate::backend::{Approval, OnBusy};
pub use de::{Condition, MAX_DURATION, TemplateString, format_duration, parse_duration};
pub use locate::Position;
pub use model::{
    Action, CheckoutMode, Concurrency, Config, DeployFrom, DeployFromTags, Environment, OnConflict,
    PULL_REQUEST_TYPES, Pipeline, PullRequestTrigger, PullRequestType, PushTrigger, ReleaseTrigger,
    Retry, SemverReq, Stage, TagTrigger, Triggers,
};
pub use params::ParamSchema;
pub use patterns::{Glob, Globs};

pub(crate) use locate::Locations;

/// The largest `.gitops.yml` read (4 MiB): a pull request's file is a stranger's, and a config
/// of real pipelines is a few kilobytes.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// The file name gitops reads at the root of a repository.
pub const CONFIG_FILE: &str = ".gitops.yml";

/// The backend names a config may use when [`LoadOptions`] says nothing more: the names the
/// backend crates are registered under by the `gitops` app (`k8s` is Kubernetes). Others must be
/// registered by the embedding application.
pub const BUILTIN_BACKENDS: &[&str] = &["local", "docker", "terraform", "k8s"];

/// The longest instance name: a DNS label's, so that every backend can name its objects after
/// it (Kubernetes namespaces, Docker containers).
pub const MAX_INSTANCE_NAME: usize = 63;

/// Whether `name` can name an environment instance: a DNS label (`[a-z0-9]([a-z0-9-]*[a-z0-9])?`, at most
/// [`MAX_INSTANCE_NAME`] characters). Rendered from event data, a name is a stranger's text:
/// this keeps `..`, `/` and the like out of paths and object names.
pub fn is_instance_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_INSTANCE_NAME
        && chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
}

/// One located problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file, as given to the parser.
    pub file: String,
    /// Where in it.
    pub position: Position,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.position.line, self.position.column, self.message
        )
    }
}

/// A config that cannot be used: every problem found, one `file:line:col: message` per line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    /// The problems, in file order.
    pub diagnostics: Vec<Diagnostic>,
}

impl ConfigError {
    pub(crate) fn single(file: &str, position: Position, message: impl Into<String>) -> Self {
        ConfigError {
            diagnostics: vec![Diagnostic {
                file: file.to_owned(),
                position,
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

/// What a config may refer to beyond itself: the backends, and what each accepts in `with`
/// ([`LoadOptions::from_registry`] gives those of the registered backends).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadOptions {
    /// Backend names that stages and environments may use.
    pub backends: Vec<String>,
    /// By backend name, the `with` of its `run` stages; a backend not here is not checked.
    pub run_params: BTreeMap<String, ParamSchema>,
    /// By backend name, the `with` of its deploy and stop stages and of its environments; a
    /// backend not here is not checked.
    pub deploy_params: BTreeMap<String, ParamSchema>,
}

impl Default for LoadOptions {
    /// The built-in backend names, with no parameters checked.
    fn default() -> Self {
        LoadOptions {
            backends: BUILTIN_BACKENDS.iter().map(|s| s.to_string()).collect(),
            run_params: BTreeMap::new(),
            deploy_params: BTreeMap::new(),
        }
    }
}

impl LoadOptions {
    /// What configs run on `registry` may use: its backend names, and the `with` parameters
    /// each declares for `run` stages and for deployments; what `Engine` loads configs with.
    pub fn from_registry(registry: &BackendRegistry) -> Self {
        LoadOptions {
            backends: registry.names(),
            run_params: registry
                .executors()
                .map(|(name, e)| (name.to_owned(), e.params()))
                .collect(),
            deploy_params: registry
                .deployers()
                .map(|(name, d)| (name.to_owned(), d.params()))
                .collect(),
        }
    }

    /// Allows one more backend name.
    pub fn with_backend(mut self, name: impl Into<String>) -> Self {
        self.backends.push(name.into());
        self
    }

    /// Checks the `with` of `run` stages on backend `name` against `schema` (and allows the
    /// name).
    pub fn with_run_params(mut self, name: impl Into<String>, schema: ParamSchema) -> Self {
        let name = name.into();
        self.allow(&name);
        self.run_params.insert(name, schema);
        self
    }

    /// Checks the `with` of deploy and stop stages and of environments on backend `name`
    /// against `schema` (and allows the name).
    pub fn with_deploy_params(mut self, name: impl Into<String>, schema: ParamSchema) -> Self {
        let name = name.into();
        self.allow(&name);
        self.deploy_params.insert(name, schema);
        self
    }

    fn allow(&mut self, name: &str) {
        if !self.backends.iter().any(|b| b == name) {
            self.backends.push(name.to_owned());
        }
    }
}

impl Config {
    /// Parses and validates a config with the built-in backends. `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        Self::parse_with(file, text, &LoadOptions::default())
    }

    /// Parses and validates a config.
    pub fn parse_with(
        file: &str,
        text: &str,
        options: &LoadOptions,
    ) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::single(
                file,
                Position { line: 1, column: 1 },
                "the file is empty",
            ));
        }
        if text.len() > MAX_CONFIG_BYTES {
            return Err(ConfigError::single(
                file,
                Position { line: 1, column: 1 },
                format!(
                    "the file is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
                    text.len()
                ),
            ));
        }
        // The indexer reads the whole document first, so syntax errors are reported as such
        // rather than as whatever type error serde_yaml meets before them.
        let locations = Locations::index(text)
            .map_err(|(position, message)| ConfigError::single(file, position, message))?;
        let config: Config = serde_yaml::from_str(text).map_err(|e| from_yaml(file, &e))?;
        let diagnostics = validate::validate(&config, &locations, options)
            .into_iter()
            .map(|(position, message)| Diagnostic {
                file: file.to_owned(),
                position,
                message,
            })
            .collect::<Vec<_>>();
        if diagnostics.is_empty() {
            Ok(config)
        } else {
            let mut diagnostics = diagnostics;
            diagnostics.sort_by_key(|d| (d.position.line, d.position.column));
            Err(ConfigError { diagnostics })
        }
    }

    /// Validates a config built in code; `file` names it in the diagnostics, which point at
    /// line 1 since there is no text to locate them in.
    pub fn validate(&self, file: &str, options: &LoadOptions) -> Result<(), ConfigError> {
        let diagnostics: Vec<Diagnostic> = validate::validate(self, &Locations::default(), options)
            .into_iter()
            .map(|(position, message)| Diagnostic {
                file: file.to_owned(),
                position,
                message,
            })
            .collect();
        if diagnostics.is_empty() {
            Ok(())
        } else {
            Err(ConfigError { diagnostics })
        }
    }

    /// Reads, parses and validates a config file with the built-in backends.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        Self::load_with(path, &LoadOptions::default())
    }

    /// Reads, parses and validates a config file.
    pub fn load_with(path: &Path, options: &LoadOptions) -> Result<Config, ConfigError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::single(
                &name,
                Position { line: 1, column: 1 },
                format!("cannot read file: {e}"),
            )
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::single(
                &name,
                Position { line: 1, column: 1 },
                format!("not UTF-8: {e}"),
            )
        })?;
        Self::parse_with(&name, &text, options)
    }
}

/// Why `name` cannot be an environment variable of a stage: not letters, digits and `_`
/// starting with a letter or `_`, or in the `GITOPS_` prefix that gitops sets.
pub(crate) fn bad_variable_name(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        Some(format!(
            "invalid environment variable name \"{name}\" (use letters, digits and '_')"
        ))
    } else if name.starts_with("GITOPS_") {
        Some(format!(
            "environment variable \"{name}\": the GITOPS_ prefix is reserved for the variables gitops sets"
        ))
    } else {
        None
    }
}

pub(crate) fn from_yaml(file: &str, e: &serde_yaml::Error) -> ConfigError {
    let position = e
        .location()
        .map_or(Position { line: 1, column: 1 }, |l| Position {
            line: l.line(),
            column: l.column(),
        });
    let text = e.to_string();
    // serde_yaml appends " at line L column C"; the location goes in front instead.
    let message = match text.rfind(" at line ") {
        Some(i) if text[i..].contains(" column ") => text[..i].to_owned(),
        _ => text,
    };
    ConfigError::single(file, position, message)
}
