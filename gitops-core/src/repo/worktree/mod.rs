//! Cached working trees: a run may start from the tree an earlier run of the same repository
//! and trust used, verified clean and brought to its commit by writing only what differs,
//! instead of a fresh checkout.
//!
//! Safety rules, for trees that stages (possibly a hostile pull request's) wrote into:
//! - **One run a tree.** A tree is leased to one run and returned when the run ends; two runs
//!   never share one.
//! - **Never across trust.** A tree is reused only by runs of the same key (see
//!   [`WorktreePool::lease`]): the engine keys trusted runs apart from each pull request's, so
//!   nothing a pull request's stage left (a planted ignored file, a `.git` with hooks, a
//!   process still writing) ever reaches a trusted run or another pull request's.
//! - **Verified before use.** Every entry the cache wrote is checked against its stat data as
//!   written (type, inode, mode, size, mtime, ctime; by content for those written in the last
//!   clock tick); any difference, a missing entry or a Git lock file discards the tree, and the
//!   run gets a fresh checkout. Everything else in it (untracked and ignored files, `.git`) is
//!   removed. Nothing is ever followed through a link.
//! - **Crash-safe.** Trees live in a directory of this process; trees of a process that died
//!   are removed by the next engine that opens the state dir, never reused.

mod manifest;
mod update;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub(crate) use manifest::{Manifest, Recorded};

use super::{RepoError, Repository};

/// Idle trees kept, all keys together (the least recently returned go first).
pub const MAX_IDLE_TREES: usize = 8;

/// Idle trees kept for one key.
pub const MAX_IDLE_TREES_PER_KEY: usize = 2;

/// Cached working trees of one engine, in a directory of their own under the state dir.
#[derive(Debug, Clone)]
pub struct WorktreePool {
    inner: Arc<PoolInner>,
}

#[derive(Debug)]
struct PoolInner {
    dir: PathBuf,
    /// Held while this process lives: another process finding it unlocked removes `dir`.
    lock: Option<nix::fcntl::Flock<File>>,
    lock_path: PathBuf,
    idle: Mutex<Vec<Slot>>,
    next: AtomicU64,
}

/// A working tree of the pool: `<slot>/tree`, its stamp beside it.
#[derive(Debug)]
struct Slot {
    key: String,
    dir: PathBuf,
    commit: String,
    manifest: Manifest,
    root_ino: u64,
}

impl Slot {
    fn tree(&self) -> PathBuf {
        self.dir.join("tree")
    }

    /// Records that the tree is finished being written (see [`Manifest`]'s stamp).
    fn stamp(&mut self) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::MetadataExt;
        let mut f = File::create(self.dir.join("stamp"))?;
        f.write_all(self.commit.as_bytes())?;
        let meta = f.metadata()?;
        self.manifest.set_stamp(&meta);
        self.root_ino = std::fs::symlink_metadata(self.tree())?.ino();
        Ok(())
    }

    /// Whether the tree is still the one written, and cleaned of what is not; why not.
    fn verify(&self) -> Result<usize, String> {
        use std::os::unix::fs::MetadataExt;
        let root = self.tree();
        match std::fs::symlink_metadata(&root) {
            Ok(m) if m.is_dir() && m.ino() == self.root_ino => {}
            _ => return Err("the tree's directory was replaced".to_owned()),
        }
        self.manifest.verify_and_clean(&root)
    }
}

/// How a run's tree was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TreeOrigin {
    /// A fresh checkout.
    Fresh,
    /// A cached tree, verified and updated.
    Reused {
        /// Entries written or removed to bring it to the commit.
        updated: usize,
        /// Untracked entries removed.
        removed: usize,
    },
    /// A cached tree was found changed and discarded; then a fresh checkout.
    Replaced,
}

/// A working tree leased to one run; returned to the pool when dropped.
#[derive(Debug)]
pub struct Lease {
    pool: Arc<PoolInner>,
    slot: Option<Slot>,
    origin: TreeOrigin,
    /// Why a cached tree was discarded, when one was.
    discarded: Option<String>,
}

impl Lease {
    /// The tree's directory, where the run's stages work.
    pub fn path(&self) -> PathBuf {
        self.slot.as_ref().map(Slot::tree).unwrap_or_default()
    }

    /// How the tree was made.
    pub fn origin(&self) -> TreeOrigin {
        self.origin
    }

    /// Why a cached tree was discarded before this one was made, if one was.
    pub fn discarded(&self) -> Option<&str> {
        self.discarded.as_deref()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            self.pool.give_back(slot);
        }
    }
}

