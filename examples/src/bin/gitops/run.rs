//! `gitops run`, `gitops rerun` and `gitops resume`: execute runs with live progress.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::config::LoadOptions;
use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::event::GitEvent;
use gitops_core::ledger::Retention;
use gitops_core::repo::Repository;
use gitops_core::scheduler::{RunReport, RunResult};
use gitops_core::trust::Policy;
use gitops_examples::output;
use gitops_examples::text::count;
use gitops_examples::{errln, outln};

use crate::progress;

/// Options shared by the commands that run stages.
pub struct Common {
    pub state: PathBuf,
    pub report: Option<PathBuf>,
    /// The policy file's, with `--secret-env` and `--pass-env` added.
    pub policy: Policy,
    pub trusted_ref: Option<String>,
    pub max_parallel: Option<usize>,
    /// The cap on each stage's stored log.
    pub max_log_bytes: u64,
    /// Which finished runs (and their logs) are kept.
    pub retention: Retention,
}

/// The state dir: `--state`, else `$GITOPS_STATE`, else the user's state directory; made
/// absolute here, once, so that what is derived from it (environment directories and their
/// `file://` URLs, terraform's plugin cache, checkouts) means the same from any directory.
pub fn state_dir(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    let dir = if let Some(dir) = flag {
        dir
    } else if let Some(dir) = std::env::var_os("GITOPS_STATE").filter(|v| !v.is_empty()) {
        PathBuf::from(dir)
    } else if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        PathBuf::from(dir).join("gitops")
    } else {
        match std::env::var_os("HOME").filter(|v| !v.is_empty()) {
            Some(home) => PathBuf::from(home).join(".local/state/gitops"),
            None => {
                return Err(
                    "error: no state directory: pass --state DIR or set GITOPS_STATE".to_owned(),
                );
            }
        }
    };
    std::path::absolute(&dir).map_err(|e| format!("error: state directory {}: {e}", dir.display()))
}

/// The app's backends, for the state dir `state`: the local backend runs stages and deploys
/// environments under `<state>/environments`; `docker` runs them on the engine at `DOCKER_HOST`
/// or the local socket (asked only when a stage uses it); `terraform` drives the CLI on PATH,
/// keeping local state under `<state>/terraform`; `k8s` uses the cluster of `KUBECONFIG` or the
/// one it runs in (asked only when a stage uses it). Building it connects to nothing and touches
/// no file.
pub fn registry(state: &Path) -> BackendRegistry {
    let local = Arc::new(
        LocalBackend::builder()
            .with_environments_dir(state.join("environments"))
            .build(),
    );
    let docker = Arc::new(gitops_docker::DockerBackend::builder().lazy());
    let terraform = Arc::new(gitops_terraform::TerraformBackend::new(
        state.join("terraform"),
    ));
    let k8s = Arc::new(gitops_k8s::KubernetesBackend::lazy());
    BackendRegistry::new()
        .with_executor("local", local.clone())
        .with_deployer("local", local)
        .with_executor("docker", docker.clone())
        .with_deployer("docker", docker)
        .with_executor("terraform", terraform.clone())
        .with_deployer("terraform", terraform)
        .with_executor("k8s", k8s.clone())
        .with_deployer("k8s", k8s)
}

/// What the commands that only read a config (`validate`, `plan`, `graph`) check it with: the
/// backend names and parameters of [`registry`], the very ones `run` loads configs with. The
/// state dir plays no part in them, so none is needed.
pub fn load_options() -> LoadOptions {
    LoadOptions::from_registry(&registry(Path::new("")))
}

/// The engine of the state dir, on [`registry`].
pub fn engine(common: &Common) -> Result<Engine, String> {
    let registry = registry(&common.state);
    let mut options = gitops_core::scheduler::SchedulerOptions::default();
    if let Some(n) = common.max_parallel {
        options = options.with_max_parallel(n);
    }
    Engine::with_options(&common.state, registry, options)
        .map(|e| {
            e.with_policy(common.policy.clone())
                .with_max_log_bytes(common.max_log_bytes)
        })
        .map_err(|e| crate::error(&e))
}

