//! The Terraform backend with the real `terraform` binary, on configurations that need no provider
//! download (`terraform_data`, `local-exec`, variables, outputs). (The conformance suites run from
//! `tests/conformance.rs`.)
//!
//! Runs when `GITOPS_TEST_TERRAFORM=1` (`scripts/test.sh` sets it after checking that terraform is
//! on PATH); then a missing binary is a failure, not a skip.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gitops_core::backend::{
    BackendError, Completion, Deployer, EnvironmentTarget, Executor, LogSink, Outcome, RunInfo,
    StageContext,
};
use gitops_core::testing::push_event;
use gitops_terraform::{Terraform, TerraformBackend};
use serde_json::json;

/// The backend (state in `state`), or `None` with `skipped: ...`.
fn backend(state: &Path) -> Option<TerraformBackend> {
    if std::env::var_os("GITOPS_TEST_TERRAFORM").is_none() {
        eprintln!(
            "skipped: set GITOPS_TEST_TERRAFORM=1 (scripts/test.sh does) to run the Terraform tests"
        );
        return None;
    }
    let version = std::process::Command::new("terraform")
        .arg("version")
        .output()
        .unwrap_or_else(|e| panic!("GITOPS_TEST_TERRAFORM is set but terraform cannot run: {e}"));
    assert!(version.status.success(), "terraform version failed");
    Some(
        TerraformBackend::builder(state)
            .with_stop_grace(Duration::from_secs(5))
            .build(),
    )
}

/// A configuration: `a` follows `var.greeting` (updated in place when it changes), `b` runs a
/// provisioner and records its destruction in `var.log`, and two outputs, one sensitive.
const CONFIG: &str = r#"
variable "greeting" {
  type    = string
  default = "hello"
}
variable "log" {
  type    = string
  default = "/dev/null"
}
resource "terraform_data" "a" {
  input = var.greeting
}
resource "terraform_data" "b" {
  input = var.log
  provisioner "local-exec" {
    command = "echo provisioned"
  }
  provisioner "local-exec" {
    when    = destroy
    command = "echo destroyed >> ${self.input}"
  }
}
output "greeting" {
  value = terraform_data.a.output
}
output "token" {
  value     = "tok-${var.greeting}-s3cr3t"
  sensitive = true
}
"#;

/// A checkout holding `infra/main.tf`.
fn checkout(main_tf: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("infra")).unwrap();
    std::fs::write(dir.path().join("infra/main.tf"), main_tf).unwrap();
    dir
}

/// Log lines of a stage, collected.
#[derive(Clone, Default)]
struct Lines(Arc<Mutex<Vec<String>>>);

