//! A pipeline's stages as a DAG: validation (unknown needs, cycles with their full path),
//! topological order, transitive-need queries and Graphviz DOT output.
//!
//! petgraph is an implementation detail: the public face speaks [`StageId`]s and stage names.

mod dot;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;

use petgraph::Direction;
use petgraph::algo::{DfsSpace, has_path_connecting, kosaraju_scc};
use petgraph::graph::{DiGraph, NodeIndex};

/// A stage's index in its [`StageGraph`]: the position of the stage in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StageId(u32);

impl StageId {
    /// The stage's position in the pipeline (0-based, in config order).
    pub fn index(self) -> usize {
        self.0 as usize
    }

    fn node(self) -> NodeIndex<u32> {
        NodeIndex::new(self.index())
    }
}

/// One thing wrong with a pipeline's stage graph.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GraphProblem {
    /// A stage needs a stage that does not exist.
    UnknownNeed {
        /// The stage with the bad `needs`.
        stage: String,
        /// The name it needs.
        need: String,
    },
    /// Two stages have the same id.
    DuplicateStage {
        /// The id.
        stage: String,
    },
    /// Stages need each other in a circle; `path` starts and ends with the same stage, each
    /// needing the next.
    Cycle {
        /// `[a, b, c, a]`: a needs b, b needs c, c needs a.
        path: Vec<String>,
    },
}

impl fmt::Display for GraphProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownNeed { stage, need } => {
                write!(f, "stage \"{stage}\" needs unknown stage \"{need}\"")
            }
            Self::DuplicateStage { stage } => write!(f, "duplicate stage id \"{stage}\""),
            Self::Cycle { path } => write!(f, "cycle in needs: {}", path.join(" -> ")),
        }
    }
}

/// Why a stage graph could not be built: every problem found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct GraphError {
    /// The problems, in config order.
    pub problems: Vec<GraphProblem>,
}

impl fmt::Display for GraphError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// The stages of one pipeline and the edges between them, known to be acyclic.
#[derive(Debug, Clone)]
pub struct StageGraph {
    /// Edges run from a need to the stage that needs it.
    graph: DiGraph<(), (), u32>,
    ids: Vec<Arc<str>>,
    by_id: HashMap<Arc<str>, StageId>,
    order: Vec<StageId>,
}

impl StageGraph {
    /// Builds the graph of stages given as `(id, needs)` in config order.
    ///
    /// ```
    /// use gitops_core::graph::StageGraph;
    /// let g = StageGraph::from_needs([("build", vec!["test"]), ("test", vec![])]).unwrap();
    /// let order: Vec<_> = g.order().iter().map(|&s| g.id(s)).collect();
    /// assert_eq!(order, ["test", "build"]);
    ///
    /// let err = StageGraph::from_needs([("a", vec!["b"]), ("b", vec!["a"])]).unwrap_err();
    /// assert_eq!(err.to_string(), "cycle in needs: a -> b -> a");
    /// ```
    pub fn from_needs<I, S, N>(stages: I) -> Result<StageGraph, GraphError>
    where
        I: IntoIterator<Item = (S, N)>,
        S: AsRef<str>,
        N: IntoIterator,
        N::Item: AsRef<str>,
    {
        // Needs stay borrowed; each id is stored once and shared by the index and the list.
        let stages: Vec<(S, Vec<N::Item>)> = stages
            .into_iter()
            .map(|(s, n)| (s, n.into_iter().collect()))
            .collect();
        let mut problems = Vec::new();
        let mut by_id: HashMap<Arc<str>, StageId> = HashMap::with_capacity(stages.len());
        let mut ids: Vec<Arc<str>> = Vec::with_capacity(stages.len());
        let mut graph = DiGraph::with_capacity(stages.len(), stages.len());
        for (i, (id, _)) in stages.iter().enumerate() {
            graph.add_node(());
            let id: Arc<str> = Arc::from(id.as_ref());
            if by_id.insert(id.clone(), StageId(i as u32)).is_some() {
                problems.push(GraphProblem::DuplicateStage {
                    stage: id.to_string(),
                });
            }
            ids.push(id);
        }
        let mut mark = vec![u32::MAX; stages.len()];
        for (i, (id, needs)) in stages.iter().enumerate() {
            for need in needs {
                match by_id.get(need.as_ref()) {
                    // `mark` remembers, per need, the last stage that listed it: a stage that
                    // lists a need twice gets one edge, in O(1) per need.
                    Some(&n) if mark[n.index()] != i as u32 => {
                        mark[n.index()] = i as u32;
                        graph.add_edge(n.node(), NodeIndex::new(i), ());
                    }
                    Some(_) => {}
                    None => problems.push(GraphProblem::UnknownNeed {
                        stage: id.as_ref().to_owned(),
                        need: need.as_ref().to_owned(),
                    }),
                }
            }
        }
        let mut g = StageGraph {
            graph,
            ids,
            by_id,
            order: Vec::new(),
        };
        g.order = g.kahn_order();
        // Kahn's order misses exactly the stages on or behind a cycle; only then are cycles
        // looked for (iteratively: a 100,000-stage chain must not exhaust the stack).
        if g.order.len() < g.len() {
            problems.extend(
                g.cycles()
                    .into_iter()
                    .map(|path| GraphProblem::Cycle { path }),
            );
        }
        if !problems.is_empty() {
            return Err(GraphError { problems });
        }
        Ok(g)
    }

