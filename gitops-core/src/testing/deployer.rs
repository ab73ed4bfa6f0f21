//! The [`Deployer`] clauses: one `pub async fn` per clause of its contract, and
//! [`deployer_conformance`] that runs them all.
//!
//! The suite knows nothing of the platform: the test tells it how to make a release (`with` for
//! a release that serves a marker, and for one slow enough to be cancelled), which parameters are
//! bad, and how to look at the environment from outside, with an [`EnvironmentProbe`] (an HTTP
//! GET, the containers carrying a label, a namespace, a workspace's state, a directory). What a
//! clause checks never depends on what the backend says it can do, only on what the test passed
//! in, so a backend cannot skip a clause by claiming less.
//!
//! Each clause panics with a message saying which part of the contract was broken.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use super::push_event;
use crate::backend::{
    BackendError, Cancellation, Completion, Deployer, EnvironmentTarget, Outcome, RunInfo,
    StageContext,
};

/// `with` parameters.
pub type With = serde_json::Map<String, serde_json::Value>;

/// How the test looks at an environment from outside the backend.
#[async_trait]
pub trait EnvironmentProbe: Send + Sync {
    /// The marker of the release `environment` serves now (what [`DeployerSetup::release`] was
    /// given), or `None` when it serves none. `deployed` is the completion of a deploy to it
    /// (its outputs: a URL to fetch, a path to read); the probe may also look elsewhere (the
    /// platform's objects, a state file).
    async fn serving(&self, environment: &str, deployed: &Completion) -> Option<String>;

    /// What the platform holds of `environment` (containers, networks and volumes by label, a
    /// namespace and its objects, a workspace and its state, a directory's files), one entry
    /// each, named so that the same thing has the same name across calls; empty when nothing.
    async fn leftovers(&self, environment: &str) -> Vec<String>;
}

/// Makes a release's `with` from its marker.
pub type Release = Arc<dyn Fn(&str) -> With + Send + Sync>;

/// What the test passes the deployer suite.
#[non_exhaustive]
pub struct DeployerSetup {
    /// The checkout deploys read from.
    pub workdir: PathBuf,
    /// The environment the suite deploys to: a name of this test's own (the suite also uses
    /// `<environment>-never` and `<environment>-bad`, which it never deploys).
    pub environment: String,
    /// `with` of a release that serves `marker`, ready within [`deploy_within`](Self::deploy_within).
    pub release: Release,
    /// `with` of a release that serves `marker` but takes long enough to deploy that it is
    /// still deploying [`cancel_after`](Self::cancel_after) after it started.
    pub slow_release: Release,
    /// Looks at the environment from outside.
    pub probe: Arc<dyn EnvironmentProbe>,
    /// `with` parameters that are wrong for this backend, each of which must fail the deploy
    /// with [`BackendError::InvalidParameters`] before anything is created (at least one).
    pub bad_params: Vec<With>,
    /// The environment's own `with` (from its config), which the engine gives every deploy and
    /// stop to it, under the stage's: what a stop needs to find the environment (a
    /// configuration's directory, ...). Default: none.
    pub environment_with: With,
    /// The backend's releases are served at a URL: every deploy's outputs have `url` (else none
    /// has). Default: served.
    pub serves_url: bool,
    /// When the slow deploy is cancelled after it started.
    pub cancel_after: Duration,
    /// How long a cancelled deploy may take to return, putting back what it changed.
    pub stop_within: Duration,
    /// How long a deploy or stop may take.
    pub deploy_within: Duration,
}

impl std::fmt::Debug for DeployerSetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeployerSetup")
            .field("workdir", &self.workdir)
            .field("environment", &self.environment)
            .field("bad_params", &self.bad_params)
            .field("environment_with", &self.environment_with)
            .field("serves_url", &self.serves_url)
            .field("cancel_after", &self.cancel_after)
            .field("stop_within", &self.stop_within)
            .finish_non_exhaustive()
    }
}

