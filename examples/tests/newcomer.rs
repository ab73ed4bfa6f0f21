//! The `gitops` binary as a new team meets it, following the README on a repository of its
//! own: backend names, a first config, the demo kept, what `run`, `watch` and `serve` say when
//! they end, releases, the order of a stage's output, closed pipes, `history`, durations,
//! relative state dirs and counts.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, github, wait_until};
use common::{git, gitops, gitops_in, push_event, push_repo, run_event, text};
use serde_json::Value;

/// `gitops` with `args` and no input.
fn run(args: &[&str]) -> Output {
    gitops(args, None)
}

/// Asserts the exit status, showing what the command said otherwise.
fn expect(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Asserts that `said` contains `needle`, showing it otherwise.
fn says(said: &str, needle: &str) {
    assert!(said.contains(needle), "{needle:?} not in:\n{said}");
}

/// The backend names the app registers, as `gitops validate` lists them for an unknown one.
fn registered_backends(tmp: &Path) -> Vec<String> {
    let file = tmp.join("nomad.yml");
    std::fs::write(
        &file,
        "version: 1\npipelines:\n  p:\n    on: { push: {} }\n    stages: { a: { backend: nomad, run: x } }\n",
    )
    .unwrap();
    let out = run(&["validate", "--config", file.to_str().unwrap()]);
    expect(&out, 1);
    let stderr = text(&out.stderr);
    let known = stderr
        .split("(known: ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .unwrap_or_else(|| panic!("no list of backends in {stderr}"));
    known.split(", ").map(str::to_owned).collect()
}

/// A config with a stage and an environment on `backend`, in a pipeline that a push to main
/// does not start: loading it is all a run does with it.
fn on_backend(backend: &str) -> String {
    format!(
        "version: 1\nenvironments:\n  e: {{ backend: {backend} }}\npipelines:\n  tags:\n    on: {{ tag: {{}} }}\n    stages:\n      a: {{ backend: {backend}, run: \"true\" }}\n      d: {{ needs: a, deploy: e }}\n"
    )
}

/// `gitops validate` and `gitops run` read the one registry: every name it has passes both,
/// and a name it lacks fails both with the same located message.
#[test]
fn validate_and_run_agree_on_every_registered_backend_name() {
    let tmp = tempfile::tempdir().unwrap();
    let names = registered_backends(tmp.path());
    assert!(names.contains(&"k8s".to_owned()), "{names:?}");
    for name in names.iter().map(String::as_str).chain(["kubernetes"]) {
        let dir = tmp.path().join(name);
        let event = push_repo(&dir.join("repo"), &on_backend(name));
        let config = dir.join("repo/.gitops.yml");
        let validated = run(&["validate", "--config", config.to_str().unwrap()]);
        let ran = run_event(&event, &dir.join("repo"), &dir.join("state"), &[]);
        if name == "kubernetes" {
            expect(&validated, 1);
            expect(&ran, 1);
            // The same problems, at the same places, named alike.
            let said =
                text(&validated.stderr).replace(&config.display().to_string(), ".gitops.yml");
            assert_eq!(said, text(&ran.stderr));
            assert!(
                said.starts_with(
                    ".gitops.yml:3:17: unknown backend \"kubernetes\", did you mean \"k8s\"?"
                ),
                "{said}"
            );
        } else {
            expect(&validated, 0);
            expect(&ran, 0);
            assert!(
                text(&ran.stdout).contains("No pipeline matches this push event"),
                "{name}: {}",
                text(&ran.stdout)
            );
        }
    }
}

/// `gitops init` writes, for every backend the app registers, a commented config that
/// validates as written, and never overwrites a file.
#[test]
fn init_writes_a_commented_config_that_validates_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    for backend in registered_backends(tmp.path()) {
        let file = tmp.path().join(format!("{backend}.yml"));
        let init = || {
            run(&[
                "init",
                "--backend",
                &backend,
                "--config",
                file.to_str().unwrap(),
            ])
        };
        expect(&init(), 0);
        let written = std::fs::read_to_string(&file).unwrap();
        assert!(written.starts_with("# .gitops.yml"), "{written}");
        says(&written, &format!("backend: {backend}"));
        let out = run(&["validate", "--config", file.to_str().unwrap()]);
        expect(&out, 0);
        says(&text(&out.stdout), "ok (4 pipelines");
        std::fs::write(&file, "mine\n").unwrap();
        let out = init();
        expect(&out, 1);
        says(&text(&out.stderr), "exists already: not overwritten");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");
    }
    // In the current directory by default, on the local backend.
    let out = gitops_in(Some(tmp.path()), &["init"], None, &[]);
    expect(&out, 0);
    let out = gitops_in(Some(tmp.path()), &["validate"], None, &[]);
    expect(&out, 0);
    let out = run(&["init", "--backend", "kubernetes"]);
    expect(&out, 2);
    says(
        &text(&out.stderr),
        "[possible values: local, docker, k8s, terraform]",
    );
}

/// `gitops demo --keep DIR` leaves a repository (checked out, its config readable) and a state
/// dir that the ledger commands read.
#[test]
fn demo_keep_leaves_its_repository_and_state_dir_to_look_at() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = run(&["demo", "--keep", dir.to_str().unwrap()]);
    expect(&out, 0);
    let stdout = text(&out.stdout);
    says(&stdout, "(both are kept when the demo ends)");
    let state = dir.join("state");
    says(
        &stdout,
        &format!("`gitops envs --state {}`", state.display()),
    );
    says(
        &stdout,
        &format!(
            "`gitops ui --state {} --listen 127.0.0.1:8080`",
            state.display()
        ),
    );
    let config = dir.join("repo/.gitops.yml");
    expect(&run(&["validate", "--config", config.to_str().unwrap()]), 0);
    assert_eq!(git(&dir.join("repo"), &["status", "--porcelain"]), "");
    let out = run(&["envs", "--json", "--state", state.to_str().unwrap()]);
    expect(&out, 0);
    let envs: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = envs
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["name"].as_str())
        .collect();
    for name in ["preview-pr-1", "staging", "production"] {
        assert!(names.contains(&name), "{names:?}");
    }
    let out = run(&["history", "--state", state.to_str().unwrap()]);
    expect(&out, 0);
    says(&text(&out.stdout), "rollback");
    // Never over something already there.
    let out = run(&["demo", "--keep", dir.to_str().unwrap()]);
    expect(&out, 1);
    says(&text(&out.stderr), "not empty");
}

