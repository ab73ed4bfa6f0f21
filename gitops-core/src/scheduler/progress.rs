//! What a run knows about its stages while it runs: the reports it will end with, filled in
//! place as stages end (the run's result is these, not a copy of them), and a byte of flags per
//! stage for the decisions of the hot loop.

use super::report::{SkipReason, StageReport, StageResult};

/// The stage has ended (or was reused).
const FINISHED: u8 = 1;
/// It counts as a success for `success()` of dependents.
const OK: u8 = 2;
/// It, or a stage it transitively needs, failed.
const FAILED_ANCESTRY: u8 = 4;

pub(super) struct Progress {
    reports: Vec<StageReport>,
    marks: Vec<u8>,
}

impl Progress {
    /// Stages `ids`, none of them ended: a stage that never ends reads as skipped by the
    /// run's cancellation.
    pub fn new<'a>(ids: impl ExactSizeIterator<Item = &'a str>) -> Progress {
        let n = ids.len();
        let reports = ids
            .map(|id| StageReport {
                id: id.to_owned(),
                ..StageReport::ended(
                    StageResult::Skipped {
                        reason: SkipReason::RunCancelled,
                    },
                    0,
                    None,
                    None,
                    Default::default(),
                )
            })
            .collect();
        Progress {
            reports,
            marks: vec![0; n],
        }
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

    pub fn failed_ancestry(&self, i: usize) -> bool {
        self.marks[i] & FAILED_ANCESTRY != 0
    }

    /// The stage's result, once it has ended.
    pub fn result(&self, i: usize) -> Option<&StageResult> {
        self.finished(i).then(|| &self.reports[i].result)
    }

    pub fn report(&self, i: usize) -> &StageReport {
        &self.reports[i]
    }

    /// Records the end of stage `i`: `report` without its id (kept from the start). It counts
    /// as a success for its dependents when it succeeded, or failed with `continue_on_error`;
    /// a failure without it, or `failed_need` (a failure among its needs' ancestry), marks its
    /// ancestry failed.
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
        let slot = &mut self.reports[i];
        let id = std::mem::take(&mut slot.id);
        *slot = StageReport { id, ..report };
        self.marks[i] =
            FINISHED | if ok { OK } else { 0 } | if failed_ancestry { FAILED_ANCESTRY } else { 0 };
    }

    /// Marks a failure in the ancestry of stage `i` (a reused stage whose need failed).
    pub fn mark_failed_ancestry(&mut self, i: usize) {
        self.marks[i] |= FAILED_ANCESTRY;
    }

    pub fn into_reports(self) -> Vec<StageReport> {
        self.reports
    }
}
