//! The policy file (`--policy FILE`): what the repository must not decide for itself. It lives
//! on the server, never in the repository: the repositories served, the rule for pull requests
//! from forks, the secrets and who gets them, and protection rules that override the trusted
//! config's.
//!
//! ```
//! use gitops_core::trust::{ForkRule, Policy};
//! let policy = Policy::parse("policy.yml", "repositories: [acme/app]\nforks: run\n").unwrap();
//! assert_eq!(policy.forks, ForkRule::Run);
//! assert!(policy.serves("acme/app") && !policy.serves("evil/app"));
//! let err = Policy::parse("policy.yml", "fork: run\n").unwrap_err();
//! assert!(err.to_string().starts_with("policy.yml:1:1: unknown field `fork`"), "{err}");
//! ```

use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

use crate::config::{Approval, ConfigError, DeployFrom, Diagnostic, Position};
use crate::secret::Secret;

/// The label a maintainer puts on a pull request from a fork to let it run (default).
pub const DEFAULT_TRUST_LABEL: &str = "safe-to-test";

/// The server's policy. [`Policy::default`] is what runs without a policy file: any
/// repository, forks wait for approval by the label `safe-to-test`, pull request refs seen by
/// the watcher are forks', no secrets.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Policy {
    /// The repositories served (`owner/name`); events of others are refused. Empty: any.
    #[serde(default)]
    pub repositories: Vec<String>,
    /// What a pull request from a fork may do.
    #[serde(default)]
    pub forks: ForkRule,
    /// The label that lets a fork's pull request run (with `forks: approve`).
    #[serde(default = "default_label")]
    pub trust_label: String,
    /// The trust level of pull request refs seen by the watcher, which cannot tell forks apart.
    #[serde(default)]
    pub watch_pull_requests: WatchTrust,
    /// Secrets by the name of the variable stages see.
    #[serde(default)]
    pub secrets: IndexMap<String, SecretSpec>,
    /// Protection rules by environment, overriding the trusted config's.
    #[serde(default)]
    pub environments: IndexMap<String, EnvironmentRules>,
    /// Variables of the host passed to every stage (besides `PATH`, `HOME`, `LANG`, `TZ`).
    #[serde(default)]
    pub pass_env: Vec<String>,
}

fn default_label() -> String {
    DEFAULT_TRUST_LABEL.to_owned()
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            repositories: Vec::new(),
            forks: ForkRule::default(),
            trust_label: default_label(),
            watch_pull_requests: WatchTrust::default(),
            secrets: IndexMap::new(),
            environments: IndexMap::new(),
            pass_env: Vec::new(),
        }
    }
}

/// `forks:` of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForkRule {
    /// A fork's pull request never runs.
    Ignore,
    /// It runs once a maintainer approves it: the trust label on the pull request, or
    /// `gitops trust-pr NUMBER`.
    #[default]
    Approve,
    /// It runs (without secrets, deploying nothing).
    Run,
}

/// `watch_pull_requests:` of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WatchTrust {
    /// Pull request refs seen by the watcher are treated as forks'.
    #[default]
    Fork,
    /// They are treated as members' (every pull request of the repository comes from a branch
    /// of its own).
    Member,
}

/// One secret of the policy: where its value comes from and who may have it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SecretSpec {
    /// The host's environment variable holding it.
    #[serde(default)]
    pub from_env: Option<String>,
    /// A file holding it (a trailing newline is dropped).
    #[serde(default)]
    pub from_file: Option<PathBuf>,
    /// Only the deploy and stop stages of these environments (config names) get it.
    #[serde(default)]
    pub environments: Option<Vec<String>>,
    /// Runs of pull requests from the repository's own branches get it too.
    #[serde(default)]
    pub pull_requests: bool,
    /// A value given in code ([`SecretSpec::value`]); never read from a file.
    #[serde(skip)]
    value: Option<Secret>,
}

