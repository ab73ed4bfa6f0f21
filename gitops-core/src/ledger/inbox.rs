//! The inbox: webhook deliveries a server accepted, committed before it answers, taken in order
//! by its worker and marked done when their runs end. A crash loses nothing that was answered
//! 2xx; a redelivery or a replayed body runs nothing twice.
//!
//! A delivery is `queued` (accepted, nothing started), `running` (its runs were started by the
//! process in `pid`) or `done` (with its outcome). The runs a delivery started carry its
//! sequence number (`runs.delivery`), so that a server that restarts after a crash resumes them
//! instead of starting the event again.

use rusqlite::{OptionalExtension, TransactionBehavior, params};

use super::{
    Ledger, LedgerError, RunRecord, SELECT_RUN, is_own, now, own_start, process_alive_since,
    raw_run,
};
use crate::event::GitEvent;

/// A delivery as received: committed to the inbox before the server answers.
#[derive(Debug, Clone, Copy)]
pub struct NewDelivery<'a> {
    /// The forge (`github`, `gitlab`, ...).
    pub provider: &'a str,
    /// The forge's delivery id (`X-GitHub-Delivery`, ...), when it sent one.
    pub delivery_id: Option<&'a str>,
    /// A hash of the body (hex), to tell a replayed body under a new delivery id.
    pub body_hash: &'a str,
    /// Whether a body received before (within the replay window) makes this one a duplicate.
    /// False where the forge's authentication does not bind the body (a GitLab token).
    pub compare_body: bool,
    /// The event, encoded for the inbox.
    pub event: &'a EncodedEvent,
}

/// An event encoded as the inbox stores it (JSON), once: a server that also prints or logs the
/// event reuses the encoding instead of making another.
#[derive(Debug, Clone)]
pub struct EncodedEvent(String);

impl EncodedEvent {
    /// Encodes `event`.
    pub fn new(event: &GitEvent) -> Result<EncodedEvent, LedgerError> {
        serde_json::to_string(event)
            .map(EncodedEvent)
            .map_err(|e| LedgerError::Corrupt {
                run: "a new delivery".to_owned(),
                message: e.to_string(),
            })
    }

    /// The event's JSON.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// How the inbox takes deliveries.
#[derive(Debug, Clone, Copy)]
pub struct InboxLimits {
    /// Deliveries waiting to run past which a new one is refused ([`Admission::Full`]).
    pub max_queued: u64,
    /// Seconds within which a body already received is a duplicate whatever its delivery id
    /// (0: bodies are not compared).
    pub replay_window_secs: f64,
    /// False when the server only records what it receives (`serve --no-run`): the delivery is
    /// stored as done at once, and never counts against `max_queued`.
    pub run: bool,
}

/// What the inbox did with a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Admission {
    /// Committed; the worker will take it (or, not running, it is recorded).
    Accepted {
        /// Its sequence number.
        seq: u64,
    },
    /// A redelivery of one that is still waiting, or that failed before any run started: it
    /// will be taken (once).
    Requeued {
        /// The earlier delivery's sequence number.
        seq: u64,
    },
    /// Already taken: a redelivery of one that ran or is running, or a body received within
    /// the replay window. Nothing runs.
    Duplicate {
        /// The earlier delivery's sequence number.
        seq: u64,
        /// `delivery id` or `body`: what matched.
        matched: &'static str,
    },
    /// Too many deliveries wait already; nothing was stored.
    Full {
        /// How many wait.
        queued: u64,
    },
}

/// Where a delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    /// Accepted; nothing started.
    Queued,
    /// Its runs were started.
    Running,
    /// Its runs ended, or it was turned down when taken.
    Done,
}

impl DeliveryState {
    fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Queued => "queued",
            DeliveryState::Running => "running",
            DeliveryState::Done => "done",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "queued" => DeliveryState::Queued,
            "running" => DeliveryState::Running,
            "done" => DeliveryState::Done,
            _ => return None,
        })
    }
}

