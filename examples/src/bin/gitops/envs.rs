//! `gitops envs`, `history`, `rollback`, `unpin`, `approve`, `reject`: the environments in the
//! ledger of a state dir, and what people do to them.

use gitops_core::config::Action;
use gitops_core::engine::{Engine, EnvironmentState};
use gitops_core::ledger::{DeploymentRecord, DeploymentResult, EnvironmentStatus};
use gitops_examples::outln;

use crate::run::{Common, engine};

/// Who is acting, as the ledger records it: `$USER`, else `cli`.
pub fn actor() -> String {
    std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "cli".to_owned())
}

fn open(common: &Common) -> Result<Engine, String> {
    engine(common)
}

fn err(e: impl std::error::Error + 'static) -> String {
    crate::error(&e)
}

/// A Unix time as `YYYY-MM-DD HH:MM:SS` UTC.
pub fn time(secs: f64) -> String {
    jiff::Timestamp::from_second(secs as i64)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|_| "-".to_owned())
}

pub fn short(sha: Option<&str>) -> String {
    sha.map_or_else(|| "-".to_owned(), |s| s.chars().take(7).collect())
}

pub fn env_json(e: &EnvironmentState) -> serde_json::Value {
    serde_json::json!({
        "name": e.record.name,
        "status": match e.record.status {
            EnvironmentStatus::Active => "active",
            EnvironmentStatus::Stopped => "stopped",
        },
        "version": e.current.as_ref().and_then(|d| d.version.clone()),
        "sha": e.current.as_ref().and_then(|d| d.sha.clone()),
        "url": e.url(),
        "pinned": e.record.pinned_by.is_some(),
        "pull_request": e.record.pull_request,
        "backend": e.record.backend,
    })
}

/// What a deployment did, as `history` shows it: `deploy`, `rollback` or `stop`.
fn action(d: &DeploymentRecord) -> &'static str {
    match d.action {
        Action::Stop => "stop",
        _ if d.rollback_of.is_some() => "rollback",
        _ => "deploy",
    }
}

/// A deployment as `history --json` prints it; the fields `gitops history --help` lists.
pub fn deployment_json(d: &DeploymentRecord) -> serde_json::Value {
    serde_json::json!({
        "id": d.id,
        "environment": d.environment,
        "action": action(d),
        "version": d.version,
        "sha": d.sha,
        "result": d.result.name(),
        "rollback_of": d.rollback_of,
        "run_id": d.run_id,
        "triggered_by": d.triggered_by,
        "trust": d.trust.map(|t| t.as_str()),
        "url": d.outputs.get("url"),
        "message": d.message,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
    })
}

/// One line for a deployment or stop: `● staging now runs v1.0.0 (deployment #3): URL`,
/// `■ preview-pr-1 stopped (deployment #4)`, or what failed.
pub fn deployment_line(d: &DeploymentRecord) -> String {
    let what = d
        .version
        .as_deref()
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| short(d.sha.as_deref()));
    let url = d
        .outputs
        .get("url")
        .map(|u| format!(": {u}"))
        .unwrap_or_default();
    let stop = d.action == Action::Stop;
    match d.result {
        DeploymentResult::Success if stop => {
            format!("■ {} stopped (deployment #{})", d.environment, d.id)
        }
        DeploymentResult::Success => format!(
            "● {} now runs {what} (deployment #{}){url}",
            d.environment, d.id
        ),
        _ => format!(
            "✗ {} {} #{} {}: {}",
            d.environment,
            if stop { "stop" } else { "deployment" },
            d.id,
            d.result.name(),
            d.message.as_deref().unwrap_or("no reason given")
        ),
    }
}

/// The table of environments `gitops envs` prints.
pub fn env_table(envs: &[EnvironmentState]) -> String {
    if envs.is_empty() {
        return "No environments yet: nothing was deployed with this state dir.".to_owned();
    }
    let mut out = format!(
        "{:<22} {:<8} {:<10} {:<8} {:<7} {}\n",
        "ENVIRONMENT", "STATUS", "VERSION", "COMMIT", "PINNED", "URL"
    );
    for e in envs {
        let status = match e.record.status {
            EnvironmentStatus::Active => "active",
            EnvironmentStatus::Stopped => "stopped",
        };
        let current = e.current.as_ref();
        out += &format!(
            "{:<22} {:<8} {:<10} {:<8} {:<7} {}\n",
            e.record.name,
            status,
            current.and_then(|d| d.version.as_deref()).unwrap_or("-"),
            short(current.and_then(|d| d.sha.as_deref())),
            if e.record.pinned_by.is_some() {
                "yes"
            } else {
                "no"
            },
            e.url().unwrap_or("-"),
        );
    }
    out.trim_end().to_owned()
}

/// The table of deployments `gitops history` prints.
pub fn history_table(history: &[DeploymentRecord]) -> String {
    let mut out = format!(
        "{:<5} {:<20} {:<8} {:<10} {:<8} {:<12} {:<20} {}\n",
        "ID", "ENVIRONMENT", "ACTION", "VERSION", "COMMIT", "RESULT", "STARTED (UTC)", "BY"
    );
    for d in history {
        let action = action(d);
        let mut by = d.triggered_by.clone().unwrap_or_else(|| "-".to_owned());
        if let Some(of) = d.rollback_of {
            by += &format!(" (redeploys #{of})");
        }
        out += &format!(
            "{:<5} {:<20} {:<8} {:<10} {:<8} {:<12} {:<20} {}\n",
            format!("#{}", d.id),
            d.environment,
            action,
            d.version.as_deref().unwrap_or("-"),
            short(d.sha.as_deref()),
            d.result.name(),
            time(d.started_at),
            by,
        );
    }
    out.trim_end().to_owned()
}

