//! `gitops watch`: polls a repository with gix, prints each event as a line of JSON, and runs
//! what it triggers (progress on standard error, so that standard output stays JSON).

use std::time::Duration;

use gitops_core::config::format_duration;
use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::event::GitEvent;
use gitops_core::scheduler::RunResult;
use gitops_core::source::watch::Watcher;
use gitops_examples::output;
use gitops_examples::text::count;
use gitops_examples::{errln, outln};
use tokio_util::sync::CancellationToken;

use crate::progress;
use crate::run::{Common, engine, prune_daily, run_options};

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
    let _pruning = match &engine {
        Some(engine) => Some(prune_daily(engine, common.retention)?),
        None => None,
    };
    let mut options = run_options(&common)?;
    options.actor = Some("watch".to_owned());
    if options.trusted_ref.is_none() {
        options.trusted_ref = args.base_branch.as_ref().map(|b| format!("refs/heads/{b}"));
    }
    let every = format_duration(args.interval);
    let only = if args.no_run {
        " (events only, nothing run)"
    } else {
        ""
    };
    if args.once {
        errln!(
            "checking {} once for changes since its last snapshot{only}",
            args.repo
        );
    } else {
        errln!("watching {} every {every}{only}", args.repo);
    }
    // Runs of this watch that failed, or events that could not be run: `--once` exits 1.
    let mut failed = 0;
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
                errln!("{} (trying again in {every})", crate::error(&e));
                tokio::select! {
                    _ = tokio::time::sleep(args.interval) => continue,
                    _ = crate::run::interrupted() => return Ok(()),
                }
            }
            Err(e) => return Err(err(&e)),
        };
        if poll.baseline {
            errln!(
                "first snapshot of {}: the baseline, nothing to report",
                args.repo
            );
        } else if args.once {
            errln!(
                "{}: {} since the last snapshot",
                args.repo,
                count(poll.events.len(), "change")
            );
        }
        for event in &poll.events {
            outln!("{}", serde_json::to_string(event).map_err(|e| err(&e))?);
            if let Some(engine) = &engine {
                match handle(engine, &watcher, event, &options).await {
                    Handled::Done { failed: f } => failed += f,
                    Handled::Interrupted => {
                        errln!("stopped watching");
                        return Ok(());
                    }
                }
            }
        }
        if let Some(engine) = &engine {
            let stopped = engine
                .reconcile(watcher.repo_name(), &poll.open_pull_requests)
                .await
                .map_err(|e| err(&e))?;
            for s in stopped {
                errln!(
                    "■ {} stopped: {} (deployment #{})",
                    s.environment,
                    s.reason.describe(),
                    s.deployment.id
                );
            }
        }
        if args.once {
            return match failed {
                0 => Ok(()),
                n => Err(format!("error: {} of this check failed", count(n, "run"))),
            };
        }
        if output::stdout_closed() {
            errln!("stopped watching: standard output closed");
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(args.interval) => {}
            why = crate::run::interrupted() => {
                errln!("stopped watching ({why})");
                return Ok(());
            }
        }
    }
}

/// How handling an event ended.
#[derive(PartialEq)]
enum Handled {
    /// Its runs ended; `failed` of them did not succeed (an event whose runs could not start
    /// counts as one).
    Done { failed: usize },
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
        return Handled::Done { failed: 0 };
    }
    let runs = match engine.start(event, watcher.repository(), options) {
        Ok(runs) => {
            crate::run::print_notes(&runs);
            runs
        }
        Err(e) => {
            errln!("{}", crate::error(&e));
            return Handled::Done { failed: 1 };
        }
    };
    let stop = CancellationToken::new();
    let interrupt = tokio::spawn({
        let stop = stop.clone();
        async move {
            crate::run::cancelled().await;
            stop.cancel();
        }
    });
    let ended = StartedRun::execute_all(runs, &stop).await;
    interrupt.abort();
    let mut failed = 0;
    for report in ended {
        match report {
            Ok(report) => {
                failed += usize::from(report.result != RunResult::Success);
                errln!("{}", progress::summary(&report));
                progress::failures(&report).for_each(|line| errln!("{line}"));
            }
            Err(e) => {
                failed += 1;
                errln!("{}", crate::error(&e));
            }
        }
    }
    if stop.is_cancelled() {
        return Handled::Interrupted;
    }
    match engine.finish_event(event).await {
        Ok(stopped) => {
            for s in &stopped {
                errln!("■ {} stopped: its pull request was closed", s.environment);
            }
        }
        Err(e) => errln!("{}", crate::error(&e)),
    }
    Handled::Done { failed }
}
