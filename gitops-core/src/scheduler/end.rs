//! A stage's end, booked by the task that ran it: its report stored and its dependents
//! counted, under the run's lock; what that leaves to do outside the lock is handed off.

use std::sync::Arc;

use super::bookkeeping::{Handoff, Skipped};
use super::report::StageReport;
use super::state::Shared;

/// What ran a stage whose end is booked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RanBy {
    /// A task of its own (a stage with retries, a timeout, or a context to render).
    OwnTask,
    /// A runner: a task that runs plain stages one after another, taking the next from the
    /// run's `plain` list as each ends.
    Runner,
}

/// Held while a stage task books: if it unwinds (a bug in the bookkeeping), the run's task
/// is woken to fail instead of waiting for an end that will not come.
struct Booking<'a>(&'a Shared);

impl Drop for Booking<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.lock().broken = true;
            self.0.ended.notify_one();
        }
    }
}

/// Stage `index` ended (and is recorded): its report and dependents, under the lock.
pub(super) fn book_end(
    shared: &Arc<Shared>,
    index: usize,
    report: StageReport,
    ran_by: RanBy,
) -> Handoff {
    let _booking = Booking(shared);
    let mut out = Handoff::default();
    let mut books = shared.lock();
    if ran_by == RanBy::Runner && books.states.take_parked(index) {
        books.runners += 1;
    }
    books.count_running(shared, index, false);
    books.finish(shared, index, report);
    books.start_ready(shared, ran_by == RanBy::Runner, &mut out);
    out
}

/// The skipped stages of a [`Handoff`] are recorded: their ends, under the lock. `next` is
/// the stage the handoff gave its runner, if any.
pub(super) fn book_skipped(
    shared: &Arc<Shared>,
    skipped: Vec<Skipped>,
    next: Option<usize>,
) -> Handoff {
    let mut out = Handoff {
        next,
        ..Handoff::default()
    };
    let _booking = Booking(shared);
    let mut books = shared.lock();
    for s in skipped {
        books.recording -= 1;
        books.finish(shared, s.index, s.report);
    }
    books.start_ready(shared, false, &mut out);
    out
}

/// The runner of stage `index` waits on it (its backend's future is pending, or a recorder
/// is): the runner stops counting as one that takes ready stages until the stage's end is
/// booked. Returns the runners to spawn for the plain stages waiting, if any.
pub(super) fn book_park(shared: &Shared, index: usize) -> Vec<u32> {
    let mut runners = Vec::new();
    let _booking = Booking(shared);
    let mut books = shared.lock();
    // A stage that waited on its backend may wait again on the recorder.
    if books.states.park(index) {
        books.runners -= 1;
        books.add_runners(shared, &mut runners);
    }
    runners
}
