//! The read API: `GET /api/runs`, `/api/runs/{id}`, `/api/runs/{id}/stages/{stage}/log`,
//! `/api/environments`, `/api/environments/{name}/history`, JSON as the `--json` outputs; and
//! `/api/session`, who is looking.
//! Errors are `{"error": "..."}`: 400 for input that cannot name anything, 404 for what the
//! ledger does not know.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Extension, Json, Router};
use futures_util::StreamExt;
use gitops_core::engine::Engine;
use gitops_core::ledger::{LedgerError, RunQuery, RunRecord, RunStatus};
use gitops_core::logs::FollowedLine;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::access::{ApiError, error};
use super::{UiState, Viewer};
use crate::envs::{deployment_json, env_json};
use crate::shapes::{run_json, show_json};

/// Runs in one page of `/api/runs` at most.
pub const MAX_LIMIT: usize = 200;
/// Live log streams open at once; past it, 503.
pub const MAX_LOG_STREAMS: usize = 64;
/// The longest name (run, stage, environment, pipeline) the API takes.
pub const MAX_NAME: usize = 128;

/// What the API's handlers share beyond [`UiState`]: the live log streams' slots, the signal
/// that ends them, and whether tokens are configured (approvals need one).
#[derive(Clone)]
pub struct Context {
    streams: Arc<Semaphore>,
    shutdown: CancellationToken,
    /// Whether any `--ui-token-env` is configured.
    pub has_tokens: bool,
}

impl Context {
    /// Streams end when `shutdown` is cancelled.
    pub fn new(shutdown: CancellationToken, has_tokens: bool) -> Context {
        Context {
            streams: Arc::new(Semaphore::new(MAX_LOG_STREAMS)),
            shutdown,
            has_tokens,
        }
    }
}

/// The API's routes.
pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/api/runs", get(runs))
        .route("/api/runs/{id}", get(run))
        .route("/api/runs/{id}/stages/{stage}/log", get(log))
        .route("/api/environments", get(environments))
        .route("/api/environments/{name}/history", get(history))
        .route("/api/session", get(session))
        .route("/api/{*rest}", get(unknown))
}

/// An answer or an error answer.
pub type Answer<T = Response> = Result<T, ApiError>;

/// A 500 for a failure of the server's own (the state dir, the ledger): logged, not shown.
pub fn internal(e: impl std::fmt::Display) -> ApiError {
    tracing::error!(error = %crate::serve::log_safe(e), "a dashboard request failed");
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error (the server's log says more)",
    )
}

/// Runs `f` (which reads the ledger or the logs) off the async threads.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Answer<T> + Send + 'static,
) -> Answer<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(internal(e)))
}

/// `name` if it can name a run, stage or environment: ASCII letters, digits, `-` and `_`, at
/// most [`MAX_NAME`] bytes; else a 400.
pub fn checked<'a>(what: &str, name: &'a str) -> Answer<&'a str> {
    if name.is_empty()
        || name.len() > MAX_NAME
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        let shown: String = name.chars().take(MAX_NAME).collect();
        return Err(error(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} {shown:?} is not valid: letters, digits, '-' and '_', at most {MAX_NAME}"
            ),
        ));
    }
    Ok(name)
}

/// The run `id` of the ledger, or a 404.
pub fn known_run(engine: &Engine, id: &str) -> Answer<RunRecord> {
    match engine.ledger().run(id) {
        Ok(run) => Ok(run),
        Err(LedgerError::UnknownRun(_)) => Err(error(
            StatusCode::NOT_FOUND,
            format!("no run \"{id}\" in the ledger"),
        )),
        Err(e) => Err(internal(gitops_core::ErrorChain(&e))),
    }
}

async fn unknown(Path(rest): Path<String>) -> ApiError {
    let shown: String = rest.chars().take(MAX_NAME).collect();
    error(
        StatusCode::NOT_FOUND,
        format!("no such API endpoint: /api/{shown}"),
    )
}