pub fn print_json(value: &serde_json::Value) -> Result<(), String> {
    let text = serde_json::to_string_pretty(value).map_err(err)?;
    outln!("{text}");
    Ok(())
}

pub fn envs(common: Common, json: bool) -> Result<(), String> {
    let envs = open(&common)?.environments().map_err(err)?;
    if json {
        return print_json(&serde_json::Value::Array(
            envs.iter().map(env_json).collect(),
        ));
    }
    outln!("{}", env_table(&envs));
    Ok(())
}

/// `gitops history [ENV]`: the deployments and stops of `env`, or of every environment, newest
/// first.
pub fn history(env: Option<&str>, common: Common, json: bool) -> Result<(), String> {
    let engine = open(&common)?;
    let history = match env {
        Some(env) => engine.history(env),
        None => engine
            .ledger()
            .history(None, usize::MAX >> 1)
            .map_err(Into::into),
    }
    .map_err(err)?;
    if json {
        return print_json(&serde_json::Value::Array(
            history.iter().map(deployment_json).collect(),
        ));
    }
    if history.is_empty() {
        outln!("No deployments yet: nothing was deployed with this state dir.");
        return Ok(());
    }
    outln!("{}", history_table(&history));
    Ok(())
}

pub async fn rollback(env: &str, to: Option<&str>, common: Common) -> Result<(), String> {
    let engine = open(&common)?;
    let record = engine.rollback(env, to, &actor()).await.map_err(err)?;
    outln!("{}", describe_rollback(&record));
    // The forges that were sent the deployment it redeploys get the rollback, through the
    // outbox (sent by `gitops serve` on this state dir). Production: the policy says so, or
    // the name does (as GitHub decides by default).
    let config_name = &record.inputs.config_name;
    let production = (engine.policy().environments.get(config_name))
        .and_then(|rules| rules.production)
        .unwrap_or(config_name == "production");
    let reporter = gitops_core::report::Reporter::new(engine.ledger().clone());
    match reporter.rollback(&record, production) {
        Ok(0) => {}
        Ok(_) => {
            outln!("  The forge that showed the redeployed deployment is told (by `gitops serve`).")
        }
        Err(e) => eprintln!(
            "warning: the rollback is not reported to the forge: {}",
            err(e)
        ),
    }
    Ok(())
}

/// What a finished rollback did, for people.
pub fn describe_rollback(record: &DeploymentRecord) -> String {
    let what = record
        .version
        .as_deref()
        .map(|v| format!("v{v}"))
        .unwrap_or_else(|| short(record.sha.as_deref()));
    let status = if record.result == DeploymentResult::Success {
        "is live again"
    } else {
        "failed"
    };
    format!(
        "↩ {} rolled back: {what} {status} (deployment #{}, redeploying #{}{}).\n  {} is pinned: pipeline deploys to it wait until `gitops unpin {}`.",
        record.environment,
        record.id,
        record.rollback_of.unwrap_or_default(),
        record
            .outputs
            .get("url")
            .map(|u| format!(", {u}"))
            .unwrap_or_default(),
        record.environment,
        record.environment,
    )
}

pub fn unpin(env: &str, common: Common) -> Result<(), String> {
    if open(&common)?.unpin(env).map_err(err)? {
        outln!("{env} is unpinned: pipeline deploys reach it again.");
    } else {
        outln!("{env} was not pinned.");
    }
    Ok(())
}

pub fn decide(run: &str, stage: &str, approve: bool, common: Common) -> Result<(), String> {
    let engine = open(&common)?;
    let by = actor();
    if approve {
        engine.approve(run, stage, &by).map_err(err)?;
        outln!("Approved: stage {stage} of run {run} deploys now (approved by {by}).");
    } else {
        engine.reject(run, stage, &by).map_err(err)?;
        outln!("Rejected: stage {stage} of run {run} fails (rejected by {by}).");
    }
    Ok(())
}

/// `gitops trust-pr`: lets a fork's pull request run (or, with `revoke`, no longer).
pub fn trust_pr(
    number: u64,
    sha: Option<&str>,
    repo: Option<&str>,
    revoke: bool,
    common: Common,
) -> Result<(), String> {
    if let Some(sha) = sha {
        if sha.len() != 40 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "error: --sha {sha}: give the full 40-character commit id of the pull request's head"
            ));
        }
    }
    let ledger = open(&common)?.ledger().clone();
    let repo_key = repo.unwrap_or("*");
    if revoke {
        return if ledger
            .distrust_pull_request(repo_key, number)
            .map_err(err)?
        {
            outln!("Pull request #{number} is no longer trusted.");
            Ok(())
        } else {
            Err(format!("error: pull request #{number} was not trusted"))
        };
    }
    let by = actor();
    ledger
        .trust_pull_request(repo_key, number, sha, &by)
        .map_err(err)?;
    let at = match sha {
        Some(sha) => format!("at commit {}", &sha[..12]),
        None => "at every commit (pass --sha to trust one commit only)".to_owned(),
    };
    let of = repo.map_or_else(String::new, |r| format!(" of {r}"));
    outln!(
        "Pull request #{number}{of} is trusted {at} by {by}: its stages run, without secrets, deploying nothing."
    );
    Ok(())
}
