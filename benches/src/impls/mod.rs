//! The schedulers compared: ours, the floor (`spawn_join`), a hand-written ready-queue scheduler
//! (`minimal`), and two crates from crates.io (`dagx`, `dagrs`). Each is prepared (untimed) and
//! then run (timed) on the same needs lists. `minimal_config` is `minimal` given the pipeline's
//! config instead, as `gitops` is: the reference for memory.

mod dagrs_impl;
mod dagx_impl;
mod gitops_impl;
mod minimal;

use std::future::Future;

use std::pin::Pin;

pub use gitops_impl::{Noop, gitops_config, gitops_pipeline, gitops_plan, prepare_planned};

/// The implementations, by name.
pub const IMPLS: [&str; 6] = [
    "gitops",
    "spawn_join",
    "minimal",
    "minimal_config",
    "dagx",
    "dagrs",
];

/// What a run leaves to drop: dropped after the clock stops, so that tearing down a graph is
/// not timed as running it.
pub type Leftover = Box<dyn std::any::Any + Send>;

/// A prepared run: calling it runs every stage once.
pub type Prepared = Box<dyn FnOnce() -> Pin<Box<dyn Future<Output = Leftover> + Send>> + Send>;

/// Runs `run` to its end as a task on `rt` (so that what it spawns is spawned from a worker,
/// as in an engine): what it leaves, for the caller to drop after its clock stops.
pub fn run_on(rt: &tokio::runtime::Runtime, run: Prepared) -> Leftover {
    rt.block_on(async move { tokio::spawn(run()).await })
        .unwrap_or_else(|e| panic!("the run failed: {e}"))
}

/// Prepares a run of `needs` with the implementation `name` (construction happens here, on the
/// current runtime, outside the timed part).
pub async fn prepare(name: &str, needs: &[Vec<u32>]) -> Option<Prepared> {
    Some(match name {
        "gitops" => gitops_impl::prepare(needs),
        "spawn_join" => {
            let n = needs.len();
            Box::new(move || {
                Box::pin(async move {
                    spawn_join(n).await;
                    Box::new(()) as Leftover
                })
            })
        }
        "minimal" => minimal::prepare(needs),
        "minimal_config" => minimal::prepare_config(needs),
        "dagx" => dagx_impl::prepare(needs),
        "dagrs" => dagrs_impl::prepare(needs).await,
        _ => return None,
    })
}

/// The floor: `n` independent tasks spawned and joined, no dependencies at all.
pub async fn spawn_join(n: usize) {
    let handles: Vec<_> = (0..n).map(|_| tokio::spawn(async {})).collect();
    for h in handles {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shapes::Shape;

    #[test]
    fn every_implementation_runs_every_shape_to_its_end() {
        let rt = crate::runtime();
        for shape in Shape::ALL {
            let needs = shape.needs(300);
            for name in IMPLS {
                let run = rt
                    .block_on(prepare(name, &needs))
                    .unwrap_or_else(|| panic!("{name} is not an implementation"));
                // Each asserts that every stage ran; a panic in its run fails `run_on`.
                drop(run_on(&rt, run));
            }
        }
        assert!(rt.block_on(prepare("nothing", &[])).is_none());
    }
}
