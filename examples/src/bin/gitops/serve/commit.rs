//! The inbox's committer: one thread that commits the deliveries the endpoints hand it, those
//! that arrive together in one write transaction (group commit), and answers each when its
//! transaction is durable. Under load one commit serves many deliveries; alone, a delivery
//! waits for nothing but its own.

use std::sync::mpsc;

use gitops_core::event::GitEvent;
use gitops_core::ledger::{Admission, InboxLimits, Ledger, NewDelivery};
use tokio::sync::oneshot;

/// Deliveries committed in one transaction at most.
const BATCH: usize = 512;

struct Job {
    provider: &'static str,
    delivery_id: Option<String>,
    body_hash: String,
    event: GitEvent,
    reply: oneshot::Sender<Result<Admission, String>>,
}

/// A handle on the committer thread; it ends when the last handle is dropped.
pub struct Committer {
    jobs: mpsc::Sender<Job>,
}

impl Committer {
    pub fn start(ledger: Ledger, limits: InboxLimits) -> std::io::Result<Committer> {
        let (jobs, queue) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("inbox-commit".to_owned())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match queue.try_recv() {
                            Ok(job) => batch.push(job),
                            Err(_) => break,
                        }
                    }
                    commit(&ledger, &limits, batch);
                }
            })?;
        Ok(Committer { jobs })
    }

    /// Commits a delivery (with those that arrive meanwhile); what the inbox made of it.
    pub async fn admit(
        &self,
        provider: &'static str,
        delivery_id: Option<&str>,
        body_hash: String,
        event: GitEvent,
    ) -> Result<Admission, String> {
        let (reply, answer) = oneshot::channel();
        self.jobs
            .send(Job {
                provider,
                delivery_id: delivery_id.map(str::to_owned),
                body_hash,
                event,
                reply,
            })
            .map_err(|_| "the inbox is closed".to_owned())?;
        answer
            .await
            .map_err(|_| "the inbox's committer stopped".to_owned())?
    }
}

fn commit(ledger: &Ledger, limits: &InboxLimits, batch: Vec<Job>) {
    let deliveries: Vec<NewDelivery<'_>> = batch
        .iter()
        .map(|j| NewDelivery {
            provider: j.provider,
            delivery_id: j.delivery_id.as_deref(),
            body_hash: &j.body_hash,
            event: &j.event,
        })
        .collect();
    let decided = ledger.accept_deliveries(&deliveries, limits);
    drop(deliveries);
    match decided {
        Ok(admissions) => {
            for (job, admission) in batch.into_iter().zip(admissions) {
                let _ = job.reply.send(Ok(admission));
            }
        }
        Err(e) => {
            let e = gitops_core::ErrorChain(&e).to_string();
            for job in batch {
                let _ = job.reply.send(Err(e.clone()));
            }
        }
    }
}
