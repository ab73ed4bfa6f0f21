//! A stage with one attempt and no timeout, most stages: its backend called straight from the
//! task that runs it, with as little as possible held across the call.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use super::call::{call, stopped_by_run};
use super::events::RunEvent;
use super::mask::classify;
use super::report::{StageReport, StageResult};
use super::state::Shared;
use super::target::Target;
use crate::backend::{BackendError, Completion, StageContext};

/// Runs stage `index`, started at `started` (seconds since the run started); its context is
/// made by `ctx` when the backend is called, so that it lives in the backend's future rather
/// than in the task's.
///
/// Every stage's task holds this future across the backend's call, so it keeps little: the
/// backend and target are looked up, not carried, and times are seconds.
///
/// For a runner's stage (`runner`), `park` is called with it when the backend's future is
/// first pending: the runner waits, and the stages that become ready meanwhile must go to
/// another.
pub(super) async fn once<P>(
    shared: &Arc<Shared>,
    index: u32,
    started: f64,
    runner: bool,
    park: P,
    ctx: impl FnOnce(&Shared, usize) -> StageContext,
) -> StageReport
where
    P: FnOnce(&Arc<Shared>, usize) + Unpin,
{
    let returned = {
        let index = index as usize;
        let backend = shared.pipeline.layout.backend(index);
        shared.emit(|at| RunEvent::StageStarted {
            stage: shared.pipeline.layout.id(index).to_string(),
            attempt: 1,
            backend: shared.backend_name(backend).to_string(),
            at,
        });
        // The common case calls the executor directly: every task is allocated (and moved) at
        // the size of its future, and the gate's path would make all of them larger. Deploys,
        // rare, take that path boxed.
        match &shared.targets[shared.pipeline.layout.target(index)] {
            Target::Execute(e) => e.execute(ctx(shared, index)),
            Target::Missing(m) => {
                Box::pin(std::future::ready(Err(BackendError::failed(m.clone()))))
            }
            gated => {
                let ctx = ctx(shared, index);
                Box::pin(async move { call(shared, index, gated, backend, ctx, None).await.0 })
            }
        }
    };
    let result = Parking {
        returned,
        shared,
        park: runner.then_some((index, park)),
    }
    .await;
    let (result, outputs) = if stopped_by_run(shared, &result) {
        (StageResult::Cancelled, BTreeMap::new())
    } else {
        classify(result, &shared.masker)
    };
    let finished = shared.now();
    let id = shared.pipeline.layout.id(index as usize);
    StageReport::ended(id, result, 1, Some(started), Some(finished), outputs)
}

type Returned<'a> = Pin<Box<dyn Future<Output = Result<Completion, BackendError>> + Send + 'a>>;

/// A backend's call that calls `park` with its stage when it is first pending.
struct Parking<'a, P> {
    returned: Returned<'a>,
    shared: &'a Arc<Shared>,
    park: Option<(u32, P)>,
}

impl<P> Future for Parking<'_, P>
where
    P: FnOnce(&Arc<Shared>, usize) + Unpin,
{
    type Output = Result<Completion, BackendError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let polled = this.returned.as_mut().poll(cx);
        if polled.is_pending()
            && let Some((index, park)) = this.park.take()
        {
            park(this.shared, index as usize);
        }
        polled
    }
}
