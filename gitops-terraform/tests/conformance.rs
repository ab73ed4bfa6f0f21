//! The Terraform backend passes the executor and deployer conformance suites, with the real
//! `terraform` binary on a configuration that needs no provider download (`terraform_data`).
//!
//! Runs when `GITOPS_TEST_TERRAFORM=1` (`scripts/test.sh` sets it after checking that terraform is
//! on PATH); then a missing binary is a failure, not a skip.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::Completion;
use gitops_core::testing::{
    DeployerSetup, EnvironmentProbe, Setup, deployer_conformance, executor_conformance,
};
use gitops_terraform::TerraformBackend;
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_executor_conforms() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    executor_conformance(Arc::new(tf), &Setup::new(dir.path()), "terraform").await;
    assert!(
        !dir.path().join("gitops_backend_override.tf").exists(),
        "the generated override is removed after each stage"
    );
}

/// A release is a `terraform_data` of its marker, replaced (the new one made before the old one
/// goes) when the marker changes; its provisioner takes `delay` seconds. Its outputs: the
/// marker, and a URL naming it.
const CONFIG: &str = r#"
variable "release" {
  type = string
}
variable "delay" {
  type    = number
  default = 0
}
resource "terraform_data" "release" {
  input            = var.release
  triggers_replace = [var.release]
  lifecycle {
    create_before_destroy = true
  }
  provisioner "local-exec" {
    command = "sleep ${var.delay}"
  }
}
output "release" {
  value = terraform_data.release.output
}
output "url" {
  value = "https://${terraform_data.release.output}.example.invalid/"
}
"#;

/// Looks at what terraform keeps of an environment in the backend's state dir: its
/// workspace's state (resources, tainted or deposed ones too) and the variables of its last
/// deploy.
struct Probe {
    state: PathBuf,
}

impl Probe {
    /// The state file of `environment`'s workspace, if any.
    fn state_file(&self, environment: &str) -> Option<PathBuf> {
        let configurations = std::fs::read_dir(self.state.join("states")).ok()?;
        configurations
            .flatten()
            .map(|c| {
                c.path()
                    .join("workspaces")
                    .join(environment)
                    .join("terraform.tfstate")
            })
            .find(|p| p.is_file())
    }

    fn read_state(&self, environment: &str) -> Option<Value> {
        let text = std::fs::read_to_string(self.state_file(environment)?).ok()?;
        serde_json::from_str(&text).ok()
    }
}

#[async_trait]
impl EnvironmentProbe for Probe {
    async fn serving(&self, environment: &str, _deployed: &Completion) -> Option<String> {
        let state = self.read_state(environment)?;
        state["outputs"]["release"]["value"]
            .as_str()
            .map(str::to_owned)
    }

    async fn leftovers(&self, environment: &str) -> Vec<String> {
        let mut left = Vec::new();
        if let Some(state) = self.read_state(environment) {
            left.push(format!("workspace {environment}"));
            for resource in state["resources"].as_array().into_iter().flatten() {
                for instance in resource["instances"].as_array().into_iter().flatten() {
                    let mut what = format!(
                        "{}.{}",
                        resource["type"].as_str().unwrap_or("?"),
                        resource["name"].as_str().unwrap_or("?")
                    );
                    if instance["status"] == "tainted" {
                        what.push_str(" (tainted)");
                    }
                    if instance.get("deposed").is_some() {
                        what.push_str(" (deposed)");
                    }
                    left.push(what);
                }
            }
        }
        let deployed = std::fs::read_dir(self.state.join("deployed"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|c| c.path().join(environment).exists());
        if deployed {
            left.push("saved variables".to_owned());
        }
        left
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deployer_conforms() {
    let state = tempfile::tempdir().unwrap();
    let Some(tf) = backend(state.path()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("infra")).unwrap();
    std::fs::write(dir.path().join("infra/main.tf"), CONFIG).unwrap();
    let release = |delay: u32| {
        move |marker: &str| {
            json!({"vars": {"release": marker, "delay": delay}})
                .as_object()
                .unwrap()
                .clone()
        }
    };
    let setup = DeployerSetup::new(
        dir.path(),
        "conformance",
        release(0),
        // Its apply sleeps in the provisioner; cancelled there, after init and plan.
        release(120),
        Probe {
            state: state.path().to_owned(),
        },
    )
    // The environment's configuration, which stops need too.
    .with_environment_params(json!({"dir": "infra"}))
    .with_bad_params([
        json!({"dri": "infra"}),
        json!({"dir": "../outside"}),
        json!({"dir": "nowhere"}),
        json!({"vars": ["release"]}),
        json!({"var_files": ["missing.tfvars"]}),
        json!({"lock_timeout": 999_999_999}),
        json!({"action": "apply"}),
    ])
    .with_cancel_timing(Duration::from_secs(8), Duration::from_secs(90));
    deployer_conformance(Arc::new(tf), &setup).await;
}
