//! [`TerraformBackend`] as an [`Executor`] (plan, validate, or a command in the initialised
//! working directory) and a [`Deployer`] (a workspace per environment: plan, apply exactly that
//! plan, outputs; stop = destroy).

use gitops_core::backend::BackendError::InvalidParameters;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use gitops_core::backend::paths::Kind;
use gitops_core::backend::process::{StopPolicy, StopSignal, run_streaming};
use gitops_core::backend::{
    BackendError, Checkout, Completion, Deployer, Executor, StageContext, checkout_path,
    read_outputs,
};

use crate::TerraformBackend;
use crate::cli::{Terraform, TerraformError};

/// What `with` may set.
pub(crate) const KEYS: [&str; 9] = [
    "dir",
    "binary",
    "workspace",
    "vars",
    "var_files",
    "backend_config",
    "lock_timeout",
    "expose_sensitive",
    "action",
];

/// The file that points a configuration without a backend at the state dir.
const OVERRIDE_FILE: &str = "gitops_backend_override.tf";

/// What a stage asks of terraform, read from `with`.
struct Settings {
    /// The configuration's directory (absolute).
    dir: PathBuf,
    /// The checkout, and the configuration's directory in it as `with.dir` names it.
    checkout: Checkout,
    rel: PathBuf,
    binary: PathBuf,
    workspace: String,
    vars: Option<serde_json::Map<String, serde_json::Value>>,
    var_files: Vec<PathBuf>,
    backend_config: Vec<(String, String)>,
    lock_timeout: Duration,
    expose_sensitive: Vec<String>,
    action: String,
}

/// A workspace name terraform accepts, from an environment name.
fn workspace_name(name: &str) -> String {
    gitops_core::backend::names::sanitize(name, usize::MAX, "-_", '-')
}

