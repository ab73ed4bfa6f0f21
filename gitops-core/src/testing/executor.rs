//! The [`Executor`] clauses: one `pub async fn` per clause of its contract, and
//! [`executor_conformance`] that runs them all.
//!
//! Commands are POSIX `sh`; a backend that runs them somewhere else (a container, a pod) gets
//! what it needs for that through [`Setup::with`] (an image, ...). Each clause panics with a
//! message saying which part of the contract was broken.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::backend::{
    BackendError, BackendRegistry, Completion, Executor, LogLine, LogSink, LogStream, Outcome,
    RunInfo, StageContext,
};
use crate::config::Config;
use crate::event::GitEvent;
use crate::plan::Planner;
use crate::scheduler::{RunSpec, Scheduler, StageResult};

/// How to run the suite's stages on the backend under test.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Setup {
    /// The directory stages run in (the checkout).
    pub workdir: PathBuf,
    /// `with` parameters every stage gets (an image for container backends).
    pub with: serde_json::Map<String, serde_json::Value>,
    /// How long a stopped stage may take to return after cancellation.
    pub stop_within: Duration,
    /// The platform keeps one log per stage, stdout and stderr merged (Kubernetes; the local
    /// backend, whose stages write both to one pipe so that lines keep the order they were
    /// written in): every line must still arrive, as stdout, each stream's lines in their order.
    pub merged_streams: bool,
}

impl Setup {
    /// Stages run in `workdir`, with no parameters, and must stop within 10 seconds.
    pub fn new(workdir: impl Into<PathBuf>) -> Self {
        Setup {
            workdir: workdir.into(),
            with: serde_json::Map::new(),
            stop_within: Duration::from_secs(10),
            merged_streams: false,
        }
    }

    /// The backend's platform merges stdout and stderr into one log (see
    /// [`merged_streams`](Self::merged_streams)).
    pub fn with_merged_streams(mut self) -> Self {
        self.merged_streams = true;
        self
    }

    /// Adds a `with` parameter.
    pub fn with_param(mut self, key: &str, value: serde_json::Value) -> Self {
        self.with.insert(key.to_owned(), value);
        self
    }
}

/// A push event to `main`, for contexts.
pub fn push_event() -> GitEvent {
    serde_json::from_value(serde_json::json!({
        "kind": "push", "repo": "conformance/repo", "sha": "0123456789abcdef0123456789abcdef01234567",
        "ref": "refs/heads/main", "branch": "main", "before": null,
        "after": "0123456789abcdef0123456789abcdef01234567", "created": true, "deleted": false, "forced": false
    }))
    .unwrap_or_else(|e| panic!("conformance event: {e}"))
}

fn context(setup: &Setup, stage: &str, command: &str) -> StageContext {
    let info = RunInfo::new(
        format!("conformance-{stage}"),
        "conformance",
        push_event(),
        setup.workdir.clone(),
    );
    let mut ctx = StageContext::new(Arc::new(info), stage).with_command(command);
    ctx.with = setup.with.clone();
    ctx
}

async fn execute(exec: &dyn Executor, ctx: StageContext) -> Completion {
    let stage = ctx.stage.to_string();
    exec.execute(ctx)
        .await
        .unwrap_or_else(|e| panic!("stage \"{stage}\": the executor returned an error: {e}"))
}

/// A command that exits 0 is a success.
pub async fn succeeds(exec: &dyn Executor, setup: &Setup) {
    let c = execute(exec, context(setup, "succeeds", "true")).await;
    assert_eq!(c.outcome, Outcome::Success, "`true` must succeed");
}

/// A command that exits non-zero is a failure carrying its exit code.
pub async fn fails_with_exit_code(exec: &dyn Executor, setup: &Setup) {
    let c = execute(exec, context(setup, "fails", "exit 3")).await;
    match c.outcome {
        Outcome::Failure { exit_code, .. } => {
            assert_eq!(exit_code, Some(3), "`exit 3` must report exit code 3")
        }
        Outcome::Success => panic!("`exit 3` must fail"),
    }
}

/// The stage's `env` and the `GITOPS_*` variables reach the command; event data only that way.
pub async fn passes_env(exec: &dyn Executor, setup: &Setup) {
    let ctx = context(setup, "env", "test \"$GREETING\" = 'hello world' && test \"$GITOPS_STAGE\" = env && test \"$GITOPS_BRANCH\" = main && test \"$GITOPS_EVENT_KIND\" = push")
        .with_env("GREETING", "hello world");
    let c = execute(exec, ctx).await;
    assert_eq!(
        c.outcome,
        Outcome::Success,
        "env variables must reach the command: {:?}",
        c.outcome
    );
}

/// `key=value` lines written to `$GITOPS_OUTPUT` become outputs.
pub async fn collects_outputs(exec: &dyn Executor, setup: &Setup) {
    let c = execute(exec, context(setup, "outputs", "echo image=app:1 >> \"$GITOPS_OUTPUT\"; echo 'url=http://127.0.0.1:8080/?a=b' >> \"$GITOPS_OUTPUT\"")).await;
    assert_eq!(c.outcome, Outcome::Success);
    let expected: BTreeMap<String, String> =
        [("image", "app:1"), ("url", "http://127.0.0.1:8080/?a=b")]
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .collect();
    assert_eq!(c.outputs, expected, "outputs from $GITOPS_OUTPUT");
}

