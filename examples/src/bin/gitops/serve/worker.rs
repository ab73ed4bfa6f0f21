//! The inbox's worker: takes deliveries in the order they were accepted, fetches the
//! repository, completes the abbreviated commit ids an event names (Bitbucket's pull requests:
//! kept in the inbox as received, completed once fetched; a Bitbucket update whose head did not
//! move is made `edited`), starts the runs each event triggers (at most `--max-runs` at once; the rest wait
//! in the inbox), and marks the delivery done when they end. At start it goes on with the
//! deliveries a crashed server had taken: their interrupted runs are resumed (the stages they
//! recorded are kept), and a delivery none of whose runs had started is started again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gitops_core::config::Action;
use gitops_core::engine::{Engine, RunOptions, StartedRun};
use gitops_core::ledger::{Delivery, DeliveryOutcome, Ledger};
use gitops_core::repo::Repository;
use gitops_core::report::ReportTarget;
use gitops_core::scheduler::{RunEvent, RunReport, WaitReason};
use gitops_core::{Error, ErrorChain};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use super::log_safe;
use super::metrics::Metrics;
use crate::progress;

/// How often the inbox is looked at without being woken (deliveries another server sharing the
/// state dir accepted), and how often done deliveries past the replay window are pruned.
const POLL: Duration = Duration::from_secs(2);
const PRUNE: Duration = Duration::from_secs(3600);

pub struct Worker {
    pub engine: Arc<Engine>,
    pub repo: Repository,
    pub options: RunOptions,
    pub ledger: Ledger,
    pub metrics: Arc<Metrics>,
    pub wake: Arc<Notify>,
    /// One permit a run.
    pub slots: Arc<Semaphore>,
    /// Held by the delivery being started, until each of its runs has joined its concurrency
    /// group: deliveries start, and take their places in groups, in the inbox's order (a push
    /// whose checkout is quick does not overtake an earlier one).
    pub order: Arc<tokio::sync::Mutex<()>>,
    /// No new runs start once it is cancelled (the first signal); those left are resumed at
    /// the next start.
    pub shutdown: CancellationToken,
    /// Cancels every run (the grace period ended, or a second signal).
    pub abort: CancellationToken,
    /// Done deliveries are kept this long (the replay window).
    pub keep_secs: f64,
    /// Reports the runs of deliveries to their forge (`--github-token-env`,
    /// `--gitlab-api-token-env`).
    pub reporting: Option<super::report::Reporting>,
}

/// The right to start the next delivery (see [`Worker::order`]).
type Turn = tokio::sync::OwnedMutexGuard<()>;

/// Runs `f` off the async threads (SQLite and git block).
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

