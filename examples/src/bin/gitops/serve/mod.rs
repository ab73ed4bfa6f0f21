//! `gitops serve`: the webhook receiver, as a service. `POST /webhooks/github`,
//! `/webhooks/gitlab`, `/webhooks/bitbucket` and `/webhooks/gitea` (Gitea and Forgejo) check the
//! signature (or token), turn the payload into events, check they are of the served repository, and commit it to the ledger's inbox before answering
//! (see [`receive`]); a worker takes the inbox in order and runs what each event triggers (see
//! [`worker`]); or, with `--no-run`, each accepted event is printed as a line of JSON.
//! `GET /healthz` says whether it is up and how, `GET /metrics` what it did (Prometheus text).
//!
//! Shutdown (SIGTERM or Ctrl-C): no new connections; open requests finish; running stages get
//! `--shutdown-grace` to finish and are then cancelled; what waits in the inbox stays there for
//! the next start. A second signal cancels everything at once, in every phase.

mod commit;
pub(crate) mod http;
pub(crate) mod lines;
pub(crate) mod metrics;
mod receive;
mod report;
mod worker;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use gitops_core::ledger::{InboxLimits, Ledger};
use gitops_core::repo::Repository;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use self::metrics::Metrics;
use self::receive::Receiver;
use crate::run::{Common, engine, run_options};
use crate::ui::command::UiOptions;