/// Removes the finished runs (and their logs) that `--keep-runs` and `--keep-days` let go,
/// saying how many on standard error.
pub fn prune(engine: &Engine, retention: &Retention) -> Result<(), String> {
    let removed = engine.prune(retention).map_err(|e| crate::error(&e))?;
    if !removed.is_empty() {
        errln!(
            "removed {} and their logs (--keep-runs/--keep-days)",
            count(removed.len(), "old run")
        );
    }
    Ok(())
}

/// The daily [`prune`] of watch and serve; stops when dropped.
pub struct DailyPruning(tokio::task::JoinHandle<()>);

impl Drop for DailyPruning {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// [`prune`] now, then once a day until the returned value is dropped (watch, serve).
pub fn prune_daily(engine: &Engine, retention: Retention) -> Result<DailyPruning, String> {
    prune(engine, &retention)?;
    let engine = engine.clone();
    Ok(DailyPruning(tokio::spawn(async move {
        const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
        let mut every = tokio::time::interval_at(tokio::time::Instant::now() + DAY, DAY);
        loop {
            every.tick().await;
            let engine = engine.clone();
            let pruned = tokio::task::spawn_blocking(move || prune(&engine, &retention)).await;
            if let Ok(Err(e)) = pruned {
                errln!("{e}");
            }
        }
    })))
}

pub fn run_options(common: &Common) -> Result<RunOptions, String> {
    let mut options = RunOptions::default();
    options.actor = Some(crate::envs::actor());
    options.trusted_ref = common.trusted_ref.clone();
    Ok(options)
}

/// Prints what the engine noted about a run (environments of the event's config not used).
pub fn print_notes(runs: &[StartedRun]) {
    let mut seen = std::collections::BTreeSet::new();
    for note in runs.iter().flat_map(|r| &r.notes) {
        if seen.insert(note) {
            errln!("note: {note}");
        }
    }
}

pub async fn run(
    event_file: &Path,
    repo: &Path,
    in_place: bool,
    common: Common,
) -> Result<(), String> {
    let bytes = std::fs::read(event_file)
        .map_err(|e| format!("error: cannot read {}: {e}", event_file.display()))?;
    let event: GitEvent = serde_json::from_slice(&bytes).map_err(|e| {
        format!(
            "error: {} is not a normalised event: {e}",
            event_file.display()
        )
    })?;
    let repo = Repository::open(repo).map_err(|e| crate::error(&e))?;
    let engine = engine(&common)?;
    prune(&engine, &common.retention)?;
    let mut options = run_options(&common)?;
    options.in_place = in_place;
    let runs = engine.start(&event, &repo, &options).map_err(|e| match e {
        // Located config errors read `file:line:col: message`, as `gitops validate` prints them.
        gitops_core::Error::Config(e) => e.to_string(),
        e => crate::error(&e),
    })?;
    print_notes(&runs);
    let result = if runs.is_empty() {
        outln!(
            "No pipeline matches this {} event: nothing to run.",
            event.kind()
        );
        Ok(())
    } else {
        execute(&engine, runs, &common).await
    };
    finish_event(&engine, &event).await?;
    result
}

/// Whether `event` has a commit to run; says why not when it has none (a deleted branch or tag:
/// its config cannot be read from a commit that is gone). A release names only its tag, which
/// the engine resolves to its commit in the repository.
pub fn names_commit(event: &GitEvent) -> bool {
    if event.is_deletion() {
        errln!(
            "  ({} {} deleted: no commit of it to run)",
            event.kind(),
            event.git_ref().unwrap_or_default()
        );
    }
    !event.is_deletion()
}

/// Stops what the event ends (a closed pull request's environments), saying so.
pub async fn finish_event(engine: &Engine, event: &GitEvent) -> Result<(), String> {
    for stopped in engine
        .finish_event(event)
        .await
        .map_err(|e| crate::error(&e))?
    {
        outln!(
            "■ {} stopped: its pull request was closed (deployment #{}, {})",
            stopped.environment,
            stopped.deployment.id,
            stopped.deployment.result.name()
        );
    }
    Ok(())
}

pub async fn rerun(run_id: &str, from: Option<&str>, common: Common) -> Result<(), String> {
    let engine = engine(&common)?;
    let run = engine
        .rerun(run_id, from, &run_options(&common)?)
        .map_err(|e| crate::error(&e))?;
    outln!("Re-running run {run_id} as {}", run.id);
    execute(&engine, vec![run], &common).await
}

pub async fn resume(run_id: Option<&str>, common: Common) -> Result<(), String> {
    let engine = engine(&common)?;
    let ids: Vec<String> = match run_id {
        Some(id) => vec![id.to_owned()],
        None => engine
            .interrupted()
            .map_err(|e| crate::error(&e))?
            .into_iter()
            .map(|r| r.id)
            .collect(),
    };
    if ids.is_empty() {
        outln!(
            "No interrupted run in {}: nothing to resume.",
            common.state.display()
        );
        return Ok(());
    }
    let options = run_options(&common)?;
    let mut runs = Vec::new();
    for id in &ids {
        let run = engine.resume(id, &options).map_err(|e| crate::error(&e))?;
        let kept = count(run.pipeline.stages.len(), "stage");
        outln!("Resuming run {id} ({kept}; finished ones are kept)");
        runs.push(run);
    }
    execute(&engine, runs, &common).await
}

/// What ends a command before its time: Ctrl-C (`interrupted`), or standard output closed
/// (nobody reads what it prints any more); which of the two.
pub async fn interrupted() -> &'static str {
    tokio::select! {
        Ok(()) = tokio::signal::ctrl_c() => "interrupted",
        () = output::closed() => "standard output closed",
    }
}

