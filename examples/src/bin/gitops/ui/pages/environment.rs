//! `/environments/{name}`: what runs in an environment now, whether a rollback pinned it, and
//! its deployments, newest first, rollbacks marked (as `gitops history ENV`).

use axum::Extension;
use axum::extract::{Path, State};
use gitops_core::config::Action;
use gitops_core::engine::Engine;
use gitops_core::ledger::{DeploymentRecord, DeploymentResult, EnvironmentStatus};
use maud::{Markup, html};

use super::view::{self, Ctx, Section, State as Shown, chip, commit, layout, when};
use super::{PageError, PageResult, page};
use crate::ui::{UiState, Viewer};

/// The deployments listed.
const HISTORY: usize = 200;

/// `GET /environments/{name}`.
pub async fn handler(
    State(state): State<UiState>,
    viewer: Option<Extension<Viewer>>,
    Path(name): Path<String>,
) -> PageResult {
    page(state, viewer, move |state, ctx| {
        render(&state.engine, ctx, &name)
    })
    .await
}

fn deployment_state(d: &DeploymentRecord) -> Shown {
    match d.result {
        DeploymentResult::Running => Shown::Running,
        DeploymentResult::Success if d.action == Action::Stop => Shown::Stopped,
        DeploymentResult::Success => Shown::Success,
        DeploymentResult::Failure => Shown::Failure,
        DeploymentResult::Cancelled => Shown::Cancelled,
        DeploymentResult::Interrupted => Shown::Interrupted,
    }
}

pub(super) fn render(engine: &Engine, ctx: &Ctx, name: &str) -> Result<Markup, PageError> {
    let Some(record) = engine.ledger().environment(name)? else {
        return Err(PageError::NotFound(format!(
            "there is no environment {name}: nothing was ever deployed to it"
        )));
    };
    let current = match record.status {
        EnvironmentStatus::Active => engine.ledger().current_deployment(name)?,
        EnvironmentStatus::Stopped => None,
    };
    let history = engine.ledger().history(Some(name), HISTORY)?;
    let status = match record.status {
        EnvironmentStatus::Active => Shown::Active,
        EnvironmentStatus::Stopped => Shown::Stopped,
    };
    let body = html! {
        h1 { (chip(status)) " " (record.name) }
        @if let Some(by) = &record.pinned_by {
            div.notice {
                strong { "Pinned by " (by) } ": a rollback put this version back, and pipeline deploys to "
                (record.name) " wait until " code { "gitops unpin " (record.name) } "."
            }
        }
        dl.facts {
            dt { "Environment" } dd { (record.config_name) " (backend " (record.backend) ")" }
            @if let Some(pr) = record.pull_request {
                dt { "Pull request" } dd { "#" (pr) " of " (record.repo) }
            }
            @if let Some(d) = &current {
                dt { "Version" } dd { (d.version.as_deref().unwrap_or("-")) }
                dt { "Commit" } dd { (commit(d.sha.as_deref())) }
                dt { "Deployed by" } dd { (d.triggered_by.as_deref().unwrap_or("-")) }
                dt { "Deployed" } dd { (when(d.finished_at.unwrap_or(d.started_at))) }
                @if let Some(url) = d.outputs.get("url") { dt { "URL" } dd { (view::maybe_link(url)) } }
            } @else {
                dt { "Running" } dd { "nothing" }
            }
        }
        h2 { "History" }
        @if history.is_empty() {
            p.muted { "No deployments recorded." }
        } @else {
            table.stack {
                thead { tr {
                    th { "#" } th { "Action" } th { "Result" } th { "Version" } th { "Commit" }
                    th { "By" } th { "Started" } th { "Run" }
                } }
                tbody { @for d in &history { (row(ctx, d, current.as_ref())) } }
            }
            @if history.len() == HISTORY {
                p.muted { "The newest " (HISTORY) " are shown: " code { "gitops history " (record.name) } " lists them all." }
            }
        }
    };
    Ok(layout(ctx, &record.name, Section::Environments, body))
}

fn row(ctx: &Ctx, d: &DeploymentRecord, current: Option<&DeploymentRecord>) -> Markup {
    let is_current = current.is_some_and(|c| c.id == d.id);
    html! {
        tr {
            td.first data-label="#" {
                "#" (d.id)
                @if is_current { " " span.badge.current { "current" } }
            }
            td data-label="Action" {
                @match (d.action, d.rollback_of) {
                    (Action::Stop, _) => "stop",
                    (_, Some(of)) => { span.badge { "↩ rollback" } " of #" (of) },
                    _ => "deploy",
                }
            }
            td data-label="Result" {
                (chip(deployment_state(d)))
                @if let Some(m) = &d.message { div.error { (m) } }
            }
            td data-label="Version" { (d.version.as_deref().unwrap_or("-")) }
            td data-label="Commit" { (commit(d.sha.as_deref())) }
            td data-label="By" { (d.triggered_by.as_deref().unwrap_or("-")) }
            td data-label="Started" { (when(d.started_at)) }
            td data-label="Run" {
                @match &d.run_id {
                    Some(run) => a href=(ctx.run(run)) { code { (run) } },
                    None => span.muted { "-" },
                }
            }
        }
    }
}
