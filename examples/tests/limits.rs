//! Limits through the `gitops` binary: a config or backend parameter that asks for too much is a
//! clear error, never a crash, and a failed deployment never keeps its environment locked.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{git, text};
use gitops_core::ledger::{DeploymentResult, Ledger};
use serde_json::json;

fn gitops(args: &[&str]) -> Output {
    common::gitops(args, None)
}

/// What a process that crashed or panicked would have said.
fn assert_no_crash(out: &Output) {
    let stderr = text(&out.stderr);
    for crash in ["panicked", "backtrace", "overflow", "SIGSEGV", "SIGABRT"] {
        assert!(!stderr.contains(crash), "{crash:?} in stderr:\n{stderr}");
    }
    assert!(out.status.code().is_some(), "killed by a signal: {out:?}");
}

fn validate(dir: &Path, config: &str) -> (Output, Duration) {
    let file = dir.join(".gitops.yml");
    std::fs::write(&file, config).unwrap();
    let started = Instant::now();
    let out = gitops(&["validate", "--config", file.to_str().unwrap()]);
    (out, started.elapsed())
}

fn one_stage(stage: &str) -> String {
    format!("version: 1\npipelines:\n  ci:\n    on: {{ push: {{}} }}\n    stages:\n      {stage}\n")
}

fn chain(terms: usize) -> String {
    vec!["event.sha"; terms].join(" || ")
}

#[test]
fn validate_refuses_an_if_of_200000_terms_quickly_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    let config = one_stage(&format!("a: {{ run: x, if: \"{}\" }}", chain(200_000)));
    let (out, took) = validate(tmp.path(), &config);
    println!("gitops validate refused a 200,000-term `if:` in {took:?}");
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    let file = tmp.path().join(".gitops.yml");
    assert!(
        stderr.starts_with(&format!(
            "{}:6:24: pipelines.ci.stages.a.if: expression too long: ",
            file.display()
        )),
        "{stderr}"
    );
    assert!(stderr.len() < 600, "the message quotes all of it: {stderr}");
    assert!(took < Duration::from_secs(5), "took {took:?}");

    // Within the length limit, a chain one term past the depth limit.
    let config = one_stage(&format!("a: {{ run: x, if: \"{}\" }}", chain(65)));
    let (out, _) = validate(tmp.path(), &config);
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "{}:6:24: pipelines.ci.stages.a.if: expression nested too deeply: more than 64 levels",
            file.display()
        )),
        "{stderr}"
    );
    let config = one_stage(&format!("a: {{ run: x, if: \"{}\" }}", chain(64)));
    let (out, _) = validate(tmp.path(), &config);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

