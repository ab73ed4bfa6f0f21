//! A hand-written ready-queue scheduler: in-degree counts, ready stages spawned, completions
//! over an mpsc channel to a driver that itself runs as a spawned task.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Leftover, Prepared};

pub(super) fn prepare(needs: &[Vec<u32>]) -> Prepared {
    let indegree = needs.iter().map(|ns| ns.len() as u32).collect();
    let mut dependents = vec![Vec::new(); needs.len()];
    for (i, ns) in needs.iter().enumerate() {
        for &d in ns {
            dependents[d as usize].push(i as u32);
        }
    }
    prepared(dependents, indegree, ())
}

/// The same scheduler given the pipeline's config, as the `gitops` cell is (built in code the
/// same way): its in-degree counts and dependents come from the stages' `needs`, looked up by
/// name, and it keeps the config while it runs, as a scheduler that runs the stages' commands
/// would. The reference for memory: what a hand-written scheduler holds doing the same job.
pub(super) fn prepare_config(needs: &[Vec<u32>]) -> Prepared {
    let config = super::gitops_config(needs);
    let stages = &config.pipelines["bench"].stages;
    let mut indegree = Vec::with_capacity(stages.len());
    let mut dependents = vec![Vec::new(); stages.len()];
    for (i, stage) in stages.values().enumerate() {
        indegree.push(stage.needs.len() as u32);
        for need in &stage.needs {
            let d = stages
                .get_index_of(need.as_str())
                .unwrap_or_else(|| panic!("minimal_config: unknown need {need}"));
            dependents[d].push(i as u32);
        }
    }
    prepared(dependents, indegree, config)
}

/// A run of the stages with these `dependents` and `indegree` counts; `keep` lives until the
/// run has ended.
fn prepared(dependents: Vec<Vec<u32>>, indegree: Vec<u32>, keep: impl Send + 'static) -> Prepared {
    let dependents = Arc::new(dependents);
    Box::new(move || {
        Box::pin(async move {
            let kept = (dependents.clone(), keep);
            run(dependents, indegree).await;
            Box::new(kept) as Leftover
        })
    })
}

async fn run(dependents: Arc<Vec<Vec<u32>>>, mut indegree: Vec<u32>) {
    let driver = tokio::spawn(async move {
        let n = indegree.len();
        let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
        let spawn = |i: u32| {
            let tx = tx.clone();
            tokio::spawn(async move {
                let _ = tx.send(i);
            });
        };
        let mut spawned = 0;
        for (i, d) in indegree.iter().enumerate() {
            if *d == 0 {
                spawn(i as u32);
                spawned += 1;
            }
        }
        // Until every stage spawned has ended: a stage never made ready ends the loop short.
        let mut done = 0;
        while done < spawned {
            let Some(i) = rx.recv().await else { break };
            done += 1;
            for &d in &dependents[i as usize] {
                let c = &mut indegree[d as usize];
                *c -= 1;
                if *c == 0 {
                    spawn(d);
                    spawned += 1;
                }
            }
        }
        assert_eq!(done, n, "minimal: not every stage ran");
    });
    if let Err(e) = driver.await {
        std::panic::resume_unwind(e.into_panic());
    }
}
