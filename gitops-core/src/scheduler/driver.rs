//! The run loop: in-degree counts, a ready worklist, per-backend queues within the parallelism
//! bounds, and a `JoinSet` of running stages. O(stages + edges) bookkeeping, no polling.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::broadcast;
use tokio::task::JoinSet;

use super::attempt::{self, Done, Job, Target};
use super::context::RuntimeContext;
use super::events::RunEvent;
use super::report::{RunReport, RunResult, SkipReason, StageReport, StageResult};
use super::{Run, RunRecorder};
use crate::backend::{EnvironmentTarget, LogLine, StageContext};
use crate::expr::StageStatus;
use crate::graph::StageId;

#[derive(Debug, Default)]
pub(super) struct StageState {
    pub result: Option<StageResult>,
    /// Counts as a success for `success()` of dependents.
    pub ok: bool,
    /// It or a stage it transitively needs failed.
    pub failed_ancestry: bool,
    pub outputs: BTreeMap<String, String>,
    pub attempts: u32,
    pub started: Option<f64>,
    pub finished: Option<f64>,
    pub reused: bool,
}

enum Decision {
    Run,
    Skip(SkipReason),
}

struct Driver {
    run: Run,
    start: Instant,
    states: Vec<StageState>,
    remaining: Vec<u32>,
    ready: VecDeque<usize>,
    backend_of: Vec<usize>,
    queues: Vec<VecDeque<usize>>,
    limits: Vec<usize>,
    busy: Vec<usize>,
    running: usize,
    cancelled: bool,
    log_target: Arc<dyn Fn(LogLine) + Send + Sync>,
    secrets: Arc<[String]>,
}