/// What `gitops serve` is asked to do.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free one, printed at start).
    #[arg(long)]
    listen: SocketAddr,
    /// The local clone the events belong to (fetched from its origin before planning).
    #[arg(long)]
    repo: PathBuf,
    /// The repository served, as the forge names it (`owner/name`; repeatable); events of
    /// others get 403. Default: the policy's `repositories`, else the name in the clone's
    /// origin URL.
    #[arg(long = "repo-name", value_name = "OWNER/NAME")]
    repo_names: Vec<String>,
    /// Record each accepted event in the inbox and print it as a line of JSON instead of
    /// running it.
    #[arg(long)]
    no_run: bool,
    /// The environment variable holding the GitHub webhook secret (enables GitHub).
    #[arg(long, value_name = "NAME")]
    github_secret_env: Option<String>,
    /// The environment variable holding a GitHub token that may write commit statuses,
    /// deployments and pull request comments: the runs of GitHub deliveries then report there.
    #[arg(long, value_name = "NAME")]
    github_token_env: Option<String>,
    /// Report as this GitHub App (its App ID or client ID) instead of with a token, with the
    /// token of its installation on each repository; needs --github-app-key-file.
    #[arg(
        long,
        value_name = "ID",
        requires = "github_app_key_file",
        conflicts_with = "github_token_env"
    )]
    github_app_id: Option<String>,
    /// The GitHub App's private key (the PEM file GitHub gives: PKCS#1, or PKCS#8).
    #[arg(
        long,
        value_name = "PATH",
        requires = "github_app_id",
        conflicts_with = "github_token_env"
    )]
    github_app_key_file: Option<PathBuf>,
    /// GitHub's REST API (GitHub Enterprise Server: `https://HOST/api/v3`).
    #[arg(long, value_name = "URL", default_value = "https://api.github.com")]
    github_api_url: String,
    /// The environment variable holding the GitLab webhook token (enables GitLab).
    #[arg(long, value_name = "NAME")]
    gitlab_token_env: Option<String>,
    /// The environment variable holding the Bitbucket Cloud webhook secret (enables
    /// `/webhooks/bitbucket`).
    #[arg(long, value_name = "NAME")]
    bitbucket_secret_env: Option<String>,
    /// The environment variable holding the Gitea or Forgejo webhook secret (enables
    /// `/webhooks/gitea`).
    #[arg(long, value_name = "NAME")]
    gitea_secret_env: Option<String>,
    /// The environment variable holding a GitLab API token (scope `api`): the runs of GitLab
    /// deliveries then set commit statuses, deployments and the merge request's note.
    #[arg(long, value_name = "NAME")]
    gitlab_api_token_env: Option<String>,
    /// The GitLab instance reported to (self-managed: `https://gitlab.example.com`).
    #[arg(long, value_name = "URL", default_value = "https://gitlab.com")]
    gitlab_url: String,
    /// The environment variable holding a Gitea or Forgejo token (`write:repository`,
    /// `write:issue`): the runs of Gitea deliveries then set commit statuses and the pull
    /// request's comment on the instance at `--gitea-url`.
    #[arg(long, value_name = "NAME", requires = "gitea_url")]
    gitea_api_token_env: Option<String>,
    /// The Gitea or Forgejo instance reported to (`https://gitea.example`).
    #[arg(long, value_name = "URL")]
    gitea_url: Option<String>,
    /// The environment variable holding a Bitbucket Cloud access token (repository, project or
    /// workspace; "Repositories: write", "Pull requests: write"): the runs of Bitbucket
    /// deliveries then set build statuses and the pull request's comment.
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "bitbucket_app_password_env"
    )]
    bitbucket_api_token_env: Option<String>,
    /// The environment variable holding a Bitbucket app password of `--bitbucket-username`,
    /// instead of an access token.
    #[arg(long, value_name = "NAME", requires = "bitbucket_username")]
    bitbucket_app_password_env: Option<String>,
    /// The Bitbucket user whose app password `--bitbucket-app-password-env` holds.
    #[arg(long, value_name = "USER", requires = "bitbucket_app_password_env")]
    bitbucket_username: Option<String>,
    /// Bitbucket Cloud's API.
    #[arg(
        long,
        value_name = "URL",
        default_value = "https://api.bitbucket.org/2.0"
    )]
    bitbucket_api_url: String,
    /// Accept unsigned requests for the providers given no secret (for a test setup only:
    /// anyone who can reach the server can then run pipelines).
    #[arg(long)]
    allow_unsigned: bool,
    /// Largest request body accepted (bytes; larger gets 413).
    #[arg(long, default_value_t = 25 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Bytes of request bodies read at once, over all connections; past it, 503.
    #[arg(long, value_name = "BYTES", default_value_t = 256 * 1024 * 1024)]
    max_body_bytes_in_flight: usize,
    /// Time for a request's headers to arrive, and for a kept-alive connection's next request
    /// to begin.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = positive_duration)]
    header_timeout: Duration,
    /// Time for a request's body to arrive (408 after it).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = positive_duration)]
    body_timeout: Duration,
    /// Time without a byte read or written after which a connection is closed.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = positive_duration)]
    idle_timeout: Duration,
    /// Open connections at most; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_connections: usize,
    /// Runs at once (default: the number of CPUs); the other deliveries wait in the inbox.
    #[arg(long, value_name = "N")]
    max_runs: Option<usize>,
    /// Deliveries waiting in the inbox past which new ones get 503 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    max_queued: u64,
    /// On shutdown, how long running stages may go on before they are cancelled.
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = gitops_core::config::parse_duration)]
    shutdown_grace: Duration,
    /// A body received again within this time is a duplicate whatever its delivery id
    /// (0s: bodies are not compared).
    #[arg(long, value_name = "DURATION", default_value = "7d", value_parser = gitops_core::config::parse_duration)]
    replay_window: Duration,
    /// The server's log: one line per delivery and per run, as text or JSON.
    #[arg(long, value_name = "FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    #[command(flatten)]
    ui: UiOptions,
}

fn positive_duration(s: &str) -> Result<Duration, String> {
    match gitops_core::config::parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".to_owned()),
        Err(e) => Err(e),
    }
}

fn secret(flag: &str, name: &Option<String>) -> Result<Option<String>, String> {
    match name {
        None => Ok(None),
        Some(name) => std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .map(Some)
            .ok_or_else(|| format!("error: {flag} {name}: no such environment variable, or empty")),
    }
}