impl DeployerSetup {
    /// Deploys to `environment` from `workdir` with `release` and `slow_release`, looking with
    /// `probe`: the slow deploy cancelled after 2 seconds and given 30 to return, a deploy 120;
    /// releases served at a URL. Add bad parameters with [`with_bad_params`](Self::with_bad_params).
    pub fn new(
        workdir: impl Into<PathBuf>,
        environment: impl Into<String>,
        release: impl Fn(&str) -> With + Send + Sync + 'static,
        slow_release: impl Fn(&str) -> With + Send + Sync + 'static,
        probe: impl EnvironmentProbe + 'static,
    ) -> Self {
        DeployerSetup {
            workdir: workdir.into(),
            environment: environment.into(),
            release: Arc::new(release),
            slow_release: Arc::new(slow_release),
            probe: Arc::new(probe),
            bad_params: Vec::new(),
            environment_with: With::new(),
            serves_url: true,
            cancel_after: Duration::from_secs(2),
            stop_within: Duration::from_secs(30),
            deploy_within: Duration::from_secs(120),
        }
    }

    /// Adds sets of bad `with` parameters.
    pub fn with_bad_params(mut self, bad: impl IntoIterator<Item = serde_json::Value>) -> Self {
        self.bad_params.extend(bad.into_iter().map(|v| match v {
            serde_json::Value::Object(map) => map,
            other => panic!("bad parameters must be a map, found {other}"),
        }));
        self
    }

    /// Sets the environment's own `with`, given to every deploy and stop under the stage's.
    pub fn with_environment_params(mut self, with: serde_json::Value) -> Self {
        match with {
            serde_json::Value::Object(map) => self.environment_with = map,
            other => panic!("the environment's parameters must be a map, found {other}"),
        }
        self
    }

    /// Cancels the slow deploy `after` it started, and gives it `within` to return.
    pub fn with_cancel_timing(mut self, after: Duration, within: Duration) -> Self {
        self.cancel_after = after;
        self.stop_within = within;
        self
    }

    /// How long a deploy or stop may take.
    pub fn with_deploy_within(mut self, within: Duration) -> Self {
        self.deploy_within = within;
        self
    }

    /// The backend's releases are served at no URL: no deploy's outputs may have `url`.
    pub fn without_url(mut self) -> Self {
        self.serves_url = false;
        self
    }
}

/// A deploy (or stop) context for `environment` with `with` over the environment's `with`.
fn context(setup: &DeployerSetup, environment: &str, stage: &str, with: With) -> StageContext {
    let mut merged = setup.environment_with.clone();
    merged.extend(with);
    let info = RunInfo::new(
        format!("conformance-{stage}"),
        "conformance",
        push_event(),
        setup.workdir.clone(),
    );
    let target = EnvironmentTarget::new(environment, "conformance", None);
    let mut ctx = StageContext::new(Arc::new(info), stage).with_environment(target);
    ctx.with = merged;
    ctx
}

/// Deploys `with` and expects a success.
async fn deploy(
    deployer: &dyn Deployer,
    setup: &DeployerSetup,
    what: &str,
    with: With,
) -> Completion {
    let ctx = context(setup, &setup.environment, "deploy", with);
    let done = tokio::time::timeout(setup.deploy_within, deployer.deploy(ctx))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "deploying {what} took longer than {:?}",
                setup.deploy_within
            )
        })
        .unwrap_or_else(|e| panic!("deploying {what}: the deployer returned an error: {e}"));
    assert_eq!(
        done.outcome,
        Outcome::Success,
        "deploying {what} must succeed"
    );
    done
}

/// Stops `environment` and expects a success.
async fn stop(deployer: &dyn Deployer, setup: &DeployerSetup, environment: &str) -> Completion {
    let ctx = context(setup, environment, "stop", With::new());
    let done = tokio::time::timeout(setup.deploy_within, deployer.stop(ctx))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "stopping {environment} took longer than {:?}",
                setup.deploy_within
            )
        })
        .unwrap_or_else(|e| panic!("stopping {environment}: the deployer returned an error: {e}"));
    assert_eq!(
        done.outcome,
        Outcome::Success,
        "stopping {environment} must succeed"
    );
    done
}

