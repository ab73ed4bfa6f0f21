//! The shape of `.gitops.yml`, as serde reads it (unknown keys rejected everywhere).

use std::sync::Arc;
use std::time::Duration;

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};

use super::de::{Condition, TemplateString, duration, one_or_many, present};
use super::patterns::Globs;
use crate::backend::{Approval, EnvironmentPolicy, OnBusy};
use crate::event::TagAction;

/// A whole `.gitops.yml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Config {
    /// The format version; only `1` exists.
    pub version: u32,
    /// Environments by name, in file order.
    #[serde(default)]
    pub environments: IndexMap<String, Environment>,
    /// Pipelines by name, in file order.
    pub pipelines: IndexMap<String, Pipeline>,
}

/// An environment that pipelines deploy to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Environment {
    /// One instance per pull request, named `<name>-pr-<number>`, owned by that pull request.
    #[serde(default)]
    pub per_pull_request: bool,
    /// The backend that deploys it (default `local`).
    #[serde(default = "local")]
    pub backend: String,
    /// The instance name; by default `<name>` or, per pull request, `<name>-pr-${{ event.pr.number }}`.
    #[serde(default)]
    pub name: Option<TemplateString>,
    /// Backend parameters for every deployment to this environment.
    #[serde(default)]
    pub with: IndexMap<String, serde_json::Value>,
    /// `required`: a deploy waits until someone approves it (`gitops approve RUN STAGE`).
    #[serde(default)]
    pub approval: Approval,
    /// What a deploy does while another deployment holds the environment (default `wait`).
    #[serde(default)]
    pub on_locked: OnBusy,
    /// What a pipeline's deploy does while the environment is pinned by a rollback (default
    /// `wait`, until `gitops unpin`).
    #[serde(default)]
    pub on_pinned: OnBusy,
    /// Stop the environment when nothing was deployed to it for this long (`2h`); checked by
    /// `Engine::reconcile`.
    #[serde(default, deserialize_with = "duration::option::deserialize")]
    pub auto_stop_after: Option<Duration>,
    /// The refs that may deploy to (or stop) it: a deploy from any other fails before its
    /// backend is called. Default: any ref its trust level allows.
    #[serde(default)]
    pub deploy_from: Option<DeployFrom>,
    /// It serves the product's users: forges are told so (GitHub's `production_environment`).
    #[serde(default)]
    pub production: bool,
}

impl Environment {
    /// How deployments to it wait, as its backend is told.
    pub fn policy(&self) -> EnvironmentPolicy {
        EnvironmentPolicy {
            approval: self.approval,
            on_locked: self.on_locked,
            on_pinned: self.on_pinned,
            auto_stop_after: self.auto_stop_after,
            production: self.production,
        }
    }
}

/// `deploy_from:` of an environment: the branches and tags whose events may deploy to it. A
/// pull request's event matches neither (its head branch is not the repository's).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeployFrom {
    /// Branches whose pushes may deploy (globs).
    #[serde(default)]
    pub branches: Option<Globs>,
    /// Tags (and releases of tags) that may deploy.
    #[serde(default)]
    pub tags: Option<DeployFromTags>,
}

/// `deploy_from: { tags: ... }`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct DeployFromTags {
    /// A semver requirement the tag must meet (a tag that is not semver never does).
    #[serde(default)]
    pub semver: Option<SemverReq>,
    /// Whether pre-release tags may match the requirement (default false: never).
    #[serde(default)]
    pub prerelease: bool,
    /// Tag names that match (globs).
    #[serde(default)]
    pub names: Option<Globs>,
}

fn local() -> String {
    "local".to_owned()
}

/// A pipeline: what triggers it and its stages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Pipeline {
    /// The events that start it.
    pub on: Triggers,
    /// Runs sharing a group do not overlap.
    #[serde(default)]
    pub concurrency: Option<Concurrency>,
    /// How its runs get their working tree (default `reuse`).
    #[serde(default)]
    pub checkout: CheckoutMode,
    /// Stages by id, in file order (shared with the plans made from them).
    pub stages: IndexMap<String, Arc<Stage>>,
}

