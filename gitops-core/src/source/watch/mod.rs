//! A watcher over a Git repository (with gix; no `git` subprocess): it snapshots every ref
//! (branches, tags, `refs/pull/<n>/head`, `refs/merge-requests/<n>/head`) and turns the difference
//! between two snapshots into [`GitEvent`]s. The last snapshot is kept in the state dir, so that
//! a restarted watcher reports what changed while it was down, once. A remote repository is
//! watched through a local mirror fetched from its URL. A poll after which nothing changed
//! costs a few `stat`s, not a listing: the ref storage's stat data is compared with the last
//! poll's first.
//!
//! ```no_run
//! # fn main() -> Result<(), gitops_core::Error> {
//! use gitops_core::source::watch::Watcher;
//! let mut watcher = Watcher::open("https://example.com/org/app.git", "/var/lib/gitops".as_ref())?;
//! for event in watcher.poll()?.events {
//!     println!("{}", serde_json::to_string(&event).unwrap());
//! }
//! # Ok(()) }
//! ```

mod diff;
mod fingerprint;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use diff::{Refs, events_between, open_pull_requests};

use crate::backend::BoxError;
use crate::event::GitEvent;
use crate::repo::{RepoError, Repository, fetch_mirror};
use fingerprint::{Fingerprint, RefStorage};

/// How much older than the moment it is taken the ref storage's newest stamp must be for a
/// fingerprint to be trusted: a change in the same clock tick as a stamp would go unseen.
pub const RACY_MARGIN: Duration = Duration::from_secs(2);

/// Why a watcher cannot open or poll its repository.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WatchError {
    /// The repository (or its mirror) cannot be read or fetched.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// The watcher cannot keep its snapshot in the state dir.
    #[error("watching {repo}: {message}")]
    Snapshot {
        /// The repository watched.
        repo: String,
        /// What is wrong (`snapshot FILE`).
        message: String,
        /// Why.
        #[source]
        source: BoxError,
    },
}

/// Where a watched repository lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RepoSource {
    /// A repository on this machine, read in place.
    Path(PathBuf),
    /// A remote repository (`file://`, `git://`, ...), read through a mirror in the state dir.
    Url(String),
}

impl RepoSource {
    /// A URL when `s` has a scheme (`file://...`, `git://...`), else a path.
    pub fn parse(s: &str) -> RepoSource {
        if s.contains("://") {
            RepoSource::Url(s.to_owned())
        } else {
            RepoSource::Path(PathBuf::from(s))
        }
    }

    fn describe(&self) -> String {
        match self {
            RepoSource::Path(p) => p.display().to_string(),
            RepoSource::Url(u) => u.clone(),
        }
    }
}

/// What one poll found.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Poll {
    /// What changed since the last snapshot, in order.
    pub events: Vec<GitEvent>,
    /// This was the first snapshot of the repository: the baseline, which reports nothing.
    pub baseline: bool,
    /// The pull requests whose head ref exists now (for the engine's `reconcile`, which stops
    /// the environments of those that are gone).
    pub open_pull_requests: Vec<u64>,
    /// The refs were listed; `false` when the ref storage was as at the last poll (for tests
    /// and benchmarks).
    #[doc(hidden)]
    pub listed: bool,
}

/// Watches one repository.
#[derive(Debug)]
pub struct Watcher {
    source: RepoSource,
    repo: Repository,
    mirror: Option<PathBuf>,
    snapshot_file: PathBuf,
    repo_name: String,
    base_branch: Option<String>,
    /// The last snapshot as saved, with the file's length and modification time then: reused
    /// while the file is unchanged, read again when something else wrote it.
    last: Option<(Refs, u64, std::time::SystemTime)>,
    /// Where the refs are, `None` when they are not in files (every poll lists them then).
    storage: Option<RefStorage>,
    racy_margin: Duration,
    /// The fingerprint taken just before the refs of `last` were listed, with their open pull
    /// requests.
    seen: Option<(Fingerprint, Vec<u64>)>,
}

