//! `gitops serve`: the webhook receiver. `POST /webhooks/github` and `POST /webhooks/gitlab`
//! check the signature (or token), turn the payload into an event, drop redeliveries, answer at
//! once, and hand the event to a worker that fetches the repository and runs what it triggers
//! (or, with `--no-run`, prints it as a line of JSON). `GET /healthz` answers `ok`.
//!
//! Answers: 202 accepted (or ignored: an event type gitops does not handle), 200 for a ping or
//! a redelivery, 400 for a malformed payload, 401 for a missing or wrong signature, 413 for a
//! body over the limit, 503 when the queue of events to run is full.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::{EventKind, GitEvent};
use gitops_core::ledger::Ledger;
use gitops_core::repo::Repository;
use gitops_core::source::webhook::{
    Provider, WebhookError, parse, verify_github_signature, verify_gitlab_token,
};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::progress;
use crate::run::{Common, engine, run_options};

/// What `gitops serve` was asked to do.
pub struct ServeArgs {
    pub listen: SocketAddr,
    pub repo: PathBuf,
    pub no_run: bool,
    pub github_secret_env: Option<String>,
    pub gitlab_token_env: Option<String>,
    pub max_body_bytes: usize,
}

/// Events waiting for the worker; past this, requests get 503.
const QUEUE: usize = 10_000;

struct App {
    github_secret: Option<Vec<u8>>,
    gitlab_token: Option<String>,
    ledger: Ledger,
    /// Where accepted events go: the worker, or standard output with `--no-run`.
    sink: Sink,
}

enum Sink {
    Print(Mutex<()>),
    Queue(mpsc::Sender<GitEvent>),
}

type Reply = (StatusCode, axum::Json<serde_json::Value>);

fn reply(status: StatusCode, body: serde_json::Value) -> Reply {
    (status, axum::Json(body))
}

fn secret(flag: &str, name: &Option<String>) -> Result<Option<String>, String> {
    match name {
        None => Ok(None),
        Some(name) => std::env::var(name)
            .map(Some)
            .map_err(|_| format!("error: {flag} {name}: no such environment variable")),
    }
}

pub async fn serve(args: ServeArgs, common: Common) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("error: {e}");
    let github_secret = secret("--github-secret-env", &args.github_secret_env)?;
    let gitlab_token = secret("--gitlab-token-env", &args.gitlab_token_env)?;
    if github_secret.is_none() {
        eprintln!("warning: no --github-secret-env: unsigned GitHub requests are accepted");
    }
    if gitlab_token.is_none() {
        eprintln!("warning: no --gitlab-token-env: GitLab requests without a token are accepted");
    }
    let repo = Repository::open(&args.repo).map_err(|e| err(&e))?;
    let engine = engine(&common)?;
    let ledger = engine.ledger().clone();
    let shutdown = CancellationToken::new();
    let (sink, worker) = if args.no_run {
        (Sink::Print(Mutex::new(())), None)
    } else {
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut options = run_options(&common)?;
        options.actor = Some("webhook".to_owned());
        // The clone's own branches are not fetched into: its origin's default branch is the
        // trusted one.
        if options.trusted_ref.is_none() && repo.remote_url("origin").is_some() {
            options.trusted_ref = repo
                .head_branch()
                .map(|b| format!("refs/remotes/origin/{b}"));
        }
        let cancel = CancellationToken::new();
        let worker = tokio::spawn(work(rx, engine, repo, options, cancel.clone()));
        (Sink::Queue(tx), Some((worker, cancel)))
    };
    let app = Arc::new(App {
        github_secret: github_secret.map(String::into_bytes),
        gitlab_token,
        ledger,
        sink,
    });
    let router = Router::new()
        .route("/webhooks/github", post(github))
        .route("/webhooks/gitlab", post(gitlab))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(args.max_body_bytes))
        .with_state(app.clone());
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .map_err(|e| format!("error: cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| err(&e))?;
    eprintln!("listening on http://{addr}");
    let stop = shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        eprintln!(
            "shutting down: no new requests; running stages finish (signal again to cancel them)"
        );
        stop.cancel();
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .await
        .map_err(|e| err(&e))?;
    // The server is done: the queue closes once the app (its sender) is dropped.
    drop(app);
    if let Some((mut worker, cancel)) = worker {
        tokio::select! {
            _ = &mut worker => return Ok(()),
            _ = wait_for_signal() => {
                eprintln!("cancelling the running stages");
                cancel.cancel();
            }
        }
        let _ = worker.await;
    }
    Ok(())
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending().await,
            }
        } => {}
    }
}

async fn github(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    receive(&app, Provider::GitHub, &headers, &body).await
}

