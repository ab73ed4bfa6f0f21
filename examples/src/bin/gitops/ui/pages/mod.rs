//! The dashboard's pages, rendered on the server with maud, which escapes every value it
//! inserts: the overview (`/`), the runs (`/runs`), a run (`/runs/{id}`), an environment
//! (`/environments/{name}`), and the stylesheet and script they load from `/assets/`.
//!
//! Every answer carries a strict `Content-Security-Policy`: no inline script or style, nothing
//! from another origin. The one script appends a running stage's new log lines, read from the
//! API's server-sent events, as text.

mod assets;
mod environment;
mod graph;
mod overview;
mod run;
mod runs;
mod stages;
mod view;

use axum::Extension;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::Uri;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use maud::{Markup, html};

use super::{UiState, Viewer};
use view::{Ctx, Section, layout};

/// What every page answer says about how a browser may treat it.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; img-src 'self' data:; form-action 'self'; base-uri 'none'; frame-ancestors 'none'";

/// The dashboard's routes.
pub fn routes() -> Router<UiState> {
    Router::new()
        .route("/", get(overview::handler))
        .route("/runs", get(runs::handler))
        .route("/runs/{id}", get(run::handler))
        .route("/environments/{name}", get(environment::handler))
        .route("/assets/{file}", get(assets::serve))
        .layer(middleware::from_fn(security_headers))
}

async fn security_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    secure(response.headers_mut(), CONTENT_SECURITY_POLICY);
    response
}

/// The headers every HTML answer carries: the content security policy `csp`, no sniffing, no
/// referrer beyond this origin, no framing.
pub(super) fn secure(headers: &mut axum::http::HeaderMap, csp: &'static str) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(csp),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
}

/// The request's viewer (set by the access layer; without it, one who may only read) and
/// where links point.
fn ctx(state: &UiState, viewer: Option<Extension<Viewer>>) -> Ctx {
    Ctx::new(
        state.public_url.as_deref(),
        viewer.map(|Extension(v)| v).unwrap_or_default(),
    )
}

/// Why a page could not be shown.
#[derive(Debug)]
pub enum PageError {
    /// No such run, environment or file.
    NotFound(String),
    /// The ledger or the logs could not be read.
    Failed(String),
}

impl<E: std::error::Error + 'static> From<E> for PageError {
    fn from(e: E) -> Self {
        PageError::Failed(gitops_core::ErrorChain(&e).to_string())
    }
}

/// The answer to a failed page: a page saying what failed, with its status.
pub struct Failure {
    ctx: Ctx,
    error: PageError,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let (status, title, message) = match &self.error {
            PageError::NotFound(what) => (StatusCode::NOT_FOUND, "Not found", what.as_str()),
            PageError::Failed(what) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something failed",
                what.as_str(),
            ),
        };
        let body = html! {
            h1 { (title) }
            p { (message) }
            p { a href=(self.ctx.href("/")) { "Back to the environments" } " · " a href=(self.ctx.href("/runs")) { "All runs" } }
        };
        (status, layout(&self.ctx, title, Section::None, body)).into_response()
    }
}

/// A page's answer: the page, or a page saying why there is none.
type PageResult = Result<Markup, Failure>;

/// The page `render` makes for this request, made off the async workers (the ledger and the
/// logs are read with blocking calls), or the page saying why there is none.
async fn page<F>(state: UiState, viewer: Option<Extension<Viewer>>, render: F) -> PageResult
where
    F: FnOnce(&UiState, &Ctx) -> Result<Markup, PageError> + Send + 'static,
{
    let ctx = ctx(&state, viewer);
    let for_render = ctx.clone();
    tokio::task::spawn_blocking(move || render(&state, &for_render))
        .await
        .unwrap_or_else(|e| Err(PageError::Failed(format!("the page failed: {e}"))))
        .map_err(|error| Failure { ctx, error })
}

