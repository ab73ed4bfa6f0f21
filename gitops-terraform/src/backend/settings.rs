//! What a stage asks of terraform, read from its `with` and checked before anything runs.

use gitops_core::backend::BackendError::InvalidParameters;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitops_core::backend::paths::Kind;
use gitops_core::backend::{BackendError, Checkout, StageContext, checkout_path};

use crate::TerraformBackend;

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

/// What a stage asks of terraform, read from `with`.
pub(super) struct Settings {
    /// The configuration's directory (absolute).
    pub(super) dir: PathBuf,
    /// The checkout, and the configuration's directory in it as `with.dir` names it.
    pub(super) checkout: Checkout,
    pub(super) rel: PathBuf,
    pub(super) binary: PathBuf,
    pub(super) workspace: String,
    pub(super) vars: Option<serde_json::Map<String, serde_json::Value>>,
    pub(super) var_files: Vec<PathBuf>,
    pub(super) backend_config: Vec<(String, String)>,
    pub(super) lock_timeout: Duration,
    pub(super) expose_sensitive: Vec<String>,
    pub(super) action: String,
}

/// A workspace name terraform accepts, from an environment name.
fn workspace_name(name: &str) -> String {
    gitops_core::backend::names::sanitize(name, usize::MAX, "-_", '-')
}

impl Settings {
    pub(super) fn read(
        backend: &TerraformBackend,
        ctx: &StageContext,
    ) -> Result<Settings, BackendError> {
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

/// A name for the files of one configuration: its repository and directory.
pub(super) fn state_key(ctx: &StageContext, dir: &Path) -> String {
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
