//! Bringing a verified working tree from one commit to another by writing only the entries
//! that differ between their trees (gix's tree diff), never through a link.

use std::path::Path;

use gix::ObjectId;
use gix::diff::tree::recorder::Change;
use gix::objs::tree::{EntryKind, EntryMode};

use super::Manifest;
use super::manifest::{Recorded, remove_entry};
use crate::repo::checkout::{check_path, write_entry};
use crate::repo::{RepoError, Repository};

impl Repository {
    /// Turns `root`, a tree of commit `from` that [`Manifest::verify_and_clean`] found as
    /// recorded, into a tree of commit `to`; returns how many entries it wrote or removed.
    /// An error leaves the tree in no known state: it is not to be used.
    pub(crate) fn update_tree(
        &self,
        from: &str,
        to: &str,
        root: &Path,
        manifest: &mut Manifest,
    ) -> Result<usize, RepoError> {
        let repo = self.local();
        let changes = self.tree_changes(&repo, from, to)?;
        let mut removals: Vec<(String, bool)> = Vec::new();
        let mut writes: Vec<(String, EntryMode, ObjectId)> = Vec::new();
        // Files whose content changed, kind and mode the same: rewritten in place.
        let mut rewrites: Vec<(String, ObjectId)> = Vec::new();
        for change in changes {
            match change {
                Change::Deletion {
                    entry_mode, path, ..
                } => removals.push((path.to_string(), entry_mode.is_tree())),
                Change::Addition {
                    entry_mode,
                    oid,
                    path,
                    ..
                } => writes.push((path.to_string(), entry_mode, oid)),
                Change::Modification {
                    previous_entry_mode,
                    entry_mode,
                    oid,
                    path,
                    ..
                } => {
                    let path = path.to_string();
                    // A directory stays one; a submodule's (an empty directory here) too.
                    if previous_entry_mode.is_tree() && entry_mode.is_tree()
                        || previous_entry_mode.kind() == EntryKind::Commit
                            && entry_mode.kind() == EntryKind::Commit
                    {
                        continue;
                    }
                    if previous_entry_mode.is_tree() != entry_mode.is_tree() {
                        removals.push((path.clone(), previous_entry_mode.is_tree()));
                    }
                    let plain = |m: EntryMode| {
                        matches!(m.kind(), EntryKind::Blob | EntryKind::BlobExecutable)
                    };
                    if previous_entry_mode == entry_mode && plain(entry_mode) {
                        rewrites.push((path, oid));
                    } else {
                        writes.push((path, entry_mode, oid));
                    }
                }
            }
        }
        let fail = |path: &str, e: &dyn std::fmt::Display| {
            self.read_err(
                format!("update of {} to {to}", root.display()),
                format!("{path}: {e}"),
            )
        };
        // Children before their parents; a directory goes with what is left in it.
        removals.sort_unstable_by(|a, b| b.0.cmp(&a.0));
        let count = removals.len() + writes.len() + rewrites.len();
        for (path, tree) in removals {
            check_path(&path).map_err(|e| fail(&path, &e))?;
            remove_entry(&root.join(&path)).map_err(|e| fail(&path, &e))?;
            if tree {
                manifest.remove_tree(&path);
            } else {
                manifest.remove(&path);
            }
        }
        // The same inode, new content: no inode to allocate (which costs far more than the
        // write on a file system where many were just freed). Sound because the file was
        // verified as written: no hard link was made to it since (that changes its ctime), so
        // the content changes here only; opened without following a link, and only if it is
        // still the inode verified.
        for (path, oid) in rewrites {
            check_path(&path).map_err(|e| fail(&path, &e))?;
            let full = root.join(&path);
            let ino = manifest
                .file_ino(&path)
                .ok_or_else(|| fail(&path, &"it is not a file the cache wrote"))?;
            let blob = repo.find_object(oid).map_err(|e| fail(&path, &e))?;
            let recorded =
                rewrite_file(&full, ino, oid, &blob.data).map_err(|e| fail(&path, &e))?;
            manifest.insert(path, recorded);
        }
        // Parents before their children: `a` sorts before `a/x`.
        writes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        for (path, mode, oid) in writes {
            check_path(&path).map_err(|e| fail(&path, &e))?;
            // Only into directories the cache made and verified, or made just now.
            if let Some((parent, _)) = path.rsplit_once('/') {
                if !manifest.is_dir(parent) {
                    return Err(fail(&path, &"its directory is not the cache's"));
                }
            }
            let full = root.join(&path);
            match mode.kind() {
                EntryKind::Tree | EntryKind::Commit => {
                    std::fs::create_dir(&full).map_err(|e| fail(&path, &e))?;
                    let meta = std::fs::symlink_metadata(&full).map_err(|e| fail(&path, &e))?;
                    manifest.insert(path, Recorded::dir(&meta));
                }
                kind => {
                    // A new file, not the old one rewritten: a hard link to the old one
                    // elsewhere keeps its content.
                    match std::fs::remove_file(&full) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(fail(&path, &e)),
                    }
                    let blob = repo.find_object(oid).map_err(|e| fail(&path, &e))?;
                    let recorded =
                        write_entry(&full, kind, oid, &blob.data).map_err(|e| fail(&path, &e))?;
                    manifest.insert(path, recorded);
                }
            }
        }
        Ok(count)
    }
}

/// Writes `data` over the file at `path`, which must be inode `ino` (not followed if a link).
fn rewrite_file(path: &Path, ino: u64, oid: ObjectId, data: &[u8]) -> std::io::Result<Recorded> {
    use std::io::Write;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)?;
    if file.metadata()?.ino() != ino {
        return Err(std::io::Error::other("it was replaced"));
    }
    file.set_len(0)?;
    file.write_all(data)?;
    let meta = file.metadata()?;
    Ok(Recorded::blob(&meta, oid))
}
