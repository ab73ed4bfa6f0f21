//! The call of a stage's backend: a deploy or stop stage passes through the run's gate first
//! (and leaves it however the call ends), a stage with a timeout is stopped when it passes.

use std::sync::Arc;
use std::time::Duration;

use super::events::RunEvent;
use super::gate::{DEPLOYER_PANICKED, DeploymentGate, GateRefusal, GateTicket, WaitReason};
use super::mask::masked;
use super::state::Shared;
use super::target::Target;
use crate::backend::{BackendError, Cancellation, Completion, Outcome, StageContext};
use crate::config::Action;

/// Calls the backend of stage `index` within `limit`, cancelling its token when the limit
/// passes (and then waiting for the backend to stop); true when it timed out. Deploy and stop
/// stages pass through the run's gate first: time spent waiting there (for an approval, a lock,
/// a pin) does not count against the limit. One that its plan refuses (see
/// [`PlannedStage::refused`](crate::plan::PlannedStage::refused)) fails before either.
pub(super) async fn call(
    shared: &Shared,
    index: usize,
    target: &Target,
    backend: usize,
    ctx: StageContext,
    limit: Option<Duration>,
) -> (Result<Completion, BackendError>, bool) {
    let token = ctx.cancel.clone();
    let (deployer, action) = match target {
        Target::Execute(e) => return bounded(e.execute(ctx), limit, &token).await,
        Target::Missing(m) => return (Err(BackendError::failed(m.clone())), false),
        Target::Deploy(d) => (d, Action::Deploy),
        Target::Stop(d) => (d, Action::Stop),
    };
    if let Some(why) = shared.pipeline.stages[index].refused() {
        return (Err(BackendError::failed(why.to_owned())), false);
    }
    let invoke = |ctx| async move {
        match action {
            Action::Stop => deployer.stop(ctx).await,
            _ => deployer.deploy(ctx).await,
        }
    };
    let Some(gate) = &shared.gate else {
        return bounded(invoke(ctx), limit, &token).await;
    };
    let waiting = |waiting: WaitReason| {
        shared.emit(|at| RunEvent::StageWaiting {
            stage: ctx.stage.to_string(),
            waiting,
            at,
        });
    };
    let entered = gate
        .enter(&ctx, action, shared.backend_name(backend), &waiting)
        .await;
    let ticket = match entered {
        Ok(ticket) => ticket,
        Err(GateRefusal::Cancelled) => return (Err(BackendError::Cancelled), false),
        Err(GateRefusal::Refused(message)) => return (Err(BackendError::failed(message)), false),
    };
    if let Some(env) = &ctx.environment {
        shared.emit(|at| RunEvent::Deploying {
            stage: ctx.stage.to_string(),
            deployment: ticket.deployment,
            environment: env.name.clone(),
            transient: env.pull_request.is_some(),
            production: env.policy.production,
            at,
        });
    }
    let mut ctx = ctx;
    let revocation = ticket.revocation.clone();
    if let Some(r) = &revocation {
        ctx.cancel = r.cancellation().clone();
    }
    let entered = Entered {
        gate: gate.clone(),
        ticket: Some(ticket),
    };
    let (mut returned, timed_out) = bounded(invoke(ctx), limit, &token).await;
    if let Some(reason) = revocation.as_ref().and_then(|r| r.reason()) {
        returned = Err(BackendError::failed(reason.to_owned()));
    }
    let returned = masked(returned, &shared.masker);
    entered.leave(&returned, token.is_cancelled()).await;
    (returned, timed_out)
}

/// Whether a stage that returned `result` was stopped by the run's cancellation: it did not
/// succeed, and the run is cancelled. (A stage that succeeded did its work either way; and
/// success is checked first because asking the run's token takes a lock that every stage of
/// the run shares.)
pub(super) fn stopped_by_run(shared: &Shared, result: &Result<Completion, BackendError>) -> bool {
    let succeeded = matches!(
        result,
        Ok(Completion {
            outcome: Outcome::Success,
            ..
        })
    );
    !succeeded && shared.run_cancel.is_cancelled()
}

/// An entered gate, left when the backend returns, or else when this is dropped: the backend
/// panicked (the stage's task unwinds through here) or the stage's future was dropped. The gate
/// is then left from a task of its own, so that what it holds for the deployment (an
/// environment's lock) is given back at once rather than kept for as long as the process lives.
struct Entered {
    gate: Arc<dyn DeploymentGate>,
    ticket: Option<GateTicket>,
}

impl Entered {
    async fn leave(mut self, returned: &Result<Completion, BackendError>, cancelled: bool) {
        if let Some(ticket) = self.ticket.take() {
            self.gate.leave(ticket, returned, cancelled).await;
        }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let Some(ticket) = self.ticket.take() else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let panicked = std::thread::panicking();
        let gate = self.gate.clone();
        runtime.spawn(async move {
            let returned = if panicked {
                Err(BackendError::failed(DEPLOYER_PANICKED.to_owned()))
            } else {
                Err(BackendError::Cancelled)
            };
            gate.leave(ticket, &returned, !panicked).await;
        });
    }
}

/// Runs `work` within `limit`; past it, cancels `token` and waits for `work` to end.
async fn bounded<R>(
    work: impl std::future::Future<Output = R>,
    limit: Option<Duration>,
    token: &Cancellation,
) -> (R, bool) {
    let Some(limit) = limit else {
        return (work.await, false);
    };
    tokio::pin!(work);
    tokio::select! {
        r = &mut work => (r, false),
        _ = tokio::time::sleep(limit) => {
            token.cancel();
            // The backend stops what it started; wait for it to say so.
            (work.await, true)
        }
    }
}
