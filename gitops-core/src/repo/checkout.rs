//! Checking a commit out: its files written into a directory for stages to run in, never
//! through a link, never outside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use gix::ObjectId;
use gix::objs::tree::EntryKind;

use super::worktree::{Manifest, Recorded};
use super::{RepoError, Repository};

/// Threads that write a checkout's files: the machine's, up to this many.
const MAX_CHECKOUT_THREADS: usize = 4;

/// Fewer files than this are written by one thread (starting threads would cost more).
const FILES_PER_THREAD: usize = 2_000;

impl Repository {
    /// Writes the files of `commit` into `dest` (created if missing; it should be empty): a
    /// checkout without an index, for stages to run in. Executable bits and symlinks are kept;
    /// submodules become empty directories.
    pub fn checkout(&self, commit: &str, dest: &Path) -> Result<(), RepoError> {
        self.checkout_recorded(commit, dest).map(drop)
    }

    /// [`checkout`](Self::checkout), returning what it wrote with each file's stat data as
    /// written, for a cached working tree to be verified against later.
    pub(crate) fn checkout_recorded(
        &self,
        commit: &str,
        dest: &Path,
    ) -> Result<Manifest, RepoError> {
        let repo = self.local();
        let tree = self.commit_tree(&repo, commit)?;
        let mut recorder = gix::traverse::tree::Recorder::default();
        tree.traverse()
            .breadthfirst(&mut recorder)
            .map_err(|e| self.read_err(format!("tree of {commit}"), e))?;
        let write_err = |what: &Path, e: std::io::Error| {
            self.read_err(format!("checkout into {}", what.display()), e)
        };
        std::fs::create_dir_all(dest).map_err(|e| write_err(dest, e))?;
        let mut manifest = Manifest::default();
        // Directories made (or found) under `dest` and known to be real directories: nothing is
        // ever written through a link, even by a crafted tree that names a link and a directory
        // alike (`a -> /etc` and `a/passwd`). All of them are made before any file is written.
        let mut real_dirs: HashSet<PathBuf> = HashSet::new();
        let mut files = Vec::new();
        for entry in recorder.records {
            let rel = entry.filepath.to_string();
            check_path(&rel).map_err(|e| self.read_err(format!("tree of {commit}"), e))?;
            let refuse = |why: &str| {
                self.read_err(
                    format!("tree of {commit}"),
                    format!("refusing to check out path \"{rel}\": {why}"),
                )
            };
            match entry.mode.kind() {
                EntryKind::Tree | EntryKind::Commit => {
                    real_dir(&mut real_dirs, dest, Path::new(&rel)).map_err(|e| refuse(&e))?;
                    let meta = std::fs::symlink_metadata(dest.join(&rel))
                        .map_err(|e| write_err(&dest.join(&rel), e))?;
                    manifest.insert(rel, Recorded::dir(&meta));
                }
                kind => {
                    if let Some(parent) = Path::new(&rel).parent() {
                        real_dir(&mut real_dirs, dest, parent).map_err(|e| refuse(&e))?;
                    }
                    files.push((rel, kind, entry.oid));
                }
            }
        }
        // A crafted tree may name a file (or link) and a directory alike.
        if let Some((rel, _, _)) = files
            .iter()
            .find(|(rel, _, _)| real_dirs.contains(Path::new(rel)))
        {
            return Err(self.read_err(
                format!("tree of {commit}"),
                format!("refusing to check out path \"{rel}\": it is also a directory"),
            ));
        }
        let threads = std::thread::available_parallelism()
            .map_or(1, |n| n.get())
            .clamp(1, MAX_CHECKOUT_THREADS)
            .min(files.len().div_ceil(FILES_PER_THREAD).max(1));
        let chunk = files.len().div_ceil(threads).max(1);
        let written: Vec<Result<Vec<(String, Recorded)>, RepoError>> = if threads == 1 {
            vec![self.write_files(&repo, dest, &files)]
        } else {
            std::thread::scope(|s| {
                let handles: Vec<_> = files
                    .chunks(chunk)
                    .map(|part| s.spawn(move || self.write_files(&self.local(), dest, part)))
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join().unwrap_or_else(|_| {
                            Err(self.read_err("checkout", "a checkout thread panicked"))
                        })
                    })
                    .collect()
            })
        };
        for part in written {
            for (rel, recorded) in part? {
                manifest.insert(rel, recorded);
            }
        }
        Ok(manifest)
    }

    /// Writes blobs and links into `dest`, whose directories exist: each a new file, never one
    /// a link stands in for.
    fn write_files(
        &self,
        repo: &gix::Repository,
        dest: &Path,
        files: &[(String, EntryKind, ObjectId)],
    ) -> Result<Vec<(String, Recorded)>, RepoError> {
        let mut out = Vec::with_capacity(files.len());
        for (rel, kind, oid) in files {
            let blob = repo
                .find_object(*oid)
                .map_err(|e| self.read_err(rel.as_str(), e))?;
            let path = dest.join(rel);
            let recorded = write_entry(&path, *kind, *oid, &blob.data)
                .map_err(|e| self.read_err(format!("checkout into {}", path.display()), e))?;
            out.push((rel.clone(), recorded));
        }
        Ok(out)
    }
}

/// Refuses a tree path that could leave the checkout or write Git's own files: `..`, `.`, empty
/// components and `.git` (a valid repository holds none; a crafted one might).
pub(crate) fn check_path(rel: &str) -> Result<(), String> {
    if rel
        .split('/')
        .any(|c| c.is_empty() || c == "." || c == ".." || c.eq_ignore_ascii_case(".git"))
    {
        return Err(format!("refusing to check out path \"{rel}\""));
    }
    Ok(())
}

/// Writes one blob (a file, or a link when `kind` says so) at `path`, which must not exist, and
/// returns its stat data as written.
pub(crate) fn write_entry(
    path: &Path,
    kind: EntryKind,
    oid: ObjectId,
    data: &[u8],
) -> std::io::Result<Recorded> {
    if kind == EntryKind::Link {
        let target = String::from_utf8_lossy(data).into_owned();
        std::os::unix::fs::symlink(target, path)?;
        let meta = std::fs::symlink_metadata(path)?;
        return Ok(Recorded::blob(&meta, oid));
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mode = if kind == EntryKind::BlobExecutable {
        0o755
    } else {
        0o644
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data)?;
    let meta = file.metadata()?;
    Ok(Recorded::blob(&meta, oid))
}

/// Makes `rel` (and its parents) a real directory under `dest`, one component at a time, and
/// refuses a component that is anything else (a link a tree entry wrote there).
fn real_dir(known: &mut HashSet<PathBuf>, dest: &Path, rel: &Path) -> Result<(), String> {
    let mut at = PathBuf::new();
    for part in rel.components() {
        at.push(part);
        if known.contains(&at) {
            continue;
        }
        let path = dest.join(&at);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(format!("\"{}\" is not a directory", at.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir(&path).map_err(|e| format!("{}: {e}", path.display()))?
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
        known.insert(at.clone());
    }
    Ok(())
}