#[test]
fn validate_refuses_a_timeout_past_seven_days_and_says_where() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, _) = validate(tmp.path(), &one_stage("a: { run: x, timeout: 8d }"));
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(1));
    let file = tmp.path().join(".gitops.yml");
    assert_eq!(
        text(&out.stderr),
        format!(
            "{}:6:29: pipelines.ci.stages.a.timeout: duration \"8d\" exceeds the longest allowed, 7d\n",
            file.display()
        )
    );
    let (out, _) = validate(tmp.path(), &one_stage("a: { run: x, timeout: 7d }"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
}

const SANE: &str = "{ files: app.txt, ready_timeout: 30 }";
const HUGE: &str =
    "{ files: app.txt, serve: \"exec sleep 30\", ready_timeout: 18446744073709551615 }";
/// What `gitops run` says of [`HUGE`]: it never gets as far as the backend.
const HUGE_AT_LOAD: &str = "pipelines.main.stages.deploy.with.ready_timeout: must be a whole number from 0 to 604800, found 18446744073709551615";
/// A deploy that fails in its backend: its server exits before it serves.
const FAILING: &str = "{ files: app.txt, serve: 'exit 3', ready_timeout: 30 }";
const FAILED: &str = "the `serve` command exited";

/// A repository whose pipeline `main` deploys to `staging` on the local backend.
struct Repo {
    tmp: tempfile::TempDir,
    dir: PathBuf,
}

impl Repo {
    fn new() -> Repo {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap();
        git(&dir, &["init", "-q"]);
        Repo { tmp, dir }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    /// Commits a config whose deploy has `with`; the push event's file.
    fn commit(&self, n: u32, with: &str) -> PathBuf {
        let config = format!(
            "version: 1\nenvironments:\n  staging: {{ backend: local }}\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      deploy: {{ deploy: staging, with: {with} }}\n"
        );
        std::fs::write(self.dir.join(".gitops.yml"), config).unwrap();
        std::fs::write(self.dir.join("app.txt"), format!("v{n}\n")).unwrap();
        git(&self.dir, &["add", "-A"]);
        git(&self.dir, &["commit", "-qm", &format!("v{n}")]);
        let sha = git(&self.dir, &["rev-parse", "HEAD"]);
        let event = json!({"kind": "push", "repo": "o/r", "sha": sha, "ref": "refs/heads/main",
            "branch": "main", "before": null, "after": sha, "created": false, "deleted": false,
            "forced": false});
        let file = self.tmp.path().join(format!("event-{n}.json"));
        std::fs::write(&file, event.to_string()).unwrap();
        file
    }

    fn run(&self, event: &Path) -> (Output, Duration) {
        let started = Instant::now();
        let out = gitops(&[
            "run",
            "--event",
            event.to_str().unwrap(),
            "--repo",
            self.dir.to_str().unwrap(),
            "--state",
            self.state().to_str().unwrap(),
        ]);
        (out, started.elapsed())
    }

    fn release(&self) -> String {
        std::fs::read_to_string(self.state().join("environments/staging/release/app.txt"))
            .unwrap_or_default()
    }
}

#[test]
fn a_huge_ready_timeout_is_a_located_error_and_the_next_deploy_goes_through() {
    let repo = Repo::new();
    let (out, _) = repo.run(&repo.commit(1, HUGE));
    assert_no_crash(&out);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(".gitops.yml:8:") && stderr.contains(HUGE_AT_LOAD),
        "{stderr}"
    );
    assert_eq!(repo.release(), "", "nothing was deployed");

    let (out, took) = repo.run(&repo.commit(2, SANE));
    println!("the next deploy took {took:?}");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        took < Duration::from_secs(20),
        "it waited for a lock: {took:?}"
    );
    assert_eq!(repo.release(), "v2\n");
}

/// Waits up to `limit` for `done`, failing with `what` and the watch's output after that.
fn wait_for(what: &str, limit: Duration, log: &Path, mut done: impl FnMut(&str) -> bool) {
    let deadline = Instant::now() + limit;
    loop {
        let said = std::fs::read_to_string(log).unwrap_or_default();
        if done(&said) {
            return;
        }
        assert!(Instant::now() < deadline, "{what} did not happen:\n{said}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A watch is killed when the test ends, passing or not.
struct Watch(std::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// In one long-running process (as `serve` and `watch` are), a deploy right after a failed
/// one gets the environment's lock at once: the failure (once a panic) left it held and renewed
/// for as long as the process lived.
#[test]
fn in_one_watch_a_deploy_right_after_a_failed_one_goes_through() {
    let repo = Repo::new();
    repo.commit(0, SANE);
    let log = repo.tmp.path().join("watch.log");
    let _watch = Watch(
        Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["watch", "--repo", repo.dir.to_str().unwrap()])
            .args(["--interval", "100ms", "--state"])
            .arg(repo.state())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for("the baseline", Duration::from_secs(30), &log, |s| {
        s.contains("baseline")
    });
    repo.commit(1, FAILING);
    wait_for("the failed deploy", Duration::from_secs(30), &log, |s| {
        s.contains("✗ pipeline main failed")
    });
    let started = Instant::now();
    repo.commit(2, SANE);
    wait_for(
        "the next deploy, without waiting for a lock",
        Duration::from_secs(20),
        &log,
        |s| s.contains("✓ pipeline main succeeded"),
    );
    println!(
        "the next deploy was done {:?} after its commit",
        started.elapsed()
    );
    assert_eq!(repo.release(), "v2\n");
    let history = Ledger::open(&repo.state())
        .unwrap()
        .history(Some("staging"), 10)
        .unwrap();
    let ended: Vec<_> = history
        .iter()
        .map(|d| {
            (
                d.result,
                d.message.as_deref().map(|m| m.starts_with(FAILED)),
            )
        })
        .collect();
    assert_eq!(
        ended,
        [
            (DeploymentResult::Success, None),
            (DeploymentResult::Failure, Some(true))
        ]
    );
    let said = std::fs::read_to_string(&log).unwrap();
    for crash in ["panicked", "backtrace"] {
        assert!(!said.contains(crash), "{crash:?} in:\n{said}");
    }
}
