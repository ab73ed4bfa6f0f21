//! What a backend accepts in `with`: a declarative [`ParamSchema`] that each backend returns
//! (`Executor::params`, `Deployer::params`) and that config validation checks every `with`
//! against at load time, without depending on the backends themselves.
//!
//! A parameter that is a command ([`ParamKind::Command`], [`ParamKind::CommandArgs`]) never holds
//! `${{ }}`: event data reaches commands only as `GITOPS_*` variables and the stage's `env`.
//! Other parameters may hold templates, whose type can only be checked once rendered.
//!
//! ```
//! use gitops_core::config::params::{ParamKind, ParamSchema};
//! use gitops_core::config::{Config, LoadOptions};
//!
//! let deploy = ParamSchema::new()
//!     .with("serve", ParamKind::Command, "the command that serves the release")
//!     .with("port", ParamKind::port(), "the port to serve on");
//! let options = LoadOptions::default().with_deploy_params("local", deploy);
//! let yaml = "version: 1\nenvironments:\n  web: {}\npipelines:\n  ci:\n    on: { push: {} }\n    stages:\n      d: { deploy: web, with: { serve: \"echo ${{ event.branch }}\" } }\n";
//! let err = Config::parse_with(".gitops.yml", yaml, &options).unwrap_err();
//! assert!(err.to_string().starts_with(".gitops.yml:8:40: pipelines.ci.stages.d.with.serve: "), "{err}");
//! ```

mod check;
#[cfg(test)]
mod tests;

pub(crate) use check::check;

/// The longest duration a parameter in seconds may ask for: 7 days.
pub const MAX_SECONDS: u64 = 7 * 24 * 60 * 60;

/// The `with` parameters a backend accepts for one kind of call (running a stage, or deploying
/// and stopping an environment).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamSchema {
    params: Vec<Param>,
    open: bool,
}

/// One parameter of a [`ParamSchema`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Param {
    /// Its key in `with`.
    pub name: String,
    /// What it holds.
    pub kind: ParamKind,
    /// One line on what it does, for people.
    pub doc: String,
}

/// What a parameter holds. A `null` value counts as absent for every kind.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParamKind {
    /// A string; a template is allowed.
    String,
    /// A shell command (a string), never template-expanded.
    Command,
    /// A command as a non-empty list of arguments (argv), none of them template-expanded.
    CommandArgs,
    /// A relative path inside the checkout (no `..`, not absolute); a template is allowed.
    Path,
    /// A list of paths inside the checkout.
    PathList,
    /// A path inside the checkout, or a list of them.
    PathOrList,
    /// A whole number (or a string of digits) from `min` to `max`; a template is allowed.
    WholeNumber {
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// `true` or `false`; a template is allowed.
    Bool,
    /// A list of strings.
    StringList,
    /// A string, or a list of strings.
    StringOrList,
    /// A map of names to strings (numbers and booleans are taken as text), such as an `env`.
    StringMap,
    /// One of these words; a template is allowed.
    OneOf(Vec<String>),
    /// A map with parameters of its own.
    Map(ParamSchema),
    /// A map of names (chosen by the config) to maps with these parameters.
    MapOf(ParamSchema),
    /// Anything at all.
    Any,
}

impl ParamKind {
    /// A TCP port: a whole number from 1 to 65535.
    pub fn port() -> ParamKind {
        ParamKind::WholeNumber { min: 1, max: 65535 }
    }

    /// A duration in whole seconds, up to [`MAX_SECONDS`].
    pub fn seconds() -> ParamKind {
        ParamKind::WholeNumber {
            min: 0,
            max: MAX_SECONDS,
        }
    }

    /// One of `words`.
    pub fn one_of(words: &[&str]) -> ParamKind {
        ParamKind::OneOf(words.iter().map(|w| (*w).to_owned()).collect())
    }

    /// Whether it is a command, which must never hold `${{ }}`.
    pub fn is_command(&self) -> bool {
        matches!(self, ParamKind::Command | ParamKind::CommandArgs)
    }

    /// What a value of this kind is, for messages (`a whole number from 1 to 65535`).
    pub fn describe(&self) -> String {
        match self {
            ParamKind::String => "a string".to_owned(),
            ParamKind::Command => "a command (a string)".to_owned(),
            ParamKind::CommandArgs => "a non-empty list of command arguments".to_owned(),
            ParamKind::Path => "a path inside the checkout".to_owned(),
            ParamKind::PathList => "a list of paths inside the checkout".to_owned(),
            ParamKind::PathOrList => {
                "a path inside the checkout or a list of such paths".to_owned()
            }
            ParamKind::WholeNumber { min, max } => {
                format!("a whole number from {min} to {max}")
            }
            ParamKind::Bool => "true or false".to_owned(),
            ParamKind::StringList => "a list of strings".to_owned(),
            ParamKind::StringOrList => "a string or a list of strings".to_owned(),
            ParamKind::StringMap => "a map of names to strings".to_owned(),
            ParamKind::OneOf(words) => format!("one of {}", words.join(", ")),
            ParamKind::Map(schema) => match schema.names().as_slice() {
                [] => "a map".to_owned(),
                names => format!("a map ({})", names.join(", ")),
            },
            ParamKind::MapOf(_) => "a map of names to maps".to_owned(),
            ParamKind::Any => "anything".to_owned(),
        }
    }
}

impl ParamSchema {
    /// A schema that accepts no key yet: add them with [`with`](Self::with).
    pub fn new() -> Self {
        ParamSchema {
            params: Vec::new(),
            open: false,
        }
    }

    /// A schema that accepts any key with any value, and takes nothing for a command: what a
    /// backend that declares nothing gets. Keys added with [`with`](Self::with) are still
    /// checked.
    pub fn open() -> Self {
        ParamSchema {
            params: Vec::new(),
            open: true,
        }
    }

    /// Adds (or replaces) parameter `name`.
    pub fn with(
        mut self,
        name: impl Into<String>,
        kind: ParamKind,
        doc: impl Into<String>,
    ) -> Self {
        let param = Param {
            name: name.into(),
            kind,
            doc: doc.into(),
        };
        match self.params.iter_mut().find(|p| p.name == param.name) {
            Some(old) => *old = param,
            None => self.params.push(param),
        }
        self
    }

    /// Whether keys it does not declare are accepted.
    pub fn is_open(&self) -> bool {
        self.open
    }

    /// The declared parameters, in the order they were added.
    pub fn params(&self) -> &[Param] {
        &self.params
    }

    /// The parameter `name`, when declared.
    pub fn get(&self, name: &str) -> Option<&Param> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The declared keys, in order.
    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|p| p.name.as_str()).collect()
    }
}

impl Default for ParamSchema {
    /// [`ParamSchema::new`]: no key accepted.
    fn default() -> Self {
        Self::new()
    }
}
