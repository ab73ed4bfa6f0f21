//! [`TerraformBackend`] as an [`Executor`]: plan, validate, or a command in the initialised
//! working directory.

use std::collections::BTreeMap;

use async_trait::async_trait;
use gitops_core::backend::process::{StopPolicy, StopSignal, run_streaming};
use gitops_core::backend::{BackendError, Completion, Executor, StageContext, read_outputs};

use super::failure;
use super::workdir::Prepared;
use crate::TerraformBackend;
use crate::cli::TerraformError;

impl TerraformBackend {
    /// Runs the stage's `run` in the initialised directory.
    async fn run_command(
        &self,
        ctx: &StageContext,
        p: &Prepared,
        command: &str,
    ) -> Result<Completion, BackendError> {
        let output = p.scratch.path().join("outputs");
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(command).current_dir(&p.settings.dir);
        gitops_core::backend::process::stage_environment(&mut cmd, ctx.variables());
        cmd.env("GITOPS_OUTPUT", &output);
        cmd.env("TF_IN_AUTOMATION", "1").env("TF_INPUT", "0");
        cmd.env("GITOPS_TF_WORKSPACE", &p.settings.workspace);
        cmd.env("GITOPS_TF_BINARY", &p.settings.binary);
        let var_args: Vec<String> = p
            .var_files
            .iter()
            .map(|f| format!("-var-file={}", f.display()))
            .collect();
        cmd.env("GITOPS_TF_VAR_ARGS", var_args.join(" "));
        let stop = StopPolicy::new(StopSignal::Interrupt, self.grace);
        let exit = run_streaming(cmd, ctx.cancellation(), stop, |stream, line| {
            ctx.log.line(stream, line)
        })
        .await
        .map_err(|e| BackendError::unavailable_with("cannot run sh", e))?;
        let outputs = match read_outputs(&output) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(BackendError::failed_with("cannot read $GITOPS_OUTPUT", e));
            }
        };
        exit.into_completion(outputs)
    }

    /// Plans, and says what the plan does as outputs.
    async fn plan_stage(&self, p: &Prepared) -> Result<Completion, TerraformError> {
        let plan_file = p.scratch.path().join("plan.tfplan");
        p.tf.plan(&plan_file, &p.var_files, false).await?;
        let plan = p.tf.show_plan(&plan_file).await?;
        let title = match p.settings.dir.file_name() {
            Some(name) if p.settings.workspace != "default" => {
                format!("{} ({})", p.settings.workspace, name.to_string_lossy())
            }
            _ => p.settings.workspace.clone(),
        };
        let resources: Vec<&str> = plan.resources.iter().map(|r| r.address.as_str()).collect();
        Ok(Completion::success()
            .with_output("add", plan.add.to_string())
            .with_output("change", plan.change.to_string())
            .with_output("destroy", plan.destroy.to_string())
            .with_output("has_changes", plan.has_changes().to_string())
            .with_output("resources", resources.join(" "))
            .with_output("summary", plan.line())
            .with_output("markdown", plan.markdown(&title))
            .with_output("workspace", p.settings.workspace.clone()))
    }
}

#[async_trait]
impl Executor for TerraformBackend {
    /// With `run`: the command, in the initialised directory with the workspace selected.
    /// Otherwise `with.action`: `plan` (default; outputs `add`, `change`, `destroy`,
    /// `has_changes`, `resources`, `summary`, `markdown`, `workspace`) or `validate`.
    async fn execute(&self, ctx: StageContext) -> Result<Completion, BackendError> {
        let p = match self.prepare(&ctx, true).await {
            Ok(p) => p,
            Err(e) => return e.into_result(),
        };
        if let Some(command) = ctx.command.clone() {
            return self.run_command(&ctx, &p, &command).await;
        }
        match p.settings.action.as_str() {
            "validate" => match p.tf.validate().await {
                Ok(diagnostics) => {
                    let errors: Vec<String> = diagnostics
                        .iter()
                        .filter(|d| d.is_error())
                        .map(ToString::to_string)
                        .collect();
                    for d in diagnostics.iter().filter(|d| !d.is_error()) {
                        ctx.log.line(
                            gitops_core::backend::LogStream::Stdout,
                            &format!("Warning: {d}"),
                        );
                    }
                    if errors.is_empty() {
                        Ok(Completion::success())
                    } else {
                        Ok(Completion::failure(None, errors.join("; ")))
                    }
                }
                Err(e) => failure(e),
            },
            _ => match self.plan_stage(&p).await {
                Ok(c) => Ok(c),
                Err(e) => failure(e),
            },
        }
    }

    /// `dir`, `binary`, `workspace`, `vars`, `var_files`, `backend_config`, `lock_timeout`,
    /// `expose_sensitive` and `action` (see the crate docs).
    fn params(&self) -> gitops_core::backend::ParamSchema {
        crate::params::schema()
    }
}
