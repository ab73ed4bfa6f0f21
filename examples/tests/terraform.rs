//! The `gitops` app with the Terraform backend and the real `terraform` binary: a pull request
//! plans against staging and gets a preview workspace, two merges applied at once never run two
//! applies on one environment, and closing the pull request destroys its preview.
//!
//! Runs when `GITOPS_TEST_TERRAFORM=1` (`scripts/test.sh` sets it).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::text;
use gitops_core::event::GitEvent;
use gitops_examples::scratch::ScratchRepo;
use serde_json::Value;

const CONFIG: &str = r#"version: 1
environments:
  preview: { per_pull_request: true, backend: terraform, with: { dir: infra } }
  staging: { backend: terraform, with: { dir: infra, vars: { name: staging } } }
pipelines:
  pr:
    on: { pull_request: { types: [opened, synchronize] } }
    stages:
      plan: { backend: terraform, with: { dir: infra, workspace: staging, vars: { name: staging } } }
      preview: { needs: plan, deploy: preview, with: { dir: infra, vars: { name: "pr-${{ event.pr.number }}" } } }
  closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
  main:
    on: { push: { branches: [main] } }
    stages:
      apply: { deploy: staging }
"#;

/// `site` takes a second to create, so that two applies at once would meet.
const MAIN_TF: &str = r#"
variable "name" { type = string }
resource "terraform_data" "site" {
  input = var.name
  provisioner "local-exec" { command = "sleep 1" }
}
output "url" { value = "https://${var.name}.example.test/" }
"#;

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn json(args: &[&str]) -> Value {
    let out = run(args);
    assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn write_event(dir: &Path, name: &str, event: &GitEvent) -> String {
    let path = dir.join(name);
    std::fs::write(&path, serde_json::to_string(event).unwrap()).unwrap();
    path.to_string_lossy().into_owned()
}

#[test]
fn plans_on_pull_requests_applies_on_merge_one_at_a_time_and_destroys_previews() {
    if !common::opted_in("GITOPS_TEST_TERRAFORM", "Terraform") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let mut scratch = ScratchRepo::init(&tmp.path().join("repo")).unwrap();
    let base = scratch
        .commit(
            "main",
            None,
            "infra",
            &[(".gitops.yml", CONFIG), ("infra/main.tf", MAIN_TF)],
        )
        .unwrap();
    let head = scratch
        .commit("feature", Some(&base), "readme", &[("README.md", "hi\n")])
        .unwrap();
    let repo = scratch.path().to_str().unwrap().to_owned();
    let state = tmp.path().join("state");
    let state = state.to_str().unwrap();
    let events = tmp.path();

    // The pull request: a plan against staging, then its own preview workspace.
    let opened =
        GitEvent::pull_request_event("o/r", "opened", 3, ("feature", &head), ("main", &base));
    let opened = write_event(events, "opened.json", &opened);
    let report = tmp.path().join("report.json");
    let out = run(&[
        "run",
        "--event",
        &opened,
        "--repo",
        &repo,
        "--state",
        state,
        "--report",
        report.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let plan = &report["stages"][0];
    assert_eq!(plan["id"], "plan");
    assert_eq!(plan["outputs"]["add"], "1");
    assert_eq!(plan["outputs"]["resources"], "terraform_data.site");
    let markdown = plan["outputs"]["markdown"].as_str().unwrap();
    assert!(
        markdown.starts_with("### Terraform plan: staging (infra)"),
        "{markdown}"
    );
    let envs = json(&["envs", "--json", "--state", state]);
    let preview = envs
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "preview-pr-3")
        .unwrap();
    assert_eq!(preview["url"], "https://pr-3.example.test/");
    assert_eq!(preview["backend"], "terraform");

    // Two merges handled at once by two processes sharing the state dir: core's environment
    // lock runs one apply after the other (terraform's own lock would fail the second at once).
    let push = GitEvent::push("o/r", "main", Some(&base), &base);
    let push = write_event(events, "push.json", &push);
    let spawn = || {
        Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(["run", "--event", &push, "--repo", &repo, "--state", state])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    for child in [a, b] {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
    }
    let history = json(&["history", "staging", "--json", "--state", state]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 2, "{history:?}");
    assert!(
        history.iter().all(|d| d["result"] == "success"),
        "{history:?}"
    );
    let (newer, older) = (&history[0], &history[1]);
    assert!(
        older["finished_at"].as_f64().unwrap() <= newer["started_at"].as_f64().unwrap(),
        "two applies overlapped: {history:?}"
    );
    assert_eq!(newer["url"], "https://staging.example.test/");

    // Closing the pull request destroys the preview's resources and workspace.
    let closed =
        GitEvent::pull_request_event("o/r", "closed", 3, ("feature", &head), ("main", &base));
    let closed = write_event(events, "closed.json", &closed);
    let out = run(&["run", "--event", &closed, "--repo", &repo, "--state", state]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let history = json(&["history", "preview-pr-3", "--json", "--state", state]);
    assert_eq!(history[0]["action"], "stop");
    assert_eq!(history[0]["result"], "success", "{history:?}");
    let workspaces =
        std::fs::read_dir(Path::new(state).join("terraform/states/o_r_infra/workspaces"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect::<Vec<_>>();
    assert!(
        !workspaces.contains(&"preview-pr-3".to_owned())
            && workspaces.contains(&"staging".to_owned()),
        "{workspaces:?}"
    );
}

#[test]
fn the_terraform_starter_plans_a_pull_request_applies_the_merge_and_destroys_staging() {
    if !common::opted_in("GITOPS_TEST_TERRAFORM", "Terraform") {
        return;
    }
    let out = Command::new(env!("CARGO_BIN_EXE_terraform-staging"))
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", text(&out.stderr));
    for want in [
        "  pipeline pull-request: plan success",
        "  | **Plan: 1 to add, 0 to change, 0 to destroy.**",
        "  | + terraform_data.cache (create)",
        "    url = https://staging.example.test/",
        "    plan_add = 1",
        "  staging stopped (deployment #3: success, 2 resources destroyed)",
    ] {
        assert!(
            stdout.lines().any(|l| l == want),
            "no line {want:?} in:\n{stdout}"
        );
    }
}
