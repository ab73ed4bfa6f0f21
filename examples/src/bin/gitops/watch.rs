//! `gitops watch`: polls a repository with gix, prints each event as a line of JSON, and runs
//! what it triggers (progress on standard error, so that standard output stays JSON).

use std::time::Duration;

use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::event::GitEvent;
use gitops_core::source::watch::Watcher;
use tokio_util::sync::CancellationToken;

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
    let err = |e: &(dyn std::error::Error + 'static)| crate::error(e);
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
    if options.trusted_ref.is_none() {
        options.trusted_ref = args.base_branch.as_ref().map(|b| format!("refs/heads/{b}"));
    }
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
                    "{} (trying again in {}s)",
                    crate::error(&e),
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
                if handle(engine, &watcher, event, &options).await == Handled::Interrupted {
                    eprintln!("stopped watching");
                    return Ok(());
                }
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

/// How handling an event ended.
#[derive(PartialEq)]
enum Handled {
    Done,
    /// Ctrl-C came while its runs ran: they were cancelled, and the watch stops.
    Interrupted,
}

/// Runs what `event` triggers; failures are reported and the watch goes on. Ctrl-C meanwhile
/// cancels the runs (their stages are stopped and the runs recorded as cancelled), waits for
/// them to end, and stops the watch.
async fn handle(
    engine: &Engine,
    watcher: &Watcher,
    event: &GitEvent,
    options: &RunOptions,
) -> Handled {
    if !crate::run::names_commit(event) {
        return Handled::Done;
    }
    let runs = match engine.start(event, watcher.repository(), options) {
        Ok(runs) => {
            crate::run::print_notes(&runs);
            runs
        }
        Err(e) => {
            eprintln!("{}", crate::error(&e));
            return Handled::Done;
        }
    };
    let stop = CancellationToken::new();
    let interrupt = tokio::spawn({
        let stop = stop.clone();
        async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: cancelling (running stages are being stopped)");
                stop.cancel();
            }
        }
    });
    let ended = StartedRun::execute_all(runs, &stop).await;
    interrupt.abort();
    for report in ended {
        match report {
            Ok(report) => {
                eprintln!("{}", progress::summary(&report));
                progress::failures(&report).for_each(|line| eprintln!("{line}"));
            }
            Err(e) => eprintln!("{}", crate::error(&e)),
        }
    }
    if stop.is_cancelled() {
        return Handled::Interrupted;
    }
    match engine.finish_event(event).await {
        Ok(stopped) => {
            for s in &stopped {
                eprintln!("■ {} stopped: its pull request was closed", s.environment);
            }
        }
        Err(e) => eprintln!("{}", crate::error(&e)),
    }
    Handled::Done
}
