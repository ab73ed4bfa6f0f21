//! A pipeline's graph and per-stage facts in flat arrays, for the scheduler's hot loop: a run of
//! 100,000 stages touches these instead of the stages' config.

use std::sync::Arc;

use super::PlannedStage;
use super::graphs::PipelineGraph;
use crate::config::Action;

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

/// A planned pipeline's stages for the scheduler's hot loop: the pipeline's graph and its
/// [`Rows`](super::graphs::Rows), shared by every plan of it, and what depends on the
/// environments too, so it is made per plan: a flag byte per stage, and what runs it.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    graph: Arc<PipelineGraph>,
    flags: Vec<u8>,
    /// The backends the stages name, in the order of their first stage.
    backends: Vec<Arc<str>>,
    /// The (backend, action) pairs the stages need, in the order of their first stage.
    targets: Vec<(u32, Action)>,
    /// Per stage: its pair in `targets`.
    target_of: Vec<u32>,
}

impl Layout {
    pub(crate) fn new(graph: Arc<PipelineGraph>, stages: &[PlannedStage]) -> Layout {
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
            graph,
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

    /// The stages stage `i` needs, ascending.
    pub(crate) fn needs(&self, i: usize) -> &[u32] {
        self.graph.rows.needs(i)
    }

    /// The stages that need stage `i`, ascending.
    pub(crate) fn dependents(&self, i: usize) -> &[u32] {
        self.graph.rows.dependents(i)
    }

    /// Stage `i`'s id (the graph's).
    pub(crate) fn id(&self, i: usize) -> &Arc<str> {
        &self.graph.graph.shared_ids()[i]
    }

    /// Stage `i`'s `run` command.
    pub(crate) fn command(&self, i: usize) -> &Option<Arc<str>> {
        self.graph.rows.command(i)
    }

    pub(crate) fn has(&self, i: usize, flag: u8) -> bool {
        self.flags[i] & flag != 0
    }
}
