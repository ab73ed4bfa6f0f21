//! What a run knows about its stages while it runs: the reports it will end with, stored as
//! stages end (the run's result is these, not a copy of them), and a byte of flags per stage
//! for the decisions of the hot loop.

use std::sync::Arc;

use super::report::{SkipReason, StageReport, StageResult};

/// The stage has ended (or was reused).
const FINISHED: u8 = 1;
/// It counts as a success for `success()` of dependents.
const OK: u8 = 2;
/// It, or a stage it transitively needs, failed.
const FAILED_ANCESTRY: u8 = 4;
/// A stage it needs ended without counting as a success.
const NEED_NOT_OK: u8 = 8;
/// A stage it needs has `FAILED_ANCESTRY`.
const NEED_FAILED: u8 = 16;
/// Its runner parked while it ran (see `park` in `tasks.rs`): it is counted again when its end
/// is booked.
const PARKED: u8 = 32;
/// What the ends of a stage's needs leave in its byte (see [`Progress::pass_on`]).
const FROM_NEEDS: u8 = NEED_NOT_OK | NEED_FAILED;

pub(super) struct Progress {
    /// Filled as stages end: a run's reports are made once, when each stage ends.
    reports: Vec<Option<StageReport>>,
    marks: Vec<u8>,
    /// A stage failed, timed out or was cancelled without `continue_on_error`.
    failed: bool,
    /// A stage (not a reused one) ended cancelled: stopped by the run.
    stopped: bool,
}

impl Progress {
    /// `n` stages, none of them ended.
    pub fn new(n: usize) -> Progress {
        Progress {
            reports: std::iter::repeat_with(|| None).take(n).collect(),
            marks: vec![0; n],
            failed: false,
            stopped: false,
        }
    }

    /// Whether a stage failed, timed out or was cancelled without `continue_on_error`: the
    /// run failed. Noted as stages end, so that the run's end reads no report.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether a stage (not a reused one) ended cancelled, stopped by the run.
    pub fn stopped(&self) -> bool {
        self.stopped
    }

    pub fn len(&self) -> usize {
        self.marks.len()
    }

    pub fn finished(&self, i: usize) -> bool {
        self.marks[i] & FINISHED != 0
    }

    pub fn ok(&self, i: usize) -> bool {
        self.marks[i] & OK != 0
    }

    /// Whether every stage that `i` needs and that has ended counted as a success.
    pub fn needs_ok(&self, i: usize) -> bool {
        self.marks[i] & NEED_NOT_OK == 0
    }

    /// Whether a stage that `i` needs has a failure in its ancestry.
    pub fn need_failed(&self, i: usize) -> bool {
        self.marks[i] & NEED_FAILED != 0
    }

    /// Passes what the end of stage `i` means for them on to the stages that need it
    /// (`dependents`): once all of a stage's needs have ended, deciding whether it runs reads
    /// its own byte instead of each need's. Most stages succeed, and write nothing here.
    pub fn pass_on(&mut self, i: usize, dependents: &[u32]) {
        let mark = self.marks[i];
        let passed = if mark & OK == 0 { NEED_NOT_OK } else { 0 }
            | if mark & FAILED_ANCESTRY != 0 {
                NEED_FAILED
            } else {
                0
            };
        if passed != 0 {
            for &d in dependents {
                self.marks[d as usize] |= passed;
            }
        }
    }

    /// Notes that the runner of stage `i` parked; false when it already had.
    pub fn park(&mut self, i: usize) -> bool {
        let first = self.marks[i] & PARKED == 0;
        self.marks[i] |= PARKED;
        first
    }

    /// Whether the runner of stage `i` parked; clears the note.
    pub fn take_parked(&mut self, i: usize) -> bool {
        let parked = self.marks[i] & PARKED != 0;
        self.marks[i] &= !PARKED;
        parked
    }

    pub fn failed_ancestry(&self, i: usize) -> bool {
        self.marks[i] & FAILED_ANCESTRY != 0
    }

    /// The stage's report, once it has ended.
    pub fn report(&self, i: usize) -> Option<&StageReport> {
        self.reports[i].as_ref()
    }

