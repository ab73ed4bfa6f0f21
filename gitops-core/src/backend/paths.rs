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
//! A path handed to another program (terraform's working directory) can still change after it
//! was checked; such callers resolve it here first, and hand over the resolved path.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::dir::Dir;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::BackendError;

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

/// The link (its path, its target) a component to resolve comes from, if any.
type Origin = Option<Rc<(PathBuf, PathBuf)>>;

/// Why a path was refused, before it is put into words.
enum Refusal {
    /// The named path is absolute, or one of its own `..` climbs above the root.
    Outside,
    /// A link (its path, its target) whose target is absolute or climbs above the root.
    Link(Rc<(PathBuf, PathBuf)>),
    /// Nothing there: at the named path itself, or at what a link leads to.
    Missing(Origin),
    /// A file where a directory was needed.
    NotDir(PathBuf),
    /// A FIFO, a device or a socket.
    Special(PathBuf, &'static str),
    /// More than [`MAX_LINKS`] links.
    Loop,
    /// It changed between the check and the open.
    Changed(PathBuf),
    /// The system said no.
    Io(PathBuf, Errno),
}

/// What the caller wants the path to be, for the words of a refusal.
#[derive(Clone, Copy)]
enum Want {
    File,
    Any,
}

/// Where a path was resolved, and the descriptors to open it with.
struct Found {
    path: PathBuf,
    kind: Kind,
    /// The directory holding it, or (with no `name`) the directory itself.
    at: OwnedFd,
    name: Option<OsString>,
    stat: FileStat,
}

/// What a `stat` says the file is; `Err` names a kind that is neither file, directory nor link.
fn kind_of(stat: &FileStat) -> Result<SFlag, &'static str> {
    let kind = SFlag::from_bits_truncate(stat.st_mode & SFlag::S_IFMT.bits());
    match kind {
        SFlag::S_IFREG | SFlag::S_IFDIR | SFlag::S_IFLNK => Ok(kind),
        SFlag::S_IFIFO => Err("FIFO"),
        SFlag::S_IFCHR => Err("character device"),
        SFlag::S_IFBLK => Err("block device"),
        SFlag::S_IFSOCK => Err("socket"),
        _ => Err("special file"),
    }
}

