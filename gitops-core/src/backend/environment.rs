//! The environment a deploy or stop stage acts on, and how deployments to it wait.

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
    /// It serves the product's users (`production: true` in config or policy).
    pub production: bool,
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

/// Whether deployments to an environment need someone's approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Approval {
    /// They go ahead.
    #[default]
    None,
    /// Each waits for an approval.
    Required,
}

/// What a deployment does when it cannot go ahead yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OnBusy {
    /// It waits (the run shows why).
    #[default]
    Wait,
    /// It fails at once, saying why.
    Fail,
}