/// [`interrupted`], said as the reason running stages are being stopped.
pub async fn cancelled() {
    let why = interrupted().await;
    errln!("{why}: cancelling (running stages are being stopped)");
}

/// Runs every prepared run at once, following their progress; Ctrl-C (or standard output
/// closing) cancels them all. Closes with the environments the runs deployed to or stopped.
async fn execute(engine: &Engine, runs: Vec<StartedRun>, common: &Common) -> Result<(), String> {
    let multi = progress::multi();
    let mut tasks = Vec::new();
    let mut cancels = Vec::new();
    for run in runs {
        outln!(
            "▶ pipeline {} (run {}, {})",
            run.pipeline.name,
            run.id,
            count(run.pipeline.stages.len(), "stage")
        );
        let follower = tokio::spawn(progress::follow(
            run.subscribe(),
            run.id.clone(),
            multi.clone(),
        ));
        cancels.push(run.cancel_token());
        tasks.push((tokio::spawn(run.execute()), follower));
    }
    let interrupt = tokio::spawn(async move {
        cancelled().await;
        cancels.iter().for_each(|c| c.cancel());
    });
    let mut reports: Vec<RunReport> = Vec::new();
    let mut errors = Vec::new();
    for (task, follower) in tasks {
        match task.await {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => errors.push(crate::error(&e)),
            Err(e) => errors.push(format!("error: a run crashed: {e}")),
        }
        let _ = follower.await;
    }
    interrupt.abort();
    for report in &reports {
        outln!("{}", progress::summary(report));
    }
    for report in &reports {
        let made = engine
            .ledger()
            .run_deployments(&report.run_id)
            .map_err(|e| crate::error(&e))?;
        for d in &made {
            outln!("{}", crate::envs::deployment_line(d));
        }
    }
    for report in &reports {
        for line in progress::failures(report) {
            errln!("{line}");
        }
    }
    if let Some(path) = &common.report {
        let json = if reports.len() == 1 {
            serde_json::to_string_pretty(&reports[0])
        } else {
            serde_json::to_string_pretty(&reports)
        };
        let json = json.map_err(|e| crate::error(&e))?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("error: cannot write {}: {e}", path.display()))?;
    }
    if !errors.is_empty() {
        return Err(errors.join("\n"));
    }
    if reports.iter().any(|r| r.result != RunResult::Success) {
        return Err(String::new());
    }
    Ok(())
}