async fn leftovers(setup: &DeployerSetup, environment: &str) -> Vec<String> {
    let mut left = setup.probe.leftovers(environment).await;
    left.sort();
    left
}

/// Deploying to an environment that runs a release replaces it: the second release is what
/// the environment serves, the first serves no more, and the platform holds as much as after
/// one deploy (a redeploy replaces, it does not add). Leaves the second release deployed.
pub async fn redeploy_replaces(deployer: &dyn Deployer, setup: &DeployerSetup) {
    let env = &setup.environment;
    let first = deploy(deployer, setup, "release one", (setup.release)("one")).await;
    assert_eq!(
        setup.probe.serving(env, &first).await.as_deref(),
        Some("one"),
        "after deploying release one, {env} must serve it"
    );
    let after_one = leftovers(setup, env).await;
    let second = deploy(deployer, setup, "release two", (setup.release)("two")).await;
    assert_eq!(
        setup.probe.serving(env, &second).await.as_deref(),
        Some("two"),
        "after deploying release two over release one, {env} must serve release two"
    );
    assert_ne!(
        setup.probe.serving(env, &first).await.as_deref(),
        Some("one"),
        "release one must serve no more once release two replaced it"
    );
    let after_two = leftovers(setup, env).await;
    assert_eq!(
        after_two.len(),
        after_one.len(),
        "a redeploy replaces the release rather than adding one: after one deploy {after_one:?}, after two {after_two:?}"
    );
}

/// Stopping an environment that was never deployed (or is stopped already) succeeds and
/// creates nothing.
pub async fn stopping_an_unknown_environment_succeeds(
    deployer: &dyn Deployer,
    setup: &DeployerSetup,
) {
    let never = format!("{}-never", setup.environment);
    stop(deployer, setup, &never).await;
    let left = leftovers(setup, &never).await;
    assert!(
        left.is_empty(),
        "stopping {never}, never deployed, left {left:?}"
    );
    stop(deployer, setup, &never).await;
}

/// A stop leaves nothing of the environment behind: what the probe saw of a deployed
/// environment is all gone, and it serves nothing.
pub async fn stop_leaves_nothing(deployer: &dyn Deployer, setup: &DeployerSetup) {
    let env = &setup.environment;
    let deployed = deploy(
        deployer,
        setup,
        "release to stop",
        (setup.release)("stopped"),
    )
    .await;
    let before = leftovers(setup, env).await;
    assert!(
        !before.is_empty(),
        "the probe sees nothing of the deployed {env}: it cannot tell whether a stop leaves anything"
    );
    stop(deployer, setup, env).await;
    let after = leftovers(setup, env).await;
    assert!(
        after.is_empty(),
        "stopping {env} left {after:?} (of {before:?})"
    );
    assert_eq!(
        setup.probe.serving(env, &deployed).await,
        None,
        "a stopped {env} must serve nothing"
    );
}

/// A cancelled deploy leaves no half-made release and the previous one still serves: the
/// slow release, cancelled while it deploys, returns [`BackendError::Cancelled`] (or a
/// failure) within [`DeployerSetup::stop_within`], the environment serves the release before
/// it, and the platform holds exactly what it held before. Leaves that release deployed.
pub async fn cancelled_deploy_keeps_the_previous_release(
    deployer: &dyn Deployer,
    setup: &DeployerSetup,
) {
    let env = &setup.environment;
    let previous = deploy(
        deployer,
        setup,
        "the release before",
        (setup.release)("before"),
    )
    .await;
    let before = leftovers(setup, env).await;
    let token = Cancellation::new();
    let ctx =
        context(setup, env, "deploy", (setup.slow_release)("cancelled")).with_cancel(token.clone());
    let cancel_after = setup.cancel_after;
    tokio::spawn(async move {
        tokio::time::sleep(cancel_after).await;
        token.cancel();
    });
    let started = tokio::time::Instant::now();
    let result = tokio::time::timeout(cancel_after + setup.stop_within, deployer.deploy(ctx))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a deploy cancelled after {cancel_after:?} did not return within {:?} more",
                setup.stop_within
            )
        });
    match result {
        Err(BackendError::Cancelled)
        | Ok(Completion {
            outcome: Outcome::Failure { .. },
            ..
        }) => {}
        Ok(done) => panic!(
            "the slow release finished before it was cancelled ({:?} after it started: {:?}); make it slower",
            started.elapsed(),
            done.outputs
        ),
        Err(e) => panic!("a cancelled deploy must return Cancelled or a failure, not {e}"),
    }
    assert!(
        started.elapsed() >= cancel_after,
        "the slow deploy returned before it was cancelled"
    );
    assert_eq!(
        setup.probe.serving(env, &previous).await.as_deref(),
        Some("before"),
        "after a cancelled deploy, {env} must still serve the release before it"
    );
    let after = leftovers(setup, env).await;
    assert_eq!(
        after, before,
        "a cancelled deploy must leave no half-made release: {env} held {before:?} before it, {after:?} after"
    );
}

