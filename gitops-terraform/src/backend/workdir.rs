//! A configuration's working directory made ready for a stage: a backend override pointing a
//! configuration without one at the state dir, `init`, the workspace selected, the variables
//! file written.

use std::path::{Path, PathBuf};

use gitops_core::backend::paths::Kind;
use gitops_core::backend::{BackendError, Checkout, Completion, StageContext};

use super::failure;
use super::settings::{Settings, state_key};
use crate::TerraformBackend;
use crate::cli::{Terraform, TerraformError};

/// The file that points a configuration without a backend at the state dir.
const OVERRIDE_FILE: &str = "gitops_backend_override.tf";

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

/// The backend override written for a stage (its path and text), removed when the stage is
/// done (an in-place run leaves the repository as it found it).
pub(super) struct BackendOverride(Option<(PathBuf, String)>);

impl BackendOverride {
    /// Writes the override again if it is gone: another stage in the same checkout, done first,
    /// removed the one they shared.
    pub(super) fn ensure(&self) -> std::io::Result<()> {
        match &self.0 {
            Some((path, text)) if !path.exists() => write_new(path, text),
            _ => Ok(()),
        }
    }
}

impl Drop for BackendOverride {
    fn drop(&mut self) {
        if let Some((path, _)) = self.0.take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An initialised working directory with the workspace selected.
pub(super) struct Prepared {
    pub(super) tf: Terraform,
    pub(super) settings: Settings,
    /// Holds the generated variables file.
    pub(super) scratch: tempfile::TempDir,
    pub(super) var_files: Vec<PathBuf>,
    /// The workspace was there before this stage (else the stage made it).
    pub(super) workspace_existed: bool,
    pub(super) backend_override: BackendOverride,
}

/// Why a stage could not be set up: its parameters or the machine (an error of the backend), or
/// terraform (the stage's failure).
pub(super) enum SetupError {
    Backend(BackendError),
    Terraform(TerraformError),
}

impl SetupError {
    pub(super) fn into_result(self) -> Result<Completion, BackendError> {
        match self {
            SetupError::Backend(e) => Err(e),
            SetupError::Terraform(e) => failure(e),
        }
    }
}

impl TerraformBackend {
    /// Reads `with`, points a configuration without a backend at the state dir, runs `init`,
    /// selects (or, with `create`, creates) the workspace, and writes the variables file.
    /// Without `create`, a missing workspace is [`TerraformError::NoWorkspace`].
    pub(super) async fn prepare(
        &self,
        ctx: &StageContext,
        create: bool,
    ) -> Result<Prepared, SetupError> {
        let settings = Settings::read(self, ctx).map_err(SetupError::Backend)?;
        let io =
            |what: &str, e: std::io::Error| SetupError::Backend(BackendError::failed_with(what, e));
        let cache = self.state_dir.join("plugin-cache");
        std::fs::create_dir_all(&cache).map_err(|e| io("creating the plugin cache", e))?;
        let mut generated = BackendOverride(None);
        if !declares_backend(&settings.checkout, &settings.rel).map_err(SetupError::Backend)? {
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
            generated.0 = Some((path, config));
        }
        let tf = Terraform::new(&settings.binary, &settings.dir)
            .with_envs(ctx.variables())
            .with_env("TF_PLUGIN_CACHE_DIR", cache.to_string_lossy())
            .with_log(ctx.log.clone())
            .with_cancel(ctx.cancellation().clone(), self.grace)
            .with_lock_timeout(settings.lock_timeout);
        // Setting up is quiet: what goes wrong is in the error, the rest is noise in the log.
        let quiet = tf
            .clone()
            .with_log(gitops_core::backend::LogSink::discard());
        quiet
            .init(&settings.backend_config)
            .await
            .map_err(SetupError::Terraform)?;
        let workspace_existed = quiet
            .select_workspace(&settings.workspace, create)
            .await
            .map_err(SetupError::Terraform)?;
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
            workspace_existed,
            backend_override: generated,
        })
    }
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
