//! `/runs/{id}`: a run's event, its stage graph, and each stage with its result, outputs,
//! deployment and log (the failed stage's open; a running stage's growing live), with the
//! approve and reject buttons of a deploy that waits for them.

use axum::Extension;
use axum::extract::{Path, State};
use gitops_core::backend::LogStream;
use gitops_core::engine::Engine;
use gitops_core::ledger::{
    ApprovalRecord, ApprovalStatus, DeploymentRecord, LedgerError, RunRecord,
};
use gitops_core::logs::LogEntry;
use gitops_core::scheduler::StageResult;
use maud::{Markup, html};

use super::graph::graph;
use super::stages::{StageView, run_state, stages_of};
use super::view::{self, Ctx, Section, State as Shown, chip, commit, layout, when};
use super::{PageError, PageResult, page};
use crate::ui::{UiState, Viewer};

/// The last lines of a stage's log shown on the page; the API has them all.
const LOG_LINES_SHOWN: usize = 2000;

/// `GET /runs/{id}`.
pub async fn handler(
    State(state): State<UiState>,
    viewer: Option<Extension<Viewer>>,
    Path(id): Path<String>,
) -> PageResult {
    page(state, viewer, move |state, ctx| {
        render(&state.engine, ctx, &id)
    })
    .await
}

pub(super) fn render(engine: &Engine, ctx: &Ctx, id: &str) -> Result<Markup, PageError> {
    let run = match engine.ledger().run(id) {
        Err(LedgerError::UnknownRun(_)) => {
            return Err(PageError::NotFound(format!("there is no run {id}")));
        }
        run => run?,
    };
    let waiting: Vec<ApprovalRecord> = engine
        .ledger()
        .pending_approvals()?
        .into_iter()
        .filter(|a| a.run_id == run.id)
        .collect();
    let stages = stages_of(engine, &run, &waiting)?;
    let deployments = engine.ledger().run_deployments(&run.id)?;
    let waits = stages.iter().any(|s| s.state == Shown::Waiting);
    let mut blocks = Vec::with_capacity(stages.len());
    for stage in &stages {
        blocks.push(stage_block(
            ctx,
            engine,
            &run,
            stage,
            &deployments,
            &waiting,
        )?);
    }
    let body = html! {
        h1 { (chip(run_state(&run, waits))) " Run " code { (run.id) } }
        (facts(ctx, &run))
        h2 { "Stages" }
        @if stages.is_empty() {
            p.muted { "No stage of this run was recorded." }
        }
        (graph(&stages))
        @for block in blocks { (block) }
    };
    Ok(layout(ctx, &format!("Run {}", run.id), Section::Runs, body))
}

/// What started the run, and when.
fn facts(ctx: &Ctx, run: &RunRecord) -> Markup {
    let event = &run.event;
    html! {
        dl.facts {
            dt { "Pipeline" } dd { a href=(ctx.href_query("/runs", &[("pipeline", Some(&run.pipeline))])) { (run.pipeline) } }
            dt { "Event" } dd {
                (event.kind().as_str())
                @if let Some(action) = event.action() { " (" (action) ")" }
            }
            @if let Some(pr) = event.pull_request() {
                dt { "Pull request" } dd {
                    "#" (pr.number) " " (pr.title)
                    @if pr.fork { " " span.badge { "from a fork" } }
                }
                dt { "Branch" } dd { code { (pr.head.git_ref) } " → " code { (pr.base.git_ref) } }
            } @else {
                dt { "Ref" } dd { code { (event.git_ref().unwrap_or_else(|| "-".to_owned())) } }
            }
            dt { "Commit" } dd { (commit(run.commit.as_deref().or(event.sha.as_deref()))) }
            dt { "Repository" } dd { (event.repo) }
            dt { "Actor" } dd { (run.actor.as_deref().unwrap_or("-")) }
            dt { "Trust" } dd { (run.trust.map_or("-", |t| t.as_str())) }
            dt { "Started" } dd { (when(run.started_at)) }
            dt { "Duration" } dd { (view::duration(view::run_secs(run))) }
            @if let Some(of) = &run.rerun_of {
                dt { "Re-runs" } dd { a href=(ctx.run(of)) { code { (of) } } }
            }
        }
    }
}

