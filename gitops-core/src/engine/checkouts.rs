//! Where a run's stages work: a tree of the pool (reused when a cached one is safe to reuse,
//! see [`crate::repo::worktree`]) or, for resumed runs, a checkout of their own.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use super::{Engine, RunOptions};
use crate::Result;
use crate::config::CheckoutMode;
use crate::event::GitEvent;
use crate::repo::worktree::{Lease, WorktreePool};
use crate::repo::{RepoError, Repository};
use crate::trust::TrustLevel;

/// The engine's pool of cached trees, opened when first needed (an engine that never checks
/// out makes no directory).
pub(super) type LazyPool = Arc<Mutex<Option<WorktreePool>>>;

/// A run's tree, given back (or removed) when the run ends.
#[derive(Debug)]
pub(super) enum Checkout {
    /// A directory of its own, removed at the end.
    Dir(PathBuf),
    /// A tree of the pool, returned to it at the end.
    Leased(Lease),
}

impl Checkout {
    /// Ends the run's use of it.
    pub(super) fn release(self) {
        match self {
            Checkout::Dir(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Checkout::Leased(lease) => {
                // What the run's stages left running in the tree (a daemon in a session of its
                // own, which stopping a stage's process group misses) is stopped before the
                // tree goes back to the pool: it would go on writing into the next run's tree.
                super::rerun::stop_leftovers(&lease.path());
                drop(lease);
            }
        }
    }
}

/// Who may share cached trees: runs of the same repository and trust, and for a pull request's
/// runs, of the same pull request. Nothing a less trusted run's stages left in a tree (an
/// ignored file, a `.git`, a process still running) can reach a more trusted run, nor one pull
/// request's reach another's.
pub(super) fn pool_key(
    repo: &Repository,
    level: TrustLevel,
    event: &GitEvent,
    run: &str,
) -> String {
    let class = match (level, event.pull_request()) {
        (TrustLevel::Trusted, _) => "trusted".to_owned(),
        (level, Some(pr)) => format!("{}-pr-{}", level.as_str(), pr.number),
        // Untrusted and no pull request to tie it to: never shared.
        (level, None) => format!("{}-run-{run}", level.as_str()),
    };
    format!("{}\n{class}", repo.path().display())
}

impl Engine {
    /// The working tree of run `id` at `commit`: the repository itself for in-place runs, else
    /// a tree of the pool, fresh when `mode` or `options` ask for one.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn workdir(
        &self,
        repo: &Repository,
        commit: &str,
        id: &str,
        options: &RunOptions,
        mode: CheckoutMode,
        level: TrustLevel,
        event: &GitEvent,
    ) -> Result<(PathBuf, Option<Checkout>)> {
        if options.in_place {
            return Ok((repo.path().to_path_buf(), None));
        }
        let pool = self.worktrees()?;
        let key = pool_key(repo, level, event, id);
        let fresh = mode == CheckoutMode::Fresh || options.fresh_checkout;
        let lease = pool.lease(repo, commit, &key, fresh)?;
        if let Some(why) = lease.discarded() {
            tracing::info!(run = id, "cached working tree discarded: {why}");
        }
        Ok((lease.path(), Some(Checkout::Leased(lease))))
    }

    /// The pool of cached trees, opened on first use.
    pub fn worktrees(&self) -> Result<WorktreePool> {
        let mut pool = self.pool.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(pool) = &*pool {
            return Ok(pool.clone());
        }
        let checkouts = self.state_dir.join("checkouts");
        let keep: Vec<PathBuf> = self
            .ledger
            .interrupted_runs()
            .map(|runs| runs.into_iter().map(|r| r.workdir).collect())
            .unwrap_or_default();
        let opened = WorktreePool::open(&checkouts, &keep).map_err(|e| RepoError::Read {
            what: "the pool of working trees".to_owned(),
            path: checkouts.clone(),
            message: e.to_string(),
        })?;
        *pool = Some(opened.clone());
        Ok(opened)
    }

    /// Whether `dir` is a tree of a pool (this process's or a dead one's).
    pub(super) fn in_pool(&self, dir: &Path) -> bool {
        dir.starts_with(self.state_dir.join("checkouts").join("pool"))
    }
}
