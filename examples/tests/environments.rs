//! Environments end to end through the engine, on the local backend with real repositories and
//! the SQLite ledger: pull request teardown and reconcile, locks, approvals, rollback and pins,
//! and environments served over HTTP on loopback.

mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::engine::{Engine, RunOptions, StopReason};
use gitops_core::event::GitEvent;
use gitops_core::ledger::{DeploymentResult, EnvironmentStatus};
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunEvent, RunReport, RunResult, StageResult, WaitReason};
use gitops_examples::scratch::ScratchRepo;

const REPO: &str = "o/r";

struct World {
    tmp: tempfile::TempDir,
    scratch: ScratchRepo,
    base: String,
}

impl World {
    fn new(config: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let mut scratch = ScratchRepo::init(&tmp.path().join("repo")).unwrap();
        let base = scratch
            .commit(
                "main",
                None,
                "init",
                &[(".gitops.yml", config), ("app.txt", "zero\n")],
            )
            .unwrap();
        World { tmp, scratch, base }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn engine(&self) -> Engine {
        let local = Arc::new(
            LocalBackend::builder()
                .with_environments_dir(self.state().join("environments"))
                .build(),
        );
        let registry = BackendRegistry::new()
            .with_executor("local", local.clone())
            .with_deployer("local", local);
        Engine::open(self.state(), registry).unwrap()
    }

    fn repo(&self) -> Repository {
        Repository::open(self.scratch.path()).unwrap()
    }

    /// A commit on `branch` on top of `parent` whose `app.txt` is `app`.
    fn commit(&mut self, branch: &str, parent: &str, app: &str) -> String {
        self.scratch
            .commit(branch, Some(parent), app, &[("app.txt", app)])
            .unwrap()
    }

    fn release(&self, env: &str) -> PathBuf {
        self.state().join("environments").join(env).join("release")
    }
}

fn options() -> RunOptions {
    let mut o = RunOptions::default();
    o.actor = Some("tester".to_owned());
    o
}

/// Runs everything `event` triggers, then what it ends.
async fn handle(engine: &Engine, repo: &Repository, event: &GitEvent) -> Vec<RunReport> {
    engine
        .handle(event, repo, &options())
        .await
        .unwrap()
        .reports
}

fn pr(action: &str, number: u64, head: &str, base: &str) -> GitEvent {
    GitEvent::pull_request_event(
        REPO,
        action,
        number,
        (&format!("feature-{number}"), head),
        ("main", base),
    )
}

const PREVIEWS: &str = r#"version: 1
environments:
  preview: { per_pull_request: true }
pipelines:
  pr:
    on: { pull_request: { types: [opened, synchronize] } }
    stages:
      preview: { deploy: preview, with: { files: app.txt } }
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closing_a_pull_request_stops_its_environments_without_a_stop_stage() {
    let mut w = World::new(PREVIEWS);
    let base = w.base.clone();
    let (one, two) = (
        w.commit("f1", &base, "one\n"),
        w.commit("f2", &base, "two\n"),
    );
    let (engine, repo) = (w.engine(), w.repo());
    for (n, head) in [(1, &one), (2, &two)] {
        let reports = handle(&engine, &repo, &pr("opened", n, head, &base)).await;
        assert_eq!(reports[0].result, RunResult::Success);
    }
    assert_eq!(
        std::fs::read_to_string(w.release("preview-pr-1").join("app.txt")).unwrap(),
        "one\n"
    );

    let reports = handle(&engine, &repo, &pr("closed", 1, &one, &base).merged()).await;
    assert!(reports.is_empty(), "no pipeline runs on close");
    assert!(!w.state().join("environments/preview-pr-1").exists());
    assert!(
        w.release("preview-pr-2").exists(),
        "the other PR keeps its preview"
    );
    let envs = engine.environments().unwrap();
    let status = |name: &str| {
        envs.iter()
            .find(|e| e.record.name == name)
            .map(|e| e.record.status)
    };
    assert_eq!(status("preview-pr-1"), Some(EnvironmentStatus::Stopped));
    assert_eq!(status("preview-pr-2"), Some(EnvironmentStatus::Active));
    let history = engine.history("preview-pr-1").unwrap();
    assert_eq!(history.len(), 2, "the deploy and the stop stay recorded");
    assert_eq!(history[0].result, DeploymentResult::Success);
    assert!(
        history[0]
            .triggered_by
            .as_deref()
            .unwrap()
            .contains("pull request was closed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_stops_the_environment_of_a_pull_request_closed_unseen() {
    let mut w = World::new(PREVIEWS);
    let base = w.base.clone();
    let (three, four) = (w.commit("f3", &base, "3\n"), w.commit("f4", &base, "4\n"));
    let (engine, repo) = (w.engine(), w.repo());
    handle(&engine, &repo, &pr("opened", 3, &three, &base)).await;
    handle(&engine, &repo, &pr("opened", 4, &four, &base)).await;

    // PR 3 was closed while no one listened: only PR 4 is still open.
    let stopped = engine.reconcile(REPO, &[4]).await.unwrap();
    assert_eq!(stopped.len(), 1);
    assert_eq!(stopped[0].environment, "preview-pr-3");
    assert_eq!(stopped[0].reason, StopReason::PullRequestGone);
    assert!(!w.state().join("environments/preview-pr-3").exists());
    assert!(w.release("preview-pr-4").exists());
    // Another repository's pull requests are not this one's business, and a second reconcile
    // finds nothing left to do.
    assert!(
        engine
            .reconcile("other/repo", &[])
            .await
            .unwrap()
            .is_empty()
    );
    assert!(engine.reconcile(REPO, &[4]).await.unwrap().is_empty());
}

fn staging(on_locked: &str, extra: &str) -> String {
    format!(
        r#"version: 1
environments:
  staging: {{ on_locked: {on_locked} {extra} }}
pipelines:
  main:
    on: {{ push: {{ branches: [main] }} }}
    stages:
      deploy: {{ deploy: staging, with: {{ files: app.txt, build: "sleep 0.4" }} }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_deploys_to_one_environment_never_overlap() {
    let mut w = World::new(&staging("wait", ""));
    let base = w.base.clone();
    let a = w.commit("main", &base, "a\n");
    let b = w.commit("main", &a, "b\n");
    // Two engines on one state dir: as two processes would share it.
    let (e1, e2, repo) = (w.engine(), w.engine(), w.repo());
    let r1 = e1
        .start(
            &GitEvent::push(REPO, "main", Some(&base), &a),
            &repo,
            &options(),
        )
        .unwrap()
        .remove(0);
    let r2 = e2
        .start(
            &GitEvent::push(REPO, "main", Some(&a), &b),
            &repo,
            &options(),
        )
        .unwrap()
        .remove(0);
    let (mut s1, mut s2) = (r1.subscribe(), r2.subscribe());
    let (t1, t2) = (tokio::spawn(r1.execute()), tokio::spawn(r2.execute()));
    assert_eq!(t1.await.unwrap().unwrap().result, RunResult::Success);
    assert_eq!(t2.await.unwrap().unwrap().result, RunResult::Success);

    let history = e1.history("staging").unwrap();
    assert_eq!(history.len(), 2);
    let (x, y) = (&history[1], &history[0]);
    assert!(
        x.finished_at.unwrap() <= y.started_at,
        "deployments overlap: {:?}–{:?} and {:?}–{:?}",
        x.started_at,
        x.finished_at,
        y.started_at,
        y.finished_at
    );
    let mut waited = false;
    for rx in [&mut s1, &mut s2] {
        while let Ok(e) = rx.try_recv() {
            waited |= matches!(
                e,
                RunEvent::StageWaiting {
                    waiting: WaitReason::Lock { .. },
                    ..
                }
            );
        }
    }
    assert!(waited, "one of the deploys said it waited for the lock");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_locked_fail_fails_at_once_saying_who_holds_it() {
    let mut w = World::new(&staging("fail", ""));
    let base = w.base.clone();
    let a = w.commit("main", &base, "a\n");
    let (engine, repo) = (w.engine(), w.repo());
    let event = GitEvent::push(REPO, "main", Some(&base), &a);
    let first = engine.start(&event, &repo, &options()).unwrap().remove(0);
    let mut events = first.subscribe();
    let first = tokio::spawn(first.execute());
    // Wait until the first deploy is under way (it holds the lock while it builds).
    loop {
        match events.recv().await.unwrap() {
            RunEvent::StageStarted { .. } => break,
            _ => continue,
        }
    }
    // ... and holds the lock: its deployment is recorded as running.
    while !engine.history("staging").is_ok_and(|h| {
        h.first()
            .is_some_and(|d| d.result == DeploymentResult::Running)
    }) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = engine.start(&event, &repo, &options()).unwrap().remove(0);
    let report = second.execute().await.unwrap();
    assert_eq!(report.result, RunResult::Failure);
    match &report.stages[0].result {
        StageResult::Failure { message, .. } => assert!(
            message.contains("environment \"staging\" is locked by run")
                && message.contains("on_locked: fail"),
            "{message}"
        ),
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(first.await.unwrap().unwrap().result, RunResult::Success);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_gates_a_deploy_and_a_rejection_fails_it() {
    let mut w = World::new(&staging("wait", ", approval: required"));
    let base = w.base.clone();
    let a = w.commit("main", &base, "a\n");
    let (engine, repo) = (w.engine(), w.repo());
    let event = GitEvent::push(REPO, "main", Some(&base), &a);

    for approve in [true, false] {
        let run = engine.start(&event, &repo, &options()).unwrap().remove(0);
        let id = run.id.clone();
        let mut events = run.subscribe();
        let task = tokio::spawn(run.execute());
        loop {
            if let RunEvent::StageWaiting { waiting, stage, .. } = events.recv().await.unwrap() {
                assert_eq!(stage, "deploy");
                assert!(matches!(waiting, WaitReason::Approval { .. }));
                break;
            }
        }
        assert!(engine.history("staging").map_or(true, |h| h.len() < 2));
        let pending = engine.ledger().pending_approvals().unwrap();
        assert_eq!(pending.len(), 1);
        assert_eq!(
            (pending[0].run_id.as_str(), pending[0].stage.as_str()),
            (id.as_str(), "deploy")
        );
        if approve {
            engine.approve(&id, "deploy", "alice").unwrap();
            let report = task.await.unwrap().unwrap();
            assert_eq!(report.result, RunResult::Success);
        } else {
            engine.reject(&id, "deploy", "bob").unwrap();
            let report = task.await.unwrap().unwrap();
            match &report.stages[0].result {
                StageResult::Failure { message, .. } => {
                    assert!(message.contains("rejected by bob"), "{message}")
                }
                other => panic!("expected a failure, got {other:?}"),
            }
        }
        // A decision is final.
        assert!(engine.approve(&id, "deploy", "carol").is_err());
    }
    assert_eq!(
        engine.history("staging").unwrap().len(),
        1,
        "the rejected deploy never started"
    );
}

const RELEASES: &str = r#"version: 1
environments:
  production: {}
pipelines:
  release:
    on: { tag: { semver: ">=1.0.0" } }
    stages:
      deploy: { deploy: production, with: { files: [app.txt] } }
"#;

fn app(w: &World, env: &str) -> String {
    std::fs::read_to_string(w.release(env).join("app.txt")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_previous_release_and_pins_the_environment() {
    let mut w = World::new(RELEASES);
    let base = w.base.clone();
    let one = w.commit("main", &base, "one\n");
    let two = w.commit("main", &one, "two\n");
    let three = w.commit("main", &two, "three\n");
    let (engine, repo) = (w.engine(), w.repo());
    for (tag, sha) in [("v1.0.0", &one), ("v1.1.0", &two)] {
        let reports = handle(&engine, &repo, &GitEvent::tag_created(REPO, tag, sha)).await;
        assert_eq!(reports[0].result, RunResult::Success);
    }
    assert_eq!(app(&w, "production"), "two\n");

    let rollback = engine.rollback("production", None, "alice").await.unwrap();
    assert_eq!(app(&w, "production"), "one\n");
    let history = engine.history("production").unwrap();
    assert_eq!(history.len(), 3);
    assert_eq!(history[0].id, rollback.id);
    assert_eq!(history[0].version.as_deref(), Some("1.0.0"));
    assert_eq!(history[0].rollback_of, Some(history[2].id));
    assert_eq!(history[0].triggered_by.as_deref(), Some("alice"));
    let envs = engine.environments().unwrap();
    assert_eq!(
        envs[0].current.as_ref().unwrap().version.as_deref(),
        Some("1.0.0")
    );
    assert_eq!(envs[0].record.pinned_by.as_deref(), Some("alice"));

    // The next release waits while production is pinned.
    let run = engine
        .start(
            &GitEvent::tag_created(REPO, "v1.2.0", &three),
            &repo,
            &options(),
        )
        .unwrap()
        .remove(0);
    let mut events = run.subscribe();
    let task = tokio::spawn(run.execute());
    loop {
        if let RunEvent::StageWaiting { waiting, .. } = events.recv().await.unwrap() {
            assert!(matches!(waiting, WaitReason::Pin { .. }), "{waiting:?}");
            break;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!task.is_finished());
    assert_eq!(app(&w, "production"), "one\n", "held while pinned");
    assert!(engine.unpin("production").unwrap());
    assert_eq!(task.await.unwrap().unwrap().result, RunResult::Success);
    assert_eq!(app(&w, "production"), "three\n");
    assert!(!engine.unpin("production").unwrap(), "no longer pinned");

    // A named version, and clear errors for what cannot be rolled back to.
    engine
        .rollback("production", Some("v1.1.0"), "alice")
        .await
        .unwrap();
    assert_eq!(app(&w, "production"), "two\n");
    let err = engine
        .rollback("production", Some("9.9.9"), "alice")
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "environment \"production\": no successful deployment of \"9.9.9\" to roll back to"
    );
    let err = engine.rollback("nowhere", None, "alice").await.unwrap_err();
    assert!(err.to_string().contains("no such environment"), "{err}");
}

fn http_get(url: &str, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let addr = url
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    let mut stream = std::net::TcpStream::connect(addr)?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut body = String::new();
    stream.read_to_string(&mut body)?;
    Ok(body.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned())
}

fn alive(pid: i32) -> bool {
    // A zombie has exited; only a process still running counts.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit(')')
            .next()
            .is_some_and(|r| !r.trim_start().starts_with('Z'))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_served_environment_is_reachable_replaced_and_stopped() {
    let Some(busybox) = common::busybox() else {
        return;
    };
    let config = format!(
        r#"version: 1
environments:
  preview: {{ per_pull_request: true, with: {{ serve: "exec {} httpd -f -p 127.0.0.1:$PORT -h ." }} }}
pipelines:
  pr:
    on: {{ pull_request: {{ types: [opened, synchronize] }} }}
    stages:
      preview: {{ deploy: preview, with: {{ files: app.txt }} }}
"#,
        busybox.display()
    );
    let mut w = World::new(&config);
    let base = w.base.clone();
    let v1 = w.commit("f", &base, "first\n");
    let v2 = w.commit("f", &v1, "second\n");
    let (engine, repo) = (w.engine(), w.repo());
    let pid_file = w.state().join("environments/preview-pr-9/server.pid");
    let pid = || -> i32 {
        std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };

    handle(&engine, &repo, &pr("opened", 9, &v1, &base)).await;
    let url = |engine: &Engine| engine.environments().unwrap()[0].url().unwrap().to_owned();
    let first_url = url(&engine);
    assert!(first_url.starts_with("http://127.0.0.1:"), "{first_url}");
    assert_eq!(http_get(&first_url, "/app.txt").unwrap(), "first\n");
    let first_pid = pid();

    handle(&engine, &repo, &pr("synchronize", 9, &v2, &base)).await;
    let second_url = url(&engine);
    assert_eq!(http_get(&second_url, "/app.txt").unwrap(), "second\n");
    assert!(!alive(first_pid), "the old server was stopped");
    let second_pid = pid();

    handle(&engine, &repo, &pr("closed", 9, &v2, &base)).await;
    assert!(
        !alive(second_pid),
        "stopping the environment stops its server"
    );
    assert!(!w.state().join("environments/preview-pr-9").exists());
    assert!(http_get(&second_url, "/app.txt").is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_stops_an_environment_idle_past_its_auto_stop_after() {
    let config = r#"version: 1
environments:
  preview: { per_pull_request: true, auto_stop_after: 1s }
  staging: {}
pipelines:
  pr:
    on: { pull_request: { types: [opened] } }
    stages:
      preview: { deploy: preview, with: { files: app.txt } }
  main:
    on: { push: { branches: [main] } }
    stages:
      deploy: { deploy: staging, with: { files: app.txt } }
"#;
    let mut w = World::new(config);
    let base = w.base.clone();
    let head = w.commit("f5", &base, "5\n");
    let (engine, repo) = (w.engine(), w.repo());
    handle(&engine, &repo, &pr("opened", 5, &head, &base)).await;
    handle(&engine, &repo, &GitEvent::push(REPO, "main", None, &base)).await;
    assert!(
        engine.reconcile(REPO, &[5]).await.unwrap().is_empty(),
        "not idle yet"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let stopped = engine.reconcile(REPO, &[5]).await.unwrap();
    assert_eq!(stopped.len(), 1, "{stopped:?}");
    assert_eq!(
        (stopped[0].environment.as_str(), stopped[0].reason),
        ("preview-pr-5", StopReason::Idle)
    );
    assert!(
        w.release("staging").exists(),
        "staging has no auto_stop_after"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deploy_timeout_counts_the_deployment_not_the_wait_for_approval() {
    let config = r#"version: 1
environments:
  staging: { approval: required }
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      quick: { deploy: staging, timeout: 1s, with: { files: app.txt } }
  slow:
    on: { push: { branches: [main] } }
    stages:
      slow: { deploy: staging, timeout: 1s, with: { files: app.txt, build: "sleep 30" } }
"#;
    let w = World::new(config);
    let (engine, repo) = (w.engine(), w.repo());
    let runs = engine
        .start(
            &GitEvent::push(REPO, "main", None, &w.base),
            &repo,
            &options(),
        )
        .unwrap();
    let ids: Vec<String> = runs.iter().map(|r| r.id.clone()).collect();
    let tasks: Vec<_> = runs
        .into_iter()
        .map(|r| tokio::spawn(r.execute()))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    engine.approve(&ids[0], "quick", "alice").unwrap();
    while engine.ledger().approval(&ids[1], "slow").unwrap().is_none() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    engine.approve(&ids[1], "slow", "alice").unwrap();
    let reports: Vec<RunReport> = futures_in_order(tasks).await;
    assert_eq!(
        reports[0].result,
        RunResult::Success,
        "{:?}",
        reports[0].stages
    );
    assert!(matches!(
        reports[1].stages[0].result,
        StageResult::TimedOut { .. }
    ));
    let history = engine.history("staging").unwrap();
    let result = |stage: &str| {
        history
            .iter()
            .find(|d| d.stage.as_deref() == Some(stage))
            .map(|d| d.result)
    };
    assert_eq!(result("quick"), Some(DeploymentResult::Success));
    assert_eq!(
        result("slow"),
        Some(DeploymentResult::Cancelled),
        "timed out"
    );
}

async fn futures_in_order(
    tasks: Vec<tokio::task::JoinHandle<gitops_core::Result<RunReport>>>,
) -> Vec<RunReport> {
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap().unwrap());
    }
    out
}
