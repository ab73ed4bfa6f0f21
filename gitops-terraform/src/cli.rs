//! A small typed wrapper over the `terraform` (or `tofu`) CLI, the way HashiCorp's terraform-exec
//! drives it: argv only (never a shell string), `-input=false -no-color`, the streaming `-json` UI
//! parsed into log lines, JSON documents (`show -json`, `output -json`) parsed into types, and
//! failures turned into [`TerraformError`]s.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use gitops_core::backend::process::{Exit, StopPolicy, StopSignal, run_streaming};
use gitops_core::backend::{Cancellation, LogSink};

use crate::plan::PlanSummary;
use crate::ui::{ChangeSummary, Diagnostic, UiReader};

/// What went wrong running terraform.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TerraformError {
    /// The binary could not be started.
    #[error("cannot run {binary} (install Terraform or OpenTofu, or set the binary path)")]
    NotFound {
        /// The binary.
        binary: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The configuration or the command has errors; each is located when terraform says where.
    #[error("terraform {command} failed: {}", join(.diagnostics))]
    Diagnostics {
        /// The subcommand (`plan`).
        command: String,
        /// The errors, in the order terraform reported them.
        diagnostics: Vec<Diagnostic>,
    },
    /// Someone else holds the state's lock.
    #[error(
        "terraform {command}: the state is locked by {} (operation {}, since {}, lock id {}); \
         wait for it to finish, or raise lock_timeout",
        .lock.who, .lock.operation, .lock.created, .lock.id
    )]
    StateLocked {
        /// The subcommand.
        command: String,
        /// Who holds the lock, as terraform reports it.
        lock: LockInfo,
    },
    /// It failed without a diagnostic: its exit code and last lines of error output.
    #[error("terraform {command} exited with {code}: {message}")]
    Failed {
        /// The subcommand.
        command: String,
        /// The exit code (-1 when a signal ended it).
        code: i32,
        /// The last lines it wrote to stderr.
        message: String,
    },
    /// Its output was not what this wrapper understands.
    #[error("terraform {command}: unexpected output: {message}")]
    Output {
        /// The subcommand.
        command: String,
        /// What could not be read.
        message: String,
    },
    /// The workspace to select does not exist (and was not to be created).
    #[error("terraform has no workspace {name}")]
    NoWorkspace {
        /// The workspace.
        name: String,
    },
    /// The command was cancelled and stopped.
    #[error("cancelled")]
    Cancelled,
}