/// A file name for `key`: readable, and unique by a hash of the whole key.
fn file_key(key: &str) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    let last = key
        .rsplit(['/', '\\', ':'])
        .find(|s| !s.is_empty())
        .unwrap_or("repo");
    let readable = crate::backend::names::sanitize(last, 40, "-_.", '_');
    format!("{readable}-{:016x}", h.finish())
}

impl Watcher {
    /// A watcher of `source` (a directory, or a URL mirrored under `<state>/mirrors`) that keeps
    /// its snapshot under `<state>/watch`. Fetches a URL's mirror for the first time.
    pub fn open(source: &str, state_dir: &Path) -> Result<Watcher, WatchError> {
        let source = RepoSource::parse(source);
        // The key names the snapshot (and the mirror) in the state dir.
        let (key, repo, mirror, repo_name) = match &source {
            RepoSource::Path(p) => {
                let path = p.canonicalize().map_err(|e| RepoError::Open {
                    path: p.clone(),
                    message: e.to_string(),
                })?;
                let name = path
                    .file_name()
                    .map_or_else(|| "repo".to_owned(), |n| n.to_string_lossy().into_owned());
                (path.display().to_string(), Repository::open(p)?, None, name)
            }
            RepoSource::Url(url) => {
                let dir = state_dir
                    .join("mirrors")
                    .join(format!("{}.git", file_key(url)));
                let mut parts: Vec<&str> = url
                    .trim_end_matches('/')
                    .trim_end_matches(".git")
                    .rsplit('/')
                    .take(2)
                    .collect();
                parts.reverse();
                (
                    url.clone(),
                    fetch_mirror(url, &dir)?,
                    Some(dir),
                    parts.join("/"),
                )
            }
        };
        let storage = repo.ref_dirs().map(|(git_dir, common_dir)| RefStorage {
            git_dir,
            common_dir,
        });
        Ok(Watcher {
            storage,
            racy_margin: RACY_MARGIN,
            seen: None,
            snapshot_file: state_dir
                .join("watch")
                .join(format!("{}.refs", file_key(&key))),
            source,
            repo,
            mirror,
            repo_name,
            base_branch: None,
            last: None,
        })
    }

    /// The branch pull requests merge into, to tell merged from closed (default: the branch
    /// `HEAD` names, else `main`).
    pub fn with_base_branch(mut self, branch: impl Into<String>) -> Self {
        self.base_branch = Some(branch.into());
        self
    }

    /// The `repo` of the events (default: the directory's name, or the URL's last two parts).
    pub fn with_repo_name(mut self, name: impl Into<String>) -> Self {
        self.repo_name = name.into();
        self
    }

    /// Another racy margin than [`RACY_MARGIN`] (for tests and benchmarks, which cannot wait
    /// it out; a shorter one may miss a change made in the same clock tick as a poll).
    #[doc(hidden)]
    pub fn with_racy_margin(mut self, margin: Duration) -> Self {
        self.racy_margin = margin;
        self
    }

    /// The repository read (the mirror, for a URL).
    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    /// What it watches.
    pub fn source(&self) -> &RepoSource {
        &self.source
    }

    /// The `repo` its events carry.
    pub fn repo_name(&self) -> &str {
        &self.repo_name
    }

