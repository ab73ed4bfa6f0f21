//! The run loop: in-degree counts, a ready worklist, per-backend queues within the parallelism
//! bounds; stage tasks report over a channel. O(stages + edges) bookkeeping, no polling, and no
//! allocation per stage beyond the task and what the stage's own templates need.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;

use super::attempt::{self, Done, Finished, Job, Shared, Target};
use super::context::RuntimeContext;
use super::events::RunEvent;
use super::progress::Progress;
use super::report::{RunReport, RunResult, SkipReason, StageReport, StageResult};
use super::{Run, RunRecorder};
use crate::backend::{EnvironmentPolicy, EnvironmentTarget, LogLine, LogTarget};
use crate::expr::StageStatus;
use crate::plan::layout::{
    CONTINUE_ON_ERROR, ENVIRONMENT, HAS_CONDITION, IMPLICIT_SUCCESS, POLICY, RENDERS,
};

enum Decision {
    Run,
    Skip(SkipReason),
}

struct Driver {
    run: Run,
    shared: Arc<Shared>,
    done: mpsc::UnboundedReceiver<Finished>,
    states: Progress,
    remaining: Vec<u32>,
    ready: VecDeque<usize>,
    /// Per stage: its backend's index, and the slot of its (action, backend) target.
    backend_of: Vec<usize>,
    target_of: Vec<usize>,
    queues: Vec<VecDeque<usize>>,
    limits: Vec<usize>,
    busy: Vec<usize>,
    running: usize,
    cancelled: bool,
}

pub(super) async fn drive(run: Run) -> RunReport {
    let mut d = Driver::new(run);
    d.emit(|at| RunEvent::RunStarted {
        run_id: d.run.spec.info.id.clone(),
        pipeline: d.run.pipeline.name.clone(),
        stages: d.states.len(),
        at,
    });
    // One wait for the run's cancellation for the whole loop, not a new one per completion.
    let token = d.run.cancel.clone();
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    loop {
        while let Some(i) = d.ready.pop_front() {
            match d.decide(i) {
                Decision::Skip(reason) => {
                    d.finish(
                        i,
                        StageResult::Skipped { reason },
                        0,
                        BTreeMap::new(),
                        None,
                        None,
                    )
                    .await;
                }
                Decision::Run => {
                    d.queues[d.backend_of[i]].push_back(i);
                    let stage = &d.run.pipeline.stages[i].id;
                    d.emit(|at| RunEvent::StageQueued {
                        stage: stage.clone(),
                        at,
                    });
                }
            }
        }
        while d.running < d.run.options.max_parallel.max(1) {
            let Some(i) = d.next_launchable() else { break };
            if d.run.pipeline.layout.has(i, RENDERS | ENVIRONMENT | POLICY) {
                attempt::spawn(d.job(i));
            } else {
                attempt::spawn_plain(
                    d.shared.clone(),
                    i as u32,
                    d.backend_of[i] as u32,
                    d.target_of[i] as u32,
                );
            }
            d.running += 1;
            d.busy[d.backend_of[i]] += 1;
        }
        if d.running == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = &mut cancelled, if !d.cancelled => d.cancel_queued().await,
            finished = d.done.recv() => {
                // The driver holds a sender itself, so the channel never closes under it.
                let Some(finished) = finished else { break };
                let index = finished.index();
                d.running -= 1;
                d.busy[d.backend_of[index]] -= 1;
                match finished {
                    Finished::Succeeded { started, finished, .. } => {
                        let (s, f) = (started.as_secs_f64(), finished.as_secs_f64());
                        d.finish(index, StageResult::Success, 1, BTreeMap::new(), Some(s), Some(f)).await;
                    }
                    Finished::Done(done) => {
                        let Done { result, attempts, outputs, started, finished, .. } = *done;
                        let (s, f) = (started.as_secs_f64(), finished.as_secs_f64());
                        d.finish(index, result, attempts, outputs, Some(s), Some(f)).await;
                    }
                    Finished::Panicked(_) => {
                        let message = "the stage's task panicked (a bug in its backend)".to_owned();
                        let at = d.shared.start.elapsed().as_secs_f64();
                        d.finish(index, StageResult::Failure { message, exit_code: None }, 1, BTreeMap::new(), None, Some(at)).await;
                    }
                }
            }
        }
    }
    d.report()
}

