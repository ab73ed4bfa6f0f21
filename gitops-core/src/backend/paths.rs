//! Paths named by a config, opened without leaving the checkout: the one door through which a
//! backend reaches a file or directory that a `.gitops.yml` names (DESIGN.md, "Trust", rule 7).
//!
//! [`Checkout`] holds a directory handle on a run's checkout and resolves a path one component
//! at a time from it, the way the kernel would, but without ever following a symbolic link by
//! path: each component is looked at with `fstatat(AT_SYMLINK_NOFOLLOW)`, each directory opened
//! with `openat(O_NOFOLLOW)`, and the target of each link is spliced into the components still to
//! resolve (at most [`MAX_LINKS`] links per path). So:
//!
//! - an absolute path, a `..` that climbs above the root, and a symbolic link whose target is
//!   absolute or climbs above the root are refused as leading out of the checkout; a `..` that
//!   stays inside (`a/../b`) and links that stay inside are followed;
//! - what a path leads to must be a regular file or a directory: a FIFO, a device or a socket
//!   is refused before anything opens it (an open could block, or read forever);
//! - a regular file is opened with `O_NONBLOCK | O_NOFOLLOW` and checked again on the open
//!   descriptor, so that a swap between the check and the open is caught rather than followed.
//!
//! What is handed to another program as a path (terraform's working directory and variable
//! files) is checked here first, but can still change before that program opens it; only what
//! is read through [`Checkout`] itself is safe from such a swap.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstatat};

use super::{BackendError, io_failed};

mod resolve;

use resolve::{Found, Refusal, Want, kind_of, open_real_dir, plain, resolve_in};

/// How many symbolic links one path may go through before it is refused as a loop (Linux's
/// own limit).
pub const MAX_LINKS: usize = 40;

/// What a resolved path is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
}

/// A path of the checkout, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resolved {
    /// Where it is, relative to the checkout's root, with no symbolic link, `.` or `..` left
    /// (empty for the root itself).
    pub path: PathBuf,
    /// A file or a directory.
    pub kind: Kind,
}

/// One entry of a [`Checkout::walk`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Entry {
    /// Where it is, relative to the directory walked.
    pub path: PathBuf,
    /// What it is.
    pub kind: EntryKind,
}

/// What an [`Entry`] is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory (its entries follow it).
    Dir,
    /// A regular file.
    File,
    /// A symbolic link that leads, inside the directory walked, to a file or directory.
    Symlink {
        /// The link's target, as written in the link (relative).
        target: PathBuf,
        /// What the link leads to.
        leads_to: Kind,
    },
}

/// A run's checkout, opened as a directory: every path named by a config goes through it.
#[derive(Debug)]
pub struct Checkout {
    root: PathBuf,
    fd: OwnedFd,
}

impl Checkout {
    /// Opens the checkout at `root` (a directory the engine made; the one path followed as is).
    pub fn open(root: impl AsRef<Path>) -> Result<Checkout, BackendError> {
        let root = root.as_ref();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(root, flags, Mode::empty())
            .map_err(|e| io_failed("cannot open the checkout", root, e))?;
        Ok(Checkout {
            root: root.to_owned(),
            fd,
        })
    }

