//! The `with` parameters of a stage: the [`ParamSchema`] a backend declares for them (which
//! config validation checks every `with` against at load time, without depending on the
//! backends themselves), and [`Params`], their typed reads.
//!
//! A parameter that is a command ([`ParamKind::Command`], [`ParamKind::CommandArgs`]) never holds
//! `${{ }}`: event data reaches commands only as `GITOPS_*` variables and the stage's `env`.
//! Other parameters may hold templates, whose type can only be checked once rendered.

use std::collections::BTreeMap;
use std::path::{Component, PathBuf};
use std::time::Duration;

use super::BackendError;

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
    /// [`MAX_SECONDS`] (7 days); `None` when absent or null; a longer one is an error naming
    /// the key, so that no deadline made from it can overflow.
    pub fn seconds(&self, key: &str) -> Result<Option<Duration>, BackendError> {
        match self.u64(key)? {
            None => Ok(None),
            Some(secs) if secs <= MAX_SECONDS => Ok(Some(Duration::from_secs(secs))),
            Some(_) => Err(self.invalid(
                key,
                &format!("a number of seconds up to {MAX_SECONDS} (7 days)"),
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
