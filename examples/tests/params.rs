//! Backend parameters checked at load time through the `gitops` binary: unknown keys, wrong
//! values, and `${{ }}` in a parameter that is a command, which `validate` and `run` refuse alike
//! (issue 21: a pull request titled `$(touch pwned)` must never run).

mod common;

use std::path::{Path, PathBuf};

use common::{git, gitops, text};
use serde_json::json;

/// `line:col` (1-based) of the first `needle` in `text`.
fn position(text: &str, needle: &str) -> String {
    let at = text
        .find(needle)
        .unwrap_or_else(|| panic!("{needle:?} not in the config"));
    let line = text[..at].matches('\n').count() + 1;
    let column = at - text[..at].rfind('\n').map_or(0, |i| i + 1) + 1;
    format!("{line}:{column}")
}

/// Runs `gitops validate` on `config`: the exit code, stdout, stderr and the file's path.
fn validate(config: &str) -> (Option<i32>, String, String, PathBuf, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join(".gitops.yml");
    std::fs::write(&file, config).unwrap();
    let out = gitops(&["validate", "--config", file.to_str().unwrap()], None);
    (
        out.status.code(),
        text(&out.stdout),
        text(&out.stderr),
        file,
        tmp,
    )
}

/// Asserts that `gitops validate` refuses `config` with exactly one error, at the first
/// `at` of the file, starting with `message`.
fn refused(config: &str, at: &str, message: &str) {
    let (code, stdout, stderr, file, _tmp) = validate(config);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    let expected = format!("{}:{}: {message}", file.display(), position(config, at));
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with(&expected),
        "expected {expected:?}..., found {stderr:?}"
    );
}

const COMMAND_MESSAGE: &str = "is a command, and commands are never template-expanded, so that event data cannot inject commands; pass values through `env`";

#[test]
fn validate_refuses_a_template_in_a_local_build_command() {
    let config = r#"version: 1
environments:
  preview: { per_pull_request: true }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      preview: { deploy: preview, with: { build: "echo ${{ event.pr.title }}" } }
"#;
    refused(
        config,
        "\"echo ${{",
        &format!("pipelines.pr.stages.preview.with.build: `build` {COMMAND_MESSAGE}"),
    );
    // Also in an environment's `with`, and in `serve`.
    let config = r#"version: 1
environments:
  preview: { per_pull_request: true, with: { serve: "httpd -p $PORT -h ${{ event.pr.head_ref }}" } }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      preview: { deploy: preview }
"#;
    refused(
        config,
        "\"httpd",
        &format!("environments.preview.with.serve: `serve` {COMMAND_MESSAGE}"),
    );
    // The same command reading the title from its variable is fine.
    let (code, stdout, stderr, _, _tmp) =
        validate(&config.replace("${{ event.pr.head_ref }}", "\\\"$GITOPS_PR_HEAD_REF\\\""));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

#[test]
fn validate_refuses_templates_in_docker_and_k8s_commands() {
    for backend in ["docker", "k8s"] {
        let config = format!(
            r#"version: 1
pipelines:
  pr:
    on: {{ pull_request: {{}} }}
    stages:
      job: {{ backend: {backend}, with: {{ image: busybox, command: [sh, -c, "echo ${{{{ event.pr.title }}}}"] }} }}
"#
        );
        refused(
            &config,
            "\"echo",
            &format!("pipelines.pr.stages.job.with.command[2]: `command` {COMMAND_MESSAGE}"),
        );
    }
    // A docker environment's service command.
    let config = r#"version: 1
environments:
  preview: { per_pull_request: true, backend: docker }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      preview:
        deploy: preview
        with:
          services:
            web: { image: busybox, command: ["httpd", "-h", "${{ event.pr.head_ref }}"] }
"#;
    refused(
        config,
        "\"${{ event.pr.head_ref",
        &format!(
            "pipelines.pr.stages.preview.with.services.web.command[2]: `command` {COMMAND_MESSAGE}"
        ),
    );
}

#[test]
fn validate_names_the_key_a_typo_meant() {
    let config = r#"version: 1
environments:
  staging: {}
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      deploy: { deploy: staging, with: { files: app.txt, sevre: "httpd -p $PORT" } }
"#;
    refused(
        config,
        "sevre",
        "pipelines.main.stages.deploy.with.sevre: unknown parameter \"sevre\" for backend \"local\", did you mean \"serve\"? (known: files, build, serve, port, ready_timeout)",
    );
    let config = r#"version: 1
pipelines:
  main:
    on: { push: {} }
    stages:
      plan: { backend: terraform, with: { dir: infra, workspce: staging } }
"#;
    refused(
        config,
        "workspce",
        "pipelines.main.stages.plan.with.workspce: unknown parameter \"workspce\" for backend \"terraform\", did you mean \"workspace\"?",
    );
}

#[test]
fn validate_refuses_a_port_out_of_range() {
    let config = r#"version: 1
environments:
  staging: { with: { serve: "httpd -p $PORT", port: 70000 } }
pipelines:
  main:
    on: { push: {} }
    stages:
      deploy: { deploy: staging }
"#;
    refused(
        config,
        "70000",
        "environments.staging.with.port: must be a whole number from 1 to 65535, found 70000",
    );
    let (code, stdout, stderr, _, _tmp) = validate(&config.replace("70000", "65535"));
    assert_eq!(code, Some(0), "{stdout}{stderr}");
}

/// A repository whose `.gitops.yml` is `config`, and a pull request event for its commit
/// titled `title`; the event file.
fn pull_request_repo(dir: &Path, config: &str, title: &str) -> PathBuf {
    common::init_repo(dir, config, &[("app.txt", "app\n")]);
    let sha = git(dir, &["rev-parse", "HEAD"]);
    let event = json!({"kind": "pull_request", "repo": "o/r", "sha": sha, "action": "opened",
        "number": 5, "title": title, "draft": false, "merged": false,
        "head": {"ref": "feature", "sha": sha}, "base": {"ref": "main", "sha": sha}});
    let file = dir.parent().unwrap().join("event.json");
    std::fs::write(&file, event.to_string()).unwrap();
    file
}

/// The files named `name` anywhere under `dir`.
fn find(dir: &Path, name: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_name() == name {
                found.push(path.clone());
            }
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(path);
            }
        }
    }
    found
}