/// One pipeline of one stage, deploying to the one environment.
const ONE_DEPLOY: &str = "version: 1\nenvironments:\n  staging: {}\npipelines:\n  main:\n    on: { push: {} }\n    stages:\n      deploy: { deploy: staging }\n";

/// A relative `--state` (or `$GITOPS_STATE`) is made absolute at the start: the URL of a local
/// environment names it absolutely, and later commands find the same ledger.
#[test]
fn a_relative_state_dir_is_made_absolute_at_the_start() {
    let tmp = tempfile::tempdir().unwrap();
    let event = push_repo(&tmp.path().join("repo"), ONE_DEPLOY);
    let out = gitops_in(
        Some(tmp.path()),
        &[
            "run",
            "--event",
            event.to_str().unwrap(),
            "--repo",
            "repo",
            "--state",
            "st",
        ],
        None,
        &[],
    );
    expect(&out, 0);
    let url = format!(
        "file://{}/st/environments/staging/release/",
        tmp.path().display()
    );
    says(&text(&out.stdout), &url);
    let out = gitops_in(
        Some(tmp.path()),
        &["envs", "--json"],
        None,
        &[("GITOPS_STATE", "st")],
    );
    expect(&out, 0);
    let envs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(envs[0]["url"], url.as_str());
}

