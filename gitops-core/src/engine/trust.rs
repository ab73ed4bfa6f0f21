//! How the engine applies trust to a run (see [`crate::trust`]): whether an event may run at
//! all, the environments it may use (the trusted ref's, not its own commit's), the stages
//! refused, and which secrets each stage gets.

use std::collections::{BTreeMap, BTreeSet};

use indexmap::IndexMap;

use super::{Engine, RunOptions};
use crate::config::{Action, CONFIG_FILE, Config, Environment};
use crate::event::GitEvent;
use crate::plan::PlannedPipeline;
use crate::repo::Repository;
use crate::secret::Secret;
use crate::trust::{self, TrustLevel};
use crate::{Error, Result};

/// The environments of the trusted ref: what every event deploys to.
#[derive(Debug, Clone)]
pub(super) struct TrustedEnvironments {
    /// The ref they were read from (`refs/heads/main`).
    pub reference: String,
    /// The environments, with the policy's protection rules applied.
    pub environments: IndexMap<String, Environment>,
    /// As the trusted ref defines them, before the policy's rules (to tell what differs).
    pub defined: IndexMap<String, Environment>,
    /// The text of the trusted ref's `.gitops.yml`, when it has a usable one.
    pub text: Option<String>,
    /// Why it has none, when it has none.
    pub problem: Option<String>,
}

/// The secrets of one run, as the scheduler takes them.
#[derive(Debug, Clone, Default)]
pub(super) struct RunSecrets {
    /// Those every stage gets.
    pub all: BTreeMap<String, Secret>,
    /// Those the deploy and stop stages of an environment get, by its config name.
    pub by_environment: BTreeMap<String, BTreeMap<String, Secret>>,
    /// Every secret the host has, to mask whether the run gets it or not.
    pub masked: Vec<Secret>,
}

impl Engine {
    /// The trust level of `event`, or why it may not run at all: its repository is not served,
    /// or it is a pull request from a fork that no one approved.
    pub(super) fn admit(&self, event: &GitEvent) -> Result<TrustLevel> {
        if !self.policy.serves(&event.repo) {
            return Err(Error::Refused {
                reason: format!(
                    "events of repository \"{}\" are not served here (the policy's repositories: {})",
                    event.repo,
                    self.policy.repositories.join(", ")
                ),
            });
        }
        let level = trust::level(event, &self.policy);
        if let (TrustLevel::Fork, Some(pr)) = (level, event.pull_request()) {
            let approved =
                self.ledger
                    .pull_request_trusted(&event.repo, pr.number, event.sha.as_deref())?;
            trust::fork_may_run(pr, &self.policy, approved)
                .map_err(|reason| Error::Refused { reason })?;
        }
        Ok(level)
    }

    /// The environments of the trusted ref of `repo`: `options.trusted_ref`, else the branch
    /// its `HEAD` names. A trusted ref without a usable `.gitops.yml` defines none (and says
    /// why).
    pub(super) fn trusted_environments(
        &self,
        repo: &Repository,
        options: &RunOptions,
    ) -> TrustedEnvironments {
        let reference = options
            .trusted_ref
            .clone()
            .or_else(|| repo.head_branch().map(|b| format!("refs/heads/{b}")))
            .unwrap_or_else(|| "HEAD".to_owned());
        let read = repo
            .resolve_commit(&reference)
            .map_err(Error::from)
            .and_then(|commit| Ok(repo.config_text_at(&commit)?))
            .and_then(|text| {
                let config = Config::parse_with(CONFIG_FILE, &text, &self.load)?;
                Ok((text, config))
            });
        match read {
            Ok((text, config)) => self.with_rules(reference, config.environments, Some(text)),
            Err(e) => {
                let mut trusted = self.with_rules(reference, IndexMap::new(), None);
                trusted.problem = Some(e.to_string());
                trusted
            }
        }
    }

    /// The environments of the recorded `text` of a trusted config (for re-runs and resumes
    /// whose repository is gone).
    pub(super) fn recorded_environments(&self, text: Option<&str>) -> TrustedEnvironments {
        let config = text.and_then(|t| Config::parse_with(CONFIG_FILE, t, &self.load).ok());
        let environments = config.map(|c| c.environments).unwrap_or_default();
        self.with_rules(
            "the trusted ref recorded with the run".to_owned(),
            environments,
            text.map(str::to_owned),
        )
    }

