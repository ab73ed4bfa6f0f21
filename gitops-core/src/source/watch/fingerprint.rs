//! A fingerprint of a repository's ref storage (the stat data of `HEAD`, `packed-refs` and every
//! directory and loose ref under `refs/`), so that a poll can tell that no ref changed without
//! listing them.
//!
//! Git writes a loose ref by lock file and rename (a new inode, and its directory's mtime and
//! ctime change), deletes one by unlinking it (its directory changes), and rewrites
//! `packed-refs` by rename (a new inode). A fingerprint equal to an earlier one therefore means
//! the same refs, unless a change landed in the same clock tick as a stamp it kept: a fingerprint
//! is only *trusted* when its newest stamp is older, by a margin, than the moment it was taken
//! (Git's "racily clean" rule for its index).

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// The stat data that changes when a file or directory is written, replaced or removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    dev: u64,
    ino: u64,
    mode: u32,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

impl Stat {
    fn of(meta: &std::fs::Metadata) -> Stat {
        let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
        Stat {
            dev: meta.dev(),
            ino: meta.ino(),
            mode: meta.mode(),
            size: meta.size(),
            mtime_ns: ns(meta.mtime(), meta.mtime_nsec()),
            ctime_ns: ns(meta.ctime(), meta.ctime_nsec()),
        }
    }

    fn newest_ns(&self) -> i128 {
        self.mtime_ns.max(self.ctime_ns)
    }
}

/// Where a repository keeps its refs in the files backend: its own git dir (`HEAD`, and the
/// worktree's private refs for a linked worktree) and the common dir (`packed-refs`, `refs/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RefStorage {
    /// The git dir (`.git`, `.git/worktrees/<name>`, or a bare repository).
    pub(crate) git_dir: std::path::PathBuf,
    /// Where the shared refs are (the git dir unless it has a `commondir`).
    pub(crate) common_dir: std::path::PathBuf,
}

/// The stat data of a repository's ref storage at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Fingerprint {
    /// Each file and directory (relative to its root's index), sorted within a directory.
    entries: Vec<(u8, Box<[u8]>, Option<Stat>)>,
    /// No stamp is within the racy margin of the moment it was taken.
    trusted: bool,
}

impl Fingerprint {
    /// Takes the fingerprint of `storage`; `None` when the storage is not one it understands
    /// (reftable, a symlink or a special file among the refs, a read error): the refs must be
    /// listed then.
    pub(crate) fn take(storage: &RefStorage, racy_margin: Duration) -> Option<Fingerprint> {
        // Read before any stamp: a change after this moment carries a later stamp.
        let taken = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .as_nanos();
        let mut print = Fingerprint {
            entries: Vec::new(),
            trusted: false,
        };
        if lstat(&storage.common_dir.join("reftable")).ok()?.is_some() {
            return None;
        }
        let head = lstat(&storage.git_dir.join("HEAD")).ok()?;
        if !head.as_ref().is_some_and(std::fs::Metadata::is_file) {
            return None;
        }
        print.push(0, b"HEAD", head.as_ref());
        let packed = lstat(&storage.common_dir.join("packed-refs")).ok()?;
        if packed.as_ref().is_some_and(|m| !m.is_file()) {
            return None;
        }
        print.push(0, b"packed-refs", packed.as_ref());
        let mut roots = vec![storage.common_dir.join("refs")];
        if storage.git_dir != storage.common_dir {
            roots.push(storage.git_dir.join("refs"));
        }
        for (root, dir) in (1u8..).zip(&roots) {
            let meta = lstat(dir).ok()?;
            if meta.as_ref().is_some_and(|m| !m.is_dir()) {
                return None;
            }
            print.push(root, b"", meta.as_ref());
            if meta.is_some() {
                print.walk(root, dir, &mut Vec::new())?;
            }
        }
        let newest = print
            .entries
            .iter()
            .filter_map(|(_, _, s)| s.map(|s| s.newest_ns()))
            .max()
            .unwrap_or(i128::MIN);
        let taken = i128::try_from(taken).ok()?;
        let margin = i128::try_from(racy_margin.as_nanos()).ok()?;
        print.trusted = newest < taken - margin;
        Some(print)
    }

    /// Whether the refs are as they were when `earlier` was taken: the same stamps, in a
    /// fingerprint that was trusted.
    pub(crate) fn unchanged_since(&self, earlier: &Fingerprint) -> bool {
        earlier.trusted && self.entries == earlier.entries
    }

    fn push(&mut self, root: u8, path: &[u8], meta: Option<&std::fs::Metadata>) {
        self.entries.push((root, path.into(), meta.map(Stat::of)));
    }

    /// Adds every entry under `dir` (`rel` its path under the root), without following
    /// symlinks; `None` on anything but directories and regular files.
    fn walk(&mut self, root: u8, dir: &Path, rel: &mut Vec<u8>) -> Option<()> {
        use std::os::unix::ffi::OsStrExt;
        let mut entries: Vec<std::fs::DirEntry> = std::fs::read_dir(dir)
            .ok()?
            .collect::<Result<_, _>>()
            .ok()?;
        entries.sort_by_key(std::fs::DirEntry::file_name);
        for entry in entries {
            // `DirEntry::metadata` does not follow a symlink.
            let meta = entry.metadata().ok()?;
            let len = rel.len();
            rel.push(b'/');
            rel.extend_from_slice(entry.file_name().as_bytes());
            self.push(root, rel, Some(&meta));
            if meta.is_dir() {
                self.walk(root, &entry.path(), rel)?;
            } else if !meta.is_file() {
                return None;
            }
            rel.truncate(len);
        }
        Some(())
    }
}

/// The metadata of `path` without following a symlink, `None` when it does not exist.
fn lstat(path: &Path) -> std::io::Result<Option<std::fs::Metadata>> {
    match std::fs::symlink_metadata(path) {
        Ok(meta) => Ok(Some(meta)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn storage(dir: &Path) -> RefStorage {
        RefStorage {
            git_dir: dir.to_path_buf(),
            common_dir: dir.to_path_buf(),
        }
    }

    #[test]
    fn unusual_storage_is_not_fingerprinted() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("refs/heads")).unwrap();
        assert!(
            Fingerprint::take(&storage(dir), Duration::ZERO).is_none(),
            "no HEAD"
        );
        std::fs::write(dir.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        // Past the stamps' clock tick, so that a margin of zero trusts them.
        std::thread::sleep(Duration::from_millis(20));
        let ok = Fingerprint::take(&storage(dir), Duration::ZERO).unwrap();
        let again = Fingerprint::take(&storage(dir), Duration::ZERO).unwrap();
        assert!(again.unchanged_since(&ok));
        // A fresh stamp is racy: not trusted within the margin.
        let racy = Fingerprint::take(&storage(dir), Duration::from_secs(3600)).unwrap();
        assert!(!again.unchanged_since(&racy));

        std::os::unix::fs::symlink("/tmp", dir.join("refs/heads/link")).unwrap();
        assert!(
            Fingerprint::take(&storage(dir), Duration::ZERO).is_none(),
            "a symlink"
        );
        std::fs::remove_file(dir.join("refs/heads/link")).unwrap();
        std::fs::create_dir(dir.join("reftable")).unwrap();
        assert!(
            Fingerprint::take(&storage(dir), Duration::ZERO).is_none(),
            "reftable"
        );
    }
}
