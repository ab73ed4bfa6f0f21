//! Starter app: Terraform planned on a pull request, applied to staging on merge.
//!
//! ```text
//! cargo run -p gitops-examples --bin terraform-staging [-- --keep]
//! ```
//!
//! It embeds the engine with the Terraform backend (the `terraform` CLI on PATH, or `tofu` with
//! `--binary tofu`) and walks a change through a throwaway repository whose `infra/` holds a
//! configuration that needs no provider download:
//!
//! 1. pull request opened: a `plan` stage plans the change against staging's workspace and prints
//!    the Markdown a bot would post on the pull request;
//! 2. merged (a push to `main`): a `deploy: staging` stage plans and applies exactly that plan in
//!    the `staging` workspace; the environment's outputs (a URL) are printed from the ledger;
//! 3. the app then stops staging (terraform destroy), unless `--keep`.

use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_examples::scratch::ScratchRepo;
use gitops_terraform::TerraformBackend;

use gitops_examples::starter::{Error, exit, step};

const CONFIG: &str = r#"version: 1
environments:
  staging: { backend: terraform, with: { dir: infra, vars: { env: staging, replicas: 2 } } }
pipelines:
  pull-request:
    on: { pull_request: { types: [opened, synchronize] } }
    stages:
      plan: { backend: terraform, with: { dir: infra, workspace: staging, vars: { env: staging, replicas: 2 } } }
  main:
    on: { push: { branches: [main] } }
    stages:
      apply: { deploy: staging }
"#;

const MAIN_TF: &str = r#"variable "env" { type = string }
variable "replicas" { type = number }

resource "terraform_data" "service" {
  input = { env = var.env, replicas = var.replicas }
  provisioner "local-exec" {
    command = "echo starting ${var.replicas} replicas in ${var.env}"
  }
}

output "url" { value = "https://${var.env}.example.test/" }
"#;

const MAIN_TF_WITH_CACHE: &str = r#"
resource "terraform_data" "cache" {
  input = "${var.env}-cache"
}
"#;

/// Terraform planned on a pull request, applied to staging on merge.
#[derive(clap::Parser)]
struct Args {
    /// The CLI: terraform, tofu, or a path.
    #[arg(long, value_name = "PATH", default_value = "terraform")]
    binary: String,
    /// Leave staging and the state in place at the end.
    #[arg(long)]
    keep: bool,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    gitops_examples::output::exit_quietly_on_closed_pipes();
    let args = <Args as clap::Parser>::parse();
    exit(starter(&args.binary, args.keep).await)
}

async fn starter(binary: &str, keep: bool) -> Result<(), Error> {
    let dir = tempfile::Builder::new()
        .prefix("gitops-terraform-staging-")
        .tempdir()?;
    let state = dir.path().join("state");
    let terraform = Arc::new(
        TerraformBackend::builder(state.join("terraform"))
            .with_binary(binary)
            .build(),
    );
    let registry = BackendRegistry::new()
        .with_executor("terraform", terraform.clone())
        .with_deployer("terraform", terraform);
    let engine = Engine::open(&state, registry)?;
    let mut scratch = ScratchRepo::init(&dir.path().join("repo"))?;
    let base = scratch.commit(
        "main",
        None,
        "Staging service",
        &[(".gitops.yml", CONFIG), ("infra/main.tf", MAIN_TF)],
    )?;
    let repo = Repository::open(scratch.path())?;
    let mut options = RunOptions::default();
    options.actor = Some("terraform-staging".to_owned());

    println!("▸ main is applied to staging first");
    step(
        &engine,
        &repo,
        &options,
        &GitEvent::push("starter/infra", "main", None, &base),
    )
    .await?;

    let with_cache = format!("{MAIN_TF}{MAIN_TF_WITH_CACHE}");
    let head = scratch.commit(
        "add-cache",
        Some(&base),
        "Add a cache",
        &[("infra/main.tf", &with_cache)],
    )?;
    println!("▸ Pull request #4 opened (add a cache): plan against staging");
    let pr = GitEvent::pull_request_event(
        "starter/infra",
        "opened",
        4,
        ("add-cache", &head),
        ("main", &base),
    );
    let reports = step(&engine, &repo, &options, &pr).await?;
    if let Some(markdown) = reports
        .iter()
        .find_map(|r| r.stage("plan"))
        .and_then(|s| s.outputs.get("markdown"))
    {
        println!("  the comment to post on the pull request:\n");
        for line in markdown.lines() {
            println!("  | {line}");
        }
        println!();
    }

    scratch.set_ref("refs/heads/main", &head)?;
    println!("▸ Pull request #4 merged: main is applied to staging");
    step(
        &engine,
        &repo,
        &options,
        &GitEvent::push("starter/infra", "main", Some(&base), &head),
    )
    .await?;
    let staging = engine
        .environments()?
        .into_iter()
        .find(|e| e.record.name == "staging")
        .ok_or("staging was not deployed")?;
    if let Some(current) = &staging.current {
        println!("  staging's outputs (from the ledger):");
        for (key, value) in &current.outputs {
            println!("    {key} = {value}");
        }
    }

    if keep {
        println!("\n--keep: staging's state stays in {}", state.display());
        let kept = dir.keep();
        println!("(the repository and state are in {})", kept.display());
        return Ok(());
    }
    println!("▸ Stopping staging: terraform destroy");
    let stopped = engine
        .stop_environment("staging", "terraform-staging")
        .await?;
    let destroyed = stopped
        .deployment
        .outputs
        .get("destroyed")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    println!(
        "  staging stopped (deployment #{}: {}, {} destroyed)",
        stopped.deployment.id,
        stopped.deployment.result.name(),
        gitops_examples::text::count(destroyed, "resource")
    );
    Ok(())
}
