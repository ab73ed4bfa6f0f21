//! Stored stage logs and the commands that read them (`runs`, `show`, `logs`), end to end
//! through the `gitops` binary: masking, a run killed with SIGKILL, the cap, retention, and
//! `logs --follow` in a second process.

mod common;

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{push_repo, text};
use serde_json::Value;

/// A repository in `tmp` whose pipeline `main` has `stages` (YAML lines under `stages:`); the
/// file of its push event.
fn repo(tmp: &Path, stages: &str) -> PathBuf {
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n{stages}"
    );
    push_repo(&tmp.join("repo"), &config)
}

fn run(tmp: &Path, extra: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    let (event, repo, state) = paths(tmp);
    common::run_event_with(&event, &repo, &state, extra, env)
}

/// The event file, repository and state dir of [`repo`].
fn paths(tmp: &Path) -> (PathBuf, PathBuf, PathBuf) {
    (
        tmp.join("event-main.json"),
        tmp.join("repo"),
        tmp.join("state"),
    )
}

/// `gitops run` of [`repo`]'s event, started in the background.
fn spawn_run(tmp: &Path) -> std::process::Child {
    let (event, repo, state) = paths(tmp);
    common::run_command(&event, &repo, &state).spawn().unwrap()
}

/// `gitops ARGS --state <tmp>/state`, which must succeed; its standard output.
fn read(tmp: &Path, args: &[&str]) -> String {
    let state = tmp.join("state");
    let mut args = args.to_vec();
    args.extend(["--state", state.to_str().unwrap()]);
    let out = common::gitops(&args, None);
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn json(tmp: &Path, args: &[&str]) -> Value {
    serde_json::from_str(&read(tmp, args)).unwrap()
}

/// Every file under `dir`, as text.
fn all_text(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out += &all_text(&path);
        } else {
            out += &String::from_utf8_lossy(&std::fs::read(&path).unwrap());
        }
    }
    out
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !done() {
        assert!(Instant::now() < deadline, "{what} did not happen");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn stage_logs_are_kept_masked_and_read_by_runs_show_and_logs() {
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        r#"      build: { run: "echo compiling; echo token is $TOKEN; echo oops >&2; echo image=app-$TOKEN >> $GITOPS_OUTPUT" }
      test: { needs: build, run: "exit 3" }
"#,
    );
    let secret = "s3cr3t-value-4711";
    let out = run(tmp.path(), &["--secret-env", "TOKEN"], &[("TOKEN", secret)]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));

    let runs = json(tmp.path(), &["runs", "--json"]);
    let runs = runs.as_array().unwrap();
    assert_eq!(runs.len(), 1);
    let r = &runs[0];
    let id = r["id"].as_str().unwrap();
    assert_eq!(r["pipeline"], "main");
    assert_eq!(r["event"], "push");
    assert_eq!(r["ref"], "refs/heads/main");
    assert_eq!(r["pull_request"], Value::Null);
    assert_eq!(r["result"], "failure");
    assert!(r["actor"].is_string() && r["sha"].is_string());
    assert!(r["duration_secs"].as_f64().unwrap() >= 0.0);
    assert!(r["finished_at"].as_f64().unwrap() >= r["started_at"].as_f64().unwrap());
    assert_eq!(
        json(tmp.path(), &["runs", "--json", "--pipeline", "other"]),
        serde_json::json!([])
    );
    assert_eq!(
        json(tmp.path(), &["runs", "--json", "--env", "staging"]),
        serde_json::json!([])
    );
    assert!(read(tmp.path(), &["runs"]).contains(id));

    let show = json(tmp.path(), &["show", id, "--json"]);
    assert_eq!(show["id"], id);
    assert_eq!(show["event"]["kind"], "push");
    assert_eq!(show["result"], "failure");
    let stages = show["stages"].as_array().unwrap();
    assert_eq!(stages.len(), 2);
    assert_eq!(stages[0]["id"], "build");
    assert_eq!(stages[0]["result"], "success");
    assert_eq!(stages[0]["attempts"], 1);
    assert_eq!(stages[0]["outputs"]["image"], "app-***");
    assert_eq!(stages[1]["id"], "test");
    assert_eq!(stages[1]["result"], "failure");
    assert_eq!(stages[1]["exit_code"], 3);
    assert_eq!(show["deployments"], serde_json::json!([]));
    let shown = read(tmp.path(), &["show", id]);
    assert!(shown.contains("image=app-***"), "{shown}");

    let log = read(tmp.path(), &["logs", id, "build"]);
    assert_eq!(log, "compiling\ntoken is ***\noops\n");
    let all = read(tmp.path(), &["logs", id]);
    assert!(all.starts_with("build │ compiling\n"), "{all}");
    // Each line kept with its time, stream and attempt.
    let file = tmp.path().join(format!("state/logs/{id}/build.log"));
    let first: Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["stream"], "stdout");
    assert_eq!(first["attempt"], 1);
    assert!(first["t"].as_u64().unwrap() > 1_600_000_000_000);
    // The secret is nowhere in the state dir: not in a log, not in the ledger.
    let state = all_text(&tmp.path().join("state"));
    assert!(state.contains("token is ***"));
    assert!(!state.contains(secret));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn lines_written_before_a_kill_are_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let pid = tmp.path().join("stage.pid");
    repo(
        tmp.path(),
        &format!(
            "      slow: {{ run: \"echo before the kill; echo $$ > {}; sleep 1000\" }}\n",
            pid.display()
        ),
    );
    let mut child = spawn_run(tmp.path());
    wait_for("the stage's start", || {
        !std::fs::read_to_string(&pid)
            .unwrap_or_default()
            .trim()
            .is_empty()
    });
    // The line is in the log (as another process reads it) while the run lives: each line is
    // written as it comes, not at the stage's end. (Waiting for it also keeps the kill from
    // racing the engine's read of the stage's output on a loaded machine.)
    let id = json(tmp.path(), &["runs", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let state = tmp.path().join("state");
    wait_for("the line in the log", || {
        let out = common::gitops(
            &["logs", &id, "slow", "--state", state.to_str().unwrap()],
            None,
        );
        text(&out.stdout) == "before the kill\n"
    });
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The stage's process (a group of its own) outlives the killed run.
    let stage: i32 = std::fs::read_to_string(&pid)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let _ = nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(stage),
        nix::sys::signal::Signal::SIGKILL,
    );
    let runs = json(tmp.path(), &["runs", "--json"]);
    assert_eq!(runs[0]["result"], "interrupted");
    let id = runs[0]["id"].as_str().unwrap();
    assert_eq!(read(tmp.path(), &["logs", id, "slow"]), "before the kill\n");
    // Following a run whose process is gone ends at once, with what was kept.
    assert_eq!(
        read(tmp.path(), &["logs", id, "--follow"]),
        "slow │ before the kill\n"
    );
}

