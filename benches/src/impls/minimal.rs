//! A hand-written ready-queue scheduler: in-degree counts, ready stages spawned, completions
//! over an mpsc channel to a driver that itself runs as a spawned task.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::{Leftover, Prepared};

pub(super) fn prepare(needs: &[Vec<u32>]) -> Prepared {
    let n = needs.len();
    let mut dependents = vec![Vec::new(); n];
    let mut indegree = vec![0u32; n];
    for (i, ns) in needs.iter().enumerate() {
        indegree[i] = ns.len() as u32;
        for &d in ns {
            dependents[d as usize].push(i as u32);
        }
    }
    let dependents = Arc::new(dependents);
    Box::new(move || {
        Box::pin(async move {
            let keep = dependents.clone();
            run(dependents, indegree).await;
            Box::new(keep) as Leftover
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
        for (i, d) in indegree.iter().enumerate() {
            if *d == 0 {
                spawn(i as u32);
            }
        }
        let mut done = 0;
        while done < n {
            let Some(i) = rx.recv().await else { break };
            done += 1;
            for &d in &dependents[i as usize] {
                let c = &mut indegree[d as usize];
                *c -= 1;
                if *c == 0 {
                    spawn(d);
                }
            }
        }
        assert_eq!(done, n, "minimal: not every stage ran");
    });
    let _ = driver.await;
}
