//! Property: any random DAG builds, and its order puts every stage after all of its needs; any
//! added back-edge is reported as a cycle whose path follows real `needs`.

use std::collections::HashMap;

use gitops_core::graph::{GraphProblem, StageGraph};
use proptest::prelude::*;

/// A random DAG: stage `i` may only need stages with a smaller index, then the stages are
/// shuffled so that config order is not topological order.
fn dag() -> impl Strategy<Value = Vec<(String, Vec<String>)>> {
    (1usize..60)
        .prop_flat_map(|n| {
            let needs = (0..n)
                .map(|i| proptest::collection::vec(0..i.max(1), 0..4.min(i + 1)))
                .collect::<Vec<_>>();
            (
                Just(n),
                needs,
                Just(()).prop_perturb(move |_, mut rng| {
                    let mut order: Vec<usize> = (0..n).collect();
                    for i in (1..n).rev() {
                        order.swap(i, rng.random_range(0..=i));
                    }
                    order
                }),
            )
        })
        .prop_map(|(n, needs, order)| {
            order
                .into_iter()
                .map(|i| {
                    let ns = if i == 0 {
                        vec![]
                    } else {
                        needs[i].iter().map(|j| format!("s{j}")).collect()
                    };
                    (format!("s{i}"), ns)
                })
                .take(n)
                .collect()
        })
}

proptest! {
    #[test]
    fn order_respects_every_edge(stages in dag()) {
        let g = StageGraph::from_needs(stages.iter().map(|(s, n)| (s, n))).unwrap();
        let pos: HashMap<&str, usize> = g.order().iter().enumerate().map(|(i, &s)| (g.id(s), i)).collect();
        prop_assert_eq!(pos.len(), stages.len());
        for (id, needs) in &stages {
            for need in needs {
                prop_assert!(pos[need.as_str()] < pos[id.as_str()], "{} ran before its need {}", id, need);
            }
        }
    }

    #[test]
    fn a_back_edge_is_a_cycle_with_a_real_path(stages in dag(), pick in any::<prop::sample::Index>()) {
        // Make some stage that has needs be needed by one of them: a cycle.
        let with_needs: Vec<usize> = (0..stages.len()).filter(|&i| !stages[i].1.is_empty()).collect();
        prop_assume!(!with_needs.is_empty());
        let mut stages = stages;
        let i = with_needs[pick.index(with_needs.len())];
        let (id, needs) = stages[i].clone();
        let j = stages.iter().position(|(s, _)| *s == needs[0]).unwrap();
        stages[j].1.push(id);
        let err = StageGraph::from_needs(stages.iter().map(|(s, n)| (s, n))).unwrap_err();
        let needs_of: HashMap<&str, &Vec<String>> = stages.iter().map(|(s, n)| (s.as_str(), n)).collect();
        let cycles: Vec<&Vec<String>> = err.problems.iter().filter_map(|p| match p {
            GraphProblem::Cycle { path } => Some(path),
            _ => None,
        }).collect();
        prop_assert!(!cycles.is_empty());
        for path in cycles {
            prop_assert_eq!(path.first(), path.last());
            for w in path.windows(2) {
                prop_assert!(needs_of[w[0].as_str()].contains(&w[1]), "{} does not need {}", w[0], w[1]);
            }
        }
    }
}