#[test]
fn a_log_past_its_cap_ends_with_how_much_was_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    repo(
        tmp.path(),
        "      chatty: { run: \"for i in $(seq 1 50); do echo line-$i; done\" }\n",
    );
    let out = run(tmp.path(), &["--max-log-bytes", "400"], &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let id = json(tmp.path(), &["runs", "--json"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let log = read(tmp.path(), &["logs", &id, "chatty"]);
    let lines: Vec<&str> = log.lines().collect();
    let kept = lines.len() - 1;
    assert!(kept > 0 && kept < 50, "{log}");
    assert_eq!(lines[0], "line-1");
    assert_eq!(lines[kept - 1], format!("line-{kept}"));
    // line-1 .. line-9 are 6 bytes of text, line-10 .. line-50 7.
    let dropped: usize = (kept + 1..=50).map(|i| format!("line-{i}").len()).sum();
    assert_eq!(
        lines[kept],
        format!(
            "log truncated: {} lines ({dropped} bytes) dropped past the limit of 400 bytes",
            50 - kept
        )
    );
    let file = tmp.path().join(format!("state/logs/{id}/chatty.log"));
    let text = std::fs::read_to_string(file).unwrap();
    let before_last = text.len() - text.lines().last().unwrap().len() - 1;
    assert!(before_last <= 400, "{before_last}");
}

#[test]
fn keep_runs_removes_older_runs_with_their_logs() {
    let tmp = tempfile::tempdir().unwrap();
    repo(tmp.path(), "      hello: { run: \"echo hello\" }\n");
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = run(tmp.path(), &["--keep-runs", "1"], &[]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let runs = json(tmp.path(), &["runs", "--json"]);
        ids.push(runs[0]["id"].as_str().unwrap().to_owned());
        std::thread::sleep(Duration::from_millis(5));
    }
    // Applied as each run starts: the third removed the first, and kept the second.
    let left: Vec<String> = json(tmp.path(), &["runs", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(left, [ids[2].clone(), ids[1].clone()]);
    let logs = tmp.path().join("state/logs");
    assert!(!logs.join(&ids[0]).exists());
    assert!(logs.join(&ids[1]).join("hello.log").exists());
    let state = tmp.path().join("state");
    let out = common::gitops(&["show", &ids[0], "--state", state.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no run"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn follow_prints_the_lines_of_a_run_in_another_process_until_it_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let go = tmp.path().join("go");
    repo(
        tmp.path(),
        &format!(
            "      talk: {{ run: \"echo first; while [ ! -f {} ]; do sleep 0.05; done; echo second\" }}\n",
            go.display()
        ),
    );
    let state = tmp.path().join("state");
    let mut runner = spawn_run(tmp.path());
    let mut id = String::new();
    wait_for("the run's start", || {
        let out = common::gitops(
            &["runs", "--json", "--state", state.to_str().unwrap()],
            None,
        );
        let runs: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
        match runs[0]["id"].as_str() {
            Some(run) => {
                id = run.to_owned();
                true
            }
            None => false,
        }
    });
    let mut follower = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(["logs", &id, "talk", "--follow", "--state"])
        .arg(&state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let next = || rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(next(), "first");
    std::fs::write(&go, "").unwrap();
    assert_eq!(next(), "second");
    assert!(runner.wait().unwrap().success());
    // The run ended: the follower ends too.
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = follower.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = follower.kill();
            panic!("logs --follow did not end with the run");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success());
    assert!(
        rx.recv_timeout(Duration::from_secs(5)).is_err(),
        "no more lines"
    );
}