impl Driver {
    fn new(run: Run) -> Driver {
        let graph = run.pipeline.graph();
        let mut states = Progress::new(run.pipeline.stages.iter().map(|s| s.id.as_str()));
        for (i, stage) in run.pipeline.stages.iter().enumerate() {
            if let Some(r) = run.spec.reuse.get(&stage.id) {
                let failed = r.result.is_failure();
                let ok =
                    matches!(r.result, StageResult::Success) || (failed && stage.continue_on_error);
                let report = StageReport {
                    reused: true,
                    ..r.clone()
                };
                states.finish(i, report, ok, failed && !stage.continue_on_error);
            }
        }
        // Reused stages may have reused ancestors only; propagate ancestry failures in order.
        for &s in graph.order() {
            if states.report(s.index()).reused
                && graph.needs(s).any(|n| states.failed_ancestry(n.index()))
            {
                states.mark_failed_ancestry(s.index());
            }
        }
        let layout = &run.pipeline.layout;
        let remaining: Vec<u32> = (0..states.len())
            .map(|i| {
                layout
                    .needs(i)
                    .iter()
                    .filter(|&&n| !states.finished(n as usize))
                    .count() as u32
            })
            .collect();
        let ready = (0..states.len())
            .filter(|&i| !states.finished(i) && remaining[i] == 0)
            .collect();

        // Backends and their targets, resolved once per run.
        let mut backend_names: Vec<Arc<str>> = Vec::new();
        let mut slots: Vec<(usize, crate::config::Action)> = Vec::new();
        let mut targets = Vec::new();
        let mut backend_of = Vec::with_capacity(run.pipeline.stages.len());
        let mut target_of = Vec::with_capacity(run.pipeline.stages.len());
        for s in &run.pipeline.stages {
            let b = match backend_names.iter().position(|n| **n == *s.backend) {
                Some(b) => b,
                None => {
                    backend_names.push(Arc::from(s.backend.as_str()));
                    backend_names.len() - 1
                }
            };
            let t = match slots.iter().position(|&(sb, a)| sb == b && a == s.action) {
                Some(t) => t,
                None => {
                    slots.push((b, s.action));
                    targets.push(Target::new(s.action, &s.backend, &run.registry));
                    slots.len() - 1
                }
            };
            backend_of.push(b);
            target_of.push(t);
        }
        let limits = backend_names
            .iter()
            .map(|n| {
                run.options
                    .per_backend
                    .get(&**n)
                    .copied()
                    .unwrap_or(usize::MAX)
            })
            .collect();
        let queues = backend_names.iter().map(|_| VecDeque::new()).collect();
        let busy = vec![0; backend_names.len()];

        let start = Instant::now();
        let observed = run.events.receiver_count() > 0;
        let events = run.events.clone();
        let log = LogTarget::new(run.spec.secrets.clone(), move |l: LogLine| {
            if observed {
                let at = start.elapsed().as_secs_f64();
                let _ = events.send(RunEvent::Log {
                    stage: l.stage,
                    attempt: l.attempt,
                    stream: l.stream,
                    line: l.line,
                    at,
                });
            }
        });
        let (tx, done) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            events: run.events.clone(),
            run_cancel: run.cancel.clone(),
            cancel_shards: (0..64)
                .map(|_| Arc::new(run.cancel.child_token()))
                .collect(),
            observed,
            start,
            targets,
            backend_names,
            log,
            done: tx,
            gate: run.spec.gate.clone(),
            info: run.spec.info.clone(),
            env: run.spec.env.clone(),
            pipeline: run.pipeline.clone(),
        });
        let cancelled = run.cancel.is_cancelled();
        Driver {
            run,
            shared,
            done,
            states,
            remaining,
            ready,
            backend_of,
            target_of,
            queues,
            limits,
            busy,
            running: 0,
            // A run cancelled before it started (superseded while queued) starts nothing.
            cancelled,
        }
    }

    fn emit(&self, event: impl FnOnce(f64) -> RunEvent) {
        if self.shared.observed {
            let _ = self
                .run
                .events
                .send(event(self.shared.start.elapsed().as_secs_f64()));
        }
    }

    fn decide(&self, i: usize) -> Decision {
        if self.cancelled {
            return Decision::Skip(SkipReason::RunCancelled);
        }
        let layout = &self.run.pipeline.layout;
        let needs = layout.needs(i);
        let needs_succeeded = needs.iter().all(|&n| self.states.ok(n as usize));
        if layout.has(i, IMPLICIT_SUCCESS) && !needs_succeeded {
            // The first need, in config order, that did not succeed.
            let need = needs
                .iter()
                .map(|&n| n as usize)
                .find(|&n| !self.states.ok(n))
                .unwrap_or(i);
            let name = self.run.pipeline.stages[need].id.clone();
            return Decision::Skip(match self.states.result(need) {
                Some(StageResult::Skipped { .. }) => SkipReason::NeedSkipped { need: name },
                _ => SkipReason::NeedFailed { need: name },
            });
        }
        if layout.has(i, HAS_CONDITION) {
            let status = StageStatus {
                needs_succeeded,
                need_failed: needs
                    .iter()
                    .any(|&n| self.states.failed_ancestry(n as usize)),
                cancelled: false,
            };
            if let Some(c) = &self.run.pipeline.stages[i].source.condition {
                let ctx = self.context(i, status);
                if !c.expr.eval(&ctx).is_some_and(|v| v.truthy()) {
                    return Decision::Skip(SkipReason::ConditionFalse {
                        expr: c.source.clone(),
                    });
                }
            }
        }
        Decision::Run
    }

    fn context(&self, i: usize, status: StageStatus) -> RuntimeContext<'_> {
        RuntimeContext {
            event: &self.run.spec.info.event,
            env: &self.run.spec.env,
            stage: &self.run.pipeline.stages[i].source,
            graph: self.run.pipeline.graph(),
            states: &self.states,
            status,
        }
    }

    fn next_launchable(&mut self) -> Option<usize> {
        (0..self.queues.len())
            .find(|&b| !self.queues[b].is_empty() && self.busy[b] < self.limits[b])
            .and_then(|b| self.queues[b].pop_front())
    }

    fn job(&self, i: usize) -> Job {
        let layout = &self.run.pipeline.layout;
        let planned = &self.run.pipeline.stages[i];
        // What every stage's context has; the rest is filled in below.
        let mut ctx = self.shared.plain_context(i);
        if layout.has(i, RENDERS) {
            let source = &planned.source;
            let rt = self.context(
                i,
                StageStatus {
                    needs_succeeded: true,
                    ..Default::default()
                },
            );
            ctx.env.extend(
                source
                    .env
                    .iter()
                    .map(|(k, t)| (k.clone(), rt.render(&t.template))),
            );
            if let Some(settings) = &planned.environment_settings {
                for (k, v) in settings.with.iter() {
                    ctx.with.insert(k.clone(), rt.render_json(v));
                }
            }
            for (k, v) in &source.with {
                ctx.with.insert(k.clone(), rt.render_json(v));
            }
        }
        if layout.has(i, ENVIRONMENT) {
            if let (Some(name), Some(config)) =
                (&planned.environment, &planned.details().environment_config)
            {
                let event = &self.run.spec.info.event;
                let settings = planned.environment_settings.as_deref();
                ctx.environment = Some(
                    EnvironmentTarget::new(
                        name.clone(),
                        config.clone(),
                        event.version().map(|v| v.to_string()),
                    )
                    .with_pull_request(
                        event
                            .pull_request()
                            .filter(|_| settings.is_some_and(|s| s.per_pull_request))
                            .map(|pr| pr.number),
                    )
                    .with_policy(settings.map(EnvironmentPolicy::of).unwrap_or_default()),
                );
            }
        }
        let timeout = if layout.has(i, POLICY) {
            planned.source.timeout
        } else {
            None
        };
        ctx.timeout = timeout;
        Job {
            index: i,
            backend: self.backend_of[i],
            target: self.target_of[i],
            ctx,
            retry: if layout.has(i, POLICY) {
                planned.source.retry.as_deref().cloned()
            } else {
                None
            },
            timeout,
            shared: self.shared.clone(),
        }
    }

    async fn cancel_queued(&mut self) {
        self.cancelled = true;
        let queued: Vec<usize> = self.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
        for i in queued {
            self.finish(
                i,
                StageResult::Skipped {
                    reason: SkipReason::RunCancelled,
                },
                0,
                BTreeMap::new(),
                None,
                None,
            )
            .await;
        }
    }

    async fn finish(
        &mut self,
        i: usize,
        result: StageResult,
        attempts: u32,
        outputs: BTreeMap<String, String>,
        started: Option<f64>,
        finished: Option<f64>,
    ) {
        let layout = &self.run.pipeline.layout;
        let continue_on_error = layout.has(i, CONTINUE_ON_ERROR);
        let failed = result.is_failure();
        let ancestry = layout
            .needs(i)
            .iter()
            .any(|&n| self.states.failed_ancestry(n as usize));
        let ok = matches!(result, StageResult::Success) || (failed && continue_on_error);
        let report = StageReport {
            id: String::new(),
            flaky: matches!(result, StageResult::Success) && attempts > 1,
            result,
            attempts,
            started_secs: started,
            finished_secs: finished.or_else(|| Some(self.shared.start.elapsed().as_secs_f64())),
            outputs,
            reused: false,
        };
        self.states
            .finish(i, report, ok, (failed && !continue_on_error) || ancestry);
        if self.shared.observed || self.run.spec.recorder.is_some() {
            let report = self.states.report(i);
            let duration_secs = report.duration().map_or(0.0, |d| d.as_secs_f64());
            self.emit(|at| RunEvent::StageFinished {
                stage: report.id.clone(),
                result: report.result.clone(),
                attempts,
                flaky: report.flaky,
                duration_secs,
                at,
            });
            if let Some(recorder) = &self.run.spec.recorder {
                self.record(recorder.as_ref(), report).await;
            }
        }
        let Driver {
            run,
            remaining,
            states,
            ready,
            ..
        } = self;
        for &d in run.pipeline.layout.dependents(i) {
            let d = d as usize;
            remaining[d] -= 1;
            if remaining[d] == 0 && !states.finished(d) {
                ready.push_back(d);
            }
        }
    }

    async fn record(&self, recorder: &dyn RunRecorder, report: &StageReport) {
        if let Err(message) = recorder
            .stage_finished(&self.run.spec.info.id, report)
            .await
        {
            self.emit(|at| RunEvent::Warning {
                message: format!("cannot record stage \"{}\": {message}", report.id),
                at,
            });
        }
    }

    fn report(self) -> RunReport {
        let result = if self.cancelled {
            RunResult::Cancelled
        } else if (0..self.states.len()).any(|i| {
            self.states.result(i).is_some_and(StageResult::is_failure)
                && !self.run.pipeline.layout.has(i, CONTINUE_ON_ERROR)
        }) {
            RunResult::Failure
        } else {
            RunResult::Success
        };
        let duration_secs = self.shared.start.elapsed().as_secs_f64();
        self.emit(|at| RunEvent::RunFinished {
            run_id: self.run.spec.info.id.clone(),
            result,
            duration_secs,
            at,
        });
        // The reports were filled in place as stages ended.
        let stages = self.states.into_reports();
        RunReport {
            run_id: self.run.spec.info.id.clone(),
            pipeline: self.run.pipeline.name.clone(),
            result,
            duration_secs,
            stages,
        }
    }
}
