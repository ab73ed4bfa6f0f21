//! What the cache wrote into a working tree, with each entry's stat data as written, and the
//! check that the tree still holds exactly that: cheap (one `lstat` an entry, no file read but
//! for the few written in the last clock tick) and sound (a change of content, mode, type or
//! inode changes the entry's ctime, which no process can set back).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};

use gix::ObjectId;

/// What an entry of the tree is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Link,
}

impl Kind {
    fn of(meta: &std::fs::Metadata) -> Option<Kind> {
        let t = meta.file_type();
        if t.is_dir() {
            Some(Kind::Dir)
        } else if t.is_file() {
            Some(Kind::File)
        } else if t.is_symlink() {
            Some(Kind::Link)
        } else {
            None
        }
    }
}

/// One entry as the cache wrote it.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    kind: Kind,
    /// The blob it holds (a link's target); null for a directory.
    oid: ObjectId,
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Recorded {
    /// A directory the cache made.
    pub(crate) fn dir(meta: &std::fs::Metadata) -> Recorded {
        Recorded::new(Kind::Dir, meta, ObjectId::null(gix::hash::Kind::Sha1))
    }

    /// A file or link the cache wrote with `oid`'s content.
    pub(crate) fn blob(meta: &std::fs::Metadata, oid: ObjectId) -> Recorded {
        let kind = if meta.file_type().is_symlink() {
            Kind::Link
        } else {
            Kind::File
        };
        Recorded::new(kind, meta, oid)
    }

    fn new(kind: Kind, meta: &std::fs::Metadata, oid: ObjectId) -> Recorded {
        Recorded {
            kind,
            oid,
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// Whether `meta` shows the entry as written. Directories: the same directory (entries
    /// added or removed in it are found by listing it, not by its times).
    fn same(&self, meta: &std::fs::Metadata) -> bool {
        if Kind::of(meta) != Some(self.kind)
            || meta.dev() != self.dev
            || meta.ino() != self.ino
            || meta.mode() != self.mode
        {
            return false;
        }
        self.kind == Kind::Dir
            || (meta.size() == self.size
                && (meta.mtime(), meta.mtime_nsec()) == self.mtime
                && (meta.ctime(), meta.ctime_nsec()) == self.ctime)
    }
}

/// Every entry of a cached working tree, by path (slash-separated, from its root), and the
/// time the cache last finished writing it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Manifest {
    entries: HashMap<String, Recorded>,
    /// The ctime of the slot's stamp, written after the tree: an entry whose ctime is not
    /// before it may have been changed within the same clock tick without its times showing
    /// it ("racily clean", as Git calls it), and is compared by content.
    stamp: (i64, i64),
}

impl Manifest {
    pub(crate) fn insert(&mut self, path: String, recorded: Recorded) {
        self.entries.insert(path, recorded);
    }

    pub(crate) fn remove(&mut self, path: &str) {
        self.entries.remove(path);
    }

    /// Forgets `dir` and everything under it.
    pub(crate) fn remove_tree(&mut self, dir: &str) {
        let prefix = format!("{dir}/");
        self.entries
            .retain(|p, _| p != dir && !p.starts_with(&prefix));
    }

    /// The inode of `path` when it is a file (not a link) the cache wrote.
    pub(crate) fn file_ino(&self, path: &str) -> Option<u64> {
        self.entries
            .get(path)
            .filter(|r| r.kind == Kind::File)
            .map(|r| r.ino)
    }

    /// Whether `path` is a directory the cache made.
    pub(crate) fn is_dir(&self, path: &str) -> bool {
        self.entries.get(path).is_some_and(|r| r.kind == Kind::Dir)
    }

    /// Marks the tree as finished being written: `stamp` was written after every entry.
    pub(crate) fn set_stamp(&mut self, stamp: &std::fs::Metadata) {
        self.stamp = (stamp.ctime(), stamp.ctime_nsec());
    }

    /// Checks that the tree at `root` holds every recorded entry as written, and removes every
    /// entry it does not record (files stages left, ignored or not, and anything a stage made
    /// of `.git`). Returns how many it removed, or why the tree cannot be trusted: a recorded
    /// entry changed, replaced or missing, a Git lock file a killed process left, an entry
    /// that cannot be read or removed.
    pub(crate) fn verify_and_clean(&self, root: &Path) -> Result<usize, String> {
        // The directories are walked by a few threads taking them from one stack: the walk is
        // one `lstat` an entry, and a large tree has tens of thousands.
        let walk = Walk {
            manifest: self,
            root,
            dirs: Mutex::new((vec![String::new()], 0)),
            wake: Condvar::new(),
            failed: AtomicBool::new(false),
        };
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, WALK_THREADS);
        let found: Vec<Result<Found, String>> = std::thread::scope(|scope| {
            let walkers: Vec<_> = (1..threads).map(|_| scope.spawn(|| walk.run())).collect();
            let mut found = vec![walk.run()];
            found.extend(walkers.into_iter().map(|w| {
                w.join()
                    .unwrap_or_else(|_| Err("the tree's walk failed".to_owned()))
            }));
            found
        });
        let mut seen = 0usize;
        let mut untracked = Vec::new();
        for f in found {
            let f = f?;
            seen += f.seen;
            untracked.extend(f.untracked);
        }
        if seen != self.entries.len() {
            return Err(format!(
                "{} files of the tree are missing",
                self.entries.len() - seen
            ));
        }
        for path in &untracked {
            remove_entry(path).map_err(|e| format!("cannot remove {}: {e}", path.display()))?;
        }
        Ok(untracked.len())
    }

    fn racy(&self, recorded: &Recorded) -> bool {
        recorded.ctime >= self.stamp || recorded.mtime >= self.stamp
    }
}

