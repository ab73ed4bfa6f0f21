//! `/`: the environments (previews grouped under their pull request), the deploys waiting for
//! an approval, and the recent runs with a chip per stage.

use std::collections::BTreeMap;

use axum::Extension;
use axum::extract::State;
use gitops_core::engine::{Engine, EnvironmentState};
use gitops_core::ledger::{ApprovalRecord, EnvironmentStatus, RunQuery, RunRecord};
use maud::{Markup, html};

use super::stages::{run_state, stages_of};
use super::view::{self, Ctx, Section, State as Shown, chip, commit, layout, stage_chip, when};
use super::{PageError, PageResult, page};
use crate::ui::{UiState, Viewer};

/// The runs the overview lists.
const RECENT_RUNS: usize = 20;

/// `GET /`.
pub async fn handler(
    State(state): State<UiState>,
    viewer: Option<Extension<Viewer>>,
) -> PageResult {
    page(state, viewer, |state, ctx| render(&state.engine, ctx)).await
}

pub(super) fn render(engine: &Engine, ctx: &Ctx) -> Result<Markup, PageError> {
    let envs = engine.environments()?;
    let waiting = engine.ledger().pending_approvals()?;
    let mut query = RunQuery::default();
    query.limit = RECENT_RUNS;
    let runs = engine.ledger().find_runs(&query)?;
    let body = html! {
        h1 { "Environments" }
        (approvals(ctx, &waiting))
        (environments(ctx, &envs))
        h2 { "Recent runs" }
        (run_list(ctx, engine, &runs, &waiting)?)
        @if runs.len() == RECENT_RUNS {
            p { a href=(ctx.href("/runs")) { "All runs →" } }
        }
    };
    Ok(layout(ctx, "Environments", Section::Environments, body))
}

/// The deploys waiting for someone to approve them.
fn approvals(ctx: &Ctx, waiting: &[ApprovalRecord]) -> Markup {
    html! {
        @if !waiting.is_empty() {
            section.notice aria-label="Waiting for approval" {
                strong { "Waiting for approval" }
                ul {
                    @for a in waiting {
                        li {
                            "Stage " a href={ (ctx.run(&a.run_id)) "#stage-" (a.stage) } { code { (a.stage) } }
                            " of run " code { (a.run_id) } " deploys to " strong { (a.environment) }
                            " (asked " (when(a.requested_at)) ")"
                        }
                    }
                }
            }
        }
    }
}

/// The environments' table: long-lived ones first, then the previews of each pull request
/// under a row naming it, newest pull request first.
fn environments(ctx: &Ctx, envs: &[EnvironmentState]) -> Markup {
    let mut previews: BTreeMap<u64, Vec<&EnvironmentState>> = BTreeMap::new();
    for e in envs {
        if let Some(pr) = e.record.pull_request {
            previews.entry(pr).or_default().push(e);
        }
    }
    html! {
        @if envs.is_empty() {
            p.muted { "No environments yet: nothing was deployed with this state dir." }
        } @else {
            table.stack.envs {
                thead { tr {
                    th { "Environment" } th { "Status" } th { "Version" } th { "Commit" }
                    th { "Deployed by" } th { "When" } th { "URL" }
                } }
                tbody {
                    @for e in envs.iter().filter(|e| e.record.pull_request.is_none()) {
                        (env_row(ctx, e))
                    }
                    @for (pr, group) in previews.iter().rev() {
                        tr.group { th colspan="7" scope="rowgroup" {
                            "Pull request #" (pr)
                            @if let Some(title) = pr_title(group) { ": " (title) }
                        } }
                        @for e in group { (env_row(ctx, e)) }
                    }
                }
            }
        }
    }
}

/// The title of the pull request a preview was last deployed from.
fn pr_title<'a>(group: &[&'a EnvironmentState]) -> Option<&'a str> {
    group.iter().find_map(|e| {
        let event = e.current.as_ref()?.event.as_ref()?;
        Some(event.pull_request()?.title.as_str())
    })
}

fn env_row(ctx: &Ctx, e: &EnvironmentState) -> Markup {
    let current = e.current.as_ref();
    let status = match e.record.status {
        EnvironmentStatus::Active => Shown::Active,
        EnvironmentStatus::Stopped => Shown::Stopped,
    };
    html! {
        tr {
            td.first data-label="Environment" { a href=(ctx.environment(&e.record.name)) { (e.record.name) } }
            td data-label="Status" {
                span { (chip(status))
                    @if let Some(by) = &e.record.pinned_by {
                        " " span.badge title="A rollback pinned it: pipeline deploys wait until it is unpinned" { "pinned by " (by) }
                    }
                }
            }
            td data-label="Version" { (current.and_then(|d| d.version.as_deref()).unwrap_or("-")) }
            td data-label="Commit" { (commit(current.and_then(|d| d.sha.as_deref()))) }
            td data-label="Deployed by" { (current.and_then(|d| d.triggered_by.as_deref()).unwrap_or("-")) }
            td data-label="When" { (when(current.map_or(e.record.updated_at, |d| d.finished_at.unwrap_or(d.started_at)))) }
            td.url data-label="URL" {
                @if let Some(url) = e.url() { (view::maybe_link(url)) } @else { span.muted { "-" } }
            }
        }
    }
}

/// Runs, newest first, each with its state, what it was for, and a chip per stage.
pub fn run_list(
    ctx: &Ctx,
    engine: &Engine,
    runs: &[RunRecord],
    waiting: &[ApprovalRecord],
) -> Result<Markup, PageError> {
    if runs.is_empty() {
        return Ok(html! { p.muted { "No runs yet." } });
    }
    let mut items = Vec::with_capacity(runs.len());
    for run in runs {
        let stages = stages_of(engine, run, waiting)?;
        let waits = stages.iter().any(|s| s.state == Shown::Waiting);
        let href = ctx.run(&run.id);
        items.push(html! {
            li {
                div.head {
                    (chip(run_state(run, waits)))
                    a.title href=(href) { (run.pipeline) " · " (view::subject(&run.event)) }
                    code.muted { (run.id) }
                }
                div.facts {
                    (run.event.kind().as_str())
                    " by " (run.actor.as_deref().unwrap_or("-"))
                    " · " (when(run.started_at))
                    " · " (view::duration(view::run_secs(run)))
                    " · " (commit(run.commit.as_deref()))
                }
                div.stages {
                    @for s in &stages {
                        (stage_chip(&s.id, s.state, Some(&format!("{href}#stage-{}", s.id))))
                    }
                }
            }
        });
    }
    Ok(html! { ul.runs { @for item in items { (item) } } })
}
