//! `gitops watch`: polls a repository with gix, prints each event as a line of JSON, and runs
//! what it triggers (progress on standard error, so that standard output stays JSON).

use std::time::Duration;

use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::source::repo::Watcher;

use crate::progress;
use crate::run::{Common, engine, run_options};

/// What `gitops watch` was asked to do.
pub struct WatchArgs {
    pub repo: String,
    pub interval: Duration,
    pub once: bool,
    pub no_run: bool,
    pub base_branch: Option<String>,
}

pub async fn watch(args: WatchArgs, common: Common) -> Result<(), String> {
    let err = |e: &dyn std::fmt::Display| format!("error: {e}");
    let state = common.state.clone();
    let base = args.base_branch.clone();
    let source = args.repo.clone();
    let mut watcher = tokio::task::spawn_blocking(move || {
        let w = Watcher::open(&source, &state)?;
        Ok::<_, gitops_core::Error>(match base {
            Some(b) => w.with_base_branch(b),
            None => w,
        })
    })
    .await
    .map_err(|e| err(&e))?
    .map_err(|e| err(&e))?;
    let engine = if args.no_run {
        None
    } else {
        Some(engine(&common)?)
    };
    let mut options = run_options(&common)?;
    options.actor = Some("watch".to_owned());
    eprintln!(
        "watching {} every {}s{}",
        args.repo,
        args.interval.as_secs_f64(),
        if args.no_run {
            " (events only, nothing run)"
        } else {
            ""
        }
    );
    loop {
        let (w, polled) = tokio::task::spawn_blocking(move || {
            let polled = watcher.poll();
            (watcher, polled)
        })
        .await
        .map_err(|e| err(&e))?;
        watcher = w;
        let poll = match polled {
            Ok(poll) => poll,
            // A long-running watch outlives a remote that does not answer for a while.
            Err(e) if !args.once => {
                eprintln!(
                    "error: {e} (trying again in {}s)",
                    args.interval.as_secs_f64()
                );
                tokio::select! {
                    _ = tokio::time::sleep(args.interval) => continue,
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
            Err(e) => return Err(err(&e)),
        };
        if poll.baseline {
            eprintln!(
                "first snapshot of {}: the baseline, nothing to report",
                args.repo
            );
        }
        for event in &poll.events {
            println!("{}", serde_json::to_string(event).map_err(|e| err(&e))?);
            if let Some(engine) = &engine {
                handle(engine, &watcher, event, &options).await;
            }
        }
        if let Some(engine) = &engine {
            let stopped = engine
                .reconcile(watcher.repo_name(), &poll.open_pull_requests)
                .await
                .map_err(|e| err(&e))?;
            for s in stopped {
                eprintln!(
                    "■ {} stopped: {} (deployment #{})",
                    s.environment,
                    s.reason.describe(),
                    s.deployment.id
                );
            }
        }
        if args.once {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped watching");
                return Ok(());
            }
        }
    }
}

/// Runs what `event` triggers; failures are reported and the watch goes on.
async fn handle(engine: &Engine, watcher: &Watcher, event: &GitEvent, options: &RunOptions) {
    if !crate::run::names_commit(event) {
        return;
    }
    match engine.handle(event, watcher.repository(), options).await {
        Ok(handled) => {
            for report in &handled.reports {
                eprintln!("{}", progress::summary(report));
            }
            for s in &handled.stopped {
                eprintln!("■ {} stopped: its pull request was closed", s.environment);
            }
        }
        Err(e) => eprintln!("error: {e}"),
    }
}
