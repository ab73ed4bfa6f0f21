//! A pipeline's graph and per-stage facts in flat arrays, for the scheduler's hot loop: a run of
//! 100,000 stages touches these instead of the stages' config.

use std::sync::Arc;

use super::PlannedStage;
use crate::config::{Action, BuiltGraph, Stage};
use crate::graph::StageGraph;

/// The stage has an `if:`.
pub(crate) const HAS_CONDITION: u8 = 1;
/// Its `if:` (or the lack of one) requires its needs to have succeeded.
pub(crate) const IMPLICIT_SUCCESS: u8 = 2;
/// It has `env` or `with` (its own or its environment's) to render.
pub(crate) const RENDERS: u8 = 4;
/// It has a retry policy or a timeout.
pub(crate) const POLICY: u8 = 8;
/// A failure does not fail the run.
pub(crate) const CONTINUE_ON_ERROR: u8 = 16;
/// It deploys to or stops an environment.
pub(crate) const ENVIRONMENT: u8 = 32;

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
    pub(crate) fn new(graph: &StageGraph, stages: &[Arc<Stage>]) -> Rows {
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
}

/// The index of the first item of `items` that `is`, pushing one `make` makes when none is.
pub(super) fn index_or_push<T>(
    items: &mut Vec<T>,
    is: impl Fn(&T) -> bool,
    make: impl FnOnce() -> T,
) -> usize {
    items.iter().position(is).unwrap_or_else(|| {
        items.push(make());
        items.len() - 1
    })
}

/// A planned pipeline's stages for the scheduler's hot loop: the pipeline's [`Rows`], and what
/// depends on the environments too, so it is made per plan: a flag byte per stage, and what
/// runs it.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    built: BuiltGraph,
    flags: Vec<u8>,
    /// The backends the stages name, in the order of their first stage.
    backends: Vec<Arc<str>>,
    /// The (backend, action) pairs the stages need, in the order of their first stage.
    targets: Vec<(u32, Action)>,
    /// Per stage: its pair in `targets`.
    target_of: Vec<u32>,
}

impl Layout {
    pub(crate) fn new(built: BuiltGraph, stages: &[PlannedStage]) -> Layout {
        let flags = stages
            .iter()
            .map(|p| {
                let src = &p.source;
                let mut f = 0;
                if let Some(c) = &src.condition {
                    f |= HAS_CONDITION;
                    if !c.expr.uses_status_function() {
                        f |= IMPLICIT_SUCCESS;
                    }
                } else {
                    f |= IMPLICIT_SUCCESS;
                }
                if !src.env.is_empty()
                    || !src.with.is_empty()
                    || p.environment_settings
                        .as_ref()
                        .is_some_and(|e| !e.with.is_empty())
                {
                    f |= RENDERS;
                }
                if src.retry.is_some() || src.timeout.is_some() {
                    f |= POLICY;
                }
                if src.continue_on_error {
                    f |= CONTINUE_ON_ERROR;
                }
                if p.environment.is_some() {
                    f |= ENVIRONMENT;
                }
                f
            })
            .collect();
        let mut layout = Layout {
            built,
            flags,
            backends: Vec::new(),
            targets: Vec::new(),
            target_of: Vec::with_capacity(stages.len()),
        };
        for p in stages {
            let b = index_or_push(
                &mut layout.backends,
                |n| **n == *p.backend,
                || p.backend.clone(),
            ) as u32;
            let target = (b, p.action);
            let t = index_or_push(&mut layout.targets, |&t| t == target, || target);
            layout.target_of.push(t as u32);
        }
        layout
    }

    /// The backends the stages name; stages refer to them by index.
    pub(crate) fn backends(&self) -> &[Arc<str>] {
        &self.backends
    }

    /// The (backend index, action) pairs the stages need; stages refer to them by index.
    pub(crate) fn targets(&self) -> &[(u32, Action)] {
        &self.targets
    }

    /// Stage `i`'s (backend, action) pair, an index into [`Layout::targets`].
    pub(crate) fn target(&self, i: usize) -> usize {
        self.target_of[i] as usize
    }

    /// Stage `i`'s backend, an index into [`Layout::backends`].
    pub(crate) fn backend(&self, i: usize) -> usize {
        self.targets[self.target(i)].0 as usize
    }

    fn rows(&self) -> &Rows {
        &self.built.rows
    }

    /// The stages stage `i` needs, ascending.
    pub(crate) fn needs(&self, i: usize) -> &[u32] {
        let r = self.rows();
        &r.needs[r.needs_at[i] as usize..r.needs_at[i + 1] as usize]
    }

    /// The stages that need stage `i`, ascending.
    pub(crate) fn dependents(&self, i: usize) -> &[u32] {
        let r = self.rows();
        &r.dependents[r.dependents_at[i] as usize..r.dependents_at[i + 1] as usize]
    }

    /// Stage `i`'s id (the graph's).
    pub(crate) fn id(&self, i: usize) -> &Arc<str> {
        &self.built.graph.shared_ids()[i]
    }

    /// Stage `i`'s `run` command.
    pub(crate) fn command(&self, i: usize) -> &Option<Arc<str>> {
        &self.rows().commands[i]
    }

    pub(crate) fn has(&self, i: usize, flag: u8) -> bool {
        self.flags[i] & flag != 0
    }
}