    /// Number of stages.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the pipeline has no stages.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id (name) of a stage.
    pub fn id(&self, stage: StageId) -> &str {
        &self.ids[stage.index()]
    }

    /// The stages' ids, shared, in config order.
    pub(crate) fn shared_ids(&self) -> &[Arc<str>] {
        &self.ids
    }

    /// The stage with this id.
    pub fn get(&self, id: &str) -> Option<StageId> {
        self.by_id.get(id).copied()
    }

    /// Every stage, in config order.
    pub fn stages(&self) -> impl ExactSizeIterator<Item = StageId> + '_ {
        (0..self.ids.len() as u32).map(StageId)
    }

    /// The stages in an order where every stage comes after all its needs; among stages that
    /// are ready together, config order.
    pub fn order(&self) -> &[StageId] {
        &self.order
    }

    /// The direct needs of a stage.
    pub fn needs(&self, stage: StageId) -> impl Iterator<Item = StageId> + '_ {
        self.neighbors(stage, Direction::Incoming)
    }

    /// The stages that directly need this one.
    pub fn dependents(&self, stage: StageId) -> impl Iterator<Item = StageId> + '_ {
        self.neighbors(stage, Direction::Outgoing)
    }

    /// Number of direct needs of a stage (its in-degree).
    pub fn need_count(&self, stage: StageId) -> usize {
        self.graph
            .neighbors_directed(stage.node(), Direction::Incoming)
            .count()
    }

    fn neighbors(&self, stage: StageId, dir: Direction) -> impl Iterator<Item = StageId> + '_ {
        self.graph
            .neighbors_directed(stage.node(), dir)
            .map(|n| StageId(n.index() as u32))
    }

    /// Whether `need` must finish before `stage` starts, directly or through other stages.
    pub fn is_transitive_need(&self, stage: StageId, need: StageId) -> bool {
        let mut space = DfsSpace::new(&self.graph);
        stage != need
            && has_path_connecting(&self.graph, need.node(), stage.node(), Some(&mut space))
    }

    /// Kahn's algorithm, breaking ties by config order so that the order is deterministic.
    fn kahn_order(&self) -> Vec<StageId> {
        let mut indegree: Vec<usize> = self.stages().map(|s| self.need_count(s)).collect();
        let mut ready: BinaryHeap<Reverse<StageId>> = self
            .stages()
            .filter(|s| indegree[s.index()] == 0)
            .map(Reverse)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(Reverse(s)) = ready.pop() {
            order.push(s);
            for d in self.dependents(s) {
                indegree[d.index()] -= 1;
                if indegree[d.index()] == 0 {
                    ready.push(Reverse(d));
                }
            }
        }
        order
    }

    /// One cycle per strongly connected component that has one, as a path of needs.
    fn cycles(&self) -> Vec<Vec<String>> {
        let mut cycles = Vec::new();
        let mut comps = kosaraju_scc(&self.graph);
        comps.iter_mut().for_each(|c| c.sort());
        comps.sort();
        for comp in comps {
            let start = comp[0];
            let self_loop = self.graph.contains_edge(start, start);
            if comp.len() < 2 && !self_loop {
                continue;
            }
            if self_loop {
                let id = self.ids[start.index()].to_string();
                cycles.push(vec![id.clone(), id]);
                continue;
            }
            cycles.push(self.cycle_through(start, &comp));
        }
        cycles
    }

    /// The shortest path from `start` back to itself along `needs`, within `comp`.
    fn cycle_through(&self, start: NodeIndex<u32>, comp: &[NodeIndex<u32>]) -> Vec<String> {
        let mut prev: HashMap<NodeIndex<u32>, NodeIndex<u32>> = HashMap::new();
        let mut queue = VecDeque::from([start]);
        let mut last = start;
        'bfs: while let Some(n) = queue.pop_front() {
            let mut needs: Vec<_> = self
                .graph
                .neighbors_directed(n, Direction::Incoming)
                .collect();
            needs.sort();
            for m in needs {
                if m == start {
                    last = n;
                    break 'bfs;
                }
                if comp.binary_search(&m).is_ok() && !prev.contains_key(&m) {
                    prev.insert(m, n);
                    queue.push_back(m);
                }
            }
        }
        let mut path = vec![last];
        while let Some(&p) = prev.get(path.last().unwrap_or(&start)) {
            path.push(p);
        }
        path.reverse();
        path.push(start);
        path.into_iter()
            .map(|n| self.ids[n.index()].to_string())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn graph(stages: &[(&str, &[&str])]) -> Result<StageGraph, GraphError> {
        StageGraph::from_needs(stages.iter().map(|(s, n)| (*s, n.iter().copied())))
    }

    #[test]
    fn orders_by_needs_then_config_order() {
        let g = graph(&[
            ("deploy", &["build", "lint"]),
            ("lint", &[]),
            ("build", &["test"]),
            ("test", &[]),
        ])
        .unwrap();
        let order: Vec<_> = g.order().iter().map(|&s| g.id(s)).collect();
        assert_eq!(order, ["lint", "test", "build", "deploy"]);
        let deploy = g.get("deploy").unwrap();
        assert!(g.is_transitive_need(deploy, g.get("test").unwrap()));
        assert!(!g.is_transitive_need(g.get("test").unwrap(), deploy));
        assert!(!g.is_transitive_need(deploy, deploy));
        assert_eq!(g.need_count(deploy), 2);
    }

    #[test]
    fn reports_every_problem_with_cycle_paths() {
        let err = graph(&[
            ("a", &["b"]),
            ("b", &["c"]),
            ("c", &["a", "ghost"]),
            ("d", &["d"]),
            ("e", &["f"]),
            ("f", &["e"]),
        ])
        .unwrap_err();
        assert_eq!(
            err.problems,
            vec![
                GraphProblem::UnknownNeed {
                    stage: "c".into(),
                    need: "ghost".into()
                },
                GraphProblem::Cycle {
                    path: vec!["a".into(), "b".into(), "c".into(), "a".into()]
                },
                GraphProblem::Cycle {
                    path: vec!["d".into(), "d".into()]
                },
                GraphProblem::Cycle {
                    path: vec!["e".into(), "f".into(), "e".into()]
                },
            ]
        );
        let dup = graph(&[("a", &[]), ("a", &[])]).unwrap_err();
        assert_eq!(
            dup.problems,
            vec![GraphProblem::DuplicateStage { stage: "a".into() }]
        );
    }

    #[test]
    fn cycle_path_is_the_shortest_through_the_first_stage() {
        // a -> b -> a and a -> c -> d -> a share a component; the short one is reported.
        let err = graph(&[
            ("a", &["c", "b"]),
            ("b", &["a"]),
            ("c", &["d"]),
            ("d", &["a"]),
        ])
        .unwrap_err();
        assert_eq!(err.to_string(), "cycle in needs: a -> b -> a");
    }
}