impl Worker {
    /// Takes deliveries until `shutdown`, then waits for the runs it started.
    pub async fn work(self: Arc<Self>) {
        let shutdown = self.shutdown.clone();
        let mut tasks = JoinSet::new();
        let ledger = self.ledger.clone();
        match blocking(move || ledger.claim_interrupted_deliveries()).await {
            Some(Ok(interrupted)) => {
                for delivery in interrupted {
                    tracing::info!(
                        seq = delivery.seq,
                        delivery = delivery.delivery_id.as_deref().unwrap_or(""),
                        repo = delivery.event.repo,
                        "resuming a delivery a stopped server had taken"
                    );
                    tasks.spawn(self.clone().resume(delivery));
                }
            }
            Some(Err(e)) => {
                tracing::error!(error = %log_safe(ErrorChain(&e)), "reading the inbox failed")
            }
            None => {}
        }
        let mut pruned = Instant::now() - PRUNE;
        loop {
            while tasks.try_join_next().is_some() {}
            if pruned.elapsed() >= PRUNE {
                pruned = Instant::now();
                let (ledger, keep) = (self.ledger.clone(), self.keep_secs);
                if let Some(Err(e)) = blocking(move || ledger.prune_deliveries(keep)).await {
                    tracing::warn!(error = %log_safe(ErrorChain(&e)), "pruning the inbox failed");
                }
            }
            // The turn first: waiting for it holds no slot that a run could use.
            let turn = tokio::select! {
                t = self.order.clone().lock_owned() => t,
                _ = shutdown.cancelled() => break,
            };
            let slot = tokio::select! {
                s = self.slots.clone().acquire_owned() => match s {
                    Ok(s) => s,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let ledger = self.ledger.clone();
            match blocking(move || ledger.take_delivery()).await {
                Some(Ok(Some(delivery))) => {
                    tasks.spawn(self.clone().process(delivery, slot, turn));
                }
                Some(Ok(None)) => {
                    drop((slot, turn));
                    tokio::select! {
                        _ = self.wake.notified() => {}
                        _ = tokio::time::sleep(POLL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                Some(Err(e)) => {
                    drop((slot, turn));
                    tracing::error!(error = %log_safe(ErrorChain(&e)), "taking a delivery from the inbox failed");
                    tokio::select! {
                        _ = tokio::time::sleep(POLL) => {}
                        _ = shutdown.cancelled() => break,
                    }
                }
                None => drop((slot, turn)),
            }
        }
        while tasks.join_next().await.is_some() {}
    }

    /// Runs what a delivery's event triggers, then marks it done.
    async fn process(self: Arc<Self>, delivery: Delivery, slot: OwnedSemaphorePermit, turn: Turn) {
        if let Some(outcome) = self.start_and_run(&delivery, Some(slot), Some(turn)).await {
            self.finish(&delivery, outcome).await;
        }
    }

    /// How the delivery ended; `None` when a shutdown kept runs of it from starting (it stays
    /// taken, and the next start goes on with it).
    async fn start_and_run(
        &self,
        delivery: &Delivery,
        slot: Option<OwnedSemaphorePermit>,
        turn: Option<Turn>,
    ) -> Option<DeliveryOutcome> {
        let event = &delivery.event;
        if self.repo.remote_url("origin").is_some() {
            let repo = self.repo.clone();
            match blocking(move || repo.fetch_remote("origin")).await {
                Some(Ok(())) => {}
                Some(Err(e)) => {
                    tracing::warn!(seq = delivery.seq, error = %log_safe(&e), "fetching failed")
                }
                None => tracing::warn!(seq = delivery.seq, "fetching failed"),
            }
        }
        let edited;
        let (delivery, event) = match self.unmoved_update(delivery).await {
            Some(d) => {
                edited = d;
                (&edited, &edited.event)
            }
            None => (delivery, event),
        };
        let completed;
        let (delivery, event) = if Repository::has_short_ids(event) {
            let (repo, ev) = (self.repo.clone(), event.clone());
            match blocking(move || repo.complete_ids(&ev)).await {
                Some(Ok(event)) => {
                    let mut full = delivery.clone();
                    full.event = event;
                    completed = full;
                    (&completed, &completed.event)
                }
                Some(Err(e)) => {
                    tracing::error!(seq = delivery.seq, repo = event.repo, error = %log_safe(&e), "the event's commit cannot be told");
                    return Some(DeliveryOutcome::Failed);
                }
                None => return Some(DeliveryOutcome::Failed),
            }
        } else {
            (delivery, event)
        };
        if !crate::run::names_commit(event) {
            return Some(DeliveryOutcome::Nothing);
        }
        let mut options = self.options.clone();
        options.delivery = Some(delivery.seq);
        let (engine, repo, ev) = (self.engine.clone(), self.repo.clone(), event.clone());
        let runs = match blocking(move || engine.start(&ev, &repo, &options)).await {
            Some(Ok(runs)) => runs,
            Some(Err(e @ Error::Refused { .. })) => {
                tracing::warn!(seq = delivery.seq, repo = event.repo, error = %log_safe(ErrorChain(&e)), "event refused");
                return Some(DeliveryOutcome::Refused);
            }
            Some(Err(e)) => {
                tracing::error!(seq = delivery.seq, repo = event.repo, error = %log_safe(ErrorChain(&e)), "starting the event's runs failed");
                return Some(DeliveryOutcome::Failed);
            }
            None => return Some(DeliveryOutcome::Failed),
        };
        crate::run::print_notes(&runs);
        let outcome = if runs.is_empty() {
            DeliveryOutcome::Nothing
        } else {
            DeliveryOutcome::Ran
        };
        if !self.execute(delivery, runs, slot, turn).await {
            return None;
        }
        self.finish_event(delivery).await;
        Some(outcome)
    }

    /// A Bitbucket `pullrequest:updated` (parsed as `synchronize`: Bitbucket sends no previous
    /// commit) whose head is the one the pull request's last delivery named: an edit of its
    /// title or description, made `edited`. `None` when it is not such a delivery, or when no
    /// earlier delivery of the pull request is kept.
    async fn unmoved_update(&self, delivery: &Delivery) -> Option<Delivery> {
        let pr = delivery.event.pull_request()?;
        if delivery.provider != "bitbucket" || pr.action != "synchronize" {
            return None;
        }
        let (ledger, repo, number, seq) = (
            self.ledger.clone(),
            delivery.event.repo.clone(),
            pr.number,
            delivery.seq,
        );
        let previous = blocking(move || {
            ledger.previous_pull_request_delivery("bitbucket", &repo, number, seq)
        })
        .await?
        .ok()??;
        let before = previous.event.pull_request()?.head.sha.clone();
        if before.is_none() || before != pr.head.sha {
            return None;
        }
        let mut edited = delivery.clone();
        if let gitops_core::event::EventPayload::PullRequest(pr) = &mut edited.event.payload {
            "edited".clone_into(&mut pr.action);
        }
        Some(edited)
    }

    /// Goes on with a delivery a stopped server had taken.
    async fn resume(self: Arc<Self>, delivery: Delivery) {
        let ledger = self.ledger.clone();
        let seq = delivery.seq;
        let runs = match blocking(move || ledger.delivery_runs(seq)).await {
            Some(Ok(runs)) => runs,
            Some(Err(e)) => {
                tracing::error!(seq, error = %log_safe(ErrorChain(&e)), "reading the delivery's runs failed");
                self.finish(&delivery, DeliveryOutcome::Failed).await;
                return;
            }
            None => return,
        };
        if runs.is_empty() {
            // Taken, and nothing started: start it now.
            let slot = self.slots.clone().acquire_owned().await.ok();
            if let Some(outcome) = self.start_and_run(&delivery, slot, None).await {
                self.finish(&delivery, outcome).await;
            }
            return;
        }
        let mut started = Vec::new();
        for run in runs.into_iter().filter(|r| r.is_interrupted()) {
            let (engine, options, id) = (self.engine.clone(), self.options.clone(), run.id.clone());
            match blocking(move || engine.resume(&id, &options)).await {
                Some(Ok(s)) => started.push(s),
                Some(Err(e)) => {
                    tracing::error!(seq, run = run.id, error = %log_safe(ErrorChain(&e)), "resuming the run failed")
                }
                None => {}
            }
        }
        if self.execute(&delivery, started, None, None).await {
            self.finish_event(&delivery).await;
            self.finish(&delivery, DeliveryOutcome::Ran).await;
        }
    }

    /// Executes runs, each once it has a slot (`first` is one already held); `turn` is let go
    /// once each has begun (joined its concurrency group). False when a shutdown kept some from
    /// starting: they stay recorded as started, and the next start resumes them.
    async fn execute(
        &self,
        delivery: &Delivery,
        runs: Vec<StartedRun>,
        mut first: Option<OwnedSemaphorePermit>,
        turn: Option<Turn>,
    ) -> bool {
        let mut tasks = Vec::new();
        let mut complete = true;
        for run in runs {
            let slot = match first.take() {
                Some(slot) => Some(slot),
                None => tokio::select! {
                    s = self.slots.clone().acquire_owned() => s.ok(),
                    _ = self.shutdown.cancelled() => None,
                },
            };
            if slot.is_none() || self.shutdown.is_cancelled() {
                tracing::info!(
                    seq = delivery.seq,
                    run = run.id,
                    "shutting down: the run is left for the next start"
                );
                complete = false;
                continue;
            }
            let (abort, token) = (self.abort.clone(), run.cancel_token());
            let relay = tokio::spawn(async move {
                abort.cancelled().await;
                token.cancel();
            });
            let reporting = self.report(delivery, &run);
            let observer = tokio::spawn(observe(run.subscribe(), self.metrics.clone()));
            let mut begun = run.subscribe();
            tasks.push(tokio::spawn(async move {
                let report = run.execute().await;
                relay.abort();
                drop(slot);
                let _ = observer.await;
                // Its last status is in the outbox before the delivery is done.
                if let Some(reporting) = reporting {
                    let _ = reporting.await;
                }
                report
            }));
            if turn.is_some() {
                // Its first event (queued in its group, or started) comes once it has joined
                // its group; a run that ends first closes the channel.
                let _ = begun.recv().await;
            }
        }
        drop(turn);
        for task in tasks {
            match task.await {
                Ok(Ok(report)) => self.ran(delivery, &report).await,
                Ok(Err(e)) => {
                    tracing::error!(seq = delivery.seq, error = %log_safe(ErrorChain(&e)), "a run failed to record")
                }
                Err(e) => {
                    tracing::error!(seq = delivery.seq, error = %log_safe(&e), "a run crashed")
                }
            }
        }
        complete
    }

    /// Follows a run of a delivery from a forge reported to, turning its events into commit
    /// statuses, deployments and (for a pull request) its comment, until it ends.
    fn report(&self, delivery: &Delivery, run: &StartedRun) -> Option<JoinHandle<()>> {
        let reporter = self.reporting.as_ref()?.to(&delivery.provider)?;
        let target = ReportTarget::for_event(&delivery.provider, &delivery.event)?;
        let (reporter, events) = (reporter.clone(), run.subscribe());
        let (id, pipeline) = (run.id.clone(), run.pipeline.name.clone());
        Some(tokio::spawn(async move {
            reporter.follow(target, &id, &pipeline, events).await
        }))
    }

    /// Logs a run's end and counts it.
    async fn ran(&self, delivery: &Delivery, report: &RunReport) {
        self.metrics.run(&report.pipeline, report.result.name());
        tracing::info!(
            seq = delivery.seq,
            delivery = delivery.delivery_id.as_deref().unwrap_or(""),
            repo = delivery.event.repo,
            run = report.run_id,
            pipeline = report.pipeline,
            result = report.result.name(),
            duration_secs = report.duration_secs,
            "{}",
            log_safe(progress::summary(report))
        );
        let (ledger, run_id) = (self.ledger.clone(), report.run_id.clone());
        if let Some(Ok(deployments)) = blocking(move || ledger.run_deployments(&run_id)).await {
            for d in deployments {
                let action = match (d.action, d.rollback_of) {
                    (_, Some(_)) => "rollback",
                    (Action::Stop, None) => "stop",
                    _ => "deploy",
                };
                self.metrics
                    .deployment(&d.environment, action, d.result.name());
            }
        }
    }

    async fn finish_event(&self, delivery: &Delivery) {
        if let Err(e) = self.engine.finish_event(&delivery.event).await {
            tracing::error!(seq = delivery.seq, error = %log_safe(ErrorChain(&e)), "stopping what the event ends failed");
        }
    }

    async fn finish(&self, delivery: &Delivery, outcome: DeliveryOutcome) {
        let (ledger, seq) = (self.ledger.clone(), delivery.seq);
        if let Some(Err(e)) = blocking(move || ledger.finish_delivery(seq, outcome)).await {
            tracing::error!(seq, error = %log_safe(ErrorChain(&e)), "marking the delivery done failed");
        }
        tracing::info!(
            seq,
            delivery = delivery.delivery_id.as_deref().unwrap_or(""),
            repo = delivery.event.repo,
            outcome = outcome.as_str(),
            "delivery done"
        );
    }
}

/// Counts what a run's events say: stage durations, and how long deployments waited for an
/// environment's lock.
async fn observe(mut events: tokio::sync::broadcast::Receiver<RunEvent>, metrics: Arc<Metrics>) {
    use tokio::sync::broadcast::error::RecvError;
    let mut pipeline = String::new();
    // Stage → (environment, when it began to wait for the lock).
    let mut waiting: std::collections::HashMap<String, (String, f64)> = Default::default();
    loop {
        let event = match events.recv().await {
            Ok(e) => e,
            Err(RecvError::Lagged(_)) => continue,
            Err(RecvError::Closed) => return,
        };
        let stage = match &event {
            RunEvent::RunStarted { pipeline: p, .. } => {
                pipeline.clone_from(p);
                None
            }
            RunEvent::StageWaiting {
                stage,
                waiting: WaitReason::Lock { environment, .. },
                at,
            } => {
                waiting
                    .entry(stage.clone())
                    .or_insert_with(|| (environment.clone(), *at));
                None
            }
            RunEvent::StageFinished {
                stage,
                result,
                duration_secs,
                ..
            } => {
                metrics.stage(&pipeline, result.name(), *duration_secs);
                Some(stage)
            }
            RunEvent::StageWaiting { stage, .. }
            | RunEvent::Log { stage, .. }
            | RunEvent::StageRetrying { stage, .. } => Some(stage),
            RunEvent::RunFinished { .. } => return,
            _ => None,
        };
        if let Some(stage) = stage {
            if let Some((environment, since)) = waiting.remove(stage) {
                metrics.lock_wait(&environment, (event_at(&event) - since).max(0.0));
            }
        }
    }
}

fn event_at(event: &RunEvent) -> f64 {
    match event {
        RunEvent::StageWaiting { at, .. }
        | RunEvent::Log { at, .. }
        | RunEvent::StageRetrying { at, .. }
        | RunEvent::StageFinished { at, .. } => *at,
        _ => 0.0,
    }
}