fn same_inode(a: &FileStat, b: &FileStat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

/// Resolves `rel` under the directory `root` without leaving it (see the module docs).
fn resolve_in(root: BorrowedFd<'_>, rel: &Path) -> Result<Found, Refusal> {
    let mut pending: VecDeque<(OsString, Origin)> = VecDeque::new();
    for c in rel.components() {
        match c {
            Component::Normal(s) => pending.push_back((s.to_owned(), None)),
            Component::ParentDir => pending.push_back(("..".into(), None)),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return Err(Refusal::Outside),
        }
    }
    let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
    let mut links = 0;
    let here = |stack: &[(OsString, OwnedFd)]| -> PathBuf {
        stack.iter().map(|(n, _)| n.as_os_str()).collect()
    };
    while let Some((name, origin)) = pending.pop_front() {
        if name == ".." {
            if stack.pop().is_none() {
                return Err(origin.map_or(Refusal::Outside, Refusal::Link));
            }
            continue;
        }
        let cur = stack.last().map_or(root, |(_, fd)| fd.as_fd());
        let path = here(&stack).join(&name);
        let stat = match fstatat(cur, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::ENOENT) => return Err(Refusal::Missing(origin)),
            Err(e) => return Err(Refusal::Io(path, e)),
        };
        match kind_of(&stat) {
            Err(what) => return Err(Refusal::Special(path, what)),
            Ok(SFlag::S_IFLNK) => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(Refusal::Loop);
                }
                let target = PathBuf::from(
                    readlinkat(cur, name.as_os_str()).map_err(|e| Refusal::Io(path.clone(), e))?,
                );
                let origin = Rc::new((path, target));
                if origin.1.as_os_str().is_empty() {
                    return Err(Refusal::Missing(Some(origin)));
                }
                let target = &origin.1;
                if target.has_root() {
                    return Err(Refusal::Link(origin.clone()));
                }
                for c in target.components().rev() {
                    match c {
                        Component::Normal(s) => {
                            pending.push_front((s.to_owned(), Some(origin.clone())))
                        }
                        Component::ParentDir => {
                            pending.push_front(("..".into(), Some(origin.clone())))
                        }
                        _ => {}
                    }
                }
            }
            Ok(SFlag::S_IFDIR) if pending.is_empty() => {
                return Ok(Found {
                    path,
                    kind: Kind::Dir,
                    at: dup(cur, &stack)?,
                    name: Some(name),
                    stat,
                });
            }
            Ok(SFlag::S_IFDIR) => {
                let flags =
                    OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
                let fd = match openat(cur, name.as_os_str(), flags, Mode::empty()) {
                    Ok(fd) => fd,
                    Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                        return Err(Refusal::Changed(path));
                    }
                    Err(e) => return Err(Refusal::Io(path, e)),
                };
                stack.push((name, fd));
            }
            Ok(_) if pending.is_empty() => {
                return Ok(Found {
                    path,
                    kind: Kind::File,
                    at: dup(cur, &stack)?,
                    name: Some(name),
                    stat,
                });
            }
            Ok(_) => return Err(Refusal::NotDir(path)),
        }
    }
    // The path ends at a directory reached by `..`, or is the root itself.
    let path = here(&stack);
    let cur = stack.last().map_or(root, |(_, fd)| fd.as_fd());
    let stat = fstat(cur).map_err(|e| Refusal::Io(path.clone(), e))?;
    Ok(Found {
        path,
        kind: Kind::Dir,
        at: dup(cur, &stack)?,
        name: None,
        stat,
    })
}

fn dup(fd: BorrowedFd<'_>, stack: &[(OsString, OwnedFd)]) -> Result<OwnedFd, Refusal> {
    fd.try_clone_to_owned().map_err(|e| {
        let path: PathBuf = stack.iter().map(|(n, _)| n.as_os_str()).collect();
        Refusal::Io(path, Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    })
}

impl Found {
    /// The regular file, opened for reading; a swap since it was looked at is caught.
    fn open_file(&self) -> Result<File, Refusal> {
        let flags = OFlag::O_RDONLY
            | OFlag::O_NONBLOCK
            | OFlag::O_NOFOLLOW
            | OFlag::O_NOCTTY
            | OFlag::O_CLOEXEC;
        let name = self.name.as_deref().unwrap_or(OsStr::new("."));
        let fd = match openat(&self.at, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOENT) => return Err(Refusal::Changed(self.path.clone())),
            Err(e) => return Err(Refusal::Io(self.path.clone(), e)),
        };
        let stat = fstat(&fd).map_err(|e| Refusal::Io(self.path.clone(), e))?;
        if kind_of(&stat) != Ok(SFlag::S_IFREG) || !same_inode(&stat, &self.stat) {
            return Err(Refusal::Changed(self.path.clone()));
        }
        Ok(File::from(fd))
    }

    /// The directory, opened for listing; a swap since it was looked at is caught.
    fn open_dir(&self) -> Result<OwnedFd, Refusal> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let name = self.name.as_deref().unwrap_or(OsStr::new("."));
        let fd = match openat(&self.at, name, flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                return Err(Refusal::Changed(self.path.clone()));
            }
            Err(e) => return Err(Refusal::Io(self.path.clone(), e)),
        };
        let stat = fstat(&fd).map_err(|e| Refusal::Io(self.path.clone(), e))?;
        if !same_inode(&stat, &self.stat) {
            return Err(Refusal::Changed(self.path.clone()));
        }
        Ok(fd)
    }
}