/// `gitops run` ends with each environment it deployed (and its URL) or stopped.
#[test]
fn run_closes_with_the_environments_it_deployed_or_stopped() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "version: 1\nenvironments:\n  staging: {}\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      test: { run: \"true\" }\n      deploy: { needs: test, deploy: staging }\n  off:\n    on: { push: { branches: [off] } }\n    stages:\n      down: { stop: staging }\n";
    let repo = tmp.path().join("repo");
    let event = push_repo(&repo, config);
    let state = tmp.path().join("state");
    let ran = |event: &Path| {
        let out = run_event(event, &repo, &state, &[]);
        expect(&out, 0);
        text(&out.stdout)
    };
    let stdout = ran(&event);
    let sha = git(&repo, &["rev-parse", "--short=7", "HEAD"]);
    assert_eq!(
        stdout.lines().last().unwrap(),
        format!(
            "● staging now runs {sha} (deployment #1): file://{}/environments/staging/release/",
            state.display()
        ),
        "{stdout}"
    );
    git(&repo, &["branch", "off"]);
    let stdout = ran(&push_event(&repo, "off"));
    assert_eq!(
        stdout.lines().last().unwrap(),
        "■ staging stopped (deployment #2)",
        "{stdout}"
    );
}

/// The stage `bad` of pipeline `main` exits 3 after `good` succeeded.
const FAILING: &str = "version: 1\npipelines:\n  main:\n    on: { push: {} }\n    stages:\n      good: { run: \"true\" }\n      bad: { needs: good, run: \"exit 3\" }\n";

/// `watch --once` says what it checked, prints the run's line naming the failed stage and its
/// exit code, and exits 1 as `run` would.
#[test]
fn watch_once_names_the_failed_stage_and_exits_1() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    push_repo(&repo, FAILING);
    let state = tmp.path().join("state");
    let watch = || {
        run(&[
            "watch",
            "--once",
            "--repo",
            repo.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ])
    };
    let out = watch();
    expect(&out, 0);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with(&format!(
            "checking {} once for changes since its last snapshot\n",
            repo.display()
        )),
        "{stderr}"
    );
    std::fs::write(repo.join("app.txt"), "2").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "2"]);
    let out = watch();
    expect(&out, 1);
    let stderr = text(&out.stderr);
    says(
        &stderr,
        &format!("{}: 1 change since the last snapshot", repo.display()),
    );
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("✗ pipeline main failed"))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    assert!(
        summary.ends_with("1 succeeded, 1 failed): bad failed with exit code 3"),
        "{summary}"
    );
    assert!(
        stderr.ends_with("error: 1 run of this check failed\n"),
        "{stderr}"
    );
    let out = watch();
    expect(&out, 0);
    says(&text(&out.stderr), "0 changes since the last snapshot");
}

/// A repository whose release pipeline writes the commit it runs at to `marks`, then fails;
/// tagged `0.0.1` (GitHub's fixture's tag) on its second commit.
fn released_repo(dir: &Path, marks: &Path) -> String {
    let config = format!(
        "version: 1\nenvironments:\n  production: {{}}\npipelines:\n  release:\n    on: {{ release: {{}} }}\n    stages:\n      deploy: {{ deploy: production }}\n      show: {{ needs: deploy, run: \"echo $GITOPS_SHA >> {}; exit 3\" }}\n",
        marks.display()
    );
    push_repo(dir, &config);
    std::fs::write(dir.join("app.txt"), "1").unwrap();
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", "release"]);
    git(dir, &["tag", "0.0.1"]);
    git(dir, &["commit", "-q", "--allow-empty", "-m", "after"]);
    git(dir, &["rev-parse", "0.0.1"])
}

const RELEASE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/webhooks/github/release.published.json"
);

