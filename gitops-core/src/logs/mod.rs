//! Stage logs kept in the state dir: a file of JSON lines per stage of a run
//! (`logs/<run>/<stage>.log`), written line by line as the stage writes them (secrets already
//! masked), capped per stage, read back, followed while the run goes on, and removed with
//! their run.
//!
//! One line of a file is one [`LogEntry`]:
//! `{"t":1712345678123,"stream":"stdout","attempt":1,"line":"compiling"}`. A line is written
//! with one `write` as it comes, never buffered, so that what a stage printed before its
//! process was killed is there; a reader takes complete lines only, so a line being written
//! is never read half.

mod follow;
mod writer;

pub use follow::{FollowedLine, LogFollower};
pub use writer::RunLogWriter;

use std::io::{BufRead, Seek};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backend::LogStream;
use crate::ledger::Ledger;

/// The folder of the state dir that holds the logs.
pub const LOGS_DIR: &str = "logs";

/// The default cap on one stage's log, in bytes of the file: 10 MiB.
pub const DEFAULT_MAX_LOG_BYTES: u64 = 10 * 1024 * 1024;

/// One kept line of a stage's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct LogEntry {
    /// When it was kept, in Unix milliseconds.
    pub t: u64,
    /// The stream it came from (`stdout` for a backend that merges both streams to keep their
    /// order, such as the local one).
    pub stream: LogStream,
    /// The attempt of the stage that wrote it (1-based).
    pub attempt: u32,
    /// The text, secrets masked.
    pub line: String,
    /// On the line that closes a log that reached its cap: the bytes of text dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dropped: Option<u64>,
}

/// Why a stage log could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The file system failed.
    #[error("stage log {path}: {message}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A run id that cannot name a run (it could name a path outside the logs).
    #[error("\"{0}\" is not a run id")]
    BadRunId(String),
}