/// The logger: text or JSON lines on standard error, written in batches (see [`lines`]) until
/// the returned guard is dropped.
pub(crate) fn init_log(format: &str) -> lines::Flush {
    let flush = lines::start();
    let builder = tracing_subscriber::fmt()
        .with_writer(lines::Log)
        .with_target(false)
        .with_max_level(tracing::Level::INFO);
    // Only the first call in a process installs a logger.
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    flush
}

/// Text for a log line: control characters (a line feed, a terminal escape) written as
/// escapes, so that text from configs and payloads in an error cannot forge a line of the log
/// or drive the terminal that shows it.
pub(crate) fn log_safe(text: impl std::fmt::Display) -> String {
    let text = text.to_string();
    if !text.chars().any(char::is_control) {
        return text;
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// The repositories served, lowercase: `--repo-name`, else the policy's, else the origin's.
fn served_repos(
    args: &ServeArgs,
    common: &Common,
    repo: &Repository,
) -> Result<Vec<String>, String> {
    let names = if !args.repo_names.is_empty() {
        let mut names = Vec::new();
        for name in &args.repo_names {
            let trimmed = name.trim().trim_matches('/');
            if trimmed.split('/').count() < 2
                || trimmed
                    .split('/')
                    .any(|p| p.is_empty() || p == "." || p == "..")
            {
                return Err(format!("error: --repo-name {name}: expected owner/name"));
            }
            names.push(trimmed.to_owned());
        }
        names
    } else if !common.policy.repositories.is_empty() {
        common.policy.repositories.clone()
    } else if let Some(name) = repo.remote_repo_name("origin") {
        vec![name]
    } else {
        return Err(format!(
            "error: which repository does {} serve? Its clone has no origin URL naming one; give --repo-name owner/name",
            args.repo.display()
        ));
    };
    Ok(names.iter().map(|n| n.to_ascii_lowercase()).collect())
}

/// What `/healthz` reports.
struct Health {
    ledger: Ledger,
    unsigned: Vec<&'static str>,
    running: bool,
    metrics: Arc<Metrics>,
}

/// Raises the soft limit of open files to the hard one, so that `--max-connections` idle
/// connections cannot leave stages without file descriptors; warns when it is still too low.
fn raise_open_files(max_connections: usize) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    let limit = if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    // Connections, and room for the ledger, checkouts and the stages' processes.
    let wanted = max_connections as u64 + 256;
    if limit < wanted {
        tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is low for --max-connections: stages may fail with \"Too many open files\"; raise it (ulimit -n, LimitNOFILE=) or lower --max-connections"
        );
    }
}