/// A GitHub release (which names its tag, not a commit) runs at the tag's commit: through
/// `gitops run` and through `gitops serve`, whose line for the run names the failed stage.
#[test]
fn a_release_published_on_a_tag_runs_at_the_tags_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let (repo, marks) = (tmp.path().join("repo"), tmp.path().join("marks"));
    let tagged = released_repo(&repo, &marks);
    let payload = std::fs::read(RELEASE).unwrap();
    let out = gitops(
        &["event", "--provider", "github", "--type", "release"],
        Some(&payload),
    );
    expect(&out, 0);
    let event: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(event["sha"], Value::Null, "the fixture names no commit");
    let event_file = tmp.path().join("release.json");
    std::fs::write(&event_file, &out.stdout).unwrap();
    let state = tmp.path().join("state");
    let out = run_event(&event_file, &repo, &state, &[]);
    expect(&out, 1);
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        format!("{tagged}\n")
    );
    let out = run(&["history", "--json", "--state", state.to_str().unwrap()]);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(history[0]["sha"], tagged.as_str());

    let mut server = Server::start(
        &tmp.path().join("served"),
        &repo,
        &["--allow-unsigned", "--repo-name", "Codertocat/Hello-World"],
        &[],
    );
    let (status, reply) = github(server.addr, "release", "release-1", &payload, None);
    assert_eq!(status, 202, "{reply}");
    let summary = || {
        server
            .log()
            .into_iter()
            .find(|l| l.contains("✗ pipeline release failed"))
    };
    wait_until("the run's line", || summary().is_some());
    let summary = summary().unwrap_or_default();
    says(
        &summary,
        "1 succeeded, 1 failed): show failed with exit code 3",
    );
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        format!("{tagged}\n{tagged}\n")
    );
    assert!(server.stop().success(), "{:?}", server.log());
    let log = server.log().join("\n");
    assert!(!log.contains("deleted: no commit"), "{log}");
}

/// A stage writing to stdout and stderr in turn shows its lines in the order written, in
/// every run.
#[test]
fn a_stages_lines_keep_the_order_they_were_written_in() {
    const PAIRS: usize = 50;
    let tmp = tempfile::tempdir().unwrap();
    let config = format!(
        "version: 1\npipelines:\n  main:\n    on: {{ push: {{}} }}\n    stages:\n      talk: {{ run: \"i=0; while [ $i -lt {PAIRS} ]; do echo out$i; echo err$i >&2; i=$((i+1)); done\" }}\n"
    );
    let event = push_repo(&tmp.path().join("repo"), &config);
    let expected: Vec<String> = (0..PAIRS)
        .flat_map(|i| [format!("out{i}"), format!("err{i}")])
        .collect();
    for attempt in 0..5 {
        let out = run_event(
            &event,
            &tmp.path().join("repo"),
            &tmp.path().join("state"),
            &[],
        );
        expect(&out, 0);
        let lines: Vec<String> = text(&out.stdout)
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("talk │ "))
            .map(str::to_owned)
            .collect();
        assert_eq!(lines, expected, "run {attempt}");
    }
}

/// Runs the binary with `args` and its standard output a pipe whose reader is gone; its
/// status and standard error.
fn with_stdout_closed(args: &[&str]) -> (Option<i32>, String) {
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let out = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    (out.status.code(), text(&out.stderr))
}