    /// `defined` with the policy's protection rules applied over it.
    fn with_rules(
        &self,
        reference: String,
        defined: IndexMap<String, Environment>,
        text: Option<String>,
    ) -> TrustedEnvironments {
        let mut environments = defined.clone();
        for (name, rules) in &self.policy.environments {
            if let Some(env) = environments.get_mut(name) {
                if let Some(d) = &rules.deploy_from {
                    env.deploy_from = Some(d.clone());
                }
                if let Some(a) = rules.approval {
                    env.approval = a;
                }
                if let Some(p) = rules.production {
                    env.production = p;
                }
            }
        }
        TrustedEnvironments {
            reference,
            environments,
            defined,
            text,
            problem: None,
        }
    }

    /// The secrets of a run at `level` (the policy's and `options`'), read from the host now.
    pub(super) fn run_secrets(
        &self,
        level: TrustLevel,
        options: &RunOptions,
    ) -> Result<RunSecrets> {
        let mut out = RunSecrets::default();
        for (name, spec) in &self.policy.secrets {
            let value = spec
                .read(name)
                .map_err(|message| Error::Secret { message })?;
            out.masked.push(value.clone());
            match &spec.environments {
                None if trust::gets_secret(level, spec, None) => {
                    out.all.insert(name.clone(), value);
                }
                None => {}
                Some(envs) => {
                    for env in envs {
                        if trust::gets_secret(level, spec, Some(env)) {
                            out.by_environment
                                .entry(env.clone())
                                .or_default()
                                .insert(name.clone(), value.clone());
                        }
                    }
                }
            }
        }
        for (name, value) in &options.secrets {
            out.masked.push(value.clone());
            if level == TrustLevel::Trusted {
                out.all.insert(name.clone(), value.clone());
            }
        }
        Ok(out)
    }

    /// The secrets a deploy or stop of environment `config_name` gets outside a pipeline (a
    /// rollback, a stop): those its deployment's trust level gets for that environment.
    pub(super) fn secrets_for_environment(
        &self,
        level: TrustLevel,
        config_name: &str,
        options: &RunOptions,
    ) -> Result<(BTreeMap<String, Secret>, Vec<Secret>)> {
        let mut secrets = self.run_secrets(level, options)?;
        let mut given = std::mem::take(&mut secrets.all);
        if let Some(scoped) = secrets.by_environment.remove(config_name) {
            given.extend(scoped);
        }
        Ok((given, secrets.masked))
    }
}

/// `config` (an event's commit's) with the trusted environments in place of its own.
pub(super) fn with_trusted_environments(
    mut config: Config,
    trusted: &TrustedEnvironments,
) -> Config {
    config.environments = trusted.environments.clone();
    config
}

/// What the event's own `config` says of the environments that `pipelines` use, and the
/// trusted ref does not: notes for the people running it.
pub(super) fn notes(
    config: &Config,
    pipelines: &[PlannedPipeline],
    trusted: &TrustedEnvironments,
) -> Vec<String> {
    let used: BTreeSet<&str> = pipelines
        .iter()
        .flat_map(|p| p.stages.iter())
        .filter_map(|s| s.configured_environment())
        .collect();
    let mut notes = Vec::new();
    if let (Some(problem), false) = (&trusted.problem, used.is_empty()) {
        notes.push(format!(
            "the trusted ref {} has no usable {CONFIG_FILE}, so no environment is defined: {problem}",
            trusted.reference
        ));
    }
    for name in used {
        match (config.environments.get(name), trusted.defined.get(name)) {
            (Some(_), None) => notes.push(format!(
                "environment \"{name}\" is defined by this commit's {CONFIG_FILE} but not on the trusted ref {}: it does not exist for this run until merged",
                trusted.reference
            )),
            (Some(own), Some(defined)) if own != defined => notes.push(format!(
                "environment \"{name}\" differs in this commit's {CONFIG_FILE} from its definition on the trusted ref {}, which is used: a change to an environment takes effect once merged",
                trusted.reference
            )),
            _ => {}
        }
    }
    notes
}

/// Refuses the deploy and stop stages of `pipeline` that an event at `level` may not carry
/// out (see [`trust::may_act`]).
pub(super) fn refuse_stages(
    pipeline: &mut PlannedPipeline,
    level: TrustLevel,
    event: &GitEvent,
    trusted: &TrustedEnvironments,
) {
    for stage in &mut pipeline.stages {
        if stage.action == Action::Run {
            continue;
        }
        let Some(name) = stage.configured_environment().map(str::to_owned) else {
            continue;
        };
        let env = trusted.environments.get(&name);
        if let Err(why) = trust::may_act(level, event, stage.action, &name, env, &trusted.reference)
        {
            stage.refuse(why);
        }
    }
}