/// A deploy's outputs include `url` when the backend serves its releases at one (an absolute
/// `http`, `https` or `file` URL), and none when it does not ([`DeployerSetup::without_url`]).
/// Leaves the release deployed.
pub async fn outputs_include_url(deployer: &dyn Deployer, setup: &DeployerSetup) {
    let done = deploy(deployer, setup, "a release", (setup.release)("url")).await;
    let url = done.outputs.get("url");
    if !setup.serves_url {
        assert_eq!(url, None, "a backend that serves no URL must output none");
        return;
    }
    let Some(url) = url else {
        panic!("a deploy's outputs must include `url`: {:?}", done.outputs);
    };
    let absolute = ["http://", "https://", "file://"].iter().any(|scheme| {
        url.strip_prefix(scheme)
            .is_some_and(|rest| !rest.is_empty())
    });
    assert!(
        absolute,
        "`url` must be an absolute http, https or file URL, not {url:?}"
    );
    assert_eq!(
        setup
            .probe
            .serving(&setup.environment, &done)
            .await
            .as_deref(),
        Some("url"),
        "the environment must serve the release whose url was output"
    );
}

/// Bad `with` parameters fail the deploy with [`BackendError::InvalidParameters`] before
/// anything is created: the probe finds nothing of the environment afterwards.
pub async fn bad_params_fail_before_anything_is_created(
    deployer: &dyn Deployer,
    setup: &DeployerSetup,
) {
    assert!(
        !setup.bad_params.is_empty(),
        "the test must pass at least one set of bad parameters (DeployerSetup::with_bad_params)"
    );
    let env = format!("{}-bad", setup.environment);
    for with in &setup.bad_params {
        let ctx = context(setup, &env, "deploy", with.clone());
        let result = tokio::time::timeout(setup.deploy_within, deployer.deploy(ctx))
            .await
            .unwrap_or_else(|_| panic!("deploying bad parameters {with:?} did not return"));
        match result {
            Err(BackendError::InvalidParameters(_)) => {}
            other => panic!("bad parameters {with:?} must be InvalidParameters, not {other:?}"),
        }
        let left = leftovers(setup, &env).await;
        assert!(left.is_empty(), "bad parameters {with:?} created {left:?}");
    }
}

/// Runs every clause, on a fresh environment (nothing of it may be there first), and stops it
/// at the end.
pub async fn deployer_conformance(deployer: Arc<dyn Deployer>, setup: &DeployerSetup) {
    let deployer = deployer.as_ref();
    let fresh = leftovers(setup, &setup.environment).await;
    assert!(
        fresh.is_empty(),
        "the suite needs an environment of its own; {} holds {fresh:?}",
        setup.environment
    );
    redeploy_replaces(deployer, setup).await;
    cancelled_deploy_keeps_the_previous_release(deployer, setup).await;
    outputs_include_url(deployer, setup).await;
    stop_leaves_nothing(deployer, setup).await;
    stopping_an_unknown_environment_succeeds(deployer, setup).await;
    bad_params_fail_before_anything_is_created(deployer, setup).await;
}
