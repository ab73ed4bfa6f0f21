//! Limits on what input may ask for, and locks given back however a deployment ends: a config
//! or a backend parameter never makes the engine overflow its stack or its clock, and a
//! deployer that panics never keeps its environment locked.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use gitops_core::backend::local::LocalBackend;
use gitops_core::backend::memory::MemoryBackend;
use gitops_core::backend::{
    BackendError, BackendRegistry, Completion, Deployer, EnvironmentTarget, Params, RunInfo,
    StageContext,
};
use gitops_core::config::{Config, MAX_DURATION};
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::expr::{MAX_EXPRESSION_DEPTH, MAX_EXPRESSION_LEN, MAX_TEMPLATE_LEN};
use gitops_core::ledger::{DeploymentRecord, DeploymentResult, Ledger};
use gitops_core::repo::Repository;
use gitops_core::scheduler::{DEPLOYER_PANICKED, RunResult, StageResult};

use common::git;

/// The single diagnostic `yaml` must produce.
fn error(yaml: &str) -> String {
    let err = Config::parse(".gitops.yml", yaml).expect_err("config should be rejected");
    assert_eq!(err.diagnostics.len(), 1, "{err}");
    err.to_string()
}

/// A config whose stage `a` has `fields`, and whose environment `staging` has `env_fields`.
fn config(fields: &str, env_fields: &str) -> String {
    format!(
        "version: 1\nenvironments:\n  staging: {{ {env_fields} }}\npipelines:\n  ci:\n    on: {{ push: {{}} }}\n    stages:\n      a: {{ run: x, {fields} }}\n"
    )
}