/// `GET /api/runs?pipeline=P&env=E&limit=N&before=RUN`: as `runs --json`, newest first; a
/// full page links the next in a `Link: <...>; rel="next"` header.
async fn runs(State(state): State<UiState>, RawQuery(raw): RawQuery) -> Answer {
    let mut query = RunQuery::default();
    for (key, value) in form_urlencoded::parse(raw.as_deref().unwrap_or_default().as_bytes()) {
        // An empty field (a filter form's "any") is no filter.
        let value = Some(value.into_owned()).filter(|v| !v.is_empty());
        match &*key {
            "pipeline" => {
                query.pipeline = value
                    .map(|v| checked("pipeline", &v).map(str::to_owned))
                    .transpose()?
            }
            "env" => {
                query.environment = value
                    .map(|v| checked("environment", &v).map(str::to_owned))
                    .transpose()?
            }
            "before" => {
                query.before = value
                    .map(|v| checked("run", &v).map(str::to_owned))
                    .transpose()?
            }
            "limit" => {
                query.limit = match value.as_deref().map(str::parse::<usize>) {
                    None => query.limit,
                    Some(Ok(n)) if (1..=MAX_LIMIT).contains(&n) => n,
                    Some(_) => {
                        return Err(error(
                            StatusCode::BAD_REQUEST,
                            format!("limit must be a number from 1 to {MAX_LIMIT}"),
                        ));
                    }
                }
            }
            other => {
                let shown: String = other.chars().take(MAX_NAME).collect();
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    format!("unknown parameter {shown:?}: expected pipeline, env, limit or before"),
                ));
            }
        }
    }
    let engine = state.engine.clone();
    let (found, query) = blocking(move || {
        if let Some(before) = &query.before {
            known_run(&engine, before).map_err(|_| {
                error(
                    StatusCode::BAD_REQUEST,
                    format!("before: no run \"{before}\" in the ledger to page from"),
                )
            })?;
        }
        let found = engine.ledger().find_runs(&query).map_err(internal)?;
        Ok((found, query))
    })
    .await?;
    let mut headers = HeaderMap::new();
    if let Some(last) = found.last().filter(|_| found.len() == query.limit) {
        let mut next = form_urlencoded::Serializer::new(String::new());
        if let Some(p) = &query.pipeline {
            next.append_pair("pipeline", p);
        }
        if let Some(e) = &query.environment {
            next.append_pair("env", e);
        }
        next.append_pair("limit", &query.limit.to_string());
        next.append_pair("before", &last.id);
        let base = state.public_url.as_deref().unwrap_or("");
        let link = format!("<{base}/api/runs?{}>; rel=\"next\"", next.finish());
        if let Ok(link) = link.parse() {
            headers.insert(header::LINK, link);
        }
    }
    let body: Vec<_> = found.iter().map(run_json).collect();
    Ok((headers, Json(body)).into_response())
}

/// `GET /api/runs/{id}`: as `show --json`.
async fn run(State(state): State<UiState>, Path(id): Path<String>) -> Answer {
    checked("run", &id)?;
    let engine = state.engine.clone();
    blocking(move || {
        let run = known_run(&engine, &id)?;
        let value = show_json(&engine, &run).map_err(internal)?;
        Ok(Json(value).into_response())
    })
    .await
}

/// `GET /api/runs/{id}/stages/{stage}/log`: the stage's stored lines as text, or, asked for
/// `text/event-stream`, as server-sent events (`line`, then `end` when the stage ends).
async fn log(
    State(state): State<UiState>,
    Extension(context): Extension<Context>,
    viewer: Option<Extension<Viewer>>,
    Path((id, stage)): Path<(String, String)>,
    headers: HeaderMap,
) -> Answer {
    checked("run", &id)?;
    checked("stage", &stage)?;
    let engine = state.engine.clone();
    let (run_id, stage_id) = (id.clone(), stage.clone());
    let live = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("text/event-stream"));
    let lines = blocking(move || {
        let (id, stage) = (run_id, stage_id);
        let run = known_run(&engine, &id)?;
        let recorded = engine.ledger().stage_results(&id).map_err(internal)?;
        let logged = engine.logs().stages(&id).map_err(internal)?;
        let known = recorded.iter().any(|r| *r.id == stage) || logged.contains(&stage);
        // A stage of a running run may not have started yet.
        let running = run.status == RunStatus::Running && !run.is_interrupted();
        if !known && !running {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("run \"{id}\" has no stage \"{stage}\""),
            ));
        }
        if live {
            return Ok(None);
        }
        let lines = engine.logs().read(&id, &stage).map_err(internal)?;
        Ok(Some(lines))
    })
    .await?;
    let Some(lines) = lines else {
        let viewer = viewer.map(|Extension(v)| v).unwrap_or_default();
        return stream(&state.engine, &context, &viewer, &id, &stage);
    };
    let mut text = String::new();
    for entry in lines {
        text += &entry.line;
        text.push('\n');
    }
    Ok((
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        text,
    )
        .into_response())
}

/// A log line as the event stream sends it.
fn line_event(line: &FollowedLine) -> Event {
    let e = &line.entry;
    let data = serde_json::json!({
        "t": e.t, "stream": e.stream, "attempt": e.attempt, "line": e.line,
    });
    Event::default().event("line").data(data.to_string())
}

