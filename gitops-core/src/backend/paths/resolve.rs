//! Resolving one path under a directory handle, and the words for what is refused.

use std::collections::VecDeque;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::rc::Rc;

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, openat, readlinkat};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};

use super::{Kind, MAX_LINKS};
use crate::backend::BackendError;

/// The link (its path, its target) a component to resolve comes from, if any.
pub(super) type Origin = Option<Rc<(PathBuf, PathBuf)>>;

/// Why a path was refused, before it is put into words.
pub(super) enum Refusal {
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
pub(super) enum Want {
    File,
    Any,
}

/// Where a path was resolved, and the descriptors to open it with.
pub(super) struct Found {
    pub(super) path: PathBuf,
    pub(super) kind: Kind,
    /// The directory holding it, or (with no `name`) the directory itself.
    at: OwnedFd,
    name: Option<OsString>,
    stat: FileStat,
}

/// What a `stat` says the file is; `Err` names a kind that is neither file, directory nor link.
pub(super) fn kind_of(stat: &FileStat) -> Result<SFlag, &'static str> {
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
pub(super) fn resolve_in(root: BorrowedFd<'_>, rel: &Path) -> Result<Found, Refusal> {
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
    pub(super) fn open_file(&self) -> Result<File, Refusal> {
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
    pub(super) fn open_dir(&self) -> Result<OwnedFd, Refusal> {
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
pub(super) fn open_real_dir(top: BorrowedFd<'_>, dir: &Path) -> Result<OwnedFd, Refusal> {
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
pub(super) fn plain(path: &Path) -> PathBuf {
    path.components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

impl Refusal {
    /// The refusal in words: `` `with.<key>`: "<rel>" ... ``. Paths found while resolving are
    /// relative to `base` (within the checkout), and `within` is what they must not leave.
    pub(super) fn error(
        self,
        key: &str,
        rel: &Path,
        base: &Path,
        within: &str,
        want: Want,
    ) -> BackendError {
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
                return BackendError::failed_with(
                    format!(
                        "`with.{key}`: cannot open \"{}\" in the checkout",
                        shown(&p).display()
                    ),
                    e,
                );
            }
        };
        BackendError::InvalidParameters(format!("`with.{key}`: {message}"))
    }
}