/// How a delivery ended (recorded with it when done).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryOutcome {
    /// Its runs ended (each with its own result in the ledger).
    Ran,
    /// It triggers no pipeline, or names no commit to run.
    Nothing,
    /// Refused by the trust rules (a fork nobody approved, a repository not served).
    Refused,
    /// It could not be started (fetching, planning): a redelivery is taken again.
    Failed,
    /// Recorded only (`serve --no-run`).
    Recorded,
}

impl DeliveryOutcome {
    /// Its name in the ledger and in metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryOutcome::Ran => "ran",
            DeliveryOutcome::Nothing => "nothing",
            DeliveryOutcome::Refused => "refused",
            DeliveryOutcome::Failed => "failed",
            DeliveryOutcome::Recorded => "recorded",
        }
    }
}

/// A delivery in the inbox.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Delivery {
    /// Its sequence number: the order it was accepted in.
    pub seq: u64,
    /// The forge.
    pub provider: String,
    /// The forge's delivery id.
    pub delivery_id: Option<String>,
    /// The event.
    pub event: GitEvent,
    /// Where it is.
    pub state: DeliveryState,
    /// The process that took it (when running or done).
    pub pid: Option<u32>,
    /// Unix time it was accepted.
    pub received_at: f64,
}

/// How many deliveries wait and run.
///
/// (The inbox's queries say `state != 'done'` beside the state they look for, so that SQLite
/// uses the index of the deliveries not done, which stays small however many are kept.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboxDepth {
    /// Accepted, not started.
    pub queued: u64,
    /// Started, not done.
    pub running: u64,
}

const SELECT_DELIVERY: &str =
    "SELECT seq, provider, delivery_id, event, state, pid, received_at FROM inbox";

type RawDelivery = (
    u64,
    String,
    Option<String>,
    String,
    String,
    Option<u32>,
    f64,
);

fn raw_delivery(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawDelivery> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
    ))
}

fn decode(
    (seq, provider, delivery_id, event, state, pid, received_at): RawDelivery,
) -> Result<Delivery, LedgerError> {
    let corrupt = |message: String| LedgerError::Corrupt {
        run: format!("delivery {seq}"),
        message,
    };
    Ok(Delivery {
        seq,
        provider,
        delivery_id,
        event: serde_json::from_str(&event).map_err(|e| corrupt(format!("event: {e}")))?,
        state: DeliveryState::parse(&state).ok_or_else(|| corrupt(format!("state \"{state}\"")))?,
        pid,
        received_at,
    })
}

