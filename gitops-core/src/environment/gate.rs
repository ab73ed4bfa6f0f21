//! What a deploy or stop stage of a run passes through: an approval when its environment
//! requires one, the environment's lock and, for deploys, a rollback's pin; then the record of
//! its deployment, and of its end.

use async_trait::async_trait;

use super::{Environments, new_deployment};
use crate::backend::{BackendError, Cancellation, Completion, Outcome, StageContext};
use crate::config::{Action, Approval};
use crate::ledger::ApprovalStatus;
use crate::scheduler::{DeploymentGate, GateRefusal, GateTicket, WaitReason};

impl Environments {
    /// Waits for the approval of `stage` of `run_id` (asking for it if no one has).
    async fn approved(
        &self,
        run_id: &str,
        stage: &str,
        environment: &str,
        cancel: &Cancellation,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<(), GateRefusal> {
        let mut told = false;
        loop {
            let (r, s, e) = (run_id.to_owned(), stage.to_owned(), environment.to_owned());
            let status = self
                .blocking(move |l| l.request_approval(&r, &s, &e))
                .await?;
            match status {
                ApprovalStatus::Approved => return Ok(()),
                ApprovalStatus::Rejected => {
                    let (r, s) = (run_id.to_owned(), stage.to_owned());
                    let by = self
                        .blocking(move |l| l.approval(&r, &s))
                        .await?
                        .and_then(|a| a.decided_by)
                        .unwrap_or_else(|| "someone".to_owned());
                    return Err(GateRefusal::Refused(format!(
                        "the deployment to \"{environment}\" was rejected by {by}"
                    )));
                }
                ApprovalStatus::Pending => {
                    if !told {
                        told = true;
                        waiting(WaitReason::Approval {
                            environment: environment.to_owned(),
                        });
                    }
                    self.pause(cancel).await?;
                }
            }
        }
    }
}

#[async_trait]
impl DeploymentGate for Environments {
    async fn enter(
        &self,
        ctx: &StageContext,
        action: Action,
        backend: &str,
        waiting: &(dyn Fn(WaitReason) + Send + Sync),
    ) -> Result<GateTicket, GateRefusal> {
        let Some(record) = new_deployment(ctx, action, backend) else {
            return Err(GateRefusal::Refused(format!(
                "stage \"{}\" deploys or stops no environment",
                ctx.stage
            )));
        };
        let Some(target) = &ctx.environment else {
            return Err(GateRefusal::Refused("no environment".to_owned()));
        };
        let cancel = ctx.cancellation();
        if action == Action::Deploy && target.policy.approval == Approval::Required {
            self.approved(&ctx.run.id, &ctx.stage, &target.name, cancel, waiting)
                .await?;
        }
        let holder = format!("run {} stage {}", ctx.run.id, ctx.stage);
        let guard = self
            .acquire(
                &target.name,
                &holder,
                target,
                action == Action::Deploy,
                cancel,
                waiting,
            )
            .await?;
        let id = match self.blocking(move |l| l.begin_deployment(&record)).await {
            Ok(id) => id,
            Err(refusal) => {
                self.release(guard).await;
                return Err(refusal);
            }
        };
        let ticket = GateTicket::new(id).with_revocation(guard.revocation().clone());
        self.inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, guard);
        Ok(ticket)
    }

    async fn leave(
        &self,
        ticket: GateTicket,
        returned: &Result<Completion, BackendError>,
        cancelled: bool,
    ) {
        let held = self
            .inner
            .held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ticket.deployment);
        // A deployment that lost its lock and did not succeed failed for that reason, whatever
        // its backend said when the lock's loss cancelled it.
        let succeeded = matches!(
            returned,
            Ok(Completion {
                outcome: Outcome::Success,
                ..
            })
        );
        let lost = held
            .as_ref()
            .and_then(|g| g.revocation().reason())
            .filter(|_| !succeeded)
            .map(|reason| Err(BackendError::failed(reason.to_owned())));
        let (returned, cancelled) = match &lost {
            Some(lost) => (lost, false),
            None => (returned, cancelled),
        };
        let _ = self.finish(ticket.deployment, returned, cancelled).await;
        if let Some(guard) = held {
            self.release(guard).await;
        }
    }
}