    /// Where the checkout is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn found(&self, key: &str, rel: &Path, want: Want) -> Result<Option<Found>, BackendError> {
        match resolve_in(self.fd.as_fd(), rel) {
            Ok(found) => Ok(Some(found)),
            Err(Refusal::Missing(None)) => Ok(None),
            Err(r) => Err(r.error(key, rel, Path::new(""), "the checkout", want)),
        }
    }

    fn must(&self, key: &str, rel: &Path, want: Want) -> Result<Found, BackendError> {
        self.found(key, rel, want)?.ok_or_else(|| {
            Refusal::Missing(None).error(key, rel, Path::new(""), "the checkout", want)
        })
    }

    /// `rel`, from `with.<key>`, resolved inside the checkout; `None` when there is nothing at
    /// that path (a link on the way that leads to nothing is an error, not `None`).
    ///
    /// # Errors
    ///
    /// [`BackendError::InvalidParameters`] when the path or a link on its way leads out of the
    /// checkout, goes through more than [`MAX_LINKS`] links, or ends at anything but a file or
    /// directory; [`BackendError::failed`] when the system refuses to look.
    pub fn find(&self, key: &str, rel: impl AsRef<Path>) -> Result<Option<Resolved>, BackendError> {
        Ok(self.found(key, rel.as_ref(), Want::Any)?.map(|f| Resolved {
            path: f.path,
            kind: f.kind,
        }))
    }

    /// [`find`](Self::find), with nothing at that path an error too.
    pub fn resolve(&self, key: &str, rel: impl AsRef<Path>) -> Result<Resolved, BackendError> {
        let f = self.must(key, rel.as_ref(), Want::Any)?;
        Ok(Resolved {
            path: f.path,
            kind: f.kind,
        })
    }

    /// The regular file at `rel`, opened for reading (never a FIFO, a device or a directory).
    pub fn open_file(&self, key: &str, rel: impl AsRef<Path>) -> Result<File, BackendError> {
        let rel = rel.as_ref();
        let found = self.must(key, rel, Want::File)?;
        if found.kind == Kind::Dir {
            return Err(BackendError::InvalidParameters(format!(
                "`with.{key}`: \"{}\" is a directory, not a file",
                rel.display()
            )));
        }
        found
            .open_file()
            .map_err(|r| r.error(key, rel, Path::new(""), "the checkout", Want::File))
    }

    /// The bytes of the regular file at `rel`.
    pub fn read(&self, key: &str, rel: impl AsRef<Path>) -> Result<Vec<u8>, BackendError> {
        let rel = rel.as_ref();
        let mut bytes = Vec::new();
        self.open_file(key, rel)?
            .read_to_end(&mut bytes)
            .map_err(|e| io_failed("cannot read", &self.root.join(rel), e))?;
        Ok(bytes)
    }

    /// The text of the regular file at `rel`, which must be UTF-8.
    pub fn read_to_string(&self, key: &str, rel: impl AsRef<Path>) -> Result<String, BackendError> {
        let rel = rel.as_ref();
        String::from_utf8(self.read(key, rel)?).map_err(|_| {
            BackendError::InvalidParameters(format!(
                "`with.{key}`: \"{}\" is not UTF-8 text",
                rel.display()
            ))
        })
    }

    /// The entries of the directory at `rel`, in name order, each as `rel/<name>` with what it
    /// resolves to: a link is followed (inside the checkout; it may lead out of `rel`), and one
    /// that leads out of the checkout, or a FIFO, device or socket, is an error. For reading
    /// what a directory holds, as a program given the directory would (terraform, kubectl).
    pub fn list(
        &self,
        key: &str,
        rel: impl AsRef<Path>,
    ) -> Result<Vec<(PathBuf, Resolved)>, BackendError> {
        let rel = rel.as_ref();
        let found = self.must(key, rel, Want::Any)?;
        if found.kind != Kind::Dir {
            return Err(BackendError::InvalidParameters(format!(
                "`with.{key}`: \"{}\" is a file, not a directory",
                rel.display()
            )));
        }
        let fd = found
            .open_dir()
            .map_err(|r| r.error(key, rel, Path::new(""), "the checkout", Want::Any))?;
        let mut out = Vec::new();
        for name in names(fd, &self.root.join(&found.path))? {
            if let Some(resolved) = self.find(key, found.path.join(&name))? {
                out.push((rel.join(&name), resolved));
            }
        }
        Ok(out)
    }

    /// Everything under the directory at `rel` that `keep` keeps (it is asked about each path,
    /// relative to that directory; a directory it drops is not entered), parents before their
    /// entries, in name order within a directory.
    ///
    /// A symbolic link is an [`EntryKind::Symlink`], kept as a link, when it leads to a file or
    /// directory inside the directory walked (so that a copy of the tree holds no link leading
    /// out of the copy); a link leading anywhere else (out of the directory walked, out of the
    /// checkout, nowhere, to a special file) is an error, as is a FIFO, a device or a socket.
    pub fn walk(
        &self,
        key: &str,
        rel: impl AsRef<Path>,
        keep: impl FnMut(&Path) -> bool,
    ) -> Result<Vec<Entry>, BackendError> {
        let rel = rel.as_ref();
        let found = self.must(key, rel, Want::Any)?;
        self.walk_found(key, rel, &found, keep)
    }

    fn walk_found(
        &self,
        key: &str,
        rel: &Path,
        found: &Found,
        mut keep: impl FnMut(&Path) -> bool,
    ) -> Result<Vec<Entry>, BackendError> {
        if found.kind != Kind::Dir {
            return Err(BackendError::InvalidParameters(format!(
                "`with.{key}`: \"{}\" is a file, not a directory",
                rel.display()
            )));
        }
        let base = &found.path;
        let checkout = "the checkout";
        let within = if base.as_os_str().is_empty() {
            checkout.to_owned()
        } else {
            format!("\"{}\"", plain(rel).display())
        };
        let top = found
            .open_dir()
            .map_err(|r| r.error(key, rel, Path::new(""), checkout, Want::Any))?;
        let mut out = Vec::new();
        let mut dirs = vec![PathBuf::new()];
        while let Some(dir) = dirs.pop() {
            let fd = open_real_dir(top.as_fd(), &dir)
                .map_err(|r| r.error(key, &base.join(&dir), base, checkout, Want::Any))?;
            let listing = fd
                .try_clone()
                .map_err(|e| io_failed("cannot open", &self.root.join(base.join(&dir)), e))?;
            let names = names(fd, &self.root.join(base.join(&dir)))?;
            let mut subdirs = Vec::new();
            for name in names {
                let path = dir.join(&name);
                if !keep(&path) {
                    continue;
                }
                let full = base.join(&path);
                let stat = match fstatat(&listing, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
                    Ok(s) => s,
                    Err(Errno::ENOENT) => continue,
                    Err(e) => {
                        return Err(Refusal::Io(full.clone(), e).error(
                            key,
                            &full,
                            Path::new(""),
                            checkout,
                            Want::Any,
                        ));
                    }
                };
                let kind = match kind_of(&stat) {
                    Err(what) => {
                        return Err(Refusal::Special(full.clone(), what).error(
                            key,
                            &full,
                            Path::new(""),
                            checkout,
                            Want::Any,
                        ));
                    }
                    Ok(SFlag::S_IFDIR) => {
                        subdirs.push(path.clone());
                        EntryKind::Dir
                    }
                    Ok(SFlag::S_IFLNK) => {
                        let target = readlinkat(&listing, name.as_os_str()).map_err(|e| {
                            Refusal::Io(full.clone(), e).error(
                                key,
                                &full,
                                Path::new(""),
                                checkout,
                                Want::Any,
                            )
                        })?;
                        let leads_to = self.must(key, &full, Want::Any)?.kind;
                        if !base.as_os_str().is_empty() {
                            resolve_in(top.as_fd(), &path)
                                .map_err(|r| r.error(key, &full, base, &within, Want::Any))?;
                        }
                        EntryKind::Symlink {
                            target: target.into(),
                            leads_to,
                        }
                    }
                    Ok(_) => EntryKind::File,
                };
                out.push(Entry { path, kind });
            }
            dirs.extend(subdirs.into_iter().rev());
        }
        Ok(out)
    }

    /// Copies what `rel` leads to (a file, or a directory with what `keep` keeps of it, as
    /// [`walk`](Self::walk) finds it) to `to`, outside the checkout: files with their
    /// permission bits, links as links. The copy never holds a link leading out of it nor a
    /// special file, and nothing is written through a link at `to`.
    pub fn copy_tree(
        &self,
        key: &str,
        rel: impl AsRef<Path>,
        to: &Path,
        keep: impl FnMut(&Path) -> bool,
    ) -> Result<(), BackendError> {
        let rel = rel.as_ref();
        let found = self.must(key, rel, Want::Any)?;
        if found.kind == Kind::File {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| io_failed("cannot create", parent, e))?;
            }
            let file = found
                .open_file()
                .map_err(|r| r.error(key, rel, Path::new(""), "the checkout", Want::File))?;
            return copy_file(file, &found.path, to);
        }
        let entries = self.walk_found(key, rel, &found, keep)?;
        std::fs::create_dir_all(to).map_err(|e| io_failed("cannot create", to, e))?;
        for entry in entries {
            let dest = to.join(&entry.path);
            match entry.kind {
                EntryKind::Dir => std::fs::create_dir_all(&dest)
                    .map_err(|e| io_failed("cannot create", &dest, e))?,
                EntryKind::File => {
                    let from = found.path.join(&entry.path);
                    copy_file(self.open_file(key, &from)?, &from, &dest)?;
                }
                EntryKind::Symlink { target, .. } => std::os::unix::fs::symlink(&target, &dest)
                    .map_err(|e| io_failed("cannot create", &dest, e))?,
            }
        }
        Ok(())
    }
}