impl SecretSpec {
    /// A secret read from the host's environment variable `name`.
    pub fn from_env(name: impl Into<String>) -> Self {
        SecretSpec {
            from_env: Some(name.into()),
            from_file: None,
            environments: None,
            pull_requests: false,
            value: None,
        }
    }

    /// A secret given as a value.
    pub fn value(value: Secret) -> Self {
        SecretSpec {
            from_env: None,
            from_file: None,
            environments: None,
            pull_requests: false,
            value: Some(value),
        }
    }

    /// Restricts it to the deploy and stop stages of `environments`.
    pub fn for_environments<I: IntoIterator<Item = S>, S: Into<String>>(
        mut self,
        environments: I,
    ) -> Self {
        self.environments = Some(environments.into_iter().map(Into::into).collect());
        self
    }

    /// Lets runs of the repository's own pull requests have it.
    pub fn for_pull_requests(mut self) -> Self {
        self.pull_requests = true;
        self
    }

    /// Reads the value from the host, now (so that a rotated secret is picked up by the next
    /// run and by a rollback).
    pub fn read(&self, name: &str) -> Result<Secret, String> {
        if let Some(v) = &self.value {
            return Ok(v.clone());
        }
        if let Some(var) = &self.from_env {
            return std::env::var(var)
                .map(Secret::new)
                .map_err(|_| format!("secret {name}: environment variable {var} is not set"));
        }
        if let Some(path) = &self.from_file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("secret {name}: cannot read {}: {e}", path.display()))?;
            let text = text.strip_suffix('\n').unwrap_or(&text);
            let text = text.strip_suffix('\r').unwrap_or(text);
            return Ok(Secret::new(text));
        }
        Err(format!("secret {name}: no from_env or from_file"))
    }
}

/// Protection rules of one environment in the policy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct EnvironmentRules {
    /// The refs that may deploy to it (replaces the trusted config's).
    #[serde(default)]
    pub deploy_from: Option<DeployFrom>,
    /// Whether each deployment waits for an approval (replaces the trusted config's).
    #[serde(default)]
    pub approval: Option<Approval>,
    /// Marks it as production for the forges (over the trusted config's `production`).
    #[serde(default)]
    pub production: Option<bool>,
}

