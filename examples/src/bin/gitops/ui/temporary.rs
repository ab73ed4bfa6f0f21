//! TEMPORARY, for the dashboard's browser test only until the API branch lands (drop this
//! file, its `mod` line and the `Ui` command on merge): a minimal `gitops ui` with the routes
//! the pages rely on: the access contract (a `Viewer` per request, `GET/POST /login` setting a
//! cookie), the stage log as server-sent events, and the approve and reject forms.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use maud::html;

use super::{UiState, Viewer};
use crate::run::{Common, engine};

#[derive(Clone)]
struct Access {
    name: Option<String>,
    token: Option<String>,
}

fn csrf_of(token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("csrf:{token}").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    let cookies = headers.get(header::COOKIE)?.to_str().ok()?;
    cookies
        .split(';')
        .find_map(|c| c.trim().strip_prefix("gitops_ui=").map(str::to_owned))
}

async fn access(
    Extension(access): Extension<Access>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut viewer = Viewer::default();
    if let (Some(name), Some(token)) = (&access.name, &access.token) {
        if cookie_token(request.headers()).as_deref() == Some(token.as_str()) {
            viewer = Viewer {
                name: Some(name.clone()),
                csrf: Some(csrf_of(token)),
            };
        }
    }
    request.extensions_mut().insert(viewer);
    next.run(request).await
}

fn fields(body: &Bytes) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

async fn login_form() -> Response {
    html! {
        (maud::DOCTYPE)
        html { head { title { "Sign in · gitops" } meta name="viewport" content="width=device-width, initial-scale=1"; link rel="stylesheet" href="/assets/style.css"; }
        body { main {
            h1 { "Sign in" }
            form method="post" action="/login" {
                label { "Token " input type="password" name="token" autocomplete="current-password"; }
                " " button type="submit" { "Sign in" }
            }
        } } }
    }
    .into_response()
}

async fn login(Extension(access): Extension<Access>, body: Bytes) -> Response {
    let given = fields(&body)
        .into_iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v);
    match (&access.token, given) {
        (Some(token), Some(given)) if *token == given => (
            [(
                header::SET_COOKIE,
                format!("gitops_ui={token}; HttpOnly; SameSite=Strict; Path=/"),
            )],
            Redirect::to("/"),
        )
            .into_response(),
        _ => (StatusCode::UNAUTHORIZED, "wrong token").into_response(),
    }
}

async fn decide(
    State(state): State<UiState>,
    Extension(viewer): Extension<Viewer>,
    Path((run, stage, verb)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    let Some(name) = viewer.name.clone() else {
        return (StatusCode::FORBIDDEN, "sign in first").into_response();
    };
    let csrf = fields(&body)
        .into_iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v);
    if csrf != viewer.csrf {
        return (StatusCode::FORBIDDEN, "bad csrf").into_response();
    }
    let result = match verb.as_str() {
        "approve" => state.engine.approve(&run, &stage, &name),
        "reject" => state.engine.reject(&run, &stage, &name),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    match result {
        Ok(()) => Redirect::to(&format!("/runs/{run}")).into_response(),
        Err(e) => (StatusCode::CONFLICT, e.to_string()).into_response(),
    }
}

async fn log(State(state): State<UiState>, Path((run, stage)): Path<(String, String)>) -> Response {
    let engine = state.engine.clone();
    let follower = engine
        .logs()
        .follow(engine.ledger(), &run, Some(&stage))
        .with_poll(Duration::from_millis(200));
    let stream = futures_util::stream::unfold(
        (follower, Vec::<Event>::new(), false),
        |(mut follower, mut queue, mut done)| async move {
            loop {
                if let Some(event) = queue.pop() {
                    return Some((Ok::<_, Infallible>(event), (follower, queue, done)));
                }
                if done {
                    return None;
                }
                match follower.next().await {
                    Ok(Some(lines)) => {
                        queue = lines
                            .iter()
                            .rev()
                            .map(|l| {
                                Event::default()
                                    .event("line")
                                    .data(serde_json::to_string(&l.entry).unwrap_or_default())
                            })
                            .collect();
                    }
                    _ => {
                        done = true;
                        queue.push(Event::default().event("end").data("{}"));
                    }
                }
            }
        },
    );
    Sse::new(stream).into_response()
}

/// `gitops ui` (temporary): the dashboard over `common`'s state dir on `listen`.
pub async fn serve(
    listen: &str,
    common: Common,
    token_env: Option<String>,
    public_url: Option<String>,
) -> Result<(), String> {
    let token = token_env
        .as_ref()
        .and_then(|n| std::env::var(n).ok())
        .filter(|t| !t.is_empty());
    let state = UiState {
        engine: Arc::new(engine(&common)?),
        public_url,
    };
    let app = Router::new()
        .route("/login", get(login_form).post(login))
        .route("/api/runs/{run}/stages/{stage}/log", get(log))
        .route("/api/runs/{run}/stages/{stage}/{verb}", post(decide))
        .with_state(state.clone())
        .merge(super::router(state))
        .layer(middleware::from_fn(access))
        .layer(Extension(Access {
            name: token_env,
            token,
        }));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("error: cannot listen on {listen}: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    gitops_examples::outln!("dashboard on http://{addr}/");
    axum::serve(listener, app)
        .await
        .map_err(|e| format!("error: {e}"))
}
