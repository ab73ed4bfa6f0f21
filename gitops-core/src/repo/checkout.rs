//! Checking a commit out: its files written into a directory for stages to run in, never
//! through a link, never outside it.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use super::{RepoError, Repository};

impl Repository {
    /// Writes the files of `commit` into `dest` (created if missing; it should be empty): a
    /// checkout without an index, for stages to run in. Executable bits and symlinks are kept;
    /// submodules become empty directories.
    pub fn checkout(&self, commit: &str, dest: &Path) -> Result<(), RepoError> {
        use gix::objs::tree::EntryKind;
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
        // Directories made (or found) under `dest` and known to be real directories: nothing is
        // ever written through a link, even by a crafted tree that names a link and a directory
        // alike (`a -> /etc` and `a/passwd`).
        let mut real_dirs: HashSet<PathBuf> = HashSet::new();
        for entry in recorder.records {
            let rel = entry.filepath.to_string();
            // Tree entries never hold `..` or absolute paths in a valid repository; refuse them
            // anyway rather than write outside `dest`.
            if rel
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == ".." || c == ".git")
            {
                return Err(self.read_err(
                    format!("tree of {commit}"),
                    format!("refusing to check out path \"{rel}\""),
                ));
            }
            let path = dest.join(&rel);
            let refuse = |why: &str| {
                self.read_err(
                    format!("tree of {commit}"),
                    format!("refusing to check out path \"{rel}\": {why}"),
                )
            };
            match entry.mode.kind() {
                EntryKind::Tree | EntryKind::Commit => {
                    real_dir(&mut real_dirs, dest, Path::new(&rel)).map_err(|e| refuse(&e))?
                }
                kind => {
                    let blob = repo
                        .find_object(entry.oid)
                        .map_err(|e| self.read_err(&rel, e))?;
                    if let Some(parent) = Path::new(&rel).parent() {
                        real_dir(&mut real_dirs, dest, parent).map_err(|e| refuse(&e))?;
                    }
                    if kind == EntryKind::Link {
                        let target = String::from_utf8_lossy(&blob.data).into_owned();
                        std::os::unix::fs::symlink(target, &path)
                            .map_err(|e| write_err(&path, e))?;
                    } else {
                        use std::io::Write;
                        use std::os::unix::fs::OpenOptionsExt;
                        let mode = if kind == EntryKind::BlobExecutable {
                            0o755
                        } else {
                            0o644
                        };
                        // A new file, never one a link stands in for.
                        std::fs::OpenOptions::new()
                            .write(true)
                            .create_new(true)
                            .mode(mode)
                            .open(&path)
                            .and_then(|mut f| f.write_all(&blob.data))
                            .map_err(|e| write_err(&path, e))?;
                    }
                }
            }
        }
        Ok(())
    }
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