#[test]
fn durations_up_to_seven_days_load_and_longer_ones_are_located() {
    for (fields, env_fields) in [
        ("timeout: {}", ""),
        ("retry: { max: 1, backoff: {} }", ""),
        ("needs: []", "auto_stop_after: {}"),
    ] {
        for at in ["7d", "168h", "604800s"] {
            let yaml = config(&fields.replace("{}", at), &env_fields.replace("{}", at));
            Config::parse(".gitops.yml", &yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        }
        for past in ["8d", "604801s", "18446744073709551615s"] {
            let yaml = config(&fields.replace("{}", past), &env_fields.replace("{}", past));
            let err = error(&yaml);
            let line = if env_fields.is_empty() { 8 } else { 3 };
            assert!(err.starts_with(&format!(".gitops.yml:{line}:")), "{err}");
            assert!(
                err.ends_with(&format!(
                    "duration \"{past}\" exceeds the longest allowed, 7d"
                )),
                "{err}"
            );
        }
    }
}

fn chain(terms: usize) -> String {
    vec!["event.sha"; terms].join(" || ")
}

#[test]
fn an_if_at_the_depth_limit_loads_and_one_level_more_is_located() {
    let at = config(&format!("if: \"{}\"", chain(MAX_EXPRESSION_DEPTH)), "");
    Config::parse(".gitops.yml", &at).unwrap();
    let err = error(&config(
        &format!("if: \"{}\"", chain(MAX_EXPRESSION_DEPTH + 1)),
        "",
    ));
    assert!(
        err.starts_with(".gitops.yml:8:")
            && err.contains(
                "pipelines.ci.stages.a.if: expression nested too deeply: more than 64 levels"
            ),
        "{err}"
    );
    // The message quotes only the start of the expression.
    assert!(err.len() < 400, "{err}");
}

#[test]
fn an_if_of_200000_terms_is_a_quick_located_error() {
    let yaml = config(&format!("if: \"{}\"", chain(200_000)), "");
    let started = Instant::now();
    let err = error(&yaml);
    let took = started.elapsed();
    println!("a 200,000-term `if:` was refused in {took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    assert!(
        err.starts_with(".gitops.yml:8:")
            && err.contains(&format!(
                "expression too long: {} bytes, more than the {MAX_EXPRESSION_LEN} allowed",
                chain(200_000).len()
            )),
        "{}",
        &err[..err.len().min(500)]
    );
    assert!(err.len() < 400, "{}", &err[..500]);
}

#[test]
fn templates_and_expressions_at_their_length_load_and_longer_ones_are_located() {
    // One expression, in `env`, exactly as long as allowed and one byte longer.
    let literal = |len: usize| format!("'{}'", "x".repeat(len - 2));
    let at = config(
        &format!("env: {{ A: \"${{{{{}}}}}\" }}", literal(MAX_EXPRESSION_LEN)),
        "",
    );
    Config::parse(".gitops.yml", &at).unwrap();
    let past = config(
        &format!(
            "env: {{ A: \"${{{{{}}}}}\" }}",
            literal(MAX_EXPRESSION_LEN + 1)
        ),
        "",
    );
    let err = error(&past);
    assert!(
        err.starts_with(".gitops.yml:8:") && err.contains("expression too long"),
        "{}",
        &err[..err.len().min(500)]
    );
    // A template with an expression, in `with`, at its limit and past it.
    let template = |len: usize| {
        let expr = "${{ event.sha }}";
        format!("{}{expr}", "x".repeat(len - expr.len()))
    };
    let at = config(
        &format!("with: {{ t: \"{}\" }}", template(MAX_TEMPLATE_LEN)),
        "",
    );
    Config::parse(".gitops.yml", &at).unwrap();
    let err = error(&config(
        &format!("with: {{ t: \"{}\" }}", template(MAX_TEMPLATE_LEN + 1)),
        "",
    ));
    assert!(
        err.starts_with(".gitops.yml:8:")
            && err.contains(&format!(
                "pipelines.ci.stages.a.with.t: template too long: {} bytes",
                MAX_TEMPLATE_LEN + 1
            )),
        "{}",
        &err[..err.len().min(500)]
    );
    assert!(err.len() < 400);
    // A literal that long is no template: it costs nothing to render.
    Config::parse(
        ".gitops.yml",
        &config(
            &format!("with: {{ t: \"{}\" }}", "x".repeat(MAX_TEMPLATE_LEN + 1)),
            "",
        ),
    )
    .unwrap();
}

#[test]
fn backend_seconds_up_to_seven_days_are_read_and_longer_ones_name_the_key() {
    let max = MAX_DURATION.as_secs();
    let map = serde_json::json!({
        "at": max, "as_text": max.to_string(), "past": max + 1, "huge": u64::MAX,
        "huge_text": u64::MAX.to_string(), "negative": -1, "null": null,
    });
    let params = Params::new(map.as_object().unwrap(), "with");
    assert_eq!(params.seconds("at").unwrap(), Some(MAX_DURATION));
    assert_eq!(params.seconds("as_text").unwrap(), Some(MAX_DURATION));
    assert_eq!(params.seconds("null").unwrap(), None);
    assert_eq!(params.seconds("absent").unwrap(), None);
    for (key, found) in [
        ("past", "604801"),
        ("huge", "18446744073709551615"),
        ("huge_text", "\"18446744073709551615\""),
    ] {
        assert_eq!(
            params.seconds(key).unwrap_err().to_string(),
            format!(
                "invalid parameters: `with.{key}` must be a number of seconds up to 604800 (7 days), found {found}"
            )
        );
    }
    assert!(matches!(
        params.seconds("negative"),
        Err(BackendError::InvalidParameters(_))
    ));
}

fn push(sha: &str) -> GitEvent {
    serde_json::from_value(
        serde_json::json!({"kind": "push", "repo": "o/r", "sha": sha,
        "ref": "refs/heads/main", "branch": "main", "before": null, "after": sha,
        "created": true, "deleted": false, "forced": false}),
    )
    .unwrap()
}

/// The local deployer takes a `ready_timeout` of 7 days, and refuses a longer one before it
/// starts anything (it used to panic adding it to the clock).
#[tokio::test]
async fn the_local_deployer_refuses_a_ready_timeout_past_seven_days_before_starting_anything() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("app.txt"), "x").unwrap();
    let envs = tmp.path().join("envs");
    let started = tmp.path().join("started");
    let backend = LocalBackend::builder().with_environments_dir(&envs).build();
    let ctx = |ready_timeout: serde_json::Value| {
        let run = Arc::new(RunInfo::new("r", "p", push("abc"), tmp.path()));
        StageContext::new(run, "deploy")
            .with_environment(EnvironmentTarget::new("staging", "staging", None))
            .with_param(
                "serve",
                format!("touch {}; exit 3", started.display()).into(),
            )
            .with_param("ready_timeout", ready_timeout)
    };
    // At the limit: accepted (the server then exits, which fails the deploy as usual).
    let err = backend
        .deploy(ctx(MAX_DURATION.as_secs().into()))
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("the `serve` command exited"),
        "{err}"
    );
    assert!(started.exists());
    std::fs::remove_dir_all(&envs).unwrap();
    std::fs::remove_file(&started).unwrap();
    for past in [
        serde_json::json!(MAX_DURATION.as_secs() + 1),
        serde_json::json!(u64::MAX),
    ] {
        let err = backend.deploy(ctx(past.clone())).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "invalid parameters: `with.ready_timeout` must be a number of seconds up to 604800 (7 days), found {past}"
            )
        );
        assert!(!started.exists(), "nothing was started");
        assert!(
            !envs.join("staging/release").exists(),
            "nothing was deployed"
        );
    }
}