impl Lines {
    fn sink(&self, stage: &str) -> LogSink {
        let lines = self.0.clone();
        LogSink::new(stage, 1, Vec::new(), move |l| {
            lines.lock().unwrap().push(l.line)
        })
    }
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

fn stage(dir: &Path, name: &str, with: serde_json::Value) -> StageContext {
    let run = Arc::new(RunInfo::new("tf-test", "p", push_event(), dir));
    let mut ctx = StageContext::new(run, name);
    ctx.with = with.as_object().unwrap().clone();
    ctx
}

fn deploy_ctx(dir: &Path, env: &str, with: serde_json::Value) -> StageContext {
    stage(dir, "deploy", with).with_environment(EnvironmentTarget::new(env, "env", None))
}

fn failure_message(c: &Completion) -> &str {
    match &c.outcome {
        Outcome::Failure { message, .. } => message,
        Outcome::Success => panic!("expected a failure, got success: {:?}", c.outputs),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plan_stage_summarises_the_plan_as_outputs_and_markdown() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = checkout(CONFIG);
    let lines = Lines::default();
    let ctx = stage(
        dir.path(),
        "plan",
        json!({"dir": "infra", "vars": {"greeting": "hi"}}),
    )
    .with_log(lines.sink("plan"));
    let done = tf.execute(ctx).await.unwrap();
    assert_eq!(done.outcome, Outcome::Success, "{:?}", lines.all());
    let o = &done.outputs;
    assert_eq!(
        (
            o["add"].as_str(),
            o["change"].as_str(),
            o["destroy"].as_str()
        ),
        ("2", "0", "0")
    );
    assert_eq!(o["has_changes"], "true");
    assert_eq!(o["resources"], "terraform_data.a terraform_data.b");
    assert_eq!(o["summary"], "Plan: 2 to add, 0 to change, 0 to destroy.");
    assert_eq!(o["workspace"], "default");
    assert!(
        o["markdown"].starts_with(
            "### Terraform plan: default\n\n**Plan: 2 to add, 0 to change, 0 to destroy.**\n"
        ),
        "{}",
        o["markdown"]
    );
    assert!(o["markdown"].contains("+ terraform_data.a (create)"));
    assert!(
        lines
            .all()
            .iter()
            .any(|l| l == "terraform_data.a: Plan to create"),
        "terraform's messages stream as log lines: {:?}",
        lines.all()
    );
    // Planning applied nothing: a second plan still creates both.
    let again = tf
        .execute(stage(dir.path(), "plan", json!({"dir": "infra"})))
        .await
        .unwrap();
    assert_eq!(again.outputs["add"], "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deploys_apply_update_in_place_keep_workspaces_apart_and_stop_destroys() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = checkout(CONFIG);
    let log = dir.path().join("destroyed.log");
    let vars = |greeting: &str| json!({"dir": "infra", "vars": {"greeting": greeting, "log": log.to_str().unwrap()}});
    let lines = Lines::default();
    let first = tf
        .deploy(deploy_ctx(dir.path(), "preview-pr-1", vars("hello")).with_log(lines.sink("d")))
        .await
        .unwrap();
    assert_eq!(first.outcome, Outcome::Success, "{:?}", lines.all());
    assert_eq!(first.outputs["greeting"], "hello");
    assert_eq!(first.outputs["token"], "(sensitive)");
    assert_eq!(first.outputs["workspace"], "preview-pr-1");
    assert_eq!(first.outputs["plan_add"], "2");
    let all = lines.all();
    assert!(
        all.iter().any(|l| l.starts_with("[2/2] ")),
        "progress: {all:?}"
    );
    assert!(!all.iter().any(|l| l.contains("s3cr3t")), "{all:?}");

    // A changed variable updates `a` in place.
    let second = tf
        .deploy(deploy_ctx(dir.path(), "preview-pr-1", vars("howdy")))
        .await
        .unwrap();
    assert_eq!(second.outcome, Outcome::Success);
    assert_eq!(
        (
            second.outputs["plan_add"].as_str(),
            second.outputs["plan_change"].as_str()
        ),
        ("0", "1")
    );
    assert_eq!(second.outputs["greeting"], "howdy");

    // Another pull request's workspace is its own, and a sensitive output can be passed on.
    let mut other = vars("bonjour");
    other["expose_sensitive"] = json!(["token"]);
    let third = tf
        .deploy(deploy_ctx(dir.path(), "preview-pr-2", other))
        .await
        .unwrap();
    assert_eq!(
        third.outputs["plan_add"], "2",
        "a new workspace starts empty"
    );
    assert_eq!(third.outputs["token"], "tok-bonjour-s3cr3t");

    // Stopping PR 1 destroys its resources (the destroy provisioner ran) and its workspace.
    let stopped = tf
        .stop(deploy_ctx(dir.path(), "preview-pr-1", vars("howdy")))
        .await
        .unwrap();
    assert_eq!(stopped.outcome, Outcome::Success);
    assert_eq!(stopped.outputs["destroyed"], "2");
    assert_eq!(std::fs::read_to_string(&log).unwrap(), "destroyed\n");
    // What is left is PR 2's, untouched; the stopped workspace is gone. (The CLI on its own,
    // pointed at the same state through the override a stage writes.)
    let probe = tf
        .execute(
            stage(
                dir.path(),
                "probe",
                json!({"dir": "infra", "workspace": "preview-pr-2"}),
            )
            .with_command("terraform state list > state.txt; terraform workspace list > ws.txt"),
        )
        .await
        .unwrap();
    assert_eq!(probe.outcome, Outcome::Success);
    let listed = std::fs::read_to_string(dir.path().join("infra/state.txt")).unwrap();
    assert_eq!(listed, "terraform_data.a\nterraform_data.b\n");
    let workspaces = std::fs::read_to_string(dir.path().join("infra/ws.txt")).unwrap();
    assert!(!workspaces.contains("preview-pr-1"), "{workspaces}");
    assert!(workspaces.contains("* preview-pr-2"), "{workspaces}");
    // Stopping an environment that has no workspace has nothing to do.
    let again = tf
        .stop(deploy_ctx(dir.path(), "preview-pr-1", vars("howdy")))
        .await
        .unwrap();
    assert_eq!(again.outputs["destroyed"], "0");
    tf.stop(deploy_ctx(dir.path(), "preview-pr-2", vars("bonjour")))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_located_and_bad_parameters_named() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = checkout("resource \"terraform_data\" \"a\" {\n  input = \n}\n");
    let done = tf
        .execute(stage(dir.path(), "plan", json!({"dir": "infra"})))
        .await
        .unwrap();
    let message = failure_message(&done);
    assert!(
        message.starts_with("terraform init failed: main.tf:2:11: Invalid expression: "),
        "{message}"
    );
    let undeclared = checkout("resource \"terraform_data\" \"a\" {\n  input = var.nope\n}\n");
    let done = tf
        .execute(stage(undeclared.path(), "plan", json!({"dir": "infra"})))
        .await
        .unwrap();
    let message = failure_message(&done);
    assert!(
        message.starts_with(
            "terraform plan failed: main.tf:2:11: Reference to undeclared input variable: "
        ),
        "{message}"
    );
    let done = tf
        .execute(stage(
            undeclared.path(),
            "validate",
            json!({"dir": "infra", "action": "validate"}),
        ))
        .await
        .unwrap();
    assert!(
        failure_message(&done).starts_with("main.tf:2:11: Reference to undeclared input variable"),
        "{}",
        failure_message(&done)
    );

    for (with, want) in [
        (
            json!({"dri": "infra"}),
            "invalid parameters: unknown parameter `with.dri` (the terraform backend knows dir, binary, workspace, vars, var_files, backend_config, lock_timeout, expose_sensitive, action)",
        ),
        (
            json!({"dir": "../outside"}),
            "invalid parameters: `with.dir`: \"../outside\" is not a path inside the checkout",
        ),
        (
            json!({"dir": "nowhere"}),
            "invalid parameters: `with.dir`: nowhere is not a directory of the checkout",
        ),
        (
            json!({"dir": "infra", "vars": ["a"]}),
            "invalid parameters: `with.vars` must be a map of variable names to values, found [\"a\"]",
        ),
        (
            json!({"dir": "infra", "action": "apply"}),
            "invalid parameters: `with.action` must be plan or validate, found \"apply\"",
        ),
    ] {
        let err = tf
            .execute(stage(dir.path(), "plan", with))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), want);
    }
    let err = tf
        .execute(stage(
            dir.path(),
            "plan",
            json!({"dir": "infra", "binary": "/nonexistent/terraform"}),
        ))
        .await
        .unwrap_err();
    assert!(matches!(err, BackendError::Unavailable { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("cannot run /nonexistent/terraform"),
        "{err}"
    );
}

/// A configuration whose apply takes `secs` (a provisioner sleeping).
fn slow(secs: u32) -> String {
    format!(
        "resource \"terraform_data\" \"slow\" {{\n  input = timestamp()\n  provisioner \"local-exec\" {{\n    command = \"sleep {secs}\"\n  }}\n}}\n"
    )
}

/// Waits until a log line contains `text`.
async fn wait_for(lines: &Lines, text: &str) {
    for _ in 0..300 {
        if lines.all().iter().any(|l| l.contains(text)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no log line with {text:?}: {:?}", lines.all());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_state_lock_is_reported_and_a_cancelled_apply_releases_it() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = checkout(&slow(30));
    let lines = Lines::default();
    let ctx = deploy_ctx(dir.path(), "staging", json!({"dir": "infra"})).with_log(lines.sink("d"));
    let cancel = ctx.cancellation().clone();
    let tf2 = tf.clone();
    let deploying = tokio::spawn(async move { tf2.deploy(ctx).await });
    wait_for(&lines, "Creating...").await;

    // A plan of the same workspace meanwhile: terraform's lock, reported with its holder.
    let planned = tf
        .execute(stage(
            dir.path(),
            "plan",
            json!({"dir": "infra", "workspace": "staging"}),
        ))
        .await
        .unwrap();
    let message = failure_message(&planned);
    assert!(
        message.starts_with("terraform plan: the state is locked by "),
        "{message}"
    );
    assert!(
        message.contains("(operation OperationTypeApply"),
        "{message}"
    );

    // Cancelling the apply stops terraform (SIGINT) well before its 30 s provisioner ends...
    let started = std::time::Instant::now();
    cancel.cancel();
    let result = deploying.await.unwrap();
    assert!(matches!(result, Err(BackendError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_secs(20));
    // ...and the lock is free: a quick deploy goes through at once.
    std::fs::write(dir.path().join("infra/main.tf"), slow(0)).unwrap();
    let done = tf
        .deploy(deploy_ctx(dir.path(), "staging", json!({"dir": "infra"})))
        .await
        .unwrap();
    assert_eq!(done.outcome, Outcome::Success, "{:?}", done.outcome);
    tf.stop(deploy_ctx(dir.path(), "staging", json!({"dir": "infra"})))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_wrapper_reads_versions_workspaces_and_outputs() {
    let state = tempfile::tempdir().unwrap();
    if backend(state.path()).is_none() {
        return;
    }
    let dir = checkout(CONFIG);
    let tf = Terraform::new("terraform", dir.path().join("infra"));
    assert!(tf.version().await.unwrap() >= semver::Version::new(1, 0, 0));
    tf.init(&[]).await.unwrap();
    assert!(!tf.select_workspace("w1", true).await.unwrap(), "new");
    assert!(tf.select_workspace("w1", true).await.unwrap(), "existed");
    let (all, current) = tf.workspaces().await.unwrap();
    assert_eq!(
        (all, current.as_str()),
        (vec!["default".to_owned(), "w1".to_owned()], "w1")
    );
    let plan = dir.path().join("p.tfplan");
    let planned = tf.plan(&plan, &[], false).await.unwrap();
    assert_eq!(planned.add, 2);
    let applied = tf.apply(&plan).await.unwrap();
    assert_eq!(applied.add, 2);
    let outputs = tf.output().await.unwrap();
    assert_eq!(outputs["greeting"].text(), "hello");
    assert!(outputs["token"].sensitive);
    assert_eq!(tf.state_list().await.unwrap().len(), 2);
    let destroyed = tf.destroy(&[]).await.unwrap();
    assert_eq!(destroyed.remove, 2);
    assert!(tf.state_list().await.unwrap().is_empty());
    tf.delete_workspace("w1").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_backend_gets_its_backend_config_and_keeps_the_state() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = checkout(&format!(
        "terraform {{\n  backend \"local\" {{}}\n}}\n{CONFIG}"
    ));
    let remote = tempfile::tempdir().unwrap();
    let with = json!({"dir": "infra", "backend_config": {"workspace_dir": remote.path().to_str().unwrap()}});
    let done = tf
        .deploy(deploy_ctx(dir.path(), "qa", with.clone()))
        .await
        .unwrap();
    assert_eq!(done.outcome, Outcome::Success, "{:?}", done.outcome);
    assert!(
        remote.path().join("qa/terraform.tfstate").is_file(),
        "the state is where the backend config says"
    );
    assert!(
        !state.path().join("states").exists(),
        "a configuration with a backend keeps no state of ours"
    );
    assert!(!dir.path().join("infra/gitops_backend_override.tf").exists());
    let stopped = tf.stop(deploy_ctx(dir.path(), "qa", with)).await.unwrap();
    assert_eq!(stopped.outputs["destroyed"], "2");
    assert!(
        !remote.path().join("qa").exists(),
        "the workspace is deleted"
    );
}
