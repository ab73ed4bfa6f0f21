//! `gitops run`, `rerun` and `resume` end to end: real repositories, real processes, the ledger
//! in a state dir, and a run killed with SIGKILL halfway.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{git, push_repo as repo, text};
use gitops_core::ledger::Ledger;
use serde_json::{Value, json};

fn gitops(args: &[&str]) -> std::process::Output {
    common::gitops(args, None)
}

/// A repository in `tmp` whose pipeline `main` runs one stage, `stage` (`name: { ... }`), on
/// pushes to main; its directory.
fn one_stage_repo(tmp: &Path, stage: &str) -> std::path::PathBuf {
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      {stage}\n"
    );
    let dir = tmp.join("repo");
    repo(&dir, &config);
    dir
}

fn count(file: &Path, word: &str) -> usize {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .filter(|l| *l == word)
        .count()
}

#[test]
fn run_reports_and_rerun_reuses_what_succeeded() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    let flag = tmp.path().join("fixed");
    let config = format!(
        r#"version: 1
pipelines:
  main:
    on: {{ push: {{ branches: [main] }} }}
    stages:
      build: {{ run: "echo build >> {m}; echo artifact=app-$GITOPS_SHA >> $GITOPS_OUTPUT" }}
      test: {{ needs: build, run: "echo test >> {m}; test -f {f}" }}
      deploy: {{ needs: test, run: "echo deploy >> {m}; test -n \"$A\"", env: {{ A: "${{{{ stages.build.outputs.artifact }}}}" }} }}
"#,
        m = marks.display(),
        f = flag.display()
    );
    let event = repo(&tmp.path().join("repo"), &config);
    let state = tmp.path().join("state");
    let report = tmp.path().join("report.json");
    let out = gitops(&[
        "run",
        "--event",
        event.to_str().unwrap(),
        "--repo",
        tmp.path().join("repo").to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failing run exits 1: {}",
        text(&out.stdout)
    );
    let stdout = text(&out.stdout);
    assert!(stdout.contains("✗ test failed after"), "{stdout}");
    assert!(
        stdout.contains("– deploy skipped: needs test, which failed"),
        "{stdout}"
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["result"], "failure");
    let first = r["run_id"].as_str().unwrap().to_owned();
    assert_eq!(
        r["stages"][2]["reason"],
        json!({"kind": "need_failed", "need": "test"})
    );
    assert_eq!(
        (
            count(&marks, "build"),
            count(&marks, "test"),
            count(&marks, "deploy")
        ),
        (1, 1, 0)
    );
    assert!(
        !state.join("checkouts").join(&first).exists(),
        "the checkout is removed after the run"
    );

    // Fix the cause and re-run: build is reused (with its output), test and deploy run again.
    std::fs::write(&flag, "").unwrap();
    let out = gitops(&[
        "rerun",
        &first,
        "--state",
        state.to_str().unwrap(),
        "--report",
        report.to_str().unwrap(),
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("1 reused from the earlier run"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(
        (
            count(&marks, "build"),
            count(&marks, "test"),
            count(&marks, "deploy")
        ),
        (1, 2, 1)
    );
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(r["stages"][0]["reused"], true);
    let second = r["run_id"].as_str().unwrap().to_owned();
    let ledger = Ledger::open(&state).unwrap();
    assert_eq!(
        ledger.run(&second).unwrap().rerun_of.as_deref(),
        Some(first.as_str())
    );

    // --from re-runs that stage and everything after it.
    let out = gitops(&[
        "rerun",
        &second,
        "--from",
        "test",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        (
            count(&marks, "build"),
            count(&marks, "test"),
            count(&marks, "deploy")
        ),
        (1, 3, 2)
    );
    let out = gitops(&[
        "rerun",
        &second,
        "--from",
        "nope",
        "--state",
        state.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: pipeline \"main\" has no stage \"nope\""
    );
    let out = gitops(&["rerun", "r-none", "--state", state.to_str().unwrap()]);
    assert_eq!(
        text(&out.stderr).trim(),
        "error: no run \"r-none\" in the ledger"
    );
}

#[test]
fn a_run_killed_halfway_resumes_without_rerunning_finished_stages() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    let started = tmp.path().join("slow.pid");
    let resumed = tmp.path().join("resumed");
    let config = format!(
        r#"version: 1
pipelines:
  main:
    on: {{ push: {{}} }}
    stages:
      first: {{ run: "echo first >> {m}" }}
      second: {{ needs: first, run: "echo second >> {m}" }}
      slow: {{ needs: second, run: "if [ -f {r} ]; then echo slow >> {m}; else echo $$ > {p}; sleep 1000; fi" }}
      last: {{ needs: slow, run: "echo last >> {m}" }}
"#,
        m = marks.display(),
        r = resumed.display(),
        p = started.display()
    );
    let event = repo(&tmp.path().join("repo"), &config);
    let state = tmp.path().join("state");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args([
            "run",
            "--event",
            event.to_str().unwrap(),
            "--repo",
            tmp.path().join("repo").to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::read_to_string(&started)
        .unwrap_or_default()
        .trim()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "the slow stage never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The killed process could not stop its stage's process: it is still sleeping, in the
    // run's checkout, until `resume` stops it.
    let orphan = std::fs::read_to_string(&started).unwrap().trim().to_owned();
    assert!(
        Path::new(&format!("/proc/{orphan}")).exists(),
        "the orphaned stage should still run"
    );

    let ledger = Ledger::open(&state).unwrap();
    let interrupted = ledger.interrupted_runs().unwrap();
    assert_eq!(interrupted.len(), 1);
    let run_id = interrupted[0].id.clone();
    let recorded: Vec<String> = ledger
        .stage_results(&run_id)
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    assert_eq!(recorded, ["first", "second"]);

    std::fs::write(&resumed, "").unwrap();
    let out = gitops(&["resume", "--state", state.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains(&format!("Resuming run {run_id}")),
        "{}",
        text(&out.stdout)
    );
    for (stage, n) in [("first", 1), ("second", 1), ("slow", 1), ("last", 1)] {
        assert_eq!(
            count(&marks, stage),
            n,
            "{stage} ran {} times",
            count(&marks, stage)
        );
    }
    let mut recorded: Vec<String> = ledger
        .stage_results(&run_id)
        .unwrap()
        .into_iter()
        .map(|s| s.id.to_string())
        .collect();
    recorded.sort();
    assert_eq!(
        recorded,
        ["first", "last", "second", "slow"],
        "every stage result recorded exactly once"
    );
    assert!(ledger.interrupted_runs().unwrap().is_empty());
    let out = gitops(&["resume", "--state", state.to_str().unwrap()]);
    assert!(
        text(&out.stdout).contains("nothing to resume"),
        "{}",
        text(&out.stdout)
    );
    let out = gitops(&["resume", &run_id, "--state", state.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!("error: run \"{run_id}\" cannot be resumed: it is finished (success)")
    );
}

/// Runs `gitops run` for the push event of a new repository whose config is `config`.
fn run_in_new_repo(config: &str) -> std::process::Output {
    run_in_new_repo_with_env(config, &[])
}

/// [`run_in_new_repo`] with environment variables set.
fn run_in_new_repo_with_env(config: &str, env: &[(&str, &str)]) -> std::process::Output {
    let tmp = tempfile::tempdir().unwrap();
    let event = repo(&tmp.path().join("repo"), config);
    let repo_dir = tmp.path().join("repo");
    common::run_event(&event, &repo_dir, &tmp.path().join("state"), env)
}

#[test]
fn an_event_that_triggers_nothing_runs_nothing() {
    let out = run_in_new_repo(
        "version: 1\npipelines:\n  tags:\n    on: { tag: {} }\n    stages: { a: { run: \"true\" } }\n",
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        "No pipeline matches this push event: nothing to run."
    );
    // A backend that is not registered is refused before anything runs.
    let out = run_in_new_repo(
        "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages: { a: { backend: nomad, run: \"true\" } }\n",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        ".gitops.yml:5:29: stage \"a\": unknown backend \"nomad\" (known: docker, k8s, local, terraform)"
    );
}

#[test]
fn docker_and_k8s_stages_without_an_engine_fail_naming_where_they_looked() {
    // Docker and Kubernetes are registered in the app, and asked only when a stage uses them: a
    // local stage runs without either, their stages fail saying where nothing answered.
    let out = run_in_new_repo_with_env(
        "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages:\n      a: { run: \"echo local-ran\" }\n      b: { needs: a, backend: docker, run: \"true\", with: { image: busybox } }\n      c: { needs: a, backend: k8s, run: \"true\", with: { image: busybox } }\n",
        &[
            ("DOCKER_HOST", "unix:///nonexistent/docker.sock"),
            ("KUBECONFIG", "/nonexistent/kubeconfig"),
        ],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let all = format!("{stdout}{stderr}");
    assert!(all.contains("local-ran"), "{all}");
    assert!(
        all.contains(
            "backend unavailable: no Docker engine answered at unix:///nonexistent/docker.sock: "
        ),
        "{all}"
    );
    assert!(
        all.contains(
            "backend unavailable: no Kubernetes cluster answered (KUBECONFIG=/nonexistent/kubeconfig): "
        ),
        "{all}"
    );
}

#[test]
fn a_docker_stage_without_an_engine_fails_with_the_cause_on_stderr() {
    let out = run_in_new_repo_with_env(
        "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages:\n      b: { backend: docker, run: \"true\", with: { image: busybox } }\n",
        &[("DOCKER_HOST", "unix:///nonexistent/docker.sock")],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: stage \"b\" of pipeline p failed: "))
        .unwrap_or_else(|| panic!("no error line for the stage: {stderr}"));
    // What failed, then why: the client's own error about the socket.
    let (what, cause) = line
        .split_once(": caused by: ")
        .unwrap_or_else(|| panic!("no cause: {line}"));
    assert_eq!(
        what,
        "error: stage \"b\" of pipeline p failed: backend unavailable: no Docker engine answered at unix:///nonexistent/docker.sock"
    );
    assert!(cause.contains("/nonexistent/docker.sock"), "{line}");
}

#[test]
fn a_ledger_that_cannot_be_opened_is_an_error_with_its_cause() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let event = repo(
        &repo_dir,
        "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages: { a: { run: \"true\" } }\n",
    );
    // The ledger's file is a directory.
    let state = tmp.path().join("state");
    std::fs::create_dir_all(state.join("ledger.sqlite3")).unwrap();
    let ledger = state.join("ledger.sqlite3");
    let expected = format!(
        "error: ledger {}: caused by: Is a directory (os error 21)",
        ledger.display()
    );
    let out = common::run_event(&event, &repo_dir, &state, &[]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), expected);
    let out = gitops(&["envs", "--state", state.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr).trim(), expected);
}

#[test]
fn an_approval_waits_across_a_restart_and_the_ledger_commands_show_the_deployment() {
    let tmp = tempfile::tempdir().unwrap();
    let config = r#"version: 1
environments:
  staging: { approval: required }
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      test: { run: "true" }
      deploy: { needs: test, deploy: staging, with: { files: .gitops.yml } }
"#;
    let event = repo(&tmp.path().join("repo"), config);
    let state = tmp.path().join("state");
    let state_arg = state.to_str().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["run", "--event", event.to_str().unwrap(), "--repo"])
        .arg(tmp.path().join("repo"))
        .args(["--state", state_arg])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Read the progress until the deploy says it waits, and how to approve it.
    let mut approve_hint = String::new();
    {
        use std::io::BufRead;
        let stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        for line in stdout.lines() {
            let line = line.unwrap();
            if line.contains("waits for approval") {
                approve_hint = line;
                break;
            }
        }
    }
    assert!(
        approve_hint.contains("⏸ deploy waits for approval to deploy to staging: `gitops approve "),
        "{approve_hint}"
    );
    child.kill().unwrap(); // SIGKILL: the process that waited is gone
    child.wait().unwrap();

    let ledger = Ledger::open(&state).unwrap();
    let run_id = ledger.interrupted_runs().unwrap()[0].id.clone();
    assert!(approve_hint.contains(&format!("gitops approve {run_id} deploy")));
    assert!(
        ledger.history(None, 10).unwrap().is_empty(),
        "nothing deployed yet"
    );

    let out = gitops(&["approve", &run_id, "deploy", "--state", state_arg]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = gitops(&["approve", &run_id, "deploy", "--state", state_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: run \"{run_id}\" has no deployment waiting for approval at stage \"deploy\""
        )
    );

    // The restarted engine finds the approval and deploys.
    let out = gitops(&["resume", &run_id, "--state", state_arg]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("✓ deploy succeeded"),
        "{}",
        text(&out.stdout)
    );

    let out = gitops(&["envs", "--json", "--state", state_arg]);
    let envs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let sha = git(&tmp.path().join("repo"), &["rev-parse", "HEAD"]);
    assert_eq!(envs[0]["name"], "staging");
    assert_eq!(envs[0]["status"], "active");
    assert_eq!(envs[0]["sha"], sha.as_str());
    assert_eq!(envs[0]["pinned"], false);
    assert!(envs[0]["url"].as_str().unwrap().starts_with("file://"));
    let out = gitops(&["history", "staging", "--json", "--state", state_arg]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history.as_array().unwrap().len(), 1);
    for key in [
        "id",
        "environment",
        "version",
        "sha",
        "result",
        "rollback_of",
        "started_at",
        "finished_at",
    ] {
        assert!(
            history[0].get(key).is_some(),
            "history has no {key}: {history}"
        );
    }
    assert_eq!(history[0]["result"], "success");
    assert_eq!(history[0]["run_id"], run_id.as_str());

    // Nothing earlier to roll back to: a clear error, exit 1.
    let out = gitops(&["rollback", "staging", "--state", state_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: environment \"staging\": no earlier successful release to roll back to"
    );
    let out = gitops(&["history", "nowhere", "--state", state_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("environment \"nowhere\": no such environment"));
}

#[test]
fn watch_prints_each_change_once_and_runs_what_it_triggers() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    let dir = one_stage_repo(
        tmp.path(),
        &format!(
            r#"build: {{ run: "echo built-$GITOPS_SHA >> {}" }}"#,
            marks.display()
        ),
    );
    let state = tmp.path().join("state");
    let watch = |extra: &[&str]| {
        let mut args = vec![
            "watch",
            "--repo",
            dir.to_str().unwrap(),
            "--once",
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = gitops(&args);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        out
    };
    let first = watch(&["--no-run"]);
    assert_eq!(text(&first.stdout), "", "the baseline reports nothing");
    assert!(
        text(&first.stderr).contains("baseline"),
        "{}",
        text(&first.stderr)
    );

    std::fs::write(dir.join("app.txt"), "v2").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "v2"]);
    let sha = git(&dir, &["rev-parse", "HEAD"]);
    let out = watch(&[]);
    let lines: Vec<Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{}", text(&out.stdout));
    assert_eq!(lines[0]["kind"], "push");
    assert_eq!(lines[0]["after"], sha.as_str());
    assert!(
        text(&out.stderr).contains("✓ pipeline main succeeded"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        format!("built-{sha}\n")
    );

    let again = watch(&[]);
    assert_eq!(text(&again.stdout), "", "each change is reported once");
    assert_eq!(count(&marks, &format!("built-{sha}")), 1);

    let out = gitops(&["watch", "--repo", dir.to_str().unwrap(), "--interval", "0s"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("the interval must be more than zero"));
}

#[test]
fn ctrl_c_during_a_watched_run_cancels_it_and_stops_the_watch() {
    let tmp = tempfile::tempdir().unwrap();
    let started = tmp.path().join("slow.pid");
    let dir = one_stage_repo(
        tmp.path(),
        &format!(
            r#"slow: {{ run: "echo $$ > {}; sleep 1000" }}"#,
            started.display()
        ),
    );
    let state = tmp.path().join("state");
    let stderr = tmp.path().join("stderr");
    let child = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args([
            "watch",
            "--repo",
            dir.to_str().unwrap(),
            "--interval",
            "200ms",
        ])
        .args(["--state", state.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr).unwrap())
        .spawn()
        .unwrap();
    // Should an assertion fail, nothing of the watch is left running.
    let mut watch = Leftovers {
        child,
        stage_pid: started.clone(),
    };
    let child = &mut watch.child;
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    wait_for("the baseline", || read(&stderr).contains("baseline"));
    std::fs::write(dir.join("app.txt"), "v2").unwrap();
    git(&dir, &["add", "-A"]);
    git(&dir, &["commit", "-qm", "v2"]);
    wait_for("the stage's start", || !read(&started).trim().is_empty());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    wait_for("the watch's exit", || child.try_wait().unwrap().is_some());
    assert!(child.wait().unwrap().success(), "{}", read(&stderr));
    let err = read(&stderr);
    for said in [
        "interrupted: cancelling",
        "was cancelled",
        "stopped watching",
    ] {
        assert!(err.contains(said), "no {said:?} in:\n{err}");
    }
    let stage = format!("/proc/{}", read(&started).trim());
    wait_for("the stage's end", || {
        std::fs::read_to_string(format!("{stage}/stat")).map_or(true, |s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
    });
    let runs = Ledger::open(&state).unwrap().runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(
        runs[0].status,
        gitops_core::ledger::RunStatus::Finished(gitops_core::scheduler::RunResult::Cancelled)
    );
}

/// Waits up to 30 seconds for `done`, failing the test with `what` after that.
fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A `gitops` process and the stage it runs (its pid in a file, a process group of its own),
/// killed when a failing test drops them.
struct Leftovers {
    child: std::process::Child,
    stage_pid: std::path::PathBuf,
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let pid = std::fs::read_to_string(&self.stage_pid).unwrap_or_default();
        if let Ok(pid) = pid.trim().parse::<i32>() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}