impl Settings {
    fn read(backend: &TerraformBackend, ctx: &StageContext) -> Result<Settings, BackendError> {
        let with = ctx.params();
        if let Some(key) = with.keys().find(|k| !KEYS.contains(k)) {
            return Err(InvalidParameters(format!(
                "unknown parameter `with.{key}` (the terraform backend knows {})",
                KEYS.join(", ")
            )));
        }
        let rel = checkout_path("dir", with.str("dir")?.unwrap_or("."))?;
        let dir = ctx.run.workdir.join(&rel);
        let checkout = Checkout::open(&ctx.run.workdir)?;
        if checkout
            .find("dir", &rel)?
            .is_none_or(|r| r.kind != Kind::Dir)
        {
            return Err(InvalidParameters(format!(
                "`with.dir`: {} is not a directory of the checkout",
                rel.display()
            )));
        }
        let workspace = match (with.str("workspace")?, &ctx.environment) {
            (Some(w), _) if !w.is_empty() => workspace_name(w),
            (Some(_), _) => return Err(with.invalid("workspace", "a workspace name")),
            (None, Some(env)) => workspace_name(&env.name),
            (None, None) => "default".to_owned(),
        };
        let vars = match with.get("vars") {
            None => None,
            Some(serde_json::Value::Object(map)) => Some(map.clone()),
            Some(_) => return Err(with.invalid("vars", "a map of variable names to values")),
        };
        let var_files = with
            .strings("var_files")?
            .unwrap_or_default()
            .iter()
            .map(|f| {
                let path = checkout_path("var_files", &rel.join(f).to_string_lossy())?;
                // Terraform gets the file's own path, with no link on the way.
                let file = checkout.resolve("var_files", &path)?;
                if file.kind != Kind::File {
                    return Err(InvalidParameters(format!(
                        "`with.var_files`: \"{}\" is a directory, not a file",
                        path.display()
                    )));
                }
                Ok(ctx.run.workdir.join(file.path))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let backend_config = with
            .string_map("backend_config")?
            .unwrap_or_default()
            .into_iter()
            .collect();
        let action = with.str("action")?.unwrap_or("plan").to_owned();
        if !["plan", "validate"].contains(&action.as_str()) {
            return Err(with.invalid("action", "plan or validate"));
        }
        Ok(Settings {
            dir,
            checkout,
            rel,
            binary: with
                .str("binary")?
                .map_or_else(|| backend.binary.clone(), PathBuf::from),
            workspace,
            vars,
            var_files,
            backend_config,
            lock_timeout: with
                .seconds("lock_timeout")?
                .unwrap_or(backend.lock_timeout),
            expose_sensitive: with.strings("expose_sensitive")?.unwrap_or_default(),
            action,
        })
    }
}

/// Whether the configuration at `rel` in `checkout` declares where its state lives (a
/// `backend` or `cloud` block); without one, the backend keeps its state in the state dir.
///
/// Terraform reads the files of the directory, following links: each entry must stay in the
/// checkout and be a file or a directory (a FIFO there would hang terraform, and this scan).
fn declares_backend(checkout: &Checkout, rel: &Path) -> Result<bool, BackendError> {
    for (path, resolved) in checkout.list("dir", rel)? {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let tf = name.ends_with(".tf") || name.ends_with(".tf.json");
        if name == OVERRIDE_FILE || resolved.kind != Kind::File || !tf {
            continue;
        }
        let text = String::from_utf8_lossy(&checkout.read("dir", &resolved.path)?).into_owned();
        let found = if name.ends_with(".tf") {
            text.lines().map(str::trim_start).any(|l| {
                l.starts_with("backend \"")
                    || l.starts_with("backend\"")
                    || l.starts_with("cloud {")
                    || l.starts_with("cloud{")
            })
        } else if name.ends_with(".tf.json") {
            text.contains("\"backend\"") || text.contains("\"cloud\"")
        } else {
            false
        };
        if found {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Writes `text` to a new file at `path` in the checkout, in place of whatever is there: never
/// through a link, nor into a FIFO.
fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    // `create_new` (O_EXCL) fails on a link rather than following it.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)?
        .write_all(text.as_bytes())
}

/// A name for the files of one configuration: its repository and directory.
fn state_key(ctx: &StageContext, dir: &Path) -> String {
    let rel = dir
        .strip_prefix(&ctx.run.workdir)
        .unwrap_or(dir)
        .to_string_lossy()
        .into_owned();
    let raw = format!("{}/{}", ctx.run.event.repo, rel);
    let key = gitops_core::backend::names::sanitize(
        raw.trim_end_matches(['/', '.']),
        usize::MAX,
        "-_",
        '_',
    );
    if key.is_empty() {
        "default".to_owned()
    } else {
        key
    }
}

/// Removes the generated backend override when the stage is done (an in-place run leaves the
/// repository as it found it).
struct Generated(Option<PathBuf>);

impl Drop for Generated {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An initialised working directory with the workspace selected.
struct Prepared {
    tf: Terraform,
    settings: Settings,
    /// Holds the generated variables file.
    scratch: tempfile::TempDir,
    var_files: Vec<PathBuf>,
    _override: Generated,
}

/// Why a stage could not be set up: its parameters or the machine (an error of the backend), or
/// terraform (the stage's failure).
enum Prep {
    Backend(BackendError),
    Terraform(TerraformError),
}

impl Prep {
    fn into_result(self) -> Result<Completion, BackendError> {
        match self {
            Prep::Backend(e) => Err(e),
            Prep::Terraform(e) => failure(e),
        }
    }
}

fn to_backend(e: TerraformError) -> BackendError {
    match e {
        TerraformError::Cancelled => BackendError::Cancelled,
        TerraformError::NotFound { .. } => BackendError::Unavailable(e.to_string()),
        e => BackendError::Failed(e.to_string()),
    }
}

impl TerraformBackend {
    /// Reads `with`, points a configuration without a backend at the state dir, runs `init`,
    /// selects (or, with `create`, creates) the workspace, and writes the variables file.
    /// Without `create`, a missing workspace is [`TerraformError::NoWorkspace`].
    async fn prepare(&self, ctx: &StageContext, create: bool) -> Result<Prepared, Prep> {
        let settings = Settings::read(self, ctx).map_err(Prep::Backend)?;
        let io = |what: &str, e: std::io::Error| {
            Prep::Backend(BackendError::Failed(format!("{what}: {e}")))
        };
        let cache = self.state_dir.join("plugin-cache");
        std::fs::create_dir_all(&cache).map_err(|e| io("creating the plugin cache", e))?;
        let mut generated = Generated(None);
        if !declares_backend(&settings.checkout, &settings.rel).map_err(Prep::Backend)? {
            let states = self
                .state_dir
                .join("states")
                .join(state_key(ctx, &settings.dir));
            std::fs::create_dir_all(&states).map_err(|e| io("creating the state dir", e))?;
            let config = format!(
                "# Written by gitops for this run: the state lives in gitops's state dir.\n\
                 terraform {{\n  backend \"local\" {{\n    path          = {}\n    workspace_dir = {}\n  }}\n}}\n",
                hcl_string(&states.join("default.tfstate")),
                hcl_string(&states.join("workspaces")),
            );
            let path = settings.dir.join(OVERRIDE_FILE);
            write_new(&path, &config).map_err(|e| io("writing the backend override", e))?;
            generated.0 = Some(path);
        }
        let tf = Terraform::new(&settings.binary, &settings.dir)
            .with_envs(ctx.variables())
            .with_env("TF_PLUGIN_CACHE_DIR", cache.to_string_lossy())
            .with_log(ctx.log.clone())
            .with_cancel((*ctx.cancel).clone(), self.grace)
            .with_lock_timeout(settings.lock_timeout);
        // Setting up is quiet: what goes wrong is in the error, the rest is noise in the log.
        let quiet = tf
            .clone()
            .with_log(gitops_core::backend::LogSink::discard());
        quiet
            .init(&settings.backend_config)
            .await
            .map_err(Prep::Terraform)?;
        quiet
            .select_workspace(&settings.workspace, create)
            .await
            .map_err(Prep::Terraform)?;
        let scratch = tempfile::Builder::new()
            .prefix("gitops-terraform-")
            .tempdir()
            .map_err(|e| io("creating a scratch dir", e))?;
        let mut var_files = settings.var_files.clone();
        if let Some(vars) = &settings.vars {
            let path = scratch.path().join("gitops.tfvars.json");
            let text = serde_json::to_string_pretty(vars).unwrap_or_default();
            std::fs::write(&path, text).map_err(|e| io("writing the variables file", e))?;
            var_files.push(path);
        }
        Ok(Prepared {
            tf,
            settings,
            scratch,
            var_files,
            _override: generated,
        })
    }

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
        let exit = run_streaming(cmd, &ctx.cancel, stop, |stream, line| {
            ctx.log.line(stream, line)
        })
        .await
        .map_err(|e| BackendError::Unavailable(format!("cannot run sh: {e}")))?;
        let outputs = match read_outputs(&output) {
            Ok(o) => o,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(BackendError::Failed(format!(
                    "cannot read $GITOPS_OUTPUT: {e}"
                )));
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

/// The variable files kept by [`TerraformBackend::save_deployed_vars`], in order.
fn saved_vars(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// `path` as an HCL string literal.
fn hcl_string(path: &Path) -> String {
    let s = path.to_string_lossy();
    let escaped = s
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace("${", "$${");
    format!("\"{escaped}\"")
}

/// A terraform error as the stage's failure (a located, readable message), or the backend error
/// it is (cancelled, no binary).
fn failure(e: TerraformError) -> Result<Completion, BackendError> {
    match e {
        TerraformError::Cancelled | TerraformError::NotFound { .. } => Err(to_backend(e)),
        e => Ok(Completion::failure(None, e.to_string())),
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
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::schema()
    }
}

#[async_trait]
impl Deployer for TerraformBackend {
    /// Plans in the environment's workspace, applies exactly that plan, and returns the state's
    /// outputs (a sensitive one as `(sensitive)` unless `with.expose_sensitive` names it) with
    /// `workspace`, `plan_add`, `plan_change` and `plan_destroy`.
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
            Err(e) => return failure(e),
        };
        let saved = self.deployed_vars(&ctx, &p.settings);
        self.save_deployed_vars(&saved, &p.var_files).map_err(|e| {
            BackendError::Failed(format!(
                "applied, but cannot keep the variables for a later destroy in {}: {e}",
                saved.display()
            ))
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
            Err(Prep::Terraform(TerraformError::NoWorkspace { .. })) => {
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
    fn params(&self) -> gitops_core::config::ParamSchema {
        crate::params::schema()
    }
}