/// The stage's lines so far, then new ones as they come, then `end` when it ends. When the
/// server shuts down, or the viewer's session ends, the stream closes without `end`.
fn stream(engine: &Engine, context: &Context, viewer: &Viewer, id: &str, stage: &str) -> Answer {
    let Ok(slot) = context.streams.clone().try_acquire_owned() else {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{MAX_LOG_STREAMS} live logs are open already; try again later"),
        ));
    };
    let follower = engine.logs().follow(engine.ledger(), id, Some(stage));
    let shutdown = context.shutdown.clone();
    // A session's cookie is not checked again while its stream is open: the stream ends when
    // the session does (the browser's reconnection is then asked to sign in).
    let ends = viewer.until.map(|until| {
        tokio::time::Instant::now()
            + std::time::Duration::from_secs(until.saturating_sub(super::access::unix_now()))
    });
    let events = futures_util::stream::unfold(Some((follower, slot)), move |open| {
        let shutdown = shutdown.clone();
        async move {
            let (mut follower, slot) = open?;
            let session_ends = async {
                match ends {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let next = tokio::select! {
                next = follower.next() => next,
                _ = shutdown.cancelled() => return None,
                _ = session_ends => return None,
            };
            Some(match next {
                Ok(Some(lines)) => (
                    lines.iter().map(line_event).collect(),
                    Some((follower, slot)),
                ),
                // Ended, or the run is gone (pruned): the stream ends.
                Ok(None) | Err(_) => (vec![Event::default().event("end").data("{}")], None),
            })
        }
    })
    .flat_map(|events: Vec<Event>| {
        futures_util::stream::iter(events.into_iter().map(Ok::<_, Infallible>))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// `GET /api/session`: who is looking: `{name, can_act, csrf}` (`csrf`: what a form of a
/// viewer signed in by cookie sends back; null otherwise). Other sites cannot read it.
async fn session(viewer: Option<Extension<Viewer>>) -> Response {
    let viewer = viewer.map(|Extension(v)| v).unwrap_or_default();
    Json(serde_json::json!({
        "name": viewer.name,
        "can_act": viewer.can_act(),
        "csrf": viewer.csrf,
    }))
    .into_response()
}

/// `GET /api/environments`: as `envs --json`.
async fn environments(State(state): State<UiState>) -> Answer {
    let engine = state.engine.clone();
    blocking(move || {
        let envs = engine.environments().map_err(internal)?;
        let body: Vec<_> = envs.iter().map(env_json).collect();
        Ok(Json(body).into_response())
    })
    .await
}

/// `GET /api/environments/{name}/history`: as `history NAME --json`.
async fn history(State(state): State<UiState>, Path(name): Path<String>) -> Answer {
    checked("environment", &name)?;
    let engine = state.engine.clone();
    blocking(move || {
        if engine
            .ledger()
            .environment(&name)
            .map_err(internal)?
            .is_none()
        {
            return Err(error(
                StatusCode::NOT_FOUND,
                format!("no environment \"{name}\" in the ledger"),
            ));
        }
        let history = engine.history(&name).map_err(internal)?;
        let body: Vec<_> = history.iter().map(deployment_json).collect();
        Ok(Json(body).into_response())
    })
    .await
}

#[cfg(test)]
mod tests {
    use gitops_core::backend::BackendRegistry;
    use gitops_core::event::GitEvent;

    use super::*;

    /// A live log opened by a session that ends ends with it: the cookie's expiry is not
    /// outlived by a stream of a run that may wait for days.
    #[test]
    fn a_live_log_ends_when_the_session_does() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), BackendRegistry::new()).unwrap();
        let config = "version: 1\npipelines:\n  main:\n    on: { push: { branches: [main] } }\n    stages:\n      build: { run: x }\n";
        let event = GitEvent::push(
            "o/r",
            "main",
            None,
            "0123456789abcdef0123456789abcdef01234567",
        );
        let run = RunRecord::new("r1", "main", event, config, dir.path());
        // Running, and never finished: a follower of it would wait on.
        engine.ledger().begin_run(&run).unwrap();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let context = Context::new(CancellationToken::new(), true);
            let viewer = Viewer {
                until: Some(crate::ui::access::unix_now() + 1),
                ..Viewer::default()
            };
            let response = stream(&engine, &context, &viewer, "r1", "build").unwrap();
            let body = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                axum::body::to_bytes(response.into_body(), usize::MAX),
            )
            .await;
            assert!(body.is_ok(), "the stream outlived the session");
        });
    }
}