    /// Fetches (for a URL), takes a snapshot, and returns the events since the last one; the
    /// new snapshot is saved before returning, so each change is reported once. The first
    /// snapshot of a repository is the baseline and reports nothing.
    ///
    /// The refs are not listed when the ref storage's stat data is as it was just before the
    /// last listing, that fingerprint was older than [`RACY_MARGIN`], and the snapshot in the
    /// state dir is the one this watcher left.
    pub fn poll(&mut self) -> Result<Poll, WatchError> {
        if let (RepoSource::Url(url), Some(dir)) = (&self.source, &self.mirror) {
            fetch_mirror(url, dir)?;
        }
        // Taken before listing: a change after it changes the next fingerprint.
        let print = self
            .storage
            .as_ref()
            .and_then(|s| Fingerprint::take(s, self.racy_margin));
        if let (Some(print), Some((seen, open))) = (&print, &self.seen) {
            if print.unchanged_since(seen) && self.last_is_current() {
                return Ok(Poll {
                    events: Vec::new(),
                    baseline: false,
                    open_pull_requests: open.clone(),
                    listed: false,
                });
            }
        }
        // Until this poll succeeds, the next one lists.
        self.seen = None;
        let new = self.repo.refs()?;
        let old = self.load()?;
        let base = self
            .base_branch
            .clone()
            .or_else(|| self.repo.head_branch())
            .unwrap_or_else(|| "main".to_owned());
        let events = match &old {
            Some(old) => events_between(old, &new, &self.repo, &self.repo_name, &base)?,
            None => Vec::new(),
        };
        let poll = Poll {
            events,
            baseline: old.is_none(),
            open_pull_requests: open_pull_requests(&new),
            listed: true,
        };
        if old.as_ref() != Some(&new) {
            self.save(new)?;
        } else if let Some(old) = old {
            self.keep(old);
        }
        self.seen = print.map(|p| (p, poll.open_pull_requests.clone()));
        Ok(poll)
    }

    fn state_err(&self, e: impl Into<BoxError>) -> WatchError {
        WatchError::Snapshot {
            repo: self.source.describe(),
            message: format!("snapshot {}", self.snapshot_file.display()),
            source: e.into(),
        }
    }

    /// The file's length and modification time, to tell whether it changed.
    fn stamp(&self) -> Option<(u64, std::time::SystemTime)> {
        let meta = std::fs::metadata(&self.snapshot_file).ok()?;
        Some((meta.len(), meta.modified().ok()?))
    }

    /// Keeps `refs`, just read or written, for the next poll.
    fn keep(&mut self, refs: Refs) {
        self.last = self.stamp().map(|(len, time)| (refs, len, time));
    }

    /// Whether the snapshot in memory is the one in the state dir.
    fn last_is_current(&self) -> bool {
        self.last
            .as_ref()
            .is_some_and(|(_, len, time)| self.stamp() == Some((*len, *time)))
    }

    /// The last snapshot: the one in memory while the file is as it was left, else the file.
    fn load(&mut self) -> Result<Option<Refs>, WatchError> {
        if let Some((refs, len, time)) = self.last.take() {
            if self.stamp() == Some((len, time)) {
                return Ok(Some(refs));
            }
        }
        self.read()
    }

    /// Reads the last snapshot: one `<commit> <ref>` line per ref, as `packed-refs` has them.
    fn read(&self) -> Result<Option<Refs>, WatchError> {
        let text = match std::fs::read_to_string(&self.snapshot_file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.state_err(e)),
        };
        text.lines()
            .enumerate()
            .map(|(i, line)| match line.split_once(' ') {
                Some((sha, name))
                    if sha.len() >= 40
                        && sha.bytes().all(|b| b.is_ascii_hexdigit())
                        && name.starts_with("refs/") =>
                {
                    Ok((name.to_owned(), sha.to_owned()))
                }
                _ => Err(self.state_err(format!(
                    "line {}: expected \"<commit> <ref>\", found {line:?}",
                    i + 1
                ))),
            })
            .collect::<Result<Refs, _>>()
            .map(Some)
    }

    /// Writes the snapshot atomically (a crash leaves the old one or the new one) and keeps it.
    fn save(&mut self, refs: Refs) -> Result<(), WatchError> {
        let dir = self
            .snapshot_file
            .parent()
            .ok_or_else(|| self.state_err("no directory"))?;
        std::fs::create_dir_all(dir).map_err(|e| self.state_err(e))?;
        let tmp = self.snapshot_file.with_extension("tmp");
        let mut text = String::with_capacity(refs.len() * 80);
        for (name, sha) in &refs {
            text.push_str(sha);
            text.push(' ');
            text.push_str(name);
            text.push('\n');
        }
        std::fs::write(&tmp, text).map_err(|e| self.state_err(e))?;
        std::fs::rename(&tmp, &self.snapshot_file).map_err(|e| self.state_err(e))?;
        self.keep(refs);
        Ok(())
    }
}
