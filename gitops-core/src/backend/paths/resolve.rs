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
    let mut walk = Walk::new(root, rel)?;
    while let Some((name, origin)) = walk.pending.pop_front() {
        if name == ".." {
            walk.climb(origin)?;
        } else if let Some(found) = walk.step(name, origin)? {
            return Ok(found);
        }
    }
    walk.at_directory()
}

/// A resolution under way: the components still to walk (a link's target goes first), and the
/// directories entered, each by a descriptor.
struct Walk<'a> {
    root: BorrowedFd<'a>,
    pending: VecDeque<(OsString, Origin)>,
    stack: Vec<(OsString, OwnedFd)>,
    links: usize,
}

impl<'a> Walk<'a> {
    /// The components of `rel` to walk from `root`; an absolute path is refused.
    fn new(root: BorrowedFd<'a>, rel: &Path) -> Result<Self, Refusal> {
        let mut pending = VecDeque::new();
        for c in rel.components() {
            match c {
                Component::Normal(s) => pending.push_back((s.to_owned(), None)),
                Component::ParentDir => pending.push_back(("..".into(), None)),
                Component::CurDir => {}
                Component::RootDir | Component::Prefix(_) => return Err(Refusal::Outside),
            }
        }
        Ok(Walk {
            root,
            pending,
            stack: Vec::new(),
            links: 0,
        })
    }

    /// The directory reached.
    fn cur(&self) -> BorrowedFd<'_> {
        self.stack.last().map_or(self.root, |(_, fd)| fd.as_fd())
    }

    /// Where the directory reached is, below the root.
    fn here(&self) -> PathBuf {
        self.stack.iter().map(|(n, _)| n.as_os_str()).collect()
    }

    /// `..`: out of the directory last entered; refused at the root.
    fn climb(&mut self, origin: Origin) -> Result<(), Refusal> {
        match self.stack.pop() {
            Some(_) => Ok(()),
            None => Err(origin.map_or(Refusal::Outside, Refusal::Link)),
        }
    }

    /// One component, `name`: a link queues its target, a directory on the way is entered, and
    /// the last component is what was found.
    fn step(&mut self, name: OsString, origin: Origin) -> Result<Option<Found>, Refusal> {
        let path = self.here().join(&name);
        let stat = match fstatat(self.cur(), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(s) => s,
            Err(Errno::ENOENT) => return Err(Refusal::Missing(origin)),
            Err(e) => return Err(Refusal::Io(path, e)),
        };
        let last = self.pending.is_empty();
        match kind_of(&stat) {
            Err(what) => Err(Refusal::Special(path, what)),
            Ok(SFlag::S_IFLNK) => self.follow(name, path).map(|()| None),
            Ok(SFlag::S_IFDIR) if !last => self.enter(name, path).map(|()| None),
            Ok(SFlag::S_IFDIR) => self.found(Kind::Dir, path, name, stat).map(Some),
            Ok(_) if last => self.found(Kind::File, path, name, stat).map(Some),
            Ok(_) => Err(Refusal::NotDir(path)),
        }
    }

    /// The link `name` (at `path`): its target's components are walked next; an empty target,
    /// an absolute one, or one link too many is refused.
    fn follow(&mut self, name: OsString, path: PathBuf) -> Result<(), Refusal> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(Refusal::Loop);
        }
        let target = PathBuf::from(
            readlinkat(self.cur(), name.as_os_str()).map_err(|e| Refusal::Io(path.clone(), e))?,
        );
        let origin = Rc::new((path, target));
        if origin.1.as_os_str().is_empty() {
            return Err(Refusal::Missing(Some(origin)));
        }
        if origin.1.has_root() {
            return Err(Refusal::Link(origin));
        }
        for c in origin.1.components().rev() {
            match c {
                Component::Normal(s) => self
                    .pending
                    .push_front((s.to_owned(), Some(origin.clone()))),
                Component::ParentDir => {
                    self.pending.push_front(("..".into(), Some(origin.clone())))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The directory `name` (at `path`) on the way, entered by a descriptor that follows no
    /// link: one that changed since it was looked at is refused.
    fn enter(&mut self, name: OsString, path: PathBuf) -> Result<(), Refusal> {
        let flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = match openat(self.cur(), name.as_os_str(), flags, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::ELOOP | Errno::ENOTDIR | Errno::ENOENT) => {
                return Err(Refusal::Changed(path));
            }
            Err(e) => return Err(Refusal::Io(path, e)),
        };
        self.stack.push((name, fd));
        Ok(())
    }

    /// What the path names: `name` in the directory reached.
    fn found(
        &self,
        kind: Kind,
        path: PathBuf,
        name: OsString,
        stat: FileStat,
    ) -> Result<Found, Refusal> {
        Ok(Found {
            path,
            kind,
            at: dup(self.cur(), &self.stack)?,
            name: Some(name),
            stat,
        })
    }

    /// The path ends at a directory reached by `..`, or is the root itself.
    fn at_directory(self) -> Result<Found, Refusal> {
        let path = self.here();
        let cur = self.cur();
        let stat = fstat(cur).map_err(|e| Refusal::Io(path.clone(), e))?;
        Ok(Found {
            path,
            kind: Kind::Dir,
            at: dup(cur, &self.stack)?,
            name: None,
            stat,
        })
    }
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
