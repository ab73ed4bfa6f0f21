//! Helpers shared by the `gitops` binary's end-to-end tests.
#![allow(dead_code)]

pub mod server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Runs the `gitops` binary with `args`, feeding `stdin` when given.
pub fn gitops(args: &[&str], stdin: Option<&[u8]>) -> Output {
    gitops_with_env(args, stdin, &[])
}

/// [`gitops`] with environment variables set.
pub fn gitops_with_env(args: &[&str], stdin: Option<&[u8]>, env: &[(&str, &str)]) -> Output {
    gitops_in(None, args, stdin, env)
}

/// [`gitops_with_env`], run in directory `dir` when given.
pub fn gitops_in(
    dir: Option<&Path>,
    args: &[&str],
    stdin: Option<&[u8]>,
    env: &[(&str, &str)],
) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gitops"));
    if let Some(dir) = dir {
        command.current_dir(dir);
    }
    let mut child = command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut input = child.stdin.take().unwrap();
        if let Some(bytes) = stdin {
            // A command that fails before reading its input closes the pipe early.
            let _ = input.write_all(bytes);
        }
    }
    child.wait_with_output().unwrap()
}

/// Output bytes as text.
pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The git runner of core's tests (fixed identity and default branch), compiled here too.
#[path = "../../../gitops-core/tests/common/mod.rs"]
mod core_common;
#[allow(unused_imports)] // not every test file runs git
pub use core_common::git;

/// `docker ARGS` (with the legacy builder: this machine's docker has no buildx); what it did.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap()
}

/// `docker ARGS`, which must succeed; its standard output, trimmed.
pub fn docker_ok(args: &[&str]) -> String {
    let out = docker(args);
    assert!(
        out.status.success(),
        "docker {}: {}\n{}",
        args.join(" "),
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout).trim().to_owned()
}

/// Whether the tests that need a real `what` (Docker, Terraform) were asked for with `var`;
/// prints `skipped: ...` when not.
pub fn opted_in(var: &str, what: &str) -> bool {
    if std::env::var_os(var).is_some() {
        return true;
    }
    eprintln!("skipped: set {var}=1 (scripts/test.sh does) to run the {what} tests");
    false
}

/// A repository in `dir` whose `.gitops.yml` is `config` and whose `files` are as given
/// (path, content), committed on `main`.
pub fn init_repo(dir: &Path, config: &str, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    std::fs::write(dir.join(".gitops.yml"), config).unwrap();
    for (path, content) in files {
        std::fs::write(dir.join(path), content).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "init"]);
}

/// [`init_repo`] with no other file; the file of the push event for its commit, written beside
/// `dir`.
pub fn push_repo(dir: &Path, config: &str) -> PathBuf {
    init_repo(dir, config, &[]);
    push_event(dir, "main")
}

/// `gitops run --event EVENT --repo REPO --state STATE`, to start in the background, its
/// output thrown away.
pub fn run_command(event: &Path, repo: &Path, state: &Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_gitops"));
    command
        .args(["run", "--event"])
        .arg(event)
        .arg("--repo")
        .arg(repo)
        .arg("--state")
        .arg(state)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

/// `gitops run --event EVENT --repo REPO --state STATE`, with environment variables `env`.
pub fn run_event(event: &Path, repo: &Path, state: &Path, env: &[(&str, &str)]) -> Output {
    run_event_with(event, repo, state, &[], env)
}

/// [`run_event`] with more arguments, `extra`.
pub fn run_event_with(
    event: &Path,
    repo: &Path,
    state: &Path,
    extra: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let mut args = vec![
        "run",
        "--event",
        event.to_str().unwrap(),
        "--repo",
        repo.to_str().unwrap(),
        "--state",
        state.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    gitops_with_env(&args, None, env)
}

/// The file of a push event for the tip of `branch` of the repository in `dir`, written beside
/// `dir` as `event-<branch>.json`.
pub fn push_event(dir: &Path, branch: &str) -> PathBuf {
    let sha = git(dir, &["rev-parse", branch]);
    let event = serde_json::json!({"kind": "push", "repo": "o/r", "sha": sha,
        "ref": format!("refs/heads/{branch}"), "branch": branch, "before": null, "after": sha,
        "created": true, "deleted": false, "forced": false});
    let file = dir
        .parent()
        .unwrap()
        .join(format!("event-{}.json", branch.replace('/', "-")));
    std::fs::write(&file, event.to_string()).unwrap();
    file
}

/// Debian's `busybox` (for `httpd`), when on the PATH. Without it a test skips (saying so),
/// unless `scripts/test.sh` runs it (`GITOPS_TEST_DOCKER` set), where its absence is a failure.
pub fn busybox() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("busybox"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("GITOPS_TEST_DOCKER").is_some() {
            panic!("busybox is not installed (scripts/test.sh installs busybox-static)");
        }
        eprintln!("skipped: busybox not found (scripts/test.sh installs busybox-static)");
    }
    found
}