/// A deployer that panics while `panics` is set, and succeeds otherwise.
#[derive(Debug, Default)]
struct Flaky {
    panics: AtomicBool,
}

#[async_trait]
impl Deployer for Flaky {
    async fn deploy(&self, _: StageContext) -> Result<Completion, BackendError> {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if self.panics.load(Ordering::SeqCst) {
            panic!("the test deployer has a bug");
        }
        Ok(Completion::success())
    }

    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        self.deploy(ctx).await
    }
}

const DEPLOYS: &str = "version: 1\nenvironments:\n  staging: { backend: flaky }\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      deploy: { deploy: staging }\n";

struct World {
    _tmp: tempfile::TempDir,
    dir: std::path::PathBuf,
    engine: Engine,
    flaky: Arc<Flaky>,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q"]);
        let flaky = Arc::new(Flaky::default());
        let registry = BackendRegistry::new()
            .with_executor("local", Arc::new(MemoryBackend::new()))
            .with_deployer("flaky", flaky.clone());
        let engine = Engine::open(tmp.path().join("state"), registry).unwrap();
        World {
            _tmp: tmp,
            dir,
            engine,
            flaky,
        }
    }

    /// Commits a change and returns the push event of it.
    fn commit(&self, n: usize) -> GitEvent {
        common::write(&self.dir, ".gitops.yml", DEPLOYS);
        common::write(&self.dir, "app.txt", &n.to_string());
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-qm", &n.to_string()]);
        push(&git(&self.dir, &["rev-parse", "HEAD"]))
    }

    /// Handles `event`, which must not take long: a deploy waiting for a lock kept by an
    /// earlier one would wait until the test's bound.
    async fn deploy(&self, event: &GitEvent) -> (RunResult, StageResult) {
        let repo = Repository::open(&self.dir).unwrap();
        let started = Instant::now();
        let handled = tokio::time::timeout(
            Duration::from_secs(20),
            self.engine.handle(event, &repo, &RunOptions::default()),
        )
        .await
        .expect("the deploy did not wait for a lock (its lock lives 30 s)")
        .unwrap();
        println!("the deploy took {:?}", started.elapsed());
        let report = &handled.reports[0];
        (
            report.result,
            report.stage("deploy").unwrap().result.clone(),
        )
    }

    /// The last deployment once it has ended.
    async fn ended(&self) -> DeploymentRecord {
        let ledger: &Ledger = self.engine.ledger();
        let started = Instant::now();
        loop {
            let last = ledger
                .history(Some("staging"), 1)
                .unwrap()
                .into_iter()
                .next();
            if let Some(d) = last.filter(|d| d.result != DeploymentResult::Running) {
                return d;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the deployment was never finished"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_that_panics_in_a_pipeline_gives_its_lock_back_at_once() {
    let w = World::new();
    let first = w.commit(1);
    w.flaky.panics.store(true, Ordering::SeqCst);
    let (result, stage) = w.deploy(&first).await;
    assert_eq!(result, RunResult::Failure);
    assert_eq!(
        stage,
        StageResult::Failure {
            message: "the stage's task panicked (a bug in its backend)".to_owned(),
            exit_code: None
        }
    );
    let failed = w.ended().await;
    assert_eq!(failed.result, DeploymentResult::Failure);
    assert_eq!(failed.message.as_deref(), Some(DEPLOYER_PANICKED));

    w.flaky.panics.store(false, Ordering::SeqCst);
    let (result, stage) = w.deploy(&w.commit(2)).await;
    assert_eq!((result, stage), (RunResult::Success, StageResult::Success));
    assert_eq!(w.ended().await.result, DeploymentResult::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deployer_that_panics_in_a_rollback_gives_its_lock_back_at_once() {
    let w = World::new();
    for n in [1, 2] {
        let (result, _) = w.deploy(&w.commit(n)).await;
        assert_eq!(result, RunResult::Success);
    }
    w.flaky.panics.store(true, Ordering::SeqCst);
    let err = w
        .engine
        .rollback("staging", None, "tester")
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains(&format!(
            "the rollback to deployment #1 failed: {DEPLOYER_PANICKED}"
        )),
        "{err}"
    );
    let failed = w.ended().await;
    assert_eq!(
        (failed.result, failed.rollback_of),
        (DeploymentResult::Failure, Some(1))
    );

    w.flaky.panics.store(false, Ordering::SeqCst);
    let started = Instant::now();
    let record = tokio::time::timeout(
        Duration::from_secs(20),
        w.engine.rollback("staging", None, "tester"),
    )
    .await
    .expect("the rollback did not wait for a lock")
    .unwrap();
    assert_eq!(record.result, DeploymentResult::Success);
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_config_is_read_up_to_its_size_limit_and_refused_past_it() {
    use gitops_core::config::MAX_CONFIG_BYTES;
    let base = config("", "");
    // Padded with a comment to the limit exactly, then one byte past it.
    let at_limit = format!("{base}#{}\n", "x".repeat(MAX_CONFIG_BYTES - base.len() - 2));
    assert_eq!(at_limit.len(), MAX_CONFIG_BYTES);
    assert!(Config::parse(".gitops.yml", &at_limit).is_ok());
    let past = format!("{at_limit}#");
    assert_eq!(
        error(&past),
        format!(
            ".gitops.yml:1:1: the file is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
            MAX_CONFIG_BYTES + 1
        )
    );
    // From a repository, the blob is refused before it is read.
    let tmp = tempfile::tempdir().unwrap();
    git(tmp.path(), &["init", "-q"]);
    std::fs::write(tmp.path().join(".gitops.yml"), &past).unwrap();
    git(tmp.path(), &["add", "-A"]);
    git(tmp.path(), &["commit", "-qm", "big"]);
    let repo = Repository::open(tmp.path()).unwrap();
    let head = repo.resolve_commit("HEAD").unwrap();
    let err = repo.config_text_at(&head).unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "it is {} bytes, more than the {MAX_CONFIG_BYTES} allowed",
            MAX_CONFIG_BYTES + 1
        )),
        "{err}"
    );
}