pub async fn serve(args: ServeArgs, common: Common) -> Result<(), String> {
    let _lines = init_log(&args.log_format);
    raise_open_files(args.max_connections);
    let github_secret = secret("--github-secret-env", &args.github_secret_env)?;
    let gitlab_token = secret("--gitlab-token-env", &args.gitlab_token_env)?;
    let bitbucket_secret = secret("--bitbucket-secret-env", &args.bitbucket_secret_env)?;
    let gitea_secret = secret("--gitea-secret-env", &args.gitea_secret_env)?;
    let unsigned: Vec<&'static str> = [
        ("github", github_secret.is_none()),
        ("gitlab", gitlab_token.is_none()),
        ("bitbucket", bitbucket_secret.is_none()),
        ("gitea", gitea_secret.is_none()),
    ]
    .into_iter()
    .filter_map(|(provider, unsigned)| unsigned.then_some(provider))
    .collect();
    if unsigned.len() == 4 && !args.allow_unsigned {
        return Err("error: serve needs a webhook secret: --github-secret-env NAME, --gitlab-token-env NAME, --bitbucket-secret-env NAME or --gitea-secret-env NAME (or --allow-unsigned, to accept unsigned requests from anyone who can reach it)".to_owned());
    }
    let mut unsigned = unsigned;
    if !args.allow_unsigned {
        unsigned.clear();
    }
    for provider in &unsigned {
        tracing::warn!(
            provider,
            "--allow-unsigned: unsigned {provider} requests are accepted and run"
        );
    }
    let access = args.ui.access()?;
    let public_url = args.ui.public_url()?;
    let repo = Repository::open(&args.repo).map_err(|e| crate::error(&e))?;
    let repos = served_repos(&args, &common, &repo)?;
    let engine = Arc::new(engine(&common)?);
    let _pruning = crate::run::prune_daily(&engine, common.retention)?;
    let ledger = engine.ledger().clone();
    let (reporting, sender) = match report::forges(&args, &ledger, public_url.as_deref())? {
        Some((reporting, sender)) => (Some(reporting), Some(sender)),
        None => (None, None),
    };
    let metrics = Arc::new(Metrics::new());
    let wake = Arc::new(Notify::new());
    let run = !args.no_run;
    let limits = InboxLimits {
        max_queued: args.max_queued,
        replay_window_secs: args.replay_window.as_secs_f64(),
        run,
    };
    // Checkpoints (and their fsync) off the path of the deliveries' commits.
    let _checkpoints = ledger
        .checkpoint_in_background(Duration::from_secs(1))
        .map_err(|e| crate::error(&e))?;
    let inbox = commit::Committer::new(ledger.clone(), limits);
    let receiver = Arc::new(Receiver {
        github_secret: github_secret.map(String::into_bytes),
        gitlab_token,
        bitbucket_secret: bitbucket_secret.map(String::into_bytes),
        gitea_secret: gitea_secret.map(String::into_bytes),
        allow_unsigned: args.allow_unsigned,
        repos: repos.clone(),
        inbox,
        limits,
        max_body_bytes: args.max_body_bytes,
        // At least one body of the largest size fits, or such a delivery could never be read.
        bodies: Arc::new(Semaphore::new(
            (args.max_body_bytes_in_flight.max(args.max_body_bytes) / 1024 + 1)
                .clamp(1, Semaphore::MAX_PERMITS),
        )),
        body_timeout: args.body_timeout,
        metrics: metrics.clone(),
        wake: wake.clone(),
    });
    let health = Arc::new(Health {
        ledger: ledger.clone(),
        unsigned: unsigned.clone(),
        running: run,
        metrics: metrics.clone(),
    });
    let router = Router::new()
        .route("/webhooks/github", post(receive::github))
        .route("/webhooks/gitlab", post(receive::gitlab))
        .route("/webhooks/bitbucket", post(receive::bitbucket))
        .route("/webhooks/gitea", post(receive::gitea))
        .with_state(receiver)
        .merge(
            Router::new()
                .route("/healthz", get(healthz))
                .route("/metrics", get(metrics_text))
                .with_state(health),
        );
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("error: cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| format!("error: {e}"))?;

    let (shutdown, abort) = (CancellationToken::new(), CancellationToken::new());
    // The dashboard and the API, behind their access rules; webhooks, health and metrics not.
    let ui = crate::ui::UiState {
        engine: engine.clone(),
        public_url,
    };
    let router = router.merge(crate::ui::with_access(ui, access, shutdown.clone()));
    let worker = run.then(|| {
        let mut options = run_options(&common)?;
        options.actor = Some("webhook".to_owned());
        // The clone's own branches are not fetched into: its origin's default branch is the
        // trusted one.
        if options.trusted_ref.is_none() && repo.remote_url("origin").is_some() {
            options.trusted_ref = repo
                .head_branch()
                .map(|b| format!("refs/remotes/origin/{b}"));
        }
        let max_runs = args
            .max_runs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
            .max(1);
        let worker = Arc::new(worker::Worker {
            engine,
            repo,
            options,
            ledger: ledger.clone(),
            metrics: metrics.clone(),
            wake,
            slots: Arc::new(Semaphore::new(max_runs)),
            order: Arc::default(),
            shutdown: shutdown.clone(),
            abort: abort.clone(),
            keep_secs: args.replay_window.as_secs_f64().max(24.0 * 3600.0),
            reporting,
        });
        Ok::<_, String>(tokio::spawn(worker.work()))
    });
    let worker = worker.transpose()?;
    args.ui.warn_if_open(addr);
    if args.log_format != "json" {
        // After the log's lines before it.
        lines::flush_all();
        eprintln!("listening on http://{addr}");
    }
    tracing::info!(%addr, repositories = repos.join(","), run, "serving");
    // Updates it has not sent when the server stops stay in the outbox for the next start.
    let sending = CancellationToken::new();
    if let Some(sender) = sender {
        tokio::spawn(sender.run(sending.clone()));
    }
    tokio::spawn(signals(
        shutdown.clone(),
        abort.clone(),
        args.shutdown_grace,
    ));
    http::serve(
        listener,
        router,
        http::ConnectionLimits {
            header_timeout: args.header_timeout,
            idle_timeout: args.idle_timeout,
            max_connections: args.max_connections,
        },
        metrics,
        shutdown,
        abort,
    )
    .await;
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    sending.cancel();
    tracing::info!("stopped");
    Ok(())
}