    /// The stage's result, once it has ended.
    pub fn result(&self, i: usize) -> Option<&StageResult> {
        self.report(i).map(|r| &r.result)
    }

    /// Records the end of stage `i`. It counts as a success for its dependents when it
    /// succeeded, or failed with `continue_on_error`; a failure without it, or `failed_need`
    /// (a failure among its needs' ancestry), marks its ancestry failed.
    pub fn finish(
        &mut self,
        i: usize,
        report: StageReport,
        continue_on_error: bool,
        failed_need: bool,
    ) {
        let failed = report.result.is_failure();
        let ok = matches!(report.result, StageResult::Success) || (failed && continue_on_error);
        let failed_ancestry = (failed && !continue_on_error) || failed_need;
        self.failed |= failed && !continue_on_error;
        self.stopped |= !report.reused && report.result == StageResult::Cancelled;
        self.reports[i] = Some(report);
        self.marks[i] = (self.marks[i] & FROM_NEEDS)
            | FINISHED
            | if ok { OK } else { 0 }
            | if failed_ancestry { FAILED_ANCESTRY } else { 0 };
    }

    /// Marks a failure in the ancestry of stage `i` (a reused stage whose need failed).
    pub fn mark_failed_ancestry(&mut self, i: usize) {
        self.marks[i] |= FAILED_ANCESTRY;
    }

    /// The reports, in stage order; a stage that never ended (`id(i)` names stage `i`) reads
    /// as skipped by the run's cancellation.
    pub fn into_reports<'a>(self, id: impl Fn(usize) -> &'a Arc<str>) -> Vec<StageReport> {
        self.reports
            .into_iter()
            .enumerate()
            .map(|(i, r)| {
                r.unwrap_or_else(|| {
                    let reason = SkipReason::RunCancelled;
                    let result = StageResult::Skipped { reason };
                    StageReport::ended(id(i), result, 0, None, None, Default::default())
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(id: &Arc<str>, result: StageResult) -> StageReport {
        StageReport::ended(id, result, 1, Some(0.0), Some(1.0), Default::default())
    }

    #[test]
    fn reports_come_back_in_stage_order_with_the_stages_that_never_ended() {
        let ids: Vec<Arc<str>> = (0..6).map(|i| Arc::from(format!("s{i}"))).collect();
        let mut progress = Progress::new(ids.len());
        let failure = StageResult::Failure {
            message: "no".into(),
            exit_code: Some(1),
        };
        // Out of order, one failed with continue_on_error, two never end.
        for (i, result) in [
            (4, StageResult::Success),
            (0, StageResult::Success),
            (3, failure.clone()),
            (1, StageResult::Success),
        ] {
            progress.finish(i, ended(&ids[i], result), i == 3, false);
        }
        assert_eq!(progress.result(3), Some(&failure));
        assert_eq!(progress.report(2), None);
        assert!(!progress.failed() && !progress.stopped());
        let reports = progress.into_reports(|i| &ids[i]);
        let got: Vec<(&str, &str)> = reports.iter().map(|r| (&*r.id, r.result.name())).collect();
        assert_eq!(
            got,
            [
                ("s0", "success"),
                ("s1", "success"),
                ("s2", "skipped"),
                ("s3", "failure"),
                ("s4", "success"),
                ("s5", "skipped"),
            ]
        );
        assert_eq!(
            reports[5].result,
            StageResult::Skipped {
                reason: SkipReason::RunCancelled
            }
        );
    }

    #[test]
    fn a_failure_fails_the_run_and_a_stage_cancelled_stops_it() {
        let id: Arc<str> = Arc::from("s");
        let failure = StageResult::Failure {
            message: "no".into(),
            exit_code: None,
        };
        let mut progress = Progress::new(1);
        progress.finish(0, ended(&id, failure), false, false);
        assert!(progress.failed() && !progress.stopped());

        let mut progress = Progress::new(1);
        progress.finish(0, ended(&id, StageResult::Cancelled), false, false);
        assert!(progress.stopped());

        // A reused report's cancellation was an earlier run's.
        let mut progress = Progress::new(1);
        let reused = StageReport {
            reused: true,
            ..ended(&id, StageResult::Cancelled)
        };
        progress.finish(0, reused, false, false);
        assert!(!progress.stopped());
    }
}