async fn gitlab(State(app): State<Arc<App>>, headers: HeaderMap, body: Bytes) -> Reply {
    receive(&app, Provider::GitLab, &headers, &body).await
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

async fn receive(app: &App, provider: Provider, headers: &HeaderMap, body: &[u8]) -> Reply {
    let (type_header, delivery_header) = match provider {
        Provider::GitHub => ("x-github-event", "x-github-delivery"),
        Provider::GitLab => ("x-gitlab-event", "x-gitlab-event-uuid"),
    };
    let verified = match provider {
        Provider::GitHub => app
            .github_secret
            .as_ref()
            .map(|s| verify_github_signature(s, body, header(headers, "x-hub-signature-256"))),
        Provider::GitLab => app
            .gitlab_token
            .as_ref()
            .map(|t| verify_gitlab_token(t, header(headers, "x-gitlab-token"))),
    };
    if let Some(Err(e)) = verified {
        return reply(StatusCode::UNAUTHORIZED, json!({"error": e.to_string()}));
    }
    let Some(event_type) = header(headers, type_header) else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": format!("no {type_header} header: which event is this?")}),
        );
    };
    let event = match parse(provider, event_type, body) {
        Ok(e) => e,
        Err(e @ WebhookError::Unsupported { .. }) => {
            return reply(StatusCode::ACCEPTED, json!({"ignored": e.to_string()}));
        }
        Err(e) => return reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()})),
    };
    if event.kind() == EventKind::Ping {
        return reply(StatusCode::OK, json!({"ok": "pong"}));
    }
    if let Some(id) = header(headers, delivery_header) {
        let (ledger, p, id) = (app.ledger.clone(), provider.as_str(), id.to_owned());
        let fresh = tokio::task::spawn_blocking(move || ledger.record_delivery(p, &id)).await;
        match fresh {
            Ok(Ok(true)) => {}
            Ok(Ok(false)) => {
                return reply(
                    StatusCode::OK,
                    json!({"duplicate": header(headers, delivery_header)}),
                );
            }
            Ok(Err(e)) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": e.to_string()}),
                );
            }
            Err(e) => {
                return reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    json!({"error": e.to_string()}),
                );
            }
        }
    }
    let kind = event.kind().as_str();
    match &app.sink {
        Sink::Print(lock) => {
            let line = serde_json::to_string(&event).unwrap_or_default();
            let _held = lock.lock().unwrap_or_else(|e| e.into_inner());
            println!("{line}");
        }
        Sink::Queue(tx) => {
            if tx.try_send(event).is_err() {
                // Not taken: the forge's redelivery of it must not count as a duplicate.
                if let Some(id) = header(headers, delivery_header) {
                    let _ = app.ledger.forget_delivery(provider.as_str(), id);
                }
                return reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "too many events waiting to run; try again later"}),
                );
            }
        }
    }
    reply(StatusCode::ACCEPTED, json!({"accepted": kind}))
}

/// Runs the accepted events: fetches the repository, then runs what each triggers (runs of
/// different events at once; concurrency groups order them where the config says so).
async fn work(
    mut events: mpsc::Receiver<GitEvent>,
    engine: Engine,
    repo: Repository,
    options: RunOptions,
    cancel: CancellationToken,
) {
    let engine = Arc::new(engine);
    let mut running = tokio::task::JoinSet::new();
    while let Some(event) = events.recv().await {
        if repo.remote_url("origin").is_some() {
            let r = repo.clone();
            match tokio::task::spawn_blocking(move || r.fetch_remote("origin")).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => eprintln!("warning: {e}"),
                Err(e) => eprintln!("warning: fetching failed: {e}"),
            }
        }
        if !crate::run::names_commit(&event) {
            continue;
        }
        // Planning checks out the commit: blocking work, off the async threads.
        let (e, r, o, ev) = (engine.clone(), repo.clone(), options.clone(), event.clone());
        let started = tokio::task::spawn_blocking(move || e.start(&ev, &r, &o)).await;
        let runs = match started {
            Ok(Ok(runs)) => {
                crate::run::print_notes(&runs);
                runs
            }
            Ok(Err(e)) => {
                eprintln!("error: {} event: {e}", event.kind());
                continue;
            }
            Err(e) => {
                eprintln!("error: planning the {} event failed: {e}", event.kind());
                continue;
            }
        };
        let (engine, cancel) = (engine.clone(), cancel.clone());
        running.spawn(async move {
            let mut tasks = Vec::new();
            for run in runs {
                // A second signal cancels the run: its stages stop, and it still ends (and is
                // recorded) normally.
                let (token, cancel) = (run.cancel_token(), cancel.clone());
                let relay = tokio::spawn(async move {
                    cancel.cancelled().await;
                    token.cancel();
                });
                tasks.push(tokio::spawn(async move {
                    let report = run.execute().await;
                    relay.abort();
                    report
                }));
            }
            for t in tasks {
                match t.await {
                    Ok(Ok(report)) => eprintln!("{}", progress::summary(&report)),
                    Ok(Err(e)) => eprintln!("error: {e}"),
                    Err(e) => eprintln!("error: a run crashed: {e}"),
                }
            }
            if let Err(e) = engine.finish_event(&event).await {
                eprintln!("error: {e}");
            }
        });
    }
    while running.join_next().await.is_some() {}
}