pub(super) async fn drive(run: Run) -> RunReport {
    let mut d = Driver::new(run);
    d.emit(|at| RunEvent::RunStarted {
        run_id: d.run.spec.info.id.clone(),
        pipeline: d.run.pipeline.name.clone(),
        stages: d.states.len(),
        at,
    });
    let mut set: JoinSet<Done> = JoinSet::new();
    let mut tasks: HashMap<tokio::task::Id, usize> = HashMap::new();
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
                    let b = d.backend_of[i];
                    d.queues[b].push_back(i);
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
            let handle = set.spawn(attempt::run(d.job(i)));
            tasks.insert(handle.id(), i);
            d.running += 1;
            d.busy[d.backend_of[i]] += 1;
        }
        if d.running == 0 {
            break;
        }
        tokio::select! {
            biased;
            _ = d.run.cancel.cancelled(), if !d.cancelled => d.cancel_queued().await,
            joined = set.join_next_with_id() => {
                let Some(joined) = joined else { break };
                let (index, done) = match joined {
                    Ok((id, done)) => (tasks.remove(&id).unwrap_or(done.index), Some(done)),
                    Err(e) => (tasks.remove(&e.id()).unwrap_or(usize::MAX), None),
                };
                if index == usize::MAX {
                    continue;
                }
                d.running -= 1;
                d.busy[d.backend_of[index]] -= 1;
                match done {
                    Some(done) => {
                        let (s, f) = (done.started.as_secs_f64(), done.finished.as_secs_f64());
                        d.finish(index, done.result, done.attempts, done.outputs, Some(s), Some(f)).await;
                    }
                    None => {
                        let message = "the stage's task panicked (a bug in its backend)".to_owned();
                        let at = d.start.elapsed().as_secs_f64();
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
        let n = graph.len();
        let mut states: Vec<StageState> = (0..n).map(|_| StageState::default()).collect();
        for (i, stage) in run.pipeline.stages.iter().enumerate() {
            if let Some(r) = run.spec.reuse.get(&stage.id) {
                let failed = r.result.is_failure();
                states[i] = StageState {
                    result: Some(r.result.clone()),
                    ok: matches!(r.result, StageResult::Success)
                        || (failed && stage.continue_on_error),
                    failed_ancestry: failed && !stage.continue_on_error,
                    outputs: r.outputs.clone(),
                    attempts: r.attempts,
                    started: r.started_secs,
                    finished: r.finished_secs,
                    reused: true,
                };
            }
        }
        // Reused stages may have reused ancestors only; propagate ancestry failures in order.
        for &s in graph.order() {
            if states[s.index()].reused && graph.needs(s).any(|n| states[n.index()].failed_ancestry)
            {
                states[s.index()].failed_ancestry = true;
            }
        }
        let remaining: Vec<u32> = graph
            .stages()
            .map(|s| {
                graph
                    .needs(s)
                    .filter(|n| states[n.index()].result.is_none())
                    .count() as u32
            })
            .collect();
        let ready = graph
            .stages()
            .filter(|s| states[s.index()].result.is_none() && remaining[s.index()] == 0)
            .map(|s| s.index())
            .collect();
        let mut names: Vec<&str> = Vec::new();
        let backend_of = run
            .pipeline
            .stages
            .iter()
            .map(|s| match names.iter().position(|n| *n == s.backend) {
                Some(b) => b,
                None => {
                    names.push(&s.backend);
                    names.len() - 1
                }
            })
            .collect();
        let limits = names
            .iter()
            .map(|n| {
                run.options
                    .per_backend
                    .get(*n)
                    .copied()
                    .unwrap_or(usize::MAX)
            })
            .collect();
        let queues = names.iter().map(|_| VecDeque::new()).collect();
        let busy = vec![0; names.len()];
        let events = run.events.clone();
        let start = Instant::now();
        let log_target: Arc<dyn Fn(LogLine) + Send + Sync> = Arc::new(move |l: LogLine| {
            if events.receiver_count() > 0 {
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
        let secrets: Arc<[String]> = Arc::from(run.spec.secrets.clone());
        Driver {
            run,
            start,
            states,
            remaining,
            ready,
            backend_of,
            queues,
            limits,
            busy,
            running: 0,
            cancelled: false,
            log_target,
            secrets,
        }
    }

    fn emit(&self, event: impl FnOnce(f64) -> RunEvent) {
        if self.run.events.receiver_count() > 0 {
            let _ = self
                .run
                .events
                .send(event(self.start.elapsed().as_secs_f64()));
        }
    }

    fn decide(&self, i: usize) -> Decision {
        if self.cancelled {
            return Decision::Skip(SkipReason::RunCancelled);
        }
        let graph = self.run.pipeline.graph();
        let s = StageId::from_index(i);
        let source = &self.run.pipeline.stages[i].source;
        let mut needs: Vec<StageId> = graph.needs(s).collect();
        needs.sort();
        let status = StageStatus {
            needs_succeeded: needs.iter().all(|n| self.states[n.index()].ok),
            need_failed: needs.iter().any(|n| self.states[n.index()].failed_ancestry),
            cancelled: false,
        };
        let implicit_success = source
            .condition
            .as_ref()
            .is_none_or(|c| !c.expr.uses_status_function());
        if implicit_success && !status.needs_succeeded {
            let need = needs
                .iter()
                .find(|n| !self.states[n.index()].ok)
                .copied()
                .unwrap_or(s);
            let name = graph.id(need).to_owned();
            return Decision::Skip(match self.states[need.index()].result {
                Some(StageResult::Skipped { .. }) => SkipReason::NeedSkipped { need: name },
                _ => SkipReason::NeedFailed { need: name },
            });
        }
        if let Some(c) = &source.condition {
            let ctx = self.context(i, status);
            if !c.expr.eval(&ctx).is_some_and(|v| v.truthy()) {
                return Decision::Skip(SkipReason::ConditionFalse {
                    expr: c.source.clone(),
                });
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
        let planned = &self.run.pipeline.stages[i];
        let source = &planned.source;
        let ctx = self.context(
            i,
            StageStatus {
                needs_succeeded: true,
                ..Default::default()
            },
        );
        let mut env = self.run.spec.env.clone();
        env.extend(
            source
                .env
                .iter()
                .map(|(k, t)| (k.clone(), ctx.render(&t.template))),
        );
        let mut with = serde_json::Map::new();
        if let Some(env_with) = &planned.environment_with {
            for (k, v) in env_with.iter() {
                with.insert(k.clone(), ctx.render_json(v));
            }
        }
        for (k, v) in &source.with {
            with.insert(k.clone(), ctx.render_json(v));
        }
        let environment = match (&planned.environment, &planned.environment_config) {
            (Some(name), Some(config)) => Some(EnvironmentTarget::new(
                name.clone(),
                config.clone(),
                self.run.spec.info.event.version().map(|v| v.to_string()),
            )),
            _ => None,
        };
        let mut stage_ctx = StageContext::new(self.run.spec.info.clone(), planned.id.clone());
        stage_ctx.command = source.run.clone();
        stage_ctx.env = env;
        stage_ctx.with = with;
        stage_ctx.environment = environment;
        Job {
            index: i,
            target: Target::new(planned.action, &planned.backend, &self.run.registry),
            backend: planned.backend.clone(),
            ctx: stage_ctx,
            retry: source.retry.clone(),
            timeout: source.timeout,
            run_cancel: self.run.cancel.clone(),
            events: self.run.events.clone(),
            log_target: Some(self.log_target.clone()),
            secrets: self.secrets.clone(),
            start: self.start,
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
        let graph = self.run.pipeline.graph();
        let s = StageId::from_index(i);
        let continue_on_error = self.run.pipeline.stages[i].continue_on_error;
        let failed = result.is_failure();
        let ancestry = graph
            .needs(s)
            .any(|n| self.states[n.index()].failed_ancestry);
        let state = &mut self.states[i];
        state.ok = matches!(result, StageResult::Success) || (failed && continue_on_error);
        state.failed_ancestry = (failed && !continue_on_error) || ancestry;
        state.outputs = outputs;
        state.attempts = attempts;
        state.started = started;
        state.finished = finished.or(Some(self.start.elapsed().as_secs_f64()));
        state.result = Some(result);
        if self.run.events.receiver_count() > 0 || self.run.spec.recorder.is_some() {
            let report = self.stage_report(i);
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
                record(
                    recorder.as_ref(),
                    &self.run.spec.info.id,
                    &report,
                    &self.run.events,
                    self.start,
                )
                .await;
            }
        }
        for d in graph.dependents(s) {
            let r = &mut self.remaining[d.index()];
            *r -= 1;
            if *r == 0 && self.states[d.index()].result.is_none() {
                self.ready.push_back(d.index());
            }
        }
    }

    fn stage_report(&self, i: usize) -> StageReport {
        let st = &self.states[i];
        let result = st.result.clone().unwrap_or(StageResult::Skipped {
            reason: SkipReason::RunCancelled,
        });
        StageReport {
            id: self.run.pipeline.stages[i].id.clone(),
            flaky: matches!(result, StageResult::Success) && st.attempts > 1,
            result,
            attempts: st.attempts,
            started_secs: st.started,
            finished_secs: st.finished,
            outputs: st.outputs.clone(),
            reused: st.reused,
        }
    }

    fn report(&self) -> RunReport {
        let stages: Vec<StageReport> = (0..self.states.len())
            .map(|i| self.stage_report(i))
            .collect();
        let failed = stages
            .iter()
            .zip(&self.run.pipeline.stages)
            .any(|(r, p)| r.result.is_failure() && !p.continue_on_error);
        let result = if self.cancelled {
            RunResult::Cancelled
        } else if failed {
            RunResult::Failure
        } else {
            RunResult::Success
        };
        let duration_secs = self.start.elapsed().as_secs_f64();
        self.emit(|at| RunEvent::RunFinished {
            run_id: self.run.spec.info.id.clone(),
            result,
            duration_secs,
            at,
        });
        RunReport {
            run_id: self.run.spec.info.id.clone(),
            pipeline: self.run.pipeline.name.clone(),
            result,
            duration_secs,
            stages,
        }
    }
}

async fn record(
    recorder: &dyn RunRecorder,
    run_id: &str,
    report: &StageReport,
    events: &broadcast::Sender<RunEvent>,
    start: Instant,
) {
    if let Err(message) = recorder.stage_finished(run_id, report).await {
        let _ = events.send(RunEvent::Warning {
            message: format!("cannot record stage \"{}\": {message}", report.id),
            at: start.elapsed().as_secs_f64(),
        });
    }
}