fn join(diagnostics: &[Diagnostic]) -> String {
    diagnostics
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who holds a state lock (terraform's "Lock Info").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockInfo {
    /// The lock's id (for `terraform force-unlock`).
    pub id: String,
    /// The state it locks.
    pub path: String,
    /// What the holder is doing (`OperationTypeApply`).
    pub operation: String,
    /// Who (`user@host`).
    pub who: String,
    /// Since when.
    pub created: String,
}

impl LockInfo {
    fn parse(detail: &str) -> LockInfo {
        let field = |name: &str| {
            detail
                .lines()
                .find_map(|l| l.trim().strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        LockInfo {
            id: field("ID:"),
            path: field("Path:"),
            operation: field("Operation:"),
            who: field("Who:"),
            created: field("Created:"),
        }
    }
}

/// An output of `terraform output -json`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[non_exhaustive]
pub struct OutputValue {
    /// Marked `sensitive = true`.
    #[serde(default)]
    pub sensitive: bool,
    /// Its value.
    pub value: serde_json::Value,
}

impl OutputValue {
    /// The value as text: strings as they are, anything else as JSON.
    pub fn text(&self) -> String {
        match &self.value {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }
    }
}

/// Runs terraform commands in one working directory.
#[derive(Clone)]
pub struct Terraform {
    binary: PathBuf,
    dir: PathBuf,
    env: Vec<(String, String)>,
    log: LogSink,
    cancel: Cancellation,
    grace: Duration,
    lock_timeout: Duration,
    mask: Vec<String>,
}

impl std::fmt::Debug for Terraform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Variables may hold secrets: their names only.
        f.debug_struct("Terraform")
            .field("binary", &self.binary)
            .field("dir", &self.dir)
            .field("env", &self.env.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("lock_timeout", &self.lock_timeout)
            .finish_non_exhaustive()
    }
}

/// What one command did.
struct Run {
    stdout: String,
    summary: Option<ChangeSummary>,
}

impl Terraform {
    /// `binary` (`terraform`, `tofu`, or a path) in `dir`. Commands run with
    /// `TF_IN_AUTOMATION=1` and `TF_INPUT=0`, log nowhere, and are never cancelled until told.
    pub fn new(binary: impl Into<PathBuf>, dir: impl Into<PathBuf>) -> Self {
        Terraform {
            binary: binary.into(),
            dir: dir.into(),
            env: vec![
                ("TF_IN_AUTOMATION".into(), "1".into()),
                ("TF_INPUT".into(), "0".into()),
            ],
            log: LogSink::discard(),
            cancel: Cancellation::new(),
            grace: Duration::from_secs(30),
            lock_timeout: Duration::ZERO,
            mask: Vec::new(),
        }
    }

    /// Sets environment variables for every command (later ones win).
    pub fn with_envs(mut self, vars: impl IntoIterator<Item = (String, String)>) -> Self {
        self.env.extend(vars);
        self
    }

    /// Sets an environment variable for every command. Commands get nothing else of this
    /// process's environment but `PATH`, `HOME`, `LANG` and `TZ`.
    pub fn with_env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// Where the commands' messages go, as log lines.
    pub fn with_log(mut self, log: LogSink) -> Self {
        self.log = log;
        self
    }

    /// Cancels a running command: it gets SIGINT (terraform stops cleanly and releases its
    /// lock), then SIGKILL after `grace` (default 30 seconds).
    pub fn with_cancel(mut self, cancel: Cancellation, grace: Duration) -> Self {
        self.cancel = cancel;
        self.grace = grace;
        self
    }

    /// How long `plan`, `apply` and `destroy` wait for the state lock (default: not at all).
    pub fn with_lock_timeout(mut self, timeout: Duration) -> Self {
        self.lock_timeout = timeout;
        self
    }

    /// Values never to show in the log (sensitive outputs).
    pub fn with_masked(mut self, values: impl IntoIterator<Item = String>) -> Self {
        self.mask.extend(values);
        self
    }

    /// The working directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    async fn run(&self, args: &[String], json_ui: bool) -> Result<Run, TerraformError> {
        self.run_checked(args, json_ui, false, 0).await
    }

    /// Runs `args`; with `data_on_failure`, a non-zero exit still returns what it printed (for
    /// commands that print a JSON document and exit 1, such as `validate -json`).
    async fn run_checked(
        &self,
        args: &[String],
        json_ui: bool,
        data_on_failure: bool,
        expected_changes: u64,
    ) -> Result<Run, TerraformError> {
        let command = args.first().cloned().unwrap_or_default();
        let mut cmd = tokio::process::Command::new(&self.binary);
        cmd.args(args).current_dir(&self.dir);
        // Nothing of this process's environment but the basics: a configuration under review
        // can read every variable terraform has.
        gitops_core::backend::process::stage_environment(&mut cmd, self.env.iter().cloned());
        let mut ui = UiReader::new(&self.log, &self.mask, json_ui).expecting(expected_changes);
        let stop = StopPolicy::new(StopSignal::Interrupt, self.grace);
        let exit = run_streaming(cmd, &self.cancel, stop, |stream, line| {
            ui.line(stream, line)
        })
        .await
        .map_err(|source| TerraformError::NotFound {
            binary: self.binary.display().to_string(),
            source,
        })?;
        let code = match exit {
            Exit::Cancelled => return Err(TerraformError::Cancelled),
            Exit::Code(0) => {
                return Ok(Run {
                    stdout: ui.stdout,
                    summary: ui.summary,
                });
            }
            Exit::Code(_) if data_on_failure && !ui.stdout.trim().is_empty() => {
                return Ok(Run {
                    stdout: ui.stdout,
                    summary: ui.summary,
                });
            }
            Exit::Code(code) => code,
            Exit::Signal(_) => -1,
        };
        let errors: Vec<Diagnostic> = ui
            .diagnostics
            .into_iter()
            .filter(|d| d.is_error())
            .collect();
        if let Some(lock) = errors
            .iter()
            .find(|d| d.summary.contains("acquiring the state lock"))
        {
            return Err(TerraformError::StateLocked {
                command,
                lock: LockInfo::parse(&lock.detail),
            });
        }
        if !errors.is_empty() {
            return Err(TerraformError::Diagnostics {
                command,
                diagnostics: errors,
            });
        }
        let mut text: Vec<&str> = ui
            .stderr
            .iter()
            .map(|l| {
                l.trim_matches(|c: char| c.is_whitespace() || c == '│' || c == '╷' || c == '╵')
            })
            .filter(|l| !l.is_empty())
            .collect();
        if let Some(first_error) = text.iter().position(|l| l.starts_with("Error")) {
            text.drain(..first_error);
        }
        text.truncate(6);
        Err(TerraformError::Failed {
            command,
            code,
            message: text.join(" "),
        })
    }

    fn args(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|s| (*s).to_owned()).collect()
    }

    fn lock_arg(&self) -> String {
        format!("-lock-timeout={}s", self.lock_timeout.as_secs())
    }

    /// `terraform version -json`: the version (`1.11.4`).
    pub async fn version(&self) -> Result<semver::Version, TerraformError> {
        let run = self.run(&Self::args(&["version", "-json"]), false).await?;
        let parsed: serde_json::Value =
            serde_json::from_str(&run.stdout).map_err(|e| TerraformError::Output {
                command: "version".into(),
                message: e.to_string(),
            })?;
        parsed
            .get("terraform_version")
            .and_then(|v| v.as_str())
            .and_then(|v| semver::Version::parse(v).ok())
            .ok_or_else(|| TerraformError::Output {
                command: "version".into(),
                message: format!("no terraform_version in {parsed}"),
            })
    }

    /// `terraform init -input=false`, with `-backend-config=KEY=VALUE` for each pair
    /// (`-json` where the CLI has it, terraform 1.9 and later).
    pub async fn init(&self, backend_config: &[(String, String)]) -> Result<(), TerraformError> {
        let json = self
            .version()
            .await
            .is_ok_and(|v| v >= semver::Version::new(1, 9, 0));
        let mut args = Self::args(&["init", "-input=false", "-no-color"]);
        if json {
            args.push("-json".into());
        }
        args.extend(
            backend_config
                .iter()
                .map(|(k, v)| format!("-backend-config={k}={v}")),
        );
        let run = self.run(&args, json).await?;
        for line in run.stdout.lines().filter(|l| !l.trim().is_empty()) {
            self.log.line(gitops_core::backend::LogStream::Stdout, line);
        }
        Ok(())
    }

    /// The workspaces, and which one is selected.
    pub async fn workspaces(&self) -> Result<(Vec<String>, String), TerraformError> {
        let run = self
            .run(&Self::args(&["workspace", "list", "-no-color"]), false)
            .await?;
        let mut all = Vec::new();
        let mut current = String::new();
        for line in run.stdout.lines() {
            let name = line.trim_start_matches('*').trim();
            if name.is_empty() {
                continue;
            }
            if line.trim_start().starts_with('*') {
                current = name.to_owned();
            }
            all.push(name.to_owned());
        }
        Ok((all, current))
    }

    /// Selects workspace `name`, creating it first when `create` (`workspace select`, else
    /// `workspace new`). Returns whether it existed.
    pub async fn select_workspace(&self, name: &str, create: bool) -> Result<bool, TerraformError> {
        let (all, current) = self.workspaces().await?;
        let exists = all.iter().any(|w| w == name);
        if exists && current != name {
            self.run(
                &Self::args(&["workspace", "select", "-no-color", name]),
                false,
            )
            .await?;
        } else if !exists && create {
            self.run(&Self::args(&["workspace", "new", "-no-color", name]), false)
                .await?;
        } else if !exists {
            return Err(TerraformError::NoWorkspace {
                name: name.to_owned(),
            });
        }
        Ok(exists)
    }

    /// Deletes workspace `name` (terraform refuses while its state manages resources), after
    /// selecting `default`.
    pub async fn delete_workspace(&self, name: &str) -> Result<(), TerraformError> {
        self.run(
            &Self::args(&["workspace", "select", "-no-color", "default"]),
            false,
        )
        .await?;
        self.run(
            &Self::args(&["workspace", "delete", "-no-color", name]),
            false,
        )
        .await?;
        Ok(())
    }

    fn var_file_args(var_files: &[PathBuf]) -> impl Iterator<Item = String> + '_ {
        var_files
            .iter()
            .map(|f| format!("-var-file={}", f.display()))
    }

    /// `terraform plan -out=PLAN`, with the variable files (`-destroy` to plan a destroy).
    pub async fn plan(
        &self,
        out: &Path,
        var_files: &[PathBuf],
        destroy: bool,
    ) -> Result<ChangeSummary, TerraformError> {
        let mut args = Self::args(&["plan", "-input=false", "-no-color", "-json"]);
        args.push(self.lock_arg());
        args.push(format!("-out={}", out.display()));
        if destroy {
            args.push("-destroy".into());
        }
        args.extend(Self::var_file_args(var_files));
        let run = self.run(&args, true).await?;
        Ok(run.summary.unwrap_or_default())
    }

    /// `terraform show -json PLAN`: what the saved plan does.
    pub async fn show_plan(&self, plan: &Path) -> Result<PlanSummary, TerraformError> {
        let args = vec![
            "show".to_owned(),
            "-json".to_owned(),
            "-no-color".to_owned(),
            plan.display().to_string(),
        ];
        let run = self.run(&args, false).await?;
        PlanSummary::from_show_json(&run.stdout).map_err(|e| TerraformError::Output {
            command: "show".into(),
            message: e.to_string(),
        })
    }

    /// `terraform apply PLAN`: exactly the saved plan.
    pub async fn apply(&self, plan: &Path) -> Result<ChangeSummary, TerraformError> {
        self.apply_counting(plan, 0).await
    }

    /// [`apply`](Self::apply), logging progress (`[2/5] ...`) as each of the plan's `changes`
    /// resource changes completes.
    pub async fn apply_counting(
        &self,
        plan: &Path,
        changes: u64,
    ) -> Result<ChangeSummary, TerraformError> {
        let mut args = Self::args(&["apply", "-input=false", "-no-color", "-json"]);
        args.push(self.lock_arg());
        args.push(plan.display().to_string());
        let run = self.run_checked(&args, true, false, changes).await?;
        Ok(run.summary.unwrap_or_default())
    }

    /// `terraform output -json`: every output of the selected workspace's state.
    pub async fn output(&self) -> Result<BTreeMap<String, OutputValue>, TerraformError> {
        let run = self
            .run(&Self::args(&["output", "-json", "-no-color"]), false)
            .await?;
        serde_json::from_str(&run.stdout).map_err(|e| TerraformError::Output {
            command: "output".into(),
            message: e.to_string(),
        })
    }

    /// `terraform destroy -auto-approve`, with the variable files.
    pub async fn destroy(&self, var_files: &[PathBuf]) -> Result<ChangeSummary, TerraformError> {
        let mut args = Self::args(&[
            "destroy",
            "-auto-approve",
            "-input=false",
            "-no-color",
            "-json",
        ]);
        args.push(self.lock_arg());
        args.extend(Self::var_file_args(var_files));
        let run = self.run(&args, true).await?;
        Ok(run.summary.unwrap_or_default())
    }

    /// `terraform validate -json`: the configuration's errors and warnings (after `init`).
    pub async fn validate(&self) -> Result<Vec<Diagnostic>, TerraformError> {
        #[derive(serde::Deserialize)]
        struct Validation {
            #[serde(default)]
            diagnostics: Vec<Diagnostic>,
        }
        let args = Self::args(&["validate", "-json", "-no-color"]);
        // A configuration with errors exits 1 and still prints its JSON.
        let stdout = self.run_checked(&args, false, true, 0).await?.stdout;
        let v: Validation = serde_json::from_str(&stdout).map_err(|e| TerraformError::Output {
            command: "validate".into(),
            message: e.to_string(),
        })?;
        Ok(v.diagnostics)
    }

    /// `terraform state list`: the addresses the selected workspace's state manages.
    pub async fn state_list(&self) -> Result<Vec<String>, TerraformError> {
        let run = self
            .run(&Self::args(&["state", "list", "-no-color"]), false)
            .await?;
        Ok(run
            .stdout
            .lines()
            .map(str::to_owned)
            .filter(|l| !l.is_empty())
            .collect())
    }
}