/// `checkout:` of a pipeline: how its runs get the files of the event's commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckoutMode {
    /// A cached working tree of an earlier run of the same repository and trust (verified
    /// clean, brought to the commit by writing only the files that differ) when there is one,
    /// else a fresh checkout.
    #[default]
    Reuse,
    /// Always a fresh checkout of the commit, written for this run.
    Fresh,
}

/// The events a pipeline runs on; several kinds may be listed.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Triggers {
    /// Pull request events.
    #[serde(default, deserialize_with = "present")]
    pub pull_request: Option<PullRequestTrigger>,
    /// Pushes to branches.
    #[serde(default, deserialize_with = "present")]
    pub push: Option<PushTrigger>,
    /// Tags (created by default).
    #[serde(default, deserialize_with = "present")]
    pub tag: Option<TagTrigger>,
    /// Forge releases (published by default).
    #[serde(default, deserialize_with = "present")]
    pub release: Option<ReleaseTrigger>,
}

/// `on: pull_request`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PullRequestTrigger {
    /// Actions that match; default `opened`, `synchronize`, `reopened`.
    #[serde(default, deserialize_with = "opt_list")]
    pub types: Option<Vec<PullRequestType>>,
    /// Base branches that match (globs); default all.
    #[serde(default)]
    pub branches: Option<Globs>,
    /// Changed paths that match (globs); default all.
    #[serde(default)]
    pub paths: Option<Globs>,
}

/// `on: push`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct PushTrigger {
    /// Branches that match (globs); default all.
    #[serde(default)]
    pub branches: Option<Globs>,
    /// Changed paths that match (globs); default all.
    #[serde(default)]
    pub paths: Option<Globs>,
}

/// `on: tag`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct TagTrigger {
    /// A semver requirement (`>=1.0.0, <2`); a tag that is not semver never matches it.
    #[serde(default)]
    pub semver: Option<SemverReq>,
    /// Whether pre-release tags may match (default false: never).
    #[serde(default)]
    pub prerelease: bool,
    /// Tag names that match (globs); default all.
    #[serde(default)]
    pub names: Option<Globs>,
    /// Tag actions that match; default `created`.
    #[serde(default, deserialize_with = "opt_list")]
    pub types: Option<Vec<TagAction>>,
}

/// `on: release`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ReleaseTrigger {
    /// A semver requirement on the release's tag.
    #[serde(default)]
    pub semver: Option<SemverReq>,
    /// Whether pre-releases may match (default false).
    #[serde(default)]
    pub prerelease: bool,
    /// Release actions that match; default `published`.
    #[serde(default, deserialize_with = "opt_list")]
    pub types: Option<Vec<String>>,
}

fn opt_list<'de, D, T>(d: D) -> Result<Option<Vec<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    one_or_many(d).map(Some)
}

/// A semver requirement, parsed when the config loads.
#[derive(Debug, Clone, PartialEq)]
pub struct SemverReq {
    source: String,
    req: semver::VersionReq,
}

impl SemverReq {
    /// The requirement as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The parsed requirement.
    pub fn requirement(&self) -> &semver::VersionReq {
        &self.req
    }
}

impl Serialize for SemverReq {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for SemverReq {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::parse_scalar(d, |s| {
            semver::VersionReq::parse(s)
                .map(|req| SemverReq {
                    source: s.to_owned(),
                    req,
                })
                .map_err(|e| format!("invalid semver requirement \"{s}\": {e}"))
        })
    }
}

/// A pull request action a trigger can name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct PullRequestType(pub String);