/// Threads that walk a tree at most.
const WALK_THREADS: usize = 4;

/// What one walker found: entries as recorded, and entries that are not the cache's.
#[derive(Default)]
struct Found {
    seen: usize,
    untracked: Vec<PathBuf>,
}

/// A walk of a tree shared by its threads: the directories left to list (and how many are
/// being listed), and whether one found the tree changed.
struct Walk<'a> {
    manifest: &'a Manifest,
    root: &'a Path,
    dirs: Mutex<(Vec<String>, usize)>,
    wake: Condvar,
    failed: AtomicBool,
}

impl Walk<'_> {
    /// Lists directories until none is left (or another walker failed).
    fn run(&self) -> Result<Found, String> {
        let mut found = Found::default();
        while let Some(rel) = self.next() {
            let listed = self.list(&rel, &mut found);
            let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
            dirs.1 -= 1;
            match listed {
                Ok(children) => dirs.0.extend(children),
                Err(e) => {
                    self.failed.store(true, Ordering::Relaxed);
                    drop(dirs);
                    self.wake.notify_all();
                    return Err(e);
                }
            }
            drop(dirs);
            self.wake.notify_all();
        }
        Ok(found)
    }

    /// The next directory to list; `None` once every directory is listed.
    fn next(&self) -> Option<String> {
        let mut dirs = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.failed.load(Ordering::Relaxed) {
                return None;
            }
            if let Some(rel) = dirs.0.pop() {
                dirs.1 += 1;
                return Some(rel);
            }
            if dirs.1 == 0 {
                return None;
            }
            dirs = self.wake.wait(dirs).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Checks the entries of directory `rel` against the manifest; its subdirectories.
    fn list(&self, rel: &str, found: &mut Found) -> Result<Vec<String>, String> {
        let dir = if rel.is_empty() {
            self.root.to_path_buf()
        } else {
            self.root.join(rel)
        };
        let entries =
            std::fs::read_dir(&dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
        let mut children = Vec::new();
        let mut child = String::with_capacity(rel.len() + 64);
        for entry in entries {
            let entry = entry.map_err(|e| format!("cannot list {}: {e}", dir.display()))?;
            let name = entry.file_name();
            // Tree paths are text: a name that is not is not the cache's.
            let Some(n) = name.to_str() else {
                found.untracked.push(entry.path());
                continue;
            };
            child.clear();
            if !rel.is_empty() {
                child.push_str(rel);
                child.push('/');
            }
            child.push_str(n);
            let Some(recorded) = self.manifest.entries.get(child.as_str()) else {
                if name == ".git" {
                    refuse_git_locks(&entry.path())?;
                }
                found.untracked.push(entry.path());
                continue;
            };
            // Not followed: a link is checked as a link.
            let meta = entry
                .metadata()
                .map_err(|e| format!("cannot read {child}: {e}"))?;
            if !recorded.same(&meta) {
                return Err(format!("\"{child}\" changed since it was written"));
            }
            if recorded.kind != Kind::Dir && self.manifest.racy(recorded) {
                same_content(&entry.path(), recorded).map_err(|e| format!("\"{child}\" {e}"))?;
            }
            if recorded.kind == Kind::Dir {
                children.push(child.clone());
            }
            found.seen += 1;
        }
        Ok(children)
    }
}

/// A `.git` a stage made, holding a lock file (`index.lock`, `HEAD.lock`, ...): a Git process
/// was killed in the middle of a write, or is still writing. The tree is not reused.
fn refuse_git_locks(git: &Path) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(git) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().as_encoded_bytes().ends_with(b".lock") {
            return Err(format!(
                "a lock file was left in the tree: {}",
                entry.path().display()
            ));
        }
    }
    Ok(())
}

/// Whether a file written in the stamp's clock tick still holds the recorded blob. The file is
/// opened without following a link and without blocking (a FIFO put in its place), must still
/// be the inode and size recorded, and is read up to that size only.
fn same_content(path: &Path, recorded: &Recorded) -> Result<(), String> {
    let data = match recorded.kind {
        Kind::Link => std::fs::read_link(path)
            .map(|t| t.into_os_string().into_encoded_bytes())
            .map_err(|e| format!("cannot be read: {e}"))?,
        _ => {
            use std::io::Read;
            use std::os::unix::fs::OpenOptionsExt;
            let file = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| format!("cannot be read: {e}"))?;
            let meta = file
                .metadata()
                .map_err(|e| format!("cannot be read: {e}"))?;
            if !meta.is_file() || meta.ino() != recorded.ino || meta.size() != recorded.size {
                return Err("changed since it was written".to_owned());
            }
            let mut data = Vec::with_capacity(recorded.size as usize);
            file.take(recorded.size)
                .read_to_end(&mut data)
                .map_err(|e| format!("cannot be read: {e}"))?;
            data
        }
    };
    let id = gix::objs::compute_hash(recorded.oid.kind(), gix::objs::Kind::Blob, &data)
        .map_err(|e| format!("cannot be hashed: {e}"))?;
    if id == recorded.oid {
        Ok(())
    } else {
        Err("changed since it was written".to_owned())
    }
}

/// Removes a file, link, special file or directory tree, never following a link.
pub(crate) fn remove_entry(path: &Path) -> std::io::Result<()> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}