/// The first signal shuts down gracefully: `abort` follows after `grace`; a second signal
/// aborts at once. The streams are made once, so that a second signal sent right after the
/// first is not missed.
pub(crate) async fn signals(
    shutdown: CancellationToken,
    abort: CancellationToken,
    grace: Duration,
) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot listen for signals: SIGTERM and Ctrl-C will not stop the server");
        return;
    };
    let mut next = async move || {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    };
    next().await;
    tracing::info!(
        grace_secs = grace.as_secs_f64(),
        "shutting down: no new requests; running stages may finish within the grace period (signal again to cancel them now)"
    );
    shutdown.cancel();
    tokio::select! {
        _ = tokio::time::sleep(grace) => {
            tracing::warn!("the grace period is over: cancelling the running stages");
        }
        _ = next() => {
            tracing::warn!("second signal: cancelling the running stages");
        }
    }
    abort.cancel();
}

async fn inbox_depth(ledger: &Ledger) -> (u64, u64) {
    let ledger = ledger.clone();
    match tokio::task::spawn_blocking(move || ledger.inbox_depth()).await {
        Ok(Ok(d)) => (d.queued, d.running),
        _ => (0, 0),
    }
}

async fn healthz(State(health): State<Arc<Health>>) -> axum::Json<serde_json::Value> {
    let (queued, running) = inbox_depth(&health.ledger).await;
    let mut body = serde_json::json!({
        "status": "ok",
        "runs": health.running,
        "inbox": { "queued": queued, "running": running },
    });
    if !health.unsigned.is_empty() {
        body["warning"] = format!(
            "--allow-unsigned: unsigned requests are accepted for {}",
            health.unsigned.join(", ")
        )
        .into();
        body["unsigned"] = health.unsigned.clone().into();
    }
    axum::Json(body)
}

async fn metrics_text(State(health): State<Arc<Health>>) -> impl IntoResponse {
    let (queued, running) = inbox_depth(&health.ledger).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        health.metrics.render(queued, running),
    )
}

#[cfg(test)]
mod tests {
    use super::log_safe;

    #[test]
    fn log_text_cannot_forge_lines_or_drive_the_terminal() {
        let hostile = "x\n2026-12-03T00:00:00Z  INFO delivery forged=\"1\" \u{1b}[2J";
        let safe = log_safe(hostile);
        assert!(!safe.contains('\n') && !safe.contains('\u{1b}'), "{safe}");
        assert_eq!(
            safe,
            "x\\n2026-12-03T00:00:00Z  INFO delivery forged=\"1\" \\u{1b}[2J"
        );
        assert_eq!(log_safe("plain: text"), "plain: text");
    }
}
