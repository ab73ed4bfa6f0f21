//! How the run's bookkeeping changes: in-degree counts, a ready worklist, per-backend queues
//! within the parallelism bounds, and the runners taking plain stages.
//!
//! It is kept behind one lock in the run's [`Shared`] state, and the task of a stage that ends
//! books that end itself (see `end.rs`): its report, its dependents' counts, what to skip and
//! what to start. What must happen outside the lock (spawning tasks, recording skipped stages)
//! is handed off ([`Handoff`]) for the task to carry out. O(stages + edges) bookkeeping, no
//! polling, and no allocation per stage beyond what the stage's own templates need.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::events::RunEvent;
use super::job::Job;
use super::report::{SkipReason, StageReport, StageResult};
use super::state::{Bookkeeping, Shared};
use crate::expr::StageStatus;
use crate::plan::layout::{
    CONTINUE_ON_ERROR, ENVIRONMENT, HAS_CONDITION, IMPLICIT_SUCCESS, POLICY, RENDERS,
};

enum Decision {
    Run,
    Skip(SkipReason),
}

/// A stage skipped while booking, to be recorded before its end is booked in turn.
pub(super) struct Skipped {
    pub index: usize,
    pub report: StageReport,
}

/// What booking leaves to do once the lock is released.
#[derive(Default)]
pub(super) struct Handoff {
    /// Skipped stages to record, then book (only with a recorder).
    pub skipped: Vec<Skipped>,
    /// Runners to spawn, each with the plain stage it runs first.
    pub runners: Vec<u32>,
    /// Stages that get a task of their own, to spawn.
    pub tasks: Vec<Job>,
    /// The plain stage a runner that booked its stage's end takes next.
    pub next: Option<usize>,
    /// When it starts: the latest end booked when it was taken (see `Next::Now` in
    /// `tasks.rs`).
    pub from: f64,
}

impl Bookkeeping {
    /// Decides the ready stages and starts what may start. Without a recorder, stages it skips
    /// are booked at once; with one, they are handed off, to be recorded outside the lock and
    /// booked then. With `take` (the caller is a runner), the next plain stage started is
    /// handed off for the caller to run, or, when there is none, the runner is counted out.
    pub fn start_ready(&mut self, shared: &Arc<Shared>, take: bool, out: &mut Handoff) {
        if self.abandoned {
            return;
        }
        // A stage ending while the run is being cancelled must not start the next one before
        // the run's task sees it: every child token is cancelled with the run's, and a shard
        // is a lock few stages share.
        let waiting = !self.ready.is_empty() || self.queued > 0 || !self.plain.is_empty();
        if waiting && !self.cancelled && shared.cancel_shard(self.running).is_cancelled() {
            return self.cancel(shared, take, out);
        }
        while let Some(i) = self.ready.pop_front() {
            match self.decide(shared, i) {
                Decision::Skip(reason) => self.skip(shared, i, reason, &mut out.skipped),
                Decision::Run => {
                    self.queues[shared.pipeline.layout.backend(i)].push_back(i);
                    self.queued += 1;
                    shared.emit(|at| RunEvent::StageQueued {
                        stage: shared.pipeline.stages[i].id.to_string(),
                        at,
                    });
                }
            }
        }
        while self.running < shared.max_parallel {
            let Some(i) = self.next_launchable(shared) else {
                break;
            };
            if shared
                .pipeline
                .layout
                .has(i, RENDERS | ENVIRONMENT | POLICY)
            {
                out.tasks.push(Job::new(shared, &self.states, i));
            } else {
                self.plain.push_back(i as u32);
            }
            self.count_running(shared, i, true);
        }
        if take {
            out.next = self.plain.pop_front().map(|i| i as usize);
            out.from = self.latest_end;
            if out.next.is_none() {
                self.runners -= 1;
            }
        }
        self.add_runners(shared, &mut out.runners);
        if !self.ended && self.running == 0 && self.recording == 0 {
            self.ended = true;
            shared.ended.notify_one();
        }
    }

    /// Adds runners for the plain stages waiting, up to one per worker, each with the stage
    /// it runs first.
    pub fn add_runners(&mut self, shared: &Shared, spawn: &mut Vec<u32>) {
        while self.runners < shared.max_runners {
            let Some(i) = self.plain.pop_front() else {
                break;
            };
            self.runners += 1;
            spawn.push(i);
        }
    }

    /// Ends stage `i` as skipped: at once, or (with a recorder) once it is recorded.
    fn skip(&mut self, shared: &Shared, i: usize, reason: SkipReason, out: &mut Vec<Skipped>) {
        let finished = shared.now();
        let report = StageReport::ended(
            shared.pipeline.layout.id(i),
            StageResult::Skipped { reason },
            0,
            None,
            Some(finished),
            BTreeMap::new(),
        );
        if shared.recorder.is_some() {
            self.recording += 1;
            out.push(Skipped { index: i, report });
        } else {
            self.finish(shared, i, report);
            // Its dependents are decided by the caller's loop.
        }
    }

