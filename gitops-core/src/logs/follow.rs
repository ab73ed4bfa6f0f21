//! Following a run's logs while it goes on, in this process or another sharing the state dir:
//! the files are polled for new complete lines, and the ledger says when the run has ended.

use std::collections::BTreeMap;
use std::time::Duration;

use super::{LogEntry, LogStore};
use crate::ledger::{Ledger, RunStatus};

/// How often a follower looks for new lines.
pub const FOLLOW_POLL: Duration = Duration::from_millis(200);

/// A line of a followed log, with its stage.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct FollowedLine {
    /// The stage.
    pub stage: String,
    /// The line.
    pub entry: LogEntry,
}

/// Follows a run's logs (or one stage's) from their start: each [`next`](Self::next) returns
/// the lines kept since the one before, waiting while there are none and the run goes on.
/// Made by [`LogStore::follow`].
#[derive(Debug)]
pub struct LogFollower {
    store: LogStore,
    ledger: Ledger,
    run: String,
    stage: Option<String>,
    /// Per stage: the offset read up to.
    offsets: BTreeMap<String, u64>,
    done: bool,
    poll: Duration,
}

impl LogFollower {
    pub(super) fn new(store: LogStore, ledger: Ledger, run: &str, stage: Option<&str>) -> Self {
        LogFollower {
            store,
            ledger,
            run: run.to_owned(),
            stage: stage.map(str::to_owned),
            offsets: BTreeMap::new(),
            done: false,
            poll: FOLLOW_POLL,
        }
    }

    /// The same follower, looking for new lines every `poll`.
    pub fn with_poll(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// The lines kept since the last call (in the order they were kept; every line of the log
    /// the first time), waiting while there are none and what is followed goes on; `None` once
    /// it has ended and every line has been returned. What is followed ends with the run
    /// (finished, or interrupted: its process is gone), or, for one stage, when that stage's
    /// result is recorded. A run the ledger does not know is an error.
    pub async fn next(&mut self) -> crate::Result<Option<Vec<FollowedLine>>> {
        if self.done {
            return Ok(None);
        }
        loop {
            // Ended is read before the lines: the last lines are written before the end is
            // recorded, so none is missed.
            let ended = self.ended()?;
            let lines = self.read_new()?;
            if !lines.is_empty() {
                return Ok(Some(lines));
            }
            if ended {
                self.done = true;
                return Ok(None);
            }
            tokio::time::sleep(self.poll).await;
        }
    }

    fn ended(&self) -> crate::Result<bool> {
        let run = self.ledger.run(&self.run)?;
        if run.status != RunStatus::Running || run.is_interrupted() {
            return Ok(true);
        }
        Ok(match &self.stage {
            Some(stage) => self
                .ledger
                .stage_results(&self.run)?
                .iter()
                .any(|r| &*r.id == stage),
            None => false,
        })
    }

    fn read_new(&mut self) -> crate::Result<Vec<FollowedLine>> {
        let stages = match &self.stage {
            Some(stage) => vec![stage.clone()],
            None => self.store.stages(&self.run)?,
        };
        let mut lines = Vec::new();
        for stage in stages {
            let offset = self.offsets.get(&stage).copied().unwrap_or(0);
            let (entries, next) = self
                .store
                .read_from(&self.run, &stage, offset, usize::MAX)?;
            self.offsets.insert(stage.clone(), next);
            lines.extend(entries.into_iter().map(|entry| FollowedLine {
                stage: stage.clone(),
                entry,
            }));
        }
        // Stable: the lines of one stage keep their order.
        lines.sort_by_key(|l| l.entry.t);
        Ok(lines)
    }
}