/// stdout and stderr reach the log sink line by line, in order within each stream (on a platform
/// that merges them, all as stdout).
pub async fn streams_logs(exec: &dyn Executor, setup: &Setup) {
    let lines: Arc<Mutex<Vec<LogLine>>> = Arc::default();
    let seen = lines.clone();
    let sink = LogSink::new("logs", 1, Vec::new(), move |l| {
        seen.lock().unwrap_or_else(|e| e.into_inner()).push(l)
    });
    let ctx = context(
        setup,
        "logs",
        "echo one; echo two; echo oops >&2; printf 'no newline'",
    )
    .with_log(sink);
    let c = execute(exec, ctx).await;
    assert_eq!(c.outcome, Outcome::Success);
    let lines = lines.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let of = |s: LogStream| {
        lines
            .iter()
            .filter(|l| l.stream == s)
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
    };
    if setup.merged_streams {
        // One log of both streams: every line, each stream's in its order (a container runtime
        // reads the two pipes apart, so lines of different streams may trade places).
        let all = of(LogStream::Stdout);
        let out: Vec<&str> = all.iter().copied().filter(|l| *l != "oops").collect();
        assert_eq!(out, ["one", "two", "no newline"], "stdout lines in {all:?}");
        assert_eq!(all.len(), 4, "every line, stderr's too: {all:?}");
        return;
    }
    assert_eq!(
        of(LogStream::Stdout),
        ["one", "two", "no newline"],
        "stdout lines"
    );
    assert_eq!(of(LogStream::Stderr), ["oops"], "stderr lines");
}

/// Cancellation stops a running command promptly.
pub async fn stops_on_cancel(exec: &dyn Executor, setup: &Setup) {
    let ctx = context(setup, "cancel", "sleep 1000");
    let token = ctx.cancellation().clone();
    let start = Instant::now();
    let cancel_after = Duration::from_millis(500);
    tokio::spawn(async move {
        tokio::time::sleep(cancel_after).await;
        token.cancel();
    });
    let r = tokio::time::timeout(setup.stop_within + cancel_after, exec.execute(ctx)).await;
    let elapsed = start.elapsed();
    match r {
        Err(_) => panic!(
            "a cancelled `sleep 1000` did not return within {:?}",
            setup.stop_within
        ),
        Ok(Ok(Completion {
            outcome: Outcome::Success,
            ..
        })) => panic!("a cancelled `sleep 1000` reported success"),
        Ok(Err(BackendError::Cancelled)) | Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("a cancelled stage must return Cancelled or a failure, not {e}"),
    }
    assert!(elapsed >= cancel_after, "returned before it was cancelled");
}

/// A stage past its `timeout` is stopped and reported as timed out (through the scheduler,
/// which enforces timeouts for every backend).
pub async fn times_out(exec: Arc<dyn Executor>, setup: &Setup, backend_name: &str) {
    let mut with = String::new();
    if !setup.with.is_empty() {
        with = format!(", with: {}", serde_json::Value::Object(setup.with.clone()));
    }
    let yaml = format!(
        "version: 1\npipelines:\n  p:\n    on: {{ push: {{}} }}\n    stages:\n      slow: {{ backend: {backend_name}, run: sleep 1000, timeout: 1s{with} }}\n"
    );
    let options = crate::config::LoadOptions::default().with_backend(backend_name);
    let config =
        Config::parse_with("conformance.yml", &yaml, &options).unwrap_or_else(|e| panic!("{e}"));
    let event = push_event();
    let plan = Planner::new()
        .plan(&event, &config, &crate::plan::Changes::Unknown)
        .unwrap_or_else(|e| panic!("{e}"));
    let registry = BackendRegistry::new().with_executor(backend_name, exec);
    let info = RunInfo::new("conformance-timeout", "p", event, setup.workdir.clone());
    let run = Scheduler::new(registry).run(Arc::new(plan.pipelines[0].clone()), RunSpec::new(info));
    let report = tokio::time::timeout(Duration::from_secs(1) + setup.stop_within, run.execute())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "a timed-out stage did not stop within {:?}",
                setup.stop_within
            )
        });
    let slow = &report.stages[0];
    assert!(
        matches!(slow.result, StageResult::TimedOut { .. }),
        "expected timed_out, got {:?}",
        slow.result
    );
}

/// Runs every clause.
pub async fn executor_conformance(exec: Arc<dyn Executor>, setup: &Setup, backend_name: &str) {
    succeeds(exec.as_ref(), setup).await;
    fails_with_exit_code(exec.as_ref(), setup).await;
    passes_env(exec.as_ref(), setup).await;
    collects_outputs(exec.as_ref(), setup).await;
    streams_logs(exec.as_ref(), setup).await;
    stops_on_cancel(exec.as_ref(), setup).await;
    times_out(exec, setup, backend_name).await;
}