impl WorktreePool {
    /// The pool of this process under `checkouts` (a state dir's `checkouts/`); removes the
    /// trees of processes that died, but for a pool holding one of `keep` (the trees of
    /// interrupted runs, which `resume` finishes in).
    pub fn open(checkouts: &Path, keep: &[PathBuf]) -> std::io::Result<WorktreePool> {
        let root = checkouts.join("pool");
        std::fs::create_dir_all(&root)?;
        remove_dead_pools(&root, keep);
        let id = format!(
            "{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos())
        );
        let lock_path = root.join(format!("{id}.lock"));
        let file = File::create(&lock_path)?;
        let lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| std::io::Error::from(e))?;
        let dir = root.join(id);
        std::fs::create_dir(&dir)?;
        Ok(WorktreePool {
            inner: Arc::new(PoolInner {
                dir,
                lock: Some(lock),
                lock_path,
                idle: Mutex::new(Vec::new()),
                next: AtomicU64::new(0),
            }),
        })
    }

    /// Where its trees are.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// How many idle trees it keeps now.
    pub fn idle(&self) -> usize {
        self.inner.idle().len()
    }

    /// A tree of `commit` of `repo` for one run. Unless `fresh`, the most recently returned
    /// idle tree of `key` is verified, cleaned and updated; one that fails verification is
    /// discarded. Otherwise (or then) a fresh checkout. `key` names who may share trees: the
    /// repository and the trust of the runs (the engine's key for a pull request's runs names
    /// the pull request).
    pub fn lease(
        &self,
        repo: &Repository,
        commit: &str,
        key: &str,
        fresh: bool,
    ) -> Result<Lease, RepoError> {
        let cached = if fresh {
            None
        } else {
            let mut idle = self.inner.idle();
            idle.iter()
                .rposition(|s| s.key == key)
                .map(|i| idle.remove(i))
        };
        let mut discarded = None;
        if let Some(mut slot) = cached {
            match reuse(repo, &mut slot, commit) {
                Ok(origin) => {
                    return Ok(Lease {
                        pool: self.inner.clone(),
                        slot: Some(slot),
                        origin,
                        discarded: None,
                    });
                }
                Err(why) => {
                    self.inner.discard(slot, true);
                    discarded = Some(why);
                }
            }
        }
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let dir = self.inner.dir.join(n.to_string());
        let made = std::fs::create_dir(&dir)
            .map_err(|e| fresh_err(repo, &dir, e))
            .and_then(|()| repo.checkout_recorded(commit, &dir.join("tree")));
        let mut slot = Slot {
            key: key.to_owned(),
            dir,
            commit: commit.to_owned(),
            manifest: Manifest::default(),
            root_ino: 0,
        };
        match made {
            Ok(manifest) => slot.manifest = manifest,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&slot.dir);
                return Err(e);
            }
        }
        if let Err(e) = slot.stamp() {
            let dir = slot.dir.clone();
            let _ = std::fs::remove_dir_all(&slot.dir);
            return Err(fresh_err(repo, &dir, e));
        }
        Ok(Lease {
            pool: self.inner.clone(),
            slot: Some(slot),
            origin: if discarded.is_some() {
                TreeOrigin::Replaced
            } else {
                TreeOrigin::Fresh
            },
            discarded,
        })
    }
}

fn fresh_err(repo: &Repository, dir: &Path, e: impl std::fmt::Display) -> RepoError {
    repo.read_err(format!("checkout into {}", dir.display()), e)
}

/// Verifies, cleans and updates `slot` to `commit`; why not, when it cannot be.
fn reuse(repo: &Repository, slot: &mut Slot, commit: &str) -> Result<TreeOrigin, String> {
    let removed = slot.verify()?;
    let tree = slot.tree();
    let updated = repo
        .update_tree(&slot.commit, commit, &tree, &mut slot.manifest)
        .map_err(|e| e.to_string())?;
    slot.commit = commit.to_owned();
    slot.stamp().map_err(|e| e.to_string())?;
    Ok(TreeOrigin::Reused { updated, removed })
}

impl PoolInner {
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Slot>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps a returned tree for the next run of its key, within the limits.
    fn give_back(&self, slot: Slot) {
        let evicted: Vec<Slot> = {
            let mut idle = self.idle();
            idle.push(slot);
            let key = idle.last().map(|s| s.key.clone()).unwrap_or_default();
            let mut evicted = Vec::new();
            while idle.iter().filter(|s| s.key == key).count() > MAX_IDLE_TREES_PER_KEY {
                if let Some(i) = idle.iter().position(|s| s.key == key) {
                    evicted.push(idle.remove(i));
                }
            }
            while idle.len() > MAX_IDLE_TREES {
                evicted.push(idle.remove(0));
            }
            evicted
        };
        for slot in evicted {
            self.discard(slot, false);
        }
    }

    /// Removes a tree: in the background when a run waits (`later`), else now.
    fn discard(&self, slot: Slot, later: bool) {
        if !later {
            remove_tree(&slot.dir);
            return;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let trash = self.dir.join(format!("trash-{n}"));
        if std::fs::rename(&slot.dir, &trash).is_ok() {
            std::thread::spawn(move || remove_tree(&trash));
        } else {
            remove_tree(&slot.dir);
        }
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        remove_tree(&self.dir);
        // What could not be removed stays with its lock file, for the next process to try.
        if !self.dir.exists() {
            let _ = std::fs::remove_file(&self.lock_path);
        }
        drop(self.lock.take());
    }
}

/// Removes a directory tree a stage may have made hard to remove (a directory without write or
/// search permission): such directories are opened up, and the removal tried again.
fn remove_tree(dir: &Path) {
    if std::fs::remove_dir_all(dir).is_ok() || !dir.exists() {
        return;
    }
    open_up(dir);
    let _ = std::fs::remove_dir_all(dir);
}

fn open_up(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|t| t.is_dir()) {
                open_up(&entry.path());
            }
        }
    }
}

/// Removes the pools of processes that died (their lock is free) and hold none of `keep`.
fn remove_dead_pools(root: &Path, keep: &[PathBuf]) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let pool = path.with_extension("");
        if path.extension().is_none_or(|e| e != "lock") || keep.iter().any(|k| k.starts_with(&pool))
        {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        if let Ok(lock) = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
        {
            remove_tree(&pool);
            let _ = std::fs::remove_file(&path);
            drop(lock);
        }
    }
}