fn io_error(path: &Path, e: &std::io::Error) -> LogError {
    LogError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// The stage logs of a state dir. Cheap to clone.
#[derive(Debug, Clone)]
pub struct LogStore {
    dir: PathBuf,
    max_bytes: u64,
}

impl LogStore {
    /// The logs of `state_dir`, each stage's capped at [`DEFAULT_MAX_LOG_BYTES`].
    pub fn new(state_dir: &Path) -> LogStore {
        LogStore {
            dir: state_dir.join(LOGS_DIR),
            max_bytes: DEFAULT_MAX_LOG_BYTES,
        }
    }

    /// The same logs with each stage's capped at `max_bytes` of file: past it, lines are
    /// dropped and counted, and the stage's log closes with a line saying how much.
    pub fn with_max_bytes(mut self, max_bytes: u64) -> LogStore {
        self.max_bytes = max_bytes;
        self
    }

    /// The cap on one stage's log, in bytes.
    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    /// The folder of a run's logs.
    pub fn run_dir(&self, run: &str) -> Result<PathBuf, LogError> {
        if run.is_empty()
            || !run
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(LogError::BadRunId(run.to_owned()));
        }
        Ok(self.dir.join(run))
    }

    /// The file of a stage's log (which may not exist: a stage that printed nothing has none).
    pub fn path(&self, run: &str, stage: &str) -> Result<PathBuf, LogError> {
        Ok(self.run_dir(run)?.join(file_name(stage)))
    }

    /// A writer of run `run`'s logs, for [`RunSpec::with_log`](crate::scheduler::RunSpec::with_log).
    pub fn writer(&self, run: &str) -> Result<RunLogWriter, LogError> {
        Ok(RunLogWriter::new(self.run_dir(run)?, self.max_bytes))
    }

    /// The stages of `run` that have a log, in the order their first lines were kept.
    pub fn stages(&self, run: &str) -> Result<Vec<String>, LogError> {
        let dir = self.run_dir(run)?;
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&dir, &e)),
        };
        let mut stages = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&dir, &e))?;
            let Some(stage) = entry.file_name().to_str().and_then(stage_name) else {
                continue;
            };
            let first = self
                .read_from(run, &stage, 0, 1)?
                .0
                .first()
                .map_or(u64::MAX, |l| l.t);
            stages.push((first, stage));
        }
        stages.sort();
        Ok(stages.into_iter().map(|(_, s)| s).collect())
    }

    /// Every kept line of a stage's log (none when it has no log).
    pub fn read(&self, run: &str, stage: &str) -> Result<Vec<LogEntry>, LogError> {
        Ok(self.read_from(run, stage, 0, usize::MAX)?.0)
    }

    /// At most `limit` complete lines of a stage's log from byte `offset` on, and the offset
    /// after them: where to read from next time (a line still being written is left for then).
    /// A line that cannot be parsed (a log written by something else) is skipped.
    pub fn read_from(
        &self,
        run: &str,
        stage: &str,
        offset: u64,
        limit: usize,
    ) -> Result<(Vec<LogEntry>, u64), LogError> {
        let path = self.path(run, stage)?;
        let mut file = match std::fs::File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((Vec::new(), offset)),
            Err(e) => return Err(io_error(&path, &e)),
        };
        file.seek(std::io::SeekFrom::Start(offset))
            .map_err(|e| io_error(&path, &e))?;
        let mut reader = std::io::BufReader::new(file);
        let (mut lines, mut next, mut buf) = (Vec::new(), offset, Vec::new());
        while lines.len() < limit {
            buf.clear();
            let n = reader
                .read_until(b'\n', &mut buf)
                .map_err(|e| io_error(&path, &e))?;
            if n == 0 || buf.last() != Some(&b'\n') {
                break;
            }
            next += n as u64;
            if let Ok(entry) = serde_json::from_slice(&buf) {
                lines.push(entry);
            }
        }
        Ok((lines, next))
    }

    /// Follows the logs of `run` (of its stage `stage` only, when given) from their start
    /// until it ends: see [`LogFollower`]. Whether the run has ended is read from `ledger`, so
    /// the run may be in another process sharing the state dir.
    pub fn follow(&self, ledger: &Ledger, run: &str, stage: Option<&str>) -> LogFollower {
        LogFollower::new(self.clone(), ledger.clone(), run, stage)
    }

    /// Removes a run's logs (nothing when it has none).
    pub fn remove_run(&self, run: &str) -> Result<(), LogError> {
        let dir = self.run_dir(run)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_error(&dir, &e)),
            _ => Ok(()),
        }
    }

    /// The runs that have logs, by id.
    pub fn runs(&self) -> Result<Vec<String>, LogError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.dir, &e)),
        };
        let mut runs = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| io_error(&self.dir, &e))?;
            if let Some(name) = entry.file_name().to_str() {
                if self.run_dir(name).is_ok() {
                    runs.push(name.to_owned());
                }
            }
        }
        Ok(runs)
    }
}

/// A stage's file name: the id with every byte but `[A-Za-z0-9_-]` as `%XX` (so that no id
/// names a path elsewhere, `..` included), and `.log`.
fn file_name(stage: &str) -> String {
    let mut name = String::with_capacity(stage.len() + 4);
    for b in stage.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            name.push(b as char);
        } else {
            name.push_str(&format!("%{b:02X}"));
        }
    }
    name + ".log"
}

/// The stage whose log file is `name`, if it is one.
fn stage_name(name: &str) -> Option<String> {
    let encoded = name.strip_suffix(".log")?.as_bytes();
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut i = 0;
    while i < encoded.len() {
        if encoded[i] == b'%' {
            let hex = std::str::from_utf8(encoded.get(i + 1..i + 3)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            bytes.push(encoded[i]);
            i += 1;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_ids_name_files_in_the_run_folder_only() {
        for id in ["build", "a.b", "../x", "a/b", "é", "%41"] {
            let name = file_name(id);
            assert!(!name.contains('/') && !name.starts_with(".."), "{name}");
            assert_eq!(stage_name(&name).as_deref(), Some(id));
        }
        let store = LogStore::new(Path::new("/s"));
        assert!(store.run_dir("../x").is_err());
        assert!(store.run_dir("").is_err());
        assert_eq!(
            store.path("r1-ab", "build").unwrap(),
            Path::new("/s/logs/r1-ab/build.log")
        );
    }
}
