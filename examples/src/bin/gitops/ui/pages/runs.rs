//! `/runs`: every run, newest first, a page at a time (`?before=<run id>` for the next),
//! filtered by pipeline or environment.

use axum::Extension;
use axum::extract::{Query, State};
use gitops_core::engine::Engine;
use gitops_core::ledger::RunQuery;
use maud::{Markup, html};
use serde::Deserialize;

use super::overview::run_list;
use super::view::{Ctx, Section, layout};
use super::{PageError, PageResult, page};
use crate::ui::{UiState, Viewer};

/// The runs on one page.
pub const PAGE_SIZE: usize = 50;

/// The query string of `/runs`.
#[derive(Debug, Deserialize)]
pub struct Filter {
    /// Runs older than this run.
    before: Option<String>,
    pipeline: Option<String>,
    env: Option<String>,
}

impl Filter {
    /// A filter left empty in the form is no filter.
    fn given(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
}

/// `GET /runs`.
pub async fn handler(
    State(state): State<UiState>,
    viewer: Option<Extension<Viewer>>,
    Query(filter): Query<Filter>,
) -> PageResult {
    page(state, viewer, move |state, ctx| {
        render(&state.engine, ctx, &filter)
    })
    .await
}

pub(super) fn render(engine: &Engine, ctx: &Ctx, filter: &Filter) -> Result<Markup, PageError> {
    let pipeline = Filter::given(&filter.pipeline);
    let env = Filter::given(&filter.env);
    let before = Filter::given(&filter.before);
    let mut query = RunQuery::default();
    query.pipeline = pipeline.map(str::to_owned);
    query.environment = env.map(str::to_owned);
    query.before = before.map(str::to_owned);
    // One more than a page, to know whether there is an older page.
    query.limit = PAGE_SIZE + 1;
    let mut runs = engine.ledger().find_runs(&query)?;
    let older = runs.len() > PAGE_SIZE;
    runs.truncate(PAGE_SIZE);
    let waiting = engine.ledger().pending_approvals()?;
    let body = html! {
        h1 { "Runs" }
        form.filters method="get" action=(ctx.href("/runs")) {
            label { "Pipeline" input type="text" name="pipeline" value=[pipeline]; }
            label { "Environment" input type="text" name="env" value=[env] placeholder="staging, preview-pr-7"; }
            button type="submit" { "Filter" }
            @if pipeline.is_some() || env.is_some() {
                a href=(ctx.href("/runs")) { "Clear" }
            }
        }
        (run_list(ctx, engine, &runs, &waiting)?)
        nav.pages aria-label="pages" {
            @if before.is_some() {
                a href=(ctx.href_query("/runs", &[("pipeline", pipeline), ("env", env)])) { "← Newest" }
            } @else { span {} }
            @if let (true, Some(last)) = (older, runs.last()) {
                a href=(ctx.href_query("/runs", &[("before", Some(&last.id)), ("pipeline", pipeline), ("env", env)])) { "Older →" }
            }
        }
    };
    Ok(layout(ctx, "Runs", Section::Runs, body))
}
