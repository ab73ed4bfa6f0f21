//! The local backend with real processes: timeouts and cancellation kill the whole process
//! group, secrets are masked, and event data reaches commands only as variables.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use gitops_core::backend::local::LocalBackend;
use gitops_core::backend::{BackendRegistry, RunInfo};
use gitops_core::config::Config;
use gitops_core::event::GitEvent;
use gitops_core::plan::{Changes, PlannedPipeline, Planner};
use gitops_core::scheduler::{RunEvent, RunReport, RunSpec, Scheduler, StageResult};

fn pr_event(title: &str, branch: &str) -> GitEvent {
    serde_json::from_value(
        serde_json::json!({"kind": "pull_request", "repo": "o/r", "sha": "abc", "action": "opened",
        "number": 5, "title": title, "draft": false, "merged": false,
        "head": {"ref": branch, "sha": "abc"}, "base": {"ref": "main", "sha": "def"}}),
    )
    .unwrap()
}

fn pipeline(event: &GitEvent, stages: &str) -> Arc<PlannedPipeline> {
    let yaml = format!(
        "version: 1\npipelines:\n  p:\n    on: {{ pull_request: {{}} }}\n    stages:\n{stages}"
    );
    let config = Config::parse("t.yml", &yaml).unwrap();
    Arc::new(
        Planner::new()
            .plan(event, &config, &Changes::Unknown)
            .unwrap()
            .pipelines[0]
            .clone(),
    )
}

fn registry() -> BackendRegistry {
    BackendRegistry::new().with_executor(
        "local",
        Arc::new(
            LocalBackend::builder()
                .with_kill_grace(Duration::from_secs(2))
                .build(),
        ),
    )
}