/// The directory `dir` below `top`, opened for listing through directories only: it is one
/// the walk found, so a link in its place now means it changed.
fn open_real_dir(top: BorrowedFd<'_>, dir: &Path) -> Result<OwnedFd, Refusal> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = openat(top, ".", flags, Mode::empty()).map_err(|e| Refusal::Io(dir.into(), e))?;
    for name in dir.iter() {
        fd = match openat(&fd, name, flags, Mode::empty()) {
            Ok(next) => next,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                return Err(Refusal::Changed(dir.into()));
            }
            Err(e) => return Err(Refusal::Io(dir.into(), e)),
        };
    }
    Ok(fd)
}

/// `path` without its `.` components, for comparing a named path with a resolved one.
fn plain(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl Refusal {
    /// The refusal in words: `` `with.<key>`: "<rel>" ... ``. Paths found while resolving are
    /// relative to `base` (within the checkout), and `within` is what they must not leave.
    fn error(self, key: &str, rel: &Path, base: &Path, within: &str, want: Want) -> BackendError {
        let named = plain(rel);
        let shown = |p: &Path| base.join(p);
        let at = |p: &Path| {
            if shown(p) == named {
                format!("\"{}\"", named.display())
            } else {
                format!(
                    "\"{}\" leads to \"{}\", which",
                    rel.display(),
                    shown(p).display()
                )
            }
        };
        let link = |link: &(PathBuf, PathBuf)| {
            let (path, target) = link;
            let subject = if shown(path) == named {
                format!("\"{}\"", named.display())
            } else {
                format!("\"{}\": \"{}\"", rel.display(), shown(path).display())
            };
            format!("{subject} is a symbolic link to {}", target.display())
        };
        let message = match self {
            Refusal::Outside => {
                format!("\"{}\" is not a path inside {within}", rel.display())
            }
            Refusal::Link(origin) => format!("{}, which leads out of {within}", link(&origin)),
            Refusal::Missing(None) => {
                format!("\"{}\" is not in the checkout", rel.display())
            }
            Refusal::Missing(Some(origin)) => {
                format!("{}, which leads to nothing in the checkout", link(&origin))
            }
            Refusal::NotDir(p) => format!(
                "\"{}\": \"{}\" is a file, not a directory",
                rel.display(),
                shown(&p).display()
            ),
            Refusal::Special(p, what) => {
                let not = match want {
                    Want::File => "a file",
                    Want::Any => "a file or directory",
                };
                format!("{} is a {what}, not {not}", at(&p))
            }
            Refusal::Loop => format!(
                "\"{}\" goes through more than {MAX_LINKS} symbolic links (a loop?)",
                rel.display()
            ),
            Refusal::Changed(p) => format!(
                "\"{}\" changed while it was being opened",
                shown(&p).display()
            ),
            Refusal::Io(p, e) => {
                return BackendError::Failed(format!(
                    "`with.{key}`: cannot open \"{}\" in the checkout: {}",
                    shown(&p).display(),
                    e.desc().to_lowercase()
                ));
            }
        };
        BackendError::InvalidParameters(format!("`with.{key}`: {message}"))
    }
}

fn io_failed(what: &str, path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::Failed(format!("{what} {}: {e}", path.display()))
}

impl Checkout {
    /// Opens the checkout at `root` (a directory the engine made; the one path followed as is).
    pub fn open(root: impl AsRef<Path>) -> Result<Checkout, BackendError> {
        let root = root.as_ref();
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(root, flags, Mode::empty())
            .map_err(|e| io_failed("cannot open the checkout", root, e.desc().to_lowercase()))?;
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
    /// that path (a dangling link or a missing directory on the way is an error).
    ///
    /// # Errors
    ///
    /// [`BackendError::InvalidParameters`] when the path or a link on its way leads out of the
    /// checkout, goes through more than [`MAX_LINKS`] links, or ends at anything but a file or
    /// directory; [`BackendError::Failed`] when the system refuses to look.
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