/// Decides one delivery inside the inbox's write transaction. `queued` caches how many wait
/// (counted once a transaction).
fn admit(
    tx: &rusqlite::Transaction<'_>,
    delivery: &NewDelivery<'_>,
    event: &str,
    limits: &InboxLimits,
    at: f64,
    queued: &mut Option<u64>,
) -> rusqlite::Result<Admission> {
    if let Some(id) = delivery.delivery_id {
        let earlier: Option<(u64, String, Option<String>, String)> = tx
            .prepare_cached(
                "SELECT seq, state, outcome, body_hash FROM inbox WHERE provider = ?1 AND delivery_id = ?2",
            )?
            .query_row(params![delivery.provider, id], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        if let Some((seq, state, outcome, hash)) = earlier {
            // Taken again only as a redelivery: the same body (a captured body sent under the
            // id of a failed delivery is not).
            let failed = outcome.as_deref() == Some(DeliveryOutcome::Failed.as_str())
                && hash == delivery.body_hash;
            return Ok(if state == "queued" {
                Admission::Requeued { seq }
            } else if state == "done" && failed && limits.run {
                tx.prepare_cached(
                    "UPDATE inbox SET state = 'queued', outcome = NULL, pid = NULL, event = ?2, body_hash = ?3 WHERE seq = ?1",
                )?
                .execute(params![seq, event, delivery.body_hash])?;
                if let Some(n) = queued.as_mut() {
                    *n += 1;
                }
                Admission::Requeued { seq }
            } else {
                Admission::Duplicate {
                    seq,
                    matched: "delivery id",
                }
            });
        }
    }
    if limits.replay_window_secs > 0.0 && delivery.compare_body {
        let replayed: Option<u64> = tx
            .prepare_cached(
                "SELECT seq FROM inbox WHERE body_hash = ?1 AND received_at >= ?2
                 AND (outcome IS NULL OR outcome != 'failed') ORDER BY seq LIMIT 1",
            )?
            .query_row(
                params![delivery.body_hash, at - limits.replay_window_secs],
                |r| r.get(0),
            )
            .optional()?;
        if let Some(seq) = replayed {
            return Ok(Admission::Duplicate {
                seq,
                matched: "body",
            });
        }
    }
    let (state, outcome) = if limits.run {
        let waiting = match *queued {
            Some(n) => n,
            None => tx
                .prepare_cached(
                    "SELECT COUNT(*) FROM inbox WHERE state = 'queued' AND state != 'done'",
                )?
                .query_row([], |r| r.get(0))?,
        };
        *queued = Some(waiting);
        if waiting >= limits.max_queued {
            return Ok(Admission::Full { queued: waiting });
        }
        *queued = Some(waiting + 1);
        (DeliveryState::Queued, None)
    } else {
        (
            DeliveryState::Done,
            Some(DeliveryOutcome::Recorded.as_str()),
        )
    };
    tx.prepare_cached(
        "INSERT INTO inbox (provider, delivery_id, body_hash, event, received_at, state, outcome)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?
    .execute(params![
        delivery.provider,
        delivery.delivery_id,
        delivery.body_hash,
        event,
        at,
        state.as_str(),
        outcome
    ])?;
    Ok(Admission::Accepted {
        seq: tx.last_insert_rowid() as u64,
    })
}

impl Ledger {
    /// Commits a delivery to the inbox, unless it is a duplicate or the inbox is full. Decided
    /// in one write transaction, so that servers sharing the state dir agree.
    pub fn accept_delivery(
        &self,
        delivery: &NewDelivery<'_>,
        limits: &InboxLimits,
    ) -> Result<Admission, LedgerError> {
        let mut admitted = self.accept_deliveries(std::slice::from_ref(delivery), limits)?;
        Ok(admitted.pop().unwrap_or(Admission::Full { queued: 0 }))
    }

    /// [`accept_delivery`](Self::accept_delivery) for several deliveries, in order, in one
    /// write transaction (a server commits the deliveries that arrive together at once: one
    /// commit for many). Each is decided as if alone, after those before it.
    pub fn accept_deliveries(
        &self,
        deliveries: &[NewDelivery<'_>],
        limits: &InboxLimits,
    ) -> Result<Vec<Admission>, LedgerError> {
        let at = now();
        self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let mut queued = None;
            let mut admissions = Vec::with_capacity(deliveries.len());
            for delivery in deliveries {
                let event = delivery.event.as_str();
                admissions.push(admit(&tx, delivery, event, limits, at, &mut queued)?);
            }
            tx.commit()?;
            Ok(admissions)
        })
    }

    /// Takes the oldest waiting delivery for this process: it is `running` from now on.
    pub fn take_delivery(&self) -> Result<Option<Delivery>, LedgerError> {
        let raw = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let raw = tx
                .query_row(
                    &format!("{SELECT_DELIVERY} WHERE state = 'queued' AND state != 'done' ORDER BY seq LIMIT 1"),
                    [],
                    raw_delivery,
                )
                .optional()?;
            if let Some(raw) = &raw {
                tx.execute(
                    "UPDATE inbox SET state = 'running', pid = ?2, pid_start = ?3, started_at = ?4 WHERE seq = ?1",
                    params![raw.0, std::process::id(), own_start(), now()],
                )?;
            }
            tx.commit()?;
            Ok(raw)
        })?;
        raw.map(|mut raw| {
            raw.4 = DeliveryState::Running.as_str().to_owned();
            raw.5 = Some(std::process::id());
            decode(raw)
        })
        .transpose()
    }

    /// Marks a delivery done.
    pub fn finish_delivery(&self, seq: u64, outcome: DeliveryOutcome) -> Result<(), LedgerError> {
        self.with(|c| {
            c.execute(
                "UPDATE inbox SET state = 'done', outcome = ?2, finished_at = ?3 WHERE seq = ?1",
                params![seq, outcome.as_str(), now()],
            )
            .map(|_| ())
        })
    }

    /// Deliveries whose process is gone while they were `running` (a crash, a kill), taken
    /// over by this process: it goes on with them (see [`Ledger::delivery_runs`]).
    pub fn claim_interrupted_deliveries(&self) -> Result<Vec<Delivery>, LedgerError> {
        let rows = self.with(|c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let rows = {
                let mut stmt = tx.prepare(
                    "SELECT seq, provider, delivery_id, event, state, pid, received_at, pid_start FROM inbox
                     WHERE state = 'running' AND state != 'done' ORDER BY seq",
                )?;
                stmt.query_map([], |r| Ok((raw_delivery(r)?, r.get::<_, Option<u64>>(7)?)))?
                    .collect::<rusqlite::Result<Vec<_>>>()?
            };
            // Gone: not this process, and no process that started when it did has its pid
            // (a restarted container's PID 1 is another process).
            let gone: Vec<RawDelivery> = rows
                .into_iter()
                .filter(|(r, start)| {
                    r.5.is_none_or(|pid| !is_own(pid, *start) && !process_alive_since(pid, *start))
                })
                .map(|(r, _)| r)
                .collect();
            for r in &gone {
                tx.execute(
                    "UPDATE inbox SET pid = ?2, pid_start = ?3 WHERE seq = ?1",
                    params![r.0, std::process::id(), own_start()],
                )?;
            }
            tx.commit()?;
            Ok(gone)
        })?;
        rows.into_iter()
            .map(|mut r| {
                r.5 = Some(std::process::id());
                decode(r)
            })
            .collect()
    }

    /// The runs a delivery started, oldest first.
    pub fn delivery_runs(&self, seq: u64) -> Result<Vec<RunRecord>, LedgerError> {
        let rows = self.with(|c| {
            let mut stmt = c.prepare(&format!(
                "{SELECT_RUN} WHERE delivery = ?1 ORDER BY started_at, id"
            ))?;
            stmt.query_map([seq], raw_run)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })?;
        rows.into_iter().map(|r| r.decode()).collect()
    }

    /// The latest delivery before `before` of `provider` for pull request `number` of `repo`,
    /// among those the inbox keeps (the replay window): what a forge that sends no previous
    /// commit (Bitbucket) had said the pull request's head was.
    pub fn previous_pull_request_delivery(
        &self,
        provider: &str,
        repo: &str,
        number: u64,
        before: u64,
    ) -> Result<Option<Delivery>, LedgerError> {
        self.with(|c| {
            c.query_row(
                &format!(
                    "{SELECT_DELIVERY} WHERE provider = ?1 AND seq < ?2
                       AND json_extract(event, '$.kind') = 'pull_request'
                       AND json_extract(event, '$.number') = ?3
                       AND json_extract(event, '$.repo') = ?4
                     ORDER BY seq DESC LIMIT 1"
                ),
                rusqlite::params![provider, before, number, repo],
                raw_delivery,
            )
            .optional()
        })?
        .map(decode)
        .transpose()
    }

    /// A delivery by its sequence number.
    pub fn delivery(&self, seq: u64) -> Result<Option<Delivery>, LedgerError> {
        self.with(|c| {
            c.query_row(
                &format!("{SELECT_DELIVERY} WHERE seq = ?1"),
                [seq],
                raw_delivery,
            )
            .optional()
        })?
        .map(decode)
        .transpose()
    }

    /// How many deliveries wait and run.
    pub fn inbox_depth(&self) -> Result<InboxDepth, LedgerError> {
        self.with(|c| {
            c.query_row(
                "SELECT COALESCE(SUM(state = 'queued'), 0), COALESCE(SUM(state = 'running'), 0) FROM inbox WHERE state != 'done'",
                [],
                |r| {
                    Ok(InboxDepth {
                        queued: r.get(0)?,
                        running: r.get(1)?,
                    })
                },
            )
        })
    }

    /// How many deliveries the inbox holds, in every state.
    pub fn inbox_len(&self) -> Result<u64, LedgerError> {
        self.with(|c| c.query_row("SELECT COUNT(*) FROM inbox", [], |r| r.get(0)))
    }

    /// Forgets deliveries done more than `older_than_secs` ago (past the replay window, a
    /// done delivery decides nothing). How many were removed.
    pub fn prune_deliveries(&self, older_than_secs: f64) -> Result<usize, LedgerError> {
        self.with(|c| {
            c.execute(
                "DELETE FROM inbox WHERE state = 'done' AND received_at < ?1",
                params![now() - older_than_secs],
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::GitEvent;

    fn push(sha: &str) -> GitEvent {
        GitEvent::push("acme/app", "main", None, sha)
    }

    fn limits() -> InboxLimits {
        InboxLimits {
            max_queued: 2,
            replay_window_secs: 3600.0,
            run: true,
        }
    }

    fn enc(event: &GitEvent) -> EncodedEvent {
        EncodedEvent::new(event).unwrap()
    }

    fn new<'a>(id: Option<&'a str>, hash: &'a str, event: &'a EncodedEvent) -> NewDelivery<'a> {
        NewDelivery {
            provider: "github",
            delivery_id: id,
            body_hash: hash,
            compare_body: true,
            event,
        }
    }

    #[test]
    fn deliveries_are_taken_in_order_once_and_duplicates_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (a, b) = (push(&"a".repeat(40)), push(&"b".repeat(40)));
        let first = ledger
            .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
            .unwrap();
        assert_eq!(first, Admission::Accepted { seq: 1 });
        // The same id again, still waiting: taken (once).
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
                .unwrap(),
            Admission::Requeued { seq: 1 }
        );
        // The same body under a new id: a replay.
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d9"), "h1", &enc(&a)), &limits())
                .unwrap(),
            Admission::Duplicate {
                seq: 1,
                matched: "body"
            }
        );
        assert_eq!(
            ledger
                .accept_delivery(&new(None, "h2", &enc(&b)), &limits())
                .unwrap(),
            Admission::Accepted { seq: 2 }
        );
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d3"), "h3", &enc(&b)), &limits())
                .unwrap(),
            Admission::Full { queued: 2 }
        );
        assert_eq!(
            ledger.inbox_depth().unwrap(),
            InboxDepth {
                queued: 2,
                running: 0
            }
        );
        let taken = ledger.take_delivery().unwrap().unwrap();
        assert_eq!((taken.seq, taken.state), (1, DeliveryState::Running));
        assert_eq!(taken.event, a);
        // Running: a redelivery runs nothing.
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
                .unwrap(),
            Admission::Duplicate {
                seq: 1,
                matched: "delivery id"
            }
        );
        assert_eq!(ledger.take_delivery().unwrap().unwrap().seq, 2);
        assert_eq!(ledger.take_delivery().unwrap(), None);
        // Failed before any run: a redelivery is taken again, but not another body under its id.
        ledger.finish_delivery(1, DeliveryOutcome::Failed).unwrap();
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d1"), "captured", &enc(&b)), &limits())
                .unwrap(),
            Admission::Duplicate {
                seq: 1,
                matched: "delivery id"
            }
        );
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
                .unwrap(),
            Admission::Requeued { seq: 1 }
        );
        assert_eq!(ledger.take_delivery().unwrap().unwrap().seq, 1);
        ledger.finish_delivery(1, DeliveryOutcome::Ran).unwrap();
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
                .unwrap(),
            Admission::Duplicate {
                seq: 1,
                matched: "delivery id"
            }
        );
        // Past the window, a body is not compared; done deliveries can be pruned.
        let no_window = InboxLimits {
            replay_window_secs: 0.0,
            ..limits()
        };
        assert_eq!(
            ledger
                .accept_delivery(&new(Some("d4"), "h1", &enc(&a)), &no_window)
                .unwrap(),
            Admission::Accepted { seq: 3 }
        );
        assert_eq!(ledger.prune_deliveries(-1.0).unwrap(), 1);
        assert_eq!(ledger.inbox_len().unwrap(), 2);
    }

    #[test]
    fn deliveries_committed_together_are_decided_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let (a, b) = (enc(&push(&"a".repeat(40))), enc(&push(&"b".repeat(40))));
        let batch = [
            new(Some("d1"), "h1", &a),
            new(Some("d1"), "h1", &a),
            new(Some("d2"), "h1", &a),
            new(Some("d3"), "h3", &b),
            new(Some("d4"), "h4", &b),
        ];
        assert_eq!(
            ledger.accept_deliveries(&batch, &limits()).unwrap(),
            [
                Admission::Accepted { seq: 1 },
                Admission::Requeued { seq: 1 },
                Admission::Duplicate {
                    seq: 1,
                    matched: "body"
                },
                Admission::Accepted { seq: 2 },
                Admission::Full { queued: 2 },
            ]
        );
        assert_eq!(ledger.inbox_len().unwrap(), 2);
    }

    #[test]
    fn a_server_that_only_records_never_fills_the_inbox() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let a = push(&"a".repeat(40));
        let record = InboxLimits {
            max_queued: 0,
            replay_window_secs: 0.0,
            run: false,
        };
        for i in 0..5 {
            let id = format!("d{i}");
            let admission = ledger
                .accept_delivery(&new(Some(&id), "h", &enc(&a)), &record)
                .unwrap();
            assert!(
                matches!(admission, Admission::Accepted { .. }),
                "{admission:?}"
            );
        }
        assert_eq!(ledger.inbox_depth().unwrap(), InboxDepth::default());
        assert_eq!(ledger.take_delivery().unwrap(), None);
        assert_eq!(ledger.inbox_len().unwrap(), 5);
    }

    #[test]
    fn deliveries_of_a_process_that_is_gone_are_claimed_with_their_runs() {
        let dir = tempfile::tempdir().unwrap();
        let ledger = Ledger::open(dir.path()).unwrap();
        let a = push(&"a".repeat(40));
        ledger
            .accept_delivery(&new(Some("d1"), "h1", &enc(&a)), &limits())
            .unwrap();
        ledger.take_delivery().unwrap().unwrap();
        // Ours and alive: not claimed.
        assert!(ledger.claim_interrupted_deliveries().unwrap().is_empty());
        // Our pid, but a process that started at another time (a restarted container's PID
        // 1): gone, and claimed.
        ledger
            .with(|c| c.execute("UPDATE inbox SET pid_start = 1", []))
            .unwrap();
        let claimed = ledger.claim_interrupted_deliveries().unwrap();
        assert_eq!(
            claimed.len(),
            1,
            "the same pid from an earlier start is another process"
        );
        assert!(
            ledger.claim_interrupted_deliveries().unwrap().is_empty(),
            "now ours"
        );
        let dead = u32::MAX - 1;
        ledger
            .with(|c| c.execute("UPDATE inbox SET pid = ?1", [dead]))
            .unwrap();
        let mut run = RunRecord::new("r1", "p", a.clone(), "version: 1", dir.path());
        run.delivery = Some(1);
        assert!(!run.is_interrupted(), "this process's own run");
        let mut earlier = run.clone();
        earlier.pid_start = Some(1);
        assert!(
            earlier.is_interrupted(),
            "the same pid, started at another time"
        );
        ledger.begin_run(&run).unwrap();
        let claimed = ledger.claim_interrupted_deliveries().unwrap();
        assert_eq!(claimed.len(), 1);
        assert_eq!(claimed[0].pid, Some(std::process::id()));
        let runs = ledger.delivery_runs(1).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            ["r1"]
        );
        assert_eq!(runs[0].delivery, Some(1));
    }
}