/// A page for any path the dashboard does not have (for the router's fallback).
#[allow(dead_code)]
pub async fn not_found(
    State(state): State<UiState>,
    viewer: Option<Extension<Viewer>>,
    uri: Uri,
) -> Failure {
    Failure {
        ctx: ctx(&state, viewer),
        error: PageError::NotFound(format!("there is no page at {}", uri.path())),
    }
}

#[cfg(test)]
mod tests {
    use gitops_core::backend::BackendRegistry;
    use gitops_core::engine::Engine;
    use gitops_core::event::GitEvent;
    use gitops_core::ledger::RunRecord;
    use gitops_core::scheduler::{RunResult, StageReport};

    use super::view::Ctx;
    use super::*;

    /// A state dir with one finished run whose (unvalidated) config names a stage
    /// `<script>alert(1)</script>` and whose stage outputs a `javascript:` URL.
    fn hostile_run() -> (tempfile::TempDir, Engine) {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), BackendRegistry::new()).unwrap();
        let name = "<script>alert(1)</script>";
        let config = format!(
            "version: 1\npipelines:\n  main:\n    on: {{ push: {{ branches: [main] }} }}\n    stages:\n      build: {{ run: x }}\n      \"{name}\": {{ needs: build, run: x }}\n"
        );
        let event = GitEvent::push(
            "o/r",
            "main",
            None,
            "0123456789abcdef0123456789abcdef01234567",
        );
        let run = RunRecord::new("r1", "main", event, &config, dir.path());
        engine.ledger().begin_run(&run).unwrap();
        let report: StageReport = serde_json::from_value(serde_json::json!({
            "id": name, "result": "failure", "message": "<i>boom</i>", "exit_code": 1,
            "attempts": 1, "flaky": false, "started_secs": 0.0, "finished_secs": 1.0,
            "outputs": {"url": "javascript:alert(1)", "page": "https://example.com/?a=<b>"},
        }))
        .unwrap();
        engine.ledger().record_stage("r1", &report).unwrap();
        engine
            .ledger()
            .finish_run("r1", RunResult::Failure)
            .unwrap();
        (dir, engine)
    }

    fn ctx() -> Ctx {
        Ctx::new(None, Viewer::default())
    }

    #[test]
    fn what_a_pull_request_controls_is_escaped_and_only_web_urls_are_links() {
        let (_dir, engine) = hostile_run();
        let html = run::render(&engine, &ctx(), "r1").unwrap().into_string();
        assert!(!html.contains("<script>alert"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(!html.contains("<i>boom"), "{html}");
        assert!(!html.contains("href=\"javascript:"), "{html}");
        assert!(html.contains("<code>javascript:alert(1)</code>"), "{html}");
        assert!(
            html.contains("href=\"https://example.com/?a=&lt;b&gt;\""),
            "{html}"
        );
        // The stage's anchor and the graph's link to it are attribute-escaped too.
        assert!(html.contains("id=\"stage-&lt;script&gt;"), "{html}");

        let overview = overview::render(&engine, &ctx()).unwrap().into_string();
        assert!(!overview.contains("<script>alert"), "{overview}");
        assert!(overview.contains("✗ &lt;script&gt;"), "{overview}");
    }

    #[test]
    fn unknown_runs_and_environments_are_not_found() {
        let (_dir, engine) = hostile_run();
        assert!(matches!(
            run::render(&engine, &ctx(), "nope"),
            Err(PageError::NotFound(_))
        ));
        assert!(matches!(
            environment::render(&engine, &ctx(), "staging"),
            Err(PageError::NotFound(_))
        ));
    }

    #[test]
    fn links_go_under_the_public_url() {
        let ctx = Ctx::new(Some("https://ci.example.com/gitops/"), Viewer::default());
        assert_eq!(ctx.run("r1"), "https://ci.example.com/gitops/runs/r1");
        assert_eq!(
            ctx.href_query("/runs", &[("before", Some("r 1")), ("env", None)]),
            "https://ci.example.com/gitops/runs?before=r+1"
        );
    }
}
