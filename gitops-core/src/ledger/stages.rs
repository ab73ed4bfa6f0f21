//! Stage results recorded as runs go: each is committed before [`RunRecorder::stage_finished`]
//! returns (so that a dependent stage starts only once its needs are durable, and `resume`
//! never runs a recorded stage again), and results that finish together share a commit.
//!
//! A result is queued, then written by whoever holds the connection: the stage's own task when
//! the connection is free (one row costs less than a hand-off to another thread), else a
//! blocking thread that waits for the connection. A writer commits everything queued in one
//! transaction, and again until the queue is empty; a result queued meanwhile is taken by that
//! writer or by the blocking thread its stage started, so none waits for a writer that left.

use async_trait::async_trait;
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

use super::{Ledger, LedgerError, now};
use crate::scheduler::{RecordError, RunRecorder, StageReport};

/// A result waiting for its commit, and who waits for it.
#[derive(Debug)]
pub(super) struct Pending {
    run_id: String,
    stage: StageReport,
    done: oneshot::Sender<Result<(), String>>,
}

/// Inserts one result (the statement is prepared once a connection).
pub(super) fn insert(
    c: &Connection,
    run_id: &str,
    stage: &StageReport,
    detail: &str,
) -> rusqlite::Result<()> {
    c.prepare_cached(
        "INSERT INTO stage_results (run_id, stage, result, attempts, detail, recorded_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        run_id,
        stage.id,
        stage.result.name(),
        stage.attempts,
        detail,
        now()
    ])
    .map(|_| ())
}

impl Ledger {
    /// Commits what is queued on this thread when the connection is free; false when it is
    /// held.
    fn write_queued(&self) -> bool {
        let mut conn = match self.conn.try_lock() {
            Ok(conn) => conn,
            Err(std::sync::TryLockError::Poisoned(e)) => e.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        self.drain(&mut conn);
        true
    }

    fn queued(&self) -> Vec<Pending> {
        std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Commits what is queued, batch after batch, until nothing is; `conn` is held throughout.
    fn drain(&self, conn: &mut Connection) {
        loop {
            let batch = self.queued();
            if batch.is_empty() {
                return;
            }
            if batch.len() > 1 && self.commit(conn, &batch).is_ok() {
                for p in batch {
                    let _ = p.done.send(Ok(()));
                }
                continue;
            }
            // One row, or a batch that failed (rolled back): each row on its own, so that a
            // row that cannot be written fails its own stage only.
            for p in batch {
                let outcome = serde_json::to_string(&p.stage)
                    .map_err(|e| e.to_string())
                    .and_then(|detail| {
                        insert(conn, &p.run_id, &p.stage, &detail).map_err(|e| e.to_string())
                    });
                let _ = p.done.send(outcome);
            }
        }
    }

    /// One transaction for `batch`: all of it is recorded, or none.
    fn commit(&self, conn: &mut Connection, batch: &[Pending]) -> Result<(), String> {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        for p in batch {
            let detail = serde_json::to_string(&p.stage).map_err(|e| e.to_string())?;
            insert(&tx, &p.run_id, &p.stage, &detail).map_err(|e| e.to_string())?;
        }
        tx.commit().map_err(|e| e.to_string())
    }
}

#[async_trait]
impl RunRecorder for Ledger {
    async fn stage_finished(&self, run_id: &str, stage: &StageReport) -> Result<(), RecordError> {
        let (done, committed) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Pending {
                run_id: run_id.to_owned(),
                stage: stage.clone(),
                done,
            });
        if !self.write_queued() {
            // The writer holding the connection may have looked at the queue for the last
            // time before this result was queued: a thread of its own takes it then.
            let ledger = self.clone();
            tokio::task::spawn_blocking(move || {
                let mut conn = ledger.conn.lock().unwrap_or_else(|e| e.into_inner());
                ledger.drain(&mut conn);
            });
        }
        let failed = |message: String| {
            RecordError::new(
                &*stage.id,
                LedgerError::Database {
                    path: self.path.clone(),
                    source: message.into(),
                },
            )
        };
        match committed.await {
            Ok(outcome) => outcome.map_err(failed),
            Err(_) => Err(failed("the ledger's writer stopped".to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::event::GitEvent;
    use crate::ledger::RunRecord;
    use crate::scheduler::StageResult;

    fn report(id: &str) -> StageReport {
        StageReport {
            id: Arc::from(id),
            result: StageResult::Success,
            attempts: 1,
            flaky: false,
            started_secs: Some(1.0),
            finished_secs: Some(2.0),
            outputs: Default::default(),
            reused: false,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn results_recorded_at_once_are_all_committed_and_a_bad_one_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let event = GitEvent::push("acme/app", "main", None, "abc");
        for run in ["r1", "r2"] {
            ledger
                .begin_run(&RunRecord::new(run, "p", event.clone(), "", dir.path()))
                .unwrap();
        }
        // "s0" of r1 is recorded already: recording it again breaks the key.
        ledger.record_stage("r1", &report("s0")).unwrap();
        // The connection held while they queue: they are committed in one batch, which fails
        // on the bad row and is written again row by row.
        let (held, holding) = std::sync::mpsc::channel();
        let holder = {
            let ledger = ledger.clone();
            std::thread::spawn(move || {
                let _conn = ledger.conn.lock().unwrap();
                held.send(()).unwrap();
                while ledger.pending.lock().unwrap().len() < 400 {
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
            })
        };
        holding.recv().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..400 {
            let ledger = ledger.clone();
            let run = if i % 2 == 0 { "r1" } else { "r2" };
            tasks.spawn(async move {
                let stage = format!("s{i}");
                (
                    run,
                    stage.clone(),
                    ledger.stage_finished(run, &report(&stage)).await,
                )
            });
        }
        let mut failed = Vec::new();
        while let Some(done) = tasks.join_next().await {
            let (run, stage, outcome) = done.unwrap();
            if let Err(e) = outcome {
                failed.push(format!("{run}/{stage}: {e}"));
            }
        }
        holder.join().unwrap();
        assert_eq!(
            failed.len(),
            1,
            "{} failed: {:?}",
            failed.len(),
            &failed[..failed.len().min(3)]
        );
        assert!(failed[0].starts_with("r1/s0: "), "{failed:?}");
        assert_eq!(ledger.stage_results("r1").unwrap().len(), 200);
        assert_eq!(ledger.stage_results("r2").unwrap().len(), 200);
        assert!(ledger.pending.lock().unwrap().is_empty());
    }
}