    /// The run was cancelled: queued stages and plain ones no runner took yet are skipped,
    /// running ones stop through their tokens, and nothing more starts. `take` as for
    /// [`start_ready`](Bookkeeping::start_ready).
    pub fn cancel(&mut self, shared: &Arc<Shared>, take: bool, out: &mut Handoff) {
        if self.ended {
            // Every stage had ended before the run's task saw the cancellation.
            return;
        }
        self.cancelled = true;
        let queued: Vec<usize> = self.queues.iter_mut().flat_map(|q| q.drain(..)).collect();
        self.queued = 0;
        for i in queued {
            self.skip(shared, i, SkipReason::RunCancelled, &mut out.skipped);
        }
        for i in std::mem::take(&mut self.plain) {
            let i = i as usize;
            self.count_running(shared, i, false);
            self.skip(shared, i, SkipReason::RunCancelled, &mut out.skipped);
        }
        self.start_ready(shared, take, out);
    }

    fn decide(&self, shared: &Shared, i: usize) -> Decision {
        if self.cancelled {
            return Decision::Skip(SkipReason::RunCancelled);
        }
        let layout = &shared.pipeline.layout;
        // Its own byte, not its needs': most stages' needs all succeeded.
        let needs_succeeded = self.states.needs_ok(i);
        debug_assert_eq!(
            needs_succeeded,
            layout.needs(i).iter().all(|&n| self.states.ok(n as usize))
        );
        if layout.has(i, IMPLICIT_SUCCESS) && !needs_succeeded {
            // The first need, in config order, that did not succeed.
            let need = layout
                .needs(i)
                .iter()
                .map(|&n| n as usize)
                .find(|&n| !self.states.ok(n))
                .unwrap_or(i);
            let name = shared.pipeline.stages[need].id.to_string();
            return Decision::Skip(match self.states.result(need) {
                Some(StageResult::Skipped { .. }) => SkipReason::NeedSkipped { need: name },
                _ => SkipReason::NeedFailed { need: name },
            });
        }
        if layout.has(i, HAS_CONDITION) {
            let status = StageStatus {
                needs_succeeded,
                need_failed: self.states.need_failed(i),
                cancelled: false,
            };
            if let Some(c) = &shared.pipeline.stages[i].source.condition {
                let ctx = shared.expr_context(&self.states, i, status);
                if !c.expr.eval(&ctx).is_some_and(|v| v.truthy()) {
                    return Decision::Skip(SkipReason::ConditionFalse {
                        expr: c.source.clone(),
                    });
                }
            }
        }
        Decision::Run
    }

    /// Counts stage `i` as started (`true`) or as ended: in the run's count, and in its
    /// backend's when that backend has a bound (`next_launchable` reads the others' as 0).
    pub fn count_running(&mut self, shared: &Shared, i: usize, started: bool) {
        if started {
            self.running += 1;
        } else {
            self.running -= 1;
        }
        let b = shared.pipeline.layout.backend(i);
        // Unbounded backends' counts are never written: a stage's end touches no more memory
        // shared with the other workers than it must.
        if shared.limits[b] != usize::MAX {
            if started {
                self.busy[b] += 1;
            } else {
                self.busy[b] -= 1;
            }
        }
    }

    fn next_launchable(&mut self, shared: &Shared) -> Option<usize> {
        if self.queued == 0 {
            return None;
        }
        let b = (0..self.queues.len())
            .find(|&b| !self.queues[b].is_empty() && self.busy[b] < shared.limits[b])?;
        self.queued -= 1;
        self.queues[b].pop_front()
    }

    /// Stores stage `i`'s report and counts it off its dependents' needs.
    pub fn finish(&mut self, shared: &Shared, i: usize, report: StageReport) {
        let layout = &shared.pipeline.layout;
        let failed_need = self.states.need_failed(i);
        debug_assert_eq!(
            failed_need,
            layout
                .needs(i)
                .iter()
                .any(|&n| self.states.failed_ancestry(n as usize))
        );
        let flaky = matches!(report.result, StageResult::Success) && report.attempts > 1;
        if let Some(end) = report.finished_secs {
            self.latest_end = self.latest_end.max(end);
        }
        self.states.finish(
            i,
            StageReport { flaky, ..report },
            layout.has(i, CONTINUE_ON_ERROR),
            failed_need,
        );
        if let (Some(_), Some(report)) = (&shared.events, self.states.report(i)) {
            let duration_secs = report.duration().map_or(0.0, |d| d.as_secs_f64());
            shared.emit(|at| RunEvent::StageFinished {
                stage: report.id.to_string(),
                result: report.result.clone(),
                attempts: report.attempts,
                flaky: report.flaky,
                duration_secs,
                at,
            });
        }
        self.states.pass_on(i, layout.dependents(i));
        for &d in layout.dependents(i) {
            let d = d as usize;
            self.remaining[d] -= 1;
            if self.remaining[d] == 0 && !self.states.finished(d) {
                self.ready.push_back(d);
            }
        }
    }
}