fn stage_block(
    ctx: &Ctx,
    engine: &Engine,
    run: &RunRecord,
    stage: &StageView,
    deployments: &[DeploymentRecord],
    waiting: &[ApprovalRecord],
) -> Result<Markup, PageError> {
    let report = stage.report.as_ref();
    let deployment = deployments
        .iter()
        .rev()
        .find(|d| d.stage.as_deref() == Some(stage.id.as_str()));
    let approval = waiting.iter().find(|a| a.stage == stage.id);
    // Who decided a deploy that waited for an approval.
    let decided = match report {
        Some(_) => engine
            .ledger()
            .approval(&run.id, &stage.id)?
            .filter(|a| a.status != ApprovalStatus::Pending),
        None => None,
    };
    let log = match stage.state {
        Shown::Pending | Shown::NotRun | Shown::Skipped => Vec::new(),
        _ => engine.logs().read(&run.id, &stage.id)?,
    };
    let live = stage.state == Shown::Running;
    // A deploy waiting for its approval has printed nothing yet, as a rule.
    let has_log = live || !log.is_empty();
    Ok(html! {
        article.stage id={ "stage-" (stage.id) } {
            h3 { (chip(stage.state)) span { (stage.id) } }
            @if let Some(r) = report {
                p.facts {
                    @if let Some(d) = r.duration() { "took " (view::duration(d.as_secs_f64())) }
                    @if r.attempts > 1 { " · " (r.attempts) " attempts" }
                    @if r.flaky { " · " span.badge { "flaky" } }
                    @if r.reused { " · reused from an earlier run" }
                }
                @match &r.result {
                    StageResult::Failure { message, exit_code } => div.error role="alert" {
                        (message)
                        @if let Some(code) = exit_code.filter(|_| !message.contains("exit code")) {
                            " (exit code " (code) ")"
                        }
                    },
                    StageResult::TimedOut { after_secs } => div.error role="alert" {
                        "timed out after " (view::duration(*after_secs)) " and was stopped"
                    },
                    StageResult::Skipped { reason } => p { "Skipped: " (crate::progress::skip_reason(reason)) },
                    _ => {},
                }
                @if !r.outputs.is_empty() {
                    table.outputs aria-label="Outputs" {
                        @for (key, value) in &r.outputs {
                            tr { td { (key) } td { (view::maybe_link(value)) } }
                        }
                    }
                }
            }
            @if let Some(d) = deployment { (deployment_line(ctx, d)) }
            @if let Some(a) = approval { (approve(ctx, run, a)) }
            @if let Some(a) = &decided {
                p.facts {
                    @if a.status == ApprovalStatus::Approved { "Approved" } @else { "Rejected" }
                    " by " strong { (a.decided_by.as_deref().unwrap_or("someone unrecorded")) }
                }
            }
            @if has_log {
                details.logbox open[stage.state.is_failure() || live] {
                    summary {
                        "Log (" span.count { (lines(log.len())) } ")"
                        @if live { span.live-status aria-live="polite" { "live" } }
                    }
                    (log_lines(ctx, run, stage, &log, live))
                }
            }
        }
    })
}

fn lines(n: usize) -> String {
    if n == 1 {
        "1 line".to_owned()
    } else {
        format!("{n} lines")
    }
}

fn log_lines(
    ctx: &Ctx,
    run: &RunRecord,
    stage: &StageView,
    log: &[LogEntry],
    live: bool,
) -> Markup {
    let hidden = log.len().saturating_sub(LOG_LINES_SHOWN);
    let url = ctx.stage_log(&run.id, &stage.id);
    html! {
        @if hidden > 0 {
            p.muted { (lines(hidden)) " before these are not shown: " a href=(url) { "the whole log" } }
        }
        div.log role="log" data-live=[live.then_some(&url)] data-lines=(log.len()) {
            @if log.is_empty() { div.note.empty { "no lines yet" } }
            @for entry in &log[hidden..] {
                @let class = match entry.stream {
                    _ if entry.dropped.is_some() => "line note",
                    LogStream::Stderr => "line stderr",
                    LogStream::Backend => "line note",
                    _ => "line",
                };
                div class=(class) { (entry.line) }
            }
        }
    }
}

/// The deployment a stage made: where to, what, and how it went.
fn deployment_line(ctx: &Ctx, d: &DeploymentRecord) -> Markup {
    let stop = d.action == gitops_core::config::Action::Stop;
    html! {
        p {
            @if stop { "Stopped " } @else { "Deployed to " }
            a href=(ctx.environment(&d.environment)) { strong { (d.environment) } }
            @if let Some(v) = &d.version { " version " (v) }
            " (deployment #" (d.id) ", " (d.result.name()) ")"
            @if let Some(url) = d.outputs.get("url") { ": " (view::maybe_link(url)) }
        }
        @if let Some(message) = &d.message { div.error { (message) } }
    }
}

/// The buttons that decide a waiting deploy, for a viewer who may; how to decide it for one
/// who may not.
fn approve(ctx: &Ctx, run: &RunRecord, a: &ApprovalRecord) -> Markup {
    let action = |verb: &str| ctx.stage_action(&run.id, &a.stage, verb);
    html! {
        div.notice {
            p { "This deploy to " strong { (a.environment) } " waits for an approval (asked " (when(a.requested_at)) ")." }
            @if ctx.viewer.can_act() {
                form.decide method="post" action=(action("approve")) {
                    @if let Some(csrf) = &ctx.viewer.csrf { input type="hidden" name="csrf" value=(csrf); }
                    button.approve type="submit" { "Approve" }
                }
                form.decide method="post" action=(action("reject")) {
                    @if let Some(csrf) = &ctx.viewer.csrf { input type="hidden" name="csrf" value=(csrf); }
                    button.reject type="submit" { "Reject" }
                }
            } @else {
                p {
                    a href=(ctx.href("/login")) { "Sign in" } " to approve or reject it here, or run "
                    code { "gitops approve " (run.id) " " (a.stage) } " (or " code { "gitops reject" } ") where the state dir is."
                }
            }
        }
    }
}