/// Every command whose reader went away (`gitops envs --json | head -1`) ends quietly: no
/// panic, no backtrace; with its own status, or the one SIGPIPE gives.
#[test]
fn a_closed_standard_output_ends_every_command_quietly() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "version: 1\nenvironments:\n  staging: {}\npipelines:\n  main:\n    on: { push: {} }\n    stages:\n      test: { run: \"echo hi\" }\n      deploy: { needs: test, deploy: staging }\n";
    let repo = tmp.path().join("repo");
    let event = push_repo(&repo, config);
    let state = tmp.path().join("state");
    let (event, repo_arg, state_arg) = (
        event.to_str().unwrap(),
        repo.to_str().unwrap(),
        state.to_str().unwrap(),
    );
    let run_args = [
        "run", "--event", event, "--repo", repo_arg, "--state", state_arg,
    ];
    expect(&run(&run_args), 0);
    let config_file = repo.join(".gitops.yml");
    let config_arg = config_file.to_str().unwrap();
    let init_file = tmp.path().join("init.yml");
    let keep = tmp.path().join("demo");
    let commands: Vec<Vec<&str>> = vec![
        vec!["envs", "--state", state_arg],
        vec!["envs", "--json", "--state", state_arg],
        vec!["history", "--state", state_arg],
        vec!["history", "--json", "--state", state_arg],
        vec!["history", "staging", "--state", state_arg],
        vec!["validate", "--config", config_arg],
        vec!["graph", "--pipeline", "main", "--config", config_arg],
        vec!["plan", "--event", event, "--repo", repo_arg],
        vec![
            "event",
            "--provider",
            "github",
            "--type",
            "push",
            "--file",
            RELEASE,
        ],
        vec!["init", "--config", init_file.to_str().unwrap()],
        vec!["watch", "--once", "--repo", repo_arg, "--state", state_arg],
        run_args.to_vec(),
        vec!["demo", "--keep", keep.to_str().unwrap()],
        vec!["--help"],
    ];
    for args in commands {
        let (code, stderr) = with_stdout_closed(&args);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("backtrace"),
            "{args:?}: {stderr}"
        );
        assert!(
            matches!(code, Some(0 | 1 | 141)),
            "{args:?} ended with {code:?}: {stderr}"
        );
    }
    // `serve --no-run` prints accepted events; with nobody reading, it goes on serving.
    let (reader, writer) = nix::unistd::pipe().unwrap();
    drop(reader);
    let mut server = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args([
            "serve",
            "--no-run",
            "--allow-unsigned",
            "--listen",
            "127.0.0.1:0",
        ])
        .args(["--repo-name", "Codertocat/Hello-World", "--repo", repo_arg])
        .args(["--state", tmp.path().join("served").to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    let addr = loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "serve ended");
        if let Some(addr) = line.trim().strip_prefix("listening on http://") {
            break addr.parse().unwrap();
        }
    };
    let push = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/webhooks/github/push.with-new-branch.json"
    ))
    .unwrap();
    let release = std::fs::read(RELEASE).unwrap();
    for (event, body) in [("push", &push), ("release", &release)] {
        let (status, reply) = github(addr, event, event, body, None);
        assert_eq!(status, 202, "{reply}");
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = wait_for_exit(&mut server);
    let mut log = String::new();
    stderr.read_to_string(&mut log).unwrap();
    assert!(status.success(), "{status:?}: {log}");
    assert!(!log.contains("panicked"), "{log}");
}

fn wait_for_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "it did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The fields `gitops CMD --help` lists for `--json` (`{a, b (note), c}`).
fn help_fields(command: &str) -> Vec<String> {
    let out = run(&[command, "--help"]);
    expect(&out, 0);
    let help = text(&out.stdout).replace('\n', " ");
    let list = help
        .split("a list of {")
        .nth(1)
        .and_then(|rest| rest.split('}').next())
        .unwrap_or_else(|| panic!("no list of fields in {help}"));
    // Drop the notes in parentheses, then split.
    let mut bare = String::new();
    let mut depth = 0;
    for c in list.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => bare.push(c),
            _ => {}
        }
    }
    let mut fields: Vec<String> = bare
        .split(',')
        .map(|f| f.split_whitespace().collect::<String>())
        .collect();
    fields.sort();
    fields
}

fn keys(value: &Value) -> Vec<String> {
    let mut keys: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    keys
}