/// The pull request actions that `types:` accepts: GitHub's, plus GitLab's that have no GitHub
/// equivalent.
pub const PULL_REQUEST_TYPES: &[&str] = &[
    "opened",
    "synchronize",
    "reopened",
    "closed",
    "edited",
    "ready_for_review",
    "converted_to_draft",
    "labeled",
    "unlabeled",
    "assigned",
    "unassigned",
    "review_requested",
    "review_request_removed",
    "locked",
    "unlocked",
    "auto_merge_enabled",
    "auto_merge_disabled",
    "enqueued",
    "dequeued",
    "milestoned",
    "demilestoned",
    "approved",
    "unapproved",
    "approval",
    "unapproval",
];

impl<'de> Deserialize<'de> for PullRequestType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::de::parse_scalar(d, |s| {
            if PULL_REQUEST_TYPES.contains(&s) {
                Ok(PullRequestType(s.to_owned()))
            } else {
                Err(format!(
                    "unknown pull request type \"{s}\" (expected one of: {})",
                    PULL_REQUEST_TYPES.join(", ")
                ))
            }
        })
    }
}

/// `concurrency:` of a pipeline.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Concurrency {
    /// The group; runs with the same rendered group do not overlap.
    pub group: TemplateString,
    /// What a new run does when the group is busy (default `queue`).
    #[serde(default)]
    pub on_conflict: OnConflict,
}

/// What happens to a run whose concurrency group is busy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnConflict {
    /// The running one is cancelled; the new one starts.
    Cancel,
    /// One at a time; of those waiting, only the newest is kept.
    #[default]
    Queue,
    /// One at a time, every one, in arrival order.
    Fifo,
}

/// A stage of a pipeline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Stage {
    /// Stages that must finish first.
    #[serde(default, deserialize_with = "one_or_many")]
    pub needs: Vec<String>,
    /// Whether to run, decided when the stage is ready (default `success()`).
    #[serde(default, rename = "if")]
    pub condition: Option<Box<Condition>>,
    /// The backend that runs it (default `local`; for `deploy`/`stop`, the environment's).
    #[serde(default)]
    pub backend: Option<String>,
    /// A shell command; never template-expanded (event data reaches it as `GITOPS_*` variables).
    #[serde(default)]
    pub run: Option<String>,
    /// Environment variables, templates allowed.
    #[serde(default)]
    pub env: IndexMap<String, TemplateString>,
    /// Backend parameters; strings in them may be templates.
    #[serde(default)]
    pub with: IndexMap<String, serde_json::Value>,
    /// Deploy to this environment.
    #[serde(default)]
    pub deploy: Option<String>,
    /// Stop (tear down) this environment.
    #[serde(default)]
    pub stop: Option<String>,
    /// Give up after this long (`90s`, `10m`); a deploy's wait for an approval, a lock or a
    /// pin does not count.
    #[serde(default, deserialize_with = "duration::option::deserialize")]
    pub timeout: Option<Duration>,
    /// Try again on failure.
    #[serde(default)]
    pub retry: Option<Box<Retry>>,
    /// A failure of this stage does not fail the run.
    #[serde(default)]
    pub continue_on_error: bool,
}

/// `retry:` of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct Retry {
    /// Extra attempts after the first.
    pub max: u32,
    /// Wait between attempts (default none).
    #[serde(default, with = "duration")]
    pub backoff: Duration,
    /// Retry only on these exit codes (default: any failure).
    #[serde(default)]
    pub on_exit_codes: Vec<i32>,
}

/// What a stage does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Runs a command or backend task (`run`, or `with` parameters for the backend).
    Run,
    /// Deploys to an environment.
    Deploy,
    /// Stops an environment.
    Stop,
}

impl Stage {
    /// What the stage does.
    pub fn action(&self) -> Action {
        if self.deploy.is_some() {
            Action::Deploy
        } else if self.stop.is_some() {
            Action::Stop
        } else {
            Action::Run
        }
    }

    /// The environment it deploys or stops.
    pub fn environment(&self) -> Option<&str> {
        self.deploy.as_deref().or(self.stop.as_deref())
    }
}
