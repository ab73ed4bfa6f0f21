//! Each pipeline's stage graph, built on its first plan and shared by the plans after it: a
//! config loaded once and planned for many events builds each pipeline's graph once.

use std::sync::{Arc, Mutex};

use indexmap::IndexMap;

use crate::config::Stage;
use crate::graph::{GraphError, StageGraph};

/// A pipeline's stage graph with the stages it was built from (their ids are the graph's),
/// and the flat rows the scheduler reads.
#[derive(Debug)]
pub(crate) struct PipelineGraph {
    /// The stages, in config order, to tell when the graph is stale (a config's stages are
    /// public and may be replaced after it was built).
    pub(crate) stages: Vec<Arc<Stage>>,
    pub(crate) graph: StageGraph,
    pub(crate) rows: Rows,
}

impl PipelineGraph {
    /// Builds the graph of `stages`.
    fn build(stages: &IndexMap<String, Arc<Stage>>) -> Result<PipelineGraph, GraphError> {
        let graph = StageGraph::from_needs(stages.iter().map(|(id, s)| (id, &s.needs)))?;
        let stages: Vec<Arc<Stage>> = stages.values().cloned().collect();
        let rows = Rows::new(&graph, &stages);
        Ok(PipelineGraph {
            stages,
            graph,
            rows,
        })
    }

    /// Whether it was built from exactly `stages` (the same allocations, under the same ids).
    fn built_from(&self, stages: &IndexMap<String, Arc<Stage>>) -> bool {
        self.stages.len() == stages.len()
            && self
                .stages
                .iter()
                .zip(stages)
                .zip(self.graph.stages())
                .all(|((a, (key, b)), id)| self.graph.id(id) == key && Arc::ptr_eq(a, b))
    }
}

/// Needs and dependents in compressed rows (stage `i`'s are `list[at[i]..at[i + 1]]`,
/// ascending) and commands: what depends on the pipeline's stages alone, built once with
/// its graph and shared by every plan of it.
#[derive(Debug, Default)]
pub(crate) struct Rows {
    needs_at: Vec<u32>,
    needs: Vec<u32>,
    dependents_at: Vec<u32>,
    dependents: Vec<u32>,
    /// Commands, shared with every context of the stage without copying.
    commands: Vec<Option<Arc<str>>>,
}

impl Rows {
    fn new(graph: &StageGraph, stages: &[Arc<Stage>]) -> Rows {
        let mut rows = Rows::default();
        rows.needs_at.push(0);
        rows.dependents_at.push(0);
        for s in graph.stages() {
            let mut needs: Vec<u32> = graph.needs(s).map(|n| n.index() as u32).collect();
            needs.sort_unstable();
            rows.needs.extend(needs);
            rows.needs_at.push(rows.needs.len() as u32);
            let mut deps: Vec<u32> = graph.dependents(s).map(|n| n.index() as u32).collect();
            deps.sort_unstable();
            rows.dependents.extend(deps);
            rows.dependents_at.push(rows.dependents.len() as u32);
        }
        rows.commands = stages
            .iter()
            .map(|s| s.run.as_deref().map(Arc::from))
            .collect();
        rows
    }

    /// The stages stage `i` needs, ascending.
    pub(crate) fn needs(&self, i: usize) -> &[u32] {
        &self.needs[self.needs_at[i] as usize..self.needs_at[i + 1] as usize]
    }

    /// The stages that need stage `i`, ascending.
    pub(crate) fn dependents(&self, i: usize) -> &[u32] {
        &self.dependents[self.dependents_at[i] as usize..self.dependents_at[i + 1] as usize]
    }

    /// Stage `i`'s `run` command.
    pub(crate) fn command(&self, i: usize) -> &Option<Arc<str>> {
        &self.commands[i]
    }
}

/// The graphs a planner built, by the pipeline's place in its config (no name is hashed to
/// find one; a graph of another config's pipeline at that place is stale); clones share them.
#[derive(Clone, Default)]
pub(super) struct GraphCache(Arc<Mutex<Vec<Option<Arc<PipelineGraph>>>>>);

impl std::fmt::Debug for GraphCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pipelines = self.0.lock().map_or(0, |m| m.iter().flatten().count());
        f.debug_struct("GraphCache")
            .field("pipelines", &pipelines)
            .finish()
    }
}

impl GraphCache {
    /// The graph of the pipeline at `index` in its config, with `stages`: the one kept when it
    /// was built from exactly these stages, else a new one, kept in its place.
    pub(super) fn get(
        &self,
        index: usize,
        stages: &IndexMap<String, Arc<Stage>>,
    ) -> Result<Arc<PipelineGraph>, GraphError> {
        if let Some(Some(kept)) = self.lock().get(index) {
            if kept.built_from(stages) {
                return Ok(kept.clone());
            }
        }
        // Built outside the lock: a pipeline of 100,000 stages takes a while.
        let built = Arc::new(PipelineGraph::build(stages)?);
        let mut kept = self.lock();
        if kept.len() <= index {
            kept.resize(index + 1, None);
        }
        kept[index] = Some(built.clone());
        Ok(built)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Arc<PipelineGraph>>>> {
        // Nothing panics under the lock; a poisoned map is still a valid cache.
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn stages(yaml: &str) -> IndexMap<String, Arc<Stage>> {
        let text =
            format!("version: 1\npipelines:\n  p:\n    on: {{ push: {{}} }}\n    stages:\n{yaml}");
        let config = Config::parse("f", &text).unwrap();
        config.pipelines["p"].stages.clone()
    }

    #[test]
    fn a_graph_is_built_once_for_the_same_stages_and_again_for_others() {
        let cache = GraphCache::default();
        let a = stages("      a: { run: x }\n      b: { run: y, needs: a }\n");
        let first = cache.get(0, &a).unwrap();
        assert!(Arc::ptr_eq(&first, &cache.get(0, &a).unwrap()));
        assert!(Arc::ptr_eq(&first, &cache.clone().get(0, &a).unwrap()));
        // The same text parsed again is other stages: built again, and kept instead.
        let b = stages("      a: { run: x }\n      b: { run: y, needs: a }\n");
        let second = cache.get(0, &b).unwrap();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(Arc::ptr_eq(&second, &cache.get(0, &b).unwrap()));
        // Another place is another pipeline.
        let third = cache.get(3, &a).unwrap();
        assert!(!Arc::ptr_eq(&third, &first) && Arc::ptr_eq(&second, &cache.get(0, &b).unwrap()));
    }
}