/// The names in the directory open as `fd`, sorted, without `.` and `..`.
fn names(fd: OwnedFd, path: &Path) -> Result<Vec<OsString>, BackendError> {
    let mut names = Vec::new();
    let mut dir = Dir::from_fd(fd).map_err(|e| io_failed("cannot list", path, e))?;
    for entry in dir.iter() {
        let entry = entry.map_err(|e| io_failed("cannot list", path, e))?;
        let name = OsStr::from_bytes(entry.file_name().to_bytes());
        if name != "." && name != ".." {
            names.push(name.to_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// Copies the open `file` (at `from` in the checkout) to `to`, with its permission bits (no
/// set-id bits), never writing through a link at `to`.
fn copy_file(mut file: File, from: &Path, to: &Path) -> Result<(), BackendError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mode = file
        .metadata()
        .map_err(|e| io_failed("cannot read", from, e))?
        .permissions()
        .mode()
        & 0o777;
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(OFlag::O_NOFOLLOW.bits())
        .open(to)
        .map_err(|e| io_failed("cannot create", to, e))?;
    std::io::copy(&mut file, &mut out).map_err(|e| io_failed("cannot copy", from, e))?;
    out.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(|e| io_failed("cannot set the permissions of", to, e))?;
    Ok(())
}

#[cfg(test)]
mod tests;