/// `history` without ENV lists every environment's deployments newest first; `--json` says
/// `rollback` as the table does (with no run: no pipeline ran it); `--help` lists exactly the
/// fields printed, for `history` and `envs`.
#[test]
fn history_lists_every_environment_and_says_what_each_deployment_was() {
    let tmp = tempfile::tempdir().unwrap();
    let config = "version: 1\nenvironments:\n  staging: {}\n  qa: {}\npipelines:\n  main:\n    on: { push: {} }\n    stages:\n      staging: { deploy: staging }\n      qa: { needs: staging, deploy: qa }\n";
    let repo = tmp.path().join("repo");
    let first = push_repo(&repo, config);
    let state = tmp.path().join("state");
    let state_arg = state.to_str().unwrap();
    let ran = |event: &Path| expect(&run_event(event, &repo, &state, &[]), 0);
    ran(&first);
    std::fs::write(repo.join("app.txt"), "2").unwrap();
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-qm", "2"]);
    ran(&push_event(&repo, "main"));
    expect(&run(&["rollback", "staging", "--state", state_arg]), 0);

    let out = run(&["history", "--state", state_arg]);
    expect(&out, 0);
    let rows: Vec<Vec<String>> = text(&out.stdout)
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(ids, ["#5", "#4", "#3", "#2", "#1"], "{}", text(&out.stdout));
    let envs: Vec<&str> = rows.iter().map(|r| r[1].as_str()).collect();
    assert_eq!(envs, ["staging", "qa", "staging", "qa", "staging"]);
    assert_eq!(rows[0][2], "rollback");

    let out = run(&["history", "--json", "--state", state_arg]);
    expect(&out, 0);
    let history: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rollback = &history[0];
    assert_eq!(rollback["action"], "rollback");
    assert_eq!(rollback["rollback_of"], 1);
    assert_eq!(rollback["run_id"], Value::Null);
    assert_eq!(history[1]["action"], "deploy");
    assert!(history[1]["run_id"].is_string(), "{history}");
    assert_eq!(help_fields("history"), keys(rollback));

    let out = run(&["history", "qa", "--json", "--state", state_arg]);
    let qa: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(qa.as_array().unwrap().len(), 2);

    let out = run(&["envs", "--json", "--state", state_arg]);
    let envs: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(help_fields("envs"), keys(&envs[0]));

    let empty = tmp.path().join("empty");
    let out = run(&["history", "--state", empty.to_str().unwrap()]);
    expect(&out, 0);
    assert_eq!(
        text(&out.stdout),
        "No deployments yet: nothing was deployed with this state dir.\n"
    );
}

/// A duration written as a bare number is refused where it stands, with its unit suggested;
/// so is `--interval 5`.
#[test]
fn a_duration_without_a_unit_is_refused_with_the_unit_suggested() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(".gitops.yml");
    for (stage, at, key, n) in [
        ("a: { run: x, timeout: 5 }", "6:29", "timeout", "5"),
        (
            "a: { run: x, retry: { max: 1, backoff: 30 } }",
            "6:46",
            "retry.backoff",
            "30",
        ),
    ] {
        std::fs::write(
            &file,
            format!("version: 1\npipelines:\n  ci:\n    on: {{ push: {{}} }}\n    stages:\n      {stage}\n"),
        )
        .unwrap();
        let out = run(&["validate", "--config", file.to_str().unwrap()]);
        expect(&out, 1);
        assert_eq!(
            text(&out.stderr),
            format!(
                "{}:{at}: pipelines.ci.stages.a.{key}: duration \"{n}\" has no unit: write {n}s for seconds (or ms, m, h, d)\n",
                file.display()
            )
        );
    }
    let out = run(&["watch", "--repo", ".", "--interval", "5"]);
    expect(&out, 2);
    says(&text(&out.stderr), "has no unit: write 5s");
}

/// One of a thing is singular: `1 pipeline`, `1 stage`, `1 environment`.
#[test]
fn one_of_a_thing_is_singular() {
    let tmp = tempfile::tempdir().unwrap();
    let event = push_repo(&tmp.path().join("repo"), ONE_DEPLOY);
    let file = tmp.path().join("repo/.gitops.yml");
    let out = run(&["validate", "--config", file.to_str().unwrap()]);
    expect(&out, 0);
    assert!(
        text(&out.stdout).ends_with("ok (1 pipeline, 1 stage, 1 environment)\n"),
        "{}",
        text(&out.stdout)
    );
    let out = run_event(
        &event,
        &tmp.path().join("repo"),
        &tmp.path().join("state"),
        &[],
    );
    expect(&out, 0);
    let first = text(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(first.ends_with(", 1 stage)"), "{first}");
}