/// Whether a process is gone (or a zombie waiting for init to reap it).
fn gone(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_gone(pid: &str) -> bool {
    for _ in 0..50 {
        if gone(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn read(dir: &Path, f: &str) -> String {
    std::fs::read_to_string(dir.join(f)).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_kills_the_whole_process_group_within_a_second_of_the_deadline() {
    let dir = tempfile::tempdir().unwrap();
    let event = pr_event("t", "b");
    // The shell starts a background sleep (a grandchild) and waits on a foreground one.
    let p = pipeline(
        &event,
        "      slow: { run: \"sleep 1000 & echo $! > bg.pid; echo $$ > sh.pid; sleep 1000\", timeout: 1s }\n",
    );
    let report = Scheduler::new(registry())
        .run(p, RunSpec::new(RunInfo::new("r", "p", event, dir.path())))
        .execute()
        .await;
    let slow = report.stage("slow").unwrap();
    assert_eq!(slow.result, StageResult::TimedOut { after_secs: 1.0 });
    let took = slow.duration().unwrap();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "stopped {took:?} after it started"
    );
    for f in ["bg.pid", "sh.pid"] {
        let pid = read(dir.path(), f);
        assert!(!pid.is_empty(), "{f} was not written");
        assert!(
            wait_gone(&pid).await,
            "process {} ({f}) survived the timeout",
            pid.trim()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_run_leaves_no_process_behind() {
    let dir = tempfile::tempdir().unwrap();
    let event = pr_event("t", "b");
    let p = pipeline(
        &event,
        "      a: { run: \"sleep 1000 & echo $! > a.pid; wait\" }\n      b: { run: \"trap '' TERM; sleep 1000 & echo $! > b.pid; wait\" }\n",
    );
    let run =
        Scheduler::new(registry()).run(p, RunSpec::new(RunInfo::new("r", "p", event, dir.path())));
    let cancel = run.cancel_token();
    let d = dir.path().to_path_buf();
    tokio::spawn(async move {
        while read(&d, "a.pid").is_empty() || read(&d, "b.pid").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cancel.cancel();
    });
    let report = tokio::time::timeout(Duration::from_secs(20), run.execute())
        .await
        .expect("the cancelled run ends");
    assert_eq!(report.stage("a").unwrap().result, StageResult::Cancelled);
    // b ignores SIGTERM: it gets SIGKILL after the grace period.
    assert_eq!(report.stage("b").unwrap().result, StageResult::Cancelled);
    for f in ["a.pid", "b.pid"] {
        let pid = read(dir.path(), f);
        assert!(
            wait_gone(&pid).await,
            "process {} ({f}) survived the cancellation",
            pid.trim()
        );
    }
}

// A program's future dropped before its end (its task aborted, the runtime shut down) takes
// its whole process group with it, not only the program.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_program_dropped_before_its_end_leaves_no_process_behind() {
    use gitops_core::backend::process::{StopPolicy, StopSignal, run_streaming};
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg("sleep 1000 & echo $! > bg.pid; wait")
        .current_dir(dir.path());
    let cancel = gitops_core::backend::Cancellation::new();
    let stop = StopPolicy::new(StopSignal::Terminate, Duration::from_secs(2));
    let program = run_streaming(cmd, &cancel, stop, |_, _| {});
    let d = dir.path().to_path_buf();
    let started = async move {
        while read(&d, "bg.pid").is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::select! {
        ended = program => panic!("the program ended: {ended:?}"),
        _ = started => {}
    }
    // The future is dropped here, its program still running.
    let pid = read(dir.path(), "bg.pid");
    assert!(
        wait_gone(&pid).await,
        "process {} (its background job) survived",
        pid.trim()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_titles_and_branches_are_only_ever_values() {
    let dir = tempfile::tempdir().unwrap();
    let pwned = dir.path().join("pwned");
    let title = format!(
        "$(touch {}) `touch {}` \"; rm -rf ~; \"",
        pwned.display(),
        pwned.display()
    );
    let branch = format!("feature/$(touch {})", pwned.display());
    let event = pr_event(&title, &branch);
    let p = pipeline(
        &event,
        "      echo: { run: 'printf \"%s\\n\" \"$GITOPS_PR_TITLE\" > title.txt; printf \"%s\\n\" \"$GITOPS_BRANCH\" > branch.txt; echo \"$GITOPS_PR_TITLE\"', env: { T: \"${{ event.pr.title }}\" } }\n      again: { run: 'echo \"$T\" > t.txt', env: { T: \"${{ event.pr.title }}\" } }\n",
    );
    let run =
        Scheduler::new(registry()).run(p, RunSpec::new(RunInfo::new("r", "p", event, dir.path())));
    let mut rx = run.subscribe();
    let report = run.execute().await;
    assert!(
        report
            .stages
            .iter()
            .all(|s| s.result == StageResult::Success),
        "{report:#?}"
    );
    assert!(!pwned.exists(), "event data was executed");
    assert_eq!(read(dir.path(), "title.txt").trim_end(), title);
    assert_eq!(read(dir.path(), "branch.txt").trim_end(), branch);
    assert_eq!(read(dir.path(), "t.txt").trim_end(), title);
    let mut logged = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let RunEvent::Log { line, .. } = e {
            logged.push(line);
        }
    }
    assert!(logged.contains(&title), "{logged:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_masked_in_every_line_and_still_reach_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let event = pr_event("t", "b");
    let p = pipeline(
        &event,
        "      leak: { run: 'echo token is $API_TOKEN; echo \"$API_TOKEN\" >&2; test \"$API_TOKEN\" = s3cr3t-value' }\n",
    );
    let spec = RunSpec::new(RunInfo::new("r", "p", event, dir.path())).with_secret(
        "API_TOKEN",
        gitops_core::secret::Secret::new("s3cr3t-value"),
    );
    let run = Scheduler::new(registry()).run(p, spec);
    let mut rx = run.subscribe();
    let report: RunReport = run.execute().await;
    assert_eq!(report.stage("leak").unwrap().result, StageResult::Success);
    let mut lines = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if let RunEvent::Log { line, .. } = e {
            lines.push(line);
        }
    }
    lines.sort();
    assert_eq!(lines, ["***", "token is ***"]);
}

#[tokio::test]
async fn a_missing_command_or_workdir_is_a_clear_failure() {
    use gitops_core::backend::{Executor, StageContext};
    let backend = LocalBackend::new();
    let info = Arc::new(RunInfo::new(
        "r",
        "p",
        pr_event("t", "b"),
        "/nonexistent/dir",
    ));
    let err = backend
        .execute(StageContext::new(info.clone(), "s"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameters: stage \"s\" has no `run` command, which the local backend needs"
    );
    let err = backend
        .execute(StageContext::new(info, "s").with_command("true"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid parameters: working directory /nonexistent/dir does not exist"
    );
}

mod deployer {
    use super::*;
    use gitops_core::backend::{BackendError, Deployer, EnvironmentTarget, Outcome, StageContext};

    fn ctx(workdir: &Path, with: serde_json::Value) -> StageContext {
        let run = Arc::new(RunInfo::new("r1", "p", pr_event("t", "b"), workdir));
        let mut ctx = StageContext::new(run, "deploy").with_environment(EnvironmentTarget::new(
            "preview-pr-5",
            "preview",
            None,
        ));
        ctx.with = with.as_object().unwrap().clone();
        ctx
    }

    fn backend(envs: &Path) -> LocalBackend {
        LocalBackend::builder().with_environments_dir(envs).build()
    }

    #[tokio::test]
    async fn bad_parameters_are_clear_errors_that_deploy_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.txt"), "x").unwrap();
        let envs = tmp.path().join("envs");
        let b = backend(&envs);
        for (with, expected) in [
            (
                serde_json::json!({"files": "../secret"}),
                "invalid parameters: `with.files`: \"../secret\" is not a path inside the checkout",
            ),
            (
                serde_json::json!({"files": ["/etc/passwd"]}),
                "invalid parameters: `with.files`: \"/etc/passwd\" is not a path inside the checkout",
            ),
            (
                serde_json::json!({"files": 3}),
                "invalid parameters: `with.files` must be a path or a list of paths, found 3",
            ),
            (
                serde_json::json!({"files": "missing.txt"}),
                "invalid parameters: `with.files`: missing.txt is not in the checkout",
            ),
            (
                serde_json::json!({"serve": ["a"]}),
                "invalid parameters: `with.serve` must be a string, found [\"a\"]",
            ),
            (
                serde_json::json!({"serve": "x", "port": 70000}),
                "invalid parameters: `with.port`: 70000 is not a port",
            ),
        ] {
            let err = b.deploy(ctx(tmp.path(), with)).await.unwrap_err();
            assert_eq!(err.to_string(), expected);
        }
        assert!(!envs.join("preview-pr-5/release").exists());

        let mut no_env = ctx(tmp.path(), serde_json::json!({}));
        no_env.environment = None;
        assert!(matches!(
            b.deploy(no_env).await,
            Err(BackendError::InvalidParameters(_))
        ));
        let unconfigured = LocalBackend::new();
        let err = unconfigured
            .deploy(ctx(tmp.path(), serde_json::json!({})))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("no environments directory"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_failing_build_keeps_the_release_that_runs() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("app.txt"), "one").unwrap();
        let envs = tmp.path().join("envs");
        let b = backend(&envs);
        let done = b
            .deploy(ctx(tmp.path(), serde_json::json!({"files": "app.txt"})))
            .await
            .unwrap();
        assert_eq!(done.outcome, Outcome::Success);
        let release = envs.join("preview-pr-5/release");
        assert_eq!(done.outputs["path"], release.display().to_string());
        std::fs::write(tmp.path().join("app.txt"), "two").unwrap();
        let failed = b
            .deploy(ctx(
                tmp.path(),
                serde_json::json!({"files": "app.txt", "build": "echo broken >&2; exit 3"}),
            ))
            .await
            .unwrap();
        assert_eq!(
            failed.outcome,
            Outcome::Failure {
                exit_code: Some(3),
                message: "`build` failed with exit code 3".to_owned()
            }
        );
        assert_eq!(
            std::fs::read_to_string(release.join("app.txt")).unwrap(),
            "one"
        );
        let stopped = b
            .stop(ctx(tmp.path(), serde_json::json!({})))
            .await
            .unwrap();
        assert_eq!(stopped.outcome, Outcome::Success);
        assert!(!envs.join("preview-pr-5").exists());
        // Stopping what does not exist succeeds.
        b.stop(ctx(tmp.path(), serde_json::json!({})))
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_server_that_never_listens_fails_the_deploy_and_is_stopped() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("server.pid.seen");
        let b = backend(&tmp.path().join("envs"));
        let with = serde_json::json!({
            "serve": format!("echo $$ > {}; exec sleep 100", pid_file.display()),
            "ready_timeout": 1,
        });
        let err = b.deploy(ctx(tmp.path(), with)).await.unwrap_err();
        assert!(
            err.to_string()
                .contains("did not accept connections within 1s"),
            "{err}"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        assert!(wait_gone(&pid).await, "the server was left running");

        let with = serde_json::json!({"serve": "echo cannot start >&2; exit 1"});
        let err = b.deploy(ctx(tmp.path(), with)).await.unwrap_err();
        assert!(
            err.to_string().contains("exited (exit status: 1)")
                && err.to_string().contains("cannot start"),
            "{err}"
        );
    }
}

/// Lines written to stdout and stderr in turn reach the log in the order they were written,
/// run after run (two pipes read apart would let a stream's lines overtake the other's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lines_of_stdout_and_stderr_keep_the_order_they_were_written_in() {
    use gitops_core::backend::process::{StopPolicy, StopSignal, run_merged};
    const PAIRS: usize = 200;
    let script =
        format!("i=0; while [ $i -lt {PAIRS} ]; do echo out$i; echo err$i >&2; i=$((i+1)); done");
    let expected: Vec<String> = (0..PAIRS)
        .flat_map(|i| [format!("out{i}"), format!("err{i}")])
        .collect();
    for attempt in 0..10 {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(&script);
        let mut lines = Vec::new();
        let stop = StopPolicy::new(StopSignal::Terminate, Duration::from_secs(1));
        let exit = run_merged(cmd, &Default::default(), stop, |_, line| {
            lines.push(line.to_owned())
        })
        .await
        .unwrap();
        assert_eq!(exit, gitops_core::backend::process::Exit::Code(0));
        assert_eq!(lines, expected, "attempt {attempt}");
    }
}
