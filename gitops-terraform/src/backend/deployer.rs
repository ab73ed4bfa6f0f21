//! [`TerraformBackend`] as a [`Deployer`]: a workspace per environment; a deploy plans, applies
//! exactly that plan and returns the state's outputs; a stop destroys. A cancelled deploy puts
//! back what the environment was before it returns: terraform, interrupted, leaves what it was
//! creating half made (tainted) and what it was replacing gone or deposed.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use gitops_core::backend::{
    BackendError, BoxError, Cancellation, Completion, Deployer, LogStream, StageContext,
};

use super::failure;
use super::settings::{Settings, state_key};
use super::workdir::{Prepared, SetupError};
use crate::TerraformBackend;
use crate::cli::TerraformError;

impl TerraformBackend {
    /// Where the variable files of an environment's last deploy are kept, so that a stop that
    /// names none destroys with the variables the resources were made with.
    fn deployed_vars(&self, ctx: &StageContext, settings: &Settings) -> PathBuf {
        self.state_dir
            .join("deployed")
            .join(state_key(ctx, &settings.dir))
            .join(&settings.workspace)
    }

    /// Keeps copies of `files` (in order) as the environment's deployed variables.
    fn save_deployed_vars(&self, dir: &Path, files: &[PathBuf]) -> std::io::Result<()> {
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir)?;
        for (i, file) in files.iter().enumerate() {
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            std::fs::copy(file, dir.join(format!("{i:03}-{name}")))?;
        }
        Ok(())
    }
}

impl TerraformBackend {
    /// After a cancelled deploy: the environment as its last deploy left it (that deploy's
    /// variables planned and applied again), or, when it had none, empty again (destroyed, and
    /// its workspace deleted when this deploy made it). Runs to its end whatever the stage's
    /// cancellation, since half an environment is worse than a late return.
    async fn put_back(&self, ctx: &StageContext, p: &Prepared) -> Result<(), BoxError> {
        let tf = p.tf.clone().with_cancel(Cancellation::new(), self.grace);
        p.backend_override
            .ensure()
            .map_err(|e| BackendError::failed_with("writing the backend override again", e))?;
        let saved = self.deployed_vars(ctx, &p.settings);
        if saved.is_dir() {
            ctx.log.line(
                LogStream::Stdout,
                "cancelled: putting back the release deployed before",
            );
            let plan_file = p.scratch.path().join("put-back.tfplan");
            tf.plan(&plan_file, &saved_vars(&saved), false).await?;
            tf.apply(&plan_file).await?;
        } else {
            ctx.log.line(
                LogStream::Stdout,
                "cancelled: removing what this first deploy made",
            );
            tf.destroy(&p.var_files).await?;
            if !p.workspace_existed && p.settings.workspace != "default" {
                tf.delete_workspace(&p.settings.workspace).await?;
            }
        }
        Ok(())
    }
}

/// The variable files kept by [`TerraformBackend::save_deployed_vars`], in order.
fn saved_vars(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

#[async_trait]
impl Deployer for TerraformBackend {
    /// Plans in the environment's workspace, applies exactly that plan, and returns the state's
    /// outputs (a sensitive one as `(sensitive)` unless `with.expose_sensitive` names it) with
    /// `workspace`, `plan_add`, `plan_change` and `plan_destroy`. Cancelled, it puts back what
    /// was there before (see the module docs).
    async fn deploy(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let p = match self.prepare(&ctx, true).await {
            Ok(p) => p,
            Err(e) => return e.into_result(),
        };
        let result = async {
            let plan_file = p.scratch.path().join("plan.tfplan");
            p.tf.plan(&plan_file, &p.var_files, false).await?;
            let plan = p.tf.show_plan(&plan_file).await?;
            p.tf.apply_counting(&plan_file, plan.add + plan.change + plan.destroy)
                .await?;
            let outputs = p.tf.output().await?;
            Ok::<_, TerraformError>((plan, outputs))
        }
        .await;
        let (plan, outputs) = match result {
            Ok(r) => r,
            Err(TerraformError::Cancelled) => {
                return match self.put_back(&ctx, &p).await {
                    Ok(()) => Err(BackendError::Cancelled),
                    Err(e) => Err(BackendError::failed_with(
                        "the deploy was cancelled, and putting back what was there before failed",
                        e,
                    )),
                };
            }
            Err(e) => return failure(e),
        };
        let saved = self.deployed_vars(&ctx, &p.settings);
        self.save_deployed_vars(&saved, &p.var_files).map_err(|e| {
            BackendError::failed_with(
                format!(
                    "applied, but cannot keep the variables for a later destroy in {}",
                    saved.display()
                ),
                e,
            )
        })?;
        let mut completion = Completion::success()
            .with_output("workspace", p.settings.workspace.clone())
            .with_output("plan_add", plan.add.to_string())
            .with_output("plan_change", plan.change.to_string())
            .with_output("plan_destroy", plan.destroy.to_string());
        for (name, value) in outputs {
            let text = if value.sensitive && !p.settings.expose_sensitive.contains(&name) {
                "(sensitive)".to_owned()
            } else {
                value.text()
            };
            completion = completion.with_output(name, text);
        }
        Ok(completion)
    }

    /// Destroys what the environment's workspace manages (with the stop's variables, or, when it
    /// names none, those of the last deploy), then deletes the workspace; an environment whose
    /// workspace does not exist has nothing to stop.
    async fn stop(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let p = match self.prepare(&ctx, false).await {
            Ok(p) => p,
            // No workspace: nothing was ever deployed there, or it was destroyed already.
            Err(SetupError::Terraform(TerraformError::NoWorkspace { .. })) => {
                return Ok(Completion::success().with_output("destroyed", "0"));
            }
            Err(e) => return e.into_result(),
        };
        // Without variables of its own, a stop destroys with those of the last deploy.
        let saved = self.deployed_vars(&ctx, &p.settings);
        let var_files = if p.settings.vars.is_none() && p.settings.var_files.is_empty() {
            saved_vars(&saved)
        } else {
            p.var_files.clone()
        };
        let result = async {
            let summary = p.tf.destroy(&var_files).await?;
            if p.settings.workspace != "default" {
                p.tf.delete_workspace(&p.settings.workspace).await?;
            }
            Ok::<_, TerraformError>(summary)
        }
        .await;
        match result {
            Ok(summary) => {
                let _ = std::fs::remove_dir_all(&saved);
                Ok(Completion::success().with_output("destroyed", summary.remove.to_string()))
            }
            Err(e) => failure(e),
        }
    }

    /// The same keys as a stage's.
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::schema()
    }
}