const TITLE: &str = "$(touch pwned)";

fn run_pull_request(build: &str) -> (std::process::Output, String, tempfile::TempDir) {
    let config = format!(
        r#"version: 1
environments:
  preview: {{ per_pull_request: true }}
pipelines:
  pr:
    on: {{ pull_request: {{}} }}
    stages:
      preview: {{ deploy: preview, with: {{ files: app.txt, build: {build} }} }}
"#
    );
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let event = pull_request_repo(&repo, &config, TITLE);
    let out = common::run_event(&event, &repo, &tmp.path().join("state"), &[]);
    (out, config, tmp)
}

#[test]
fn run_refuses_a_build_command_templated_with_the_pull_request_title() {
    let (out, config, tmp) = run_pull_request(r#""echo building ${{ event.pr.title }}""#);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    let expected = format!(
        ".gitops.yml:{}: pipelines.pr.stages.preview.with.build: `build` {COMMAND_MESSAGE}",
        position(&config, "\"echo building")
    );
    assert!(stderr.starts_with(&expected), "{expected}\n{stderr}");
    // Nothing ran: no `pwned` in the repository, the state dir (checkouts, environments) or
    // next to them, nor where the test runs.
    assert_eq!(find(tmp.path(), "pwned"), Vec::<PathBuf>::new());
    assert!(!Path::new("pwned").exists());
    assert!(
        find(&tmp.path().join("state"), "release").is_empty(),
        "nothing was deployed"
    );
}

#[test]
fn run_passes_the_pull_request_title_to_a_build_as_a_variable() {
    let (out, _config, tmp) = run_pull_request(r#"'echo "building $GITOPS_PR_TITLE"'"#);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}{stderr}");
    assert!(
        format!("{stdout}{stderr}").contains("building $(touch pwned)"),
        "the title is printed as it is: {stdout}{stderr}"
    );
    assert_eq!(find(tmp.path(), "pwned"), Vec::<PathBuf>::new());
    assert!(!Path::new("pwned").exists());
    let release = tmp
        .path()
        .join("state/environments/preview-pr-5/release/app.txt");
    assert!(release.is_file(), "the release was deployed");
}