impl Policy {
    /// Reads and checks a policy file.
    pub fn load(path: &Path) -> Result<Policy, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::single(
                &name,
                Position { line: 1, column: 1 },
                format!("cannot read file: {e}"),
            )
        })?;
        Self::parse(&name, &text)
    }

    /// Parses and checks a policy; `file` names it in errors (`file:line:col: message`).
    pub fn parse(file: &str, text: &str) -> Result<Policy, ConfigError> {
        if text.trim().is_empty() {
            return Ok(Policy::default());
        }
        let locations = crate::config::Locations::index(text)
            .map_err(|(position, message)| ConfigError::single(file, position, message))?;
        let policy: Policy =
            serde_yaml::from_str(text).map_err(|e| crate::config::from_yaml(file, &e))?;
        let mut diagnostics = Vec::new();
        let mut problem = |path: &[&str], message: String| {
            diagnostics.push(Diagnostic {
                file: file.to_owned(),
                position: locations.value(path),
                message,
            })
        };
        for (i, repo) in policy.repositories.iter().enumerate() {
            let ok = repo.split('/').count() >= 2 && repo.split('/').all(|p| !p.is_empty());
            if !ok {
                problem(
                    &["repositories", &i.to_string()],
                    format!("repositories: \"{repo}\" is not owner/name"),
                );
            }
        }
        if policy.trust_label.trim().is_empty() {
            problem(&["trust_label"], "trust_label is empty".to_owned());
        }
        for (name, spec) in &policy.secrets {
            if let Some(why) = crate::config::bad_variable_name(name) {
                problem(&["secrets", name], format!("secrets: {why}"));
            }
            match (&spec.from_env, &spec.from_file) {
                (Some(_), Some(_)) => problem(
                    &["secrets", name],
                    format!("secrets.{name}: give from_env or from_file, not both"),
                ),
                (None, None) => problem(
                    &["secrets", name],
                    format!(
                        "secrets.{name}: say where the value comes from (from_env or from_file)"
                    ),
                ),
                _ => {}
            }
        }
        for (i, name) in policy.pass_env.iter().enumerate() {
            if let Some(why) = crate::config::bad_variable_name(name) {
                problem(&["pass_env", &i.to_string()], format!("pass_env: {why}"));
            }
        }
        if diagnostics.is_empty() {
            Ok(policy)
        } else {
            diagnostics.sort_by_key(|d| (d.position.line, d.position.column));
            Err(ConfigError { diagnostics })
        }
    }

    /// Whether events of `repo` are served.
    pub fn serves(&self, repo: &str) -> bool {
        self.repositories.is_empty() || self.repositories.iter().any(|r| r == repo)
    }

    /// Adds (or replaces) a secret.
    pub fn with_secret(mut self, name: impl Into<String>, spec: SecretSpec) -> Self {
        self.secrets.insert(name.into(), spec);
        self
    }

    /// Sets the rule for pull requests from forks.
    pub fn with_forks(mut self, rule: ForkRule) -> Self {
        self.forks = rule;
        self
    }

    /// Adds host variables passed to every stage.
    pub fn with_pass_env<I: IntoIterator<Item = S>, S: Into<String>>(mut self, names: I) -> Self {
        self.pass_env.extend(names.into_iter().map(Into::into));
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_issue_example_parses_and_mistakes_are_located() {
        let text = "repositories: [acme/app]\nforks: approve\ntrust_label: safe-to-test\nwatch_pull_requests: fork\nsecrets:\n  DEPLOY_TOKEN: { from_env: DEPLOY_TOKEN, environments: [staging, production] }\n  NPM_TOKEN: { from_env: NPM_TOKEN, pull_requests: true }\n  SIGNING_KEY: { from_file: /etc/gitops/signing.key }\nenvironments:\n  production: { deploy_from: { tags: { semver: \">=1.0.0\" } }, approval: required }\n";
        let p = Policy::parse("p.yml", text).unwrap();
        assert_eq!(p.secrets.len(), 3);
        assert!(p.secrets["NPM_TOKEN"].pull_requests);
        assert_eq!(
            p.environments["production"].approval,
            Some(Approval::Required)
        );
        for (bad, want) in [
            (
                "forks: sometimes\n",
                "p.yml:1:8: forks: unknown variant `sometimes`",
            ),
            (
                "secrets:\n  X: { from_env: A, from_file: /b }\n",
                "p.yml:2:6: secrets.X: give from_env or from_file",
            ),
            (
                "secrets:\n  GITOPS_X: { from_env: A }\n",
                "p.yml:2:13: secrets: environment variable \"GITOPS_X\"",
            ),
            (
                "repositories: [app]\n",
                "p.yml:1:16: repositories: \"app\" is not owner/name",
            ),
            (
                "secrets:\n  X: { from_env: A, color: red }\n",
                "p.yml:2:21: secrets.X: unknown field `color`",
            ),
        ] {
            let err = Policy::parse("p.yml", bad).unwrap_err().to_string();
            assert!(err.starts_with(want), "{bad:?}: {err}");
        }
        assert!(Policy::parse("p.yml", "").unwrap().serves("any/thing"));
    }

    #[test]
    fn secrets_are_read_from_the_host_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("key");
        std::fs::write(&file, "s3cret\n").unwrap();
        let spec = SecretSpec {
            from_file: Some(file),
            ..SecretSpec::from_env("unused")
        };
        let spec = SecretSpec {
            from_env: None,
            ..spec
        };
        assert_eq!(spec.read("K").unwrap().expose(), "s3cret");
        let missing = SecretSpec::from_env("GITOPS_TEST_SURELY_UNSET_VARIABLE");
        assert!(missing.read("K").unwrap_err().contains("is not set"));
    }
}
