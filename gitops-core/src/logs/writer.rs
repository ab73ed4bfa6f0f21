//! Writes a run's stage logs as their lines come: one `write` a line, each stage's file capped.

use std::collections::HashMap;
use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use super::LogEntry;
use crate::backend::{LogLine, LogStream};
use crate::scheduler::LogRecorder;

/// The writer of one run's stage logs: give it to the run with
/// [`RunSpec::with_log`](crate::scheduler::RunSpec::with_log), and
/// [`close_stage`](Self::close_stage) each stage as it ends. Files are made readable by their
/// owner only (0600), in folders of the same (0700). Failing to write (a full disk) never fails
/// the run: the line is lost.
#[derive(Debug)]
pub struct RunLogWriter {
    dir: PathBuf,
    max_bytes: u64,
    stages: Mutex<HashMap<String, StageLog>>,
}

#[derive(Debug, Default)]
struct StageLog {
    /// Open while the stage runs; closed when it ends (reopened should a late line come).
    file: Option<File>,
    /// Bytes in the file.
    written: u64,
    /// Past the cap: lines and bytes of text dropped since the last truncation line.
    dropped_lines: u64,
    dropped_bytes: u64,
    attempt: u32,
}

impl RunLogWriter {
    pub(super) fn new(dir: PathBuf, max_bytes: u64) -> RunLogWriter {
        RunLogWriter {
            dir,
            max_bytes,
            stages: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, StageLog>> {
        self.stages.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stage `stage` has ended: its log gets its truncation line, if it reached its cap, and
    /// its file is closed.
    pub fn close_stage(&self, stage: &str) {
        let mut stages = self.lock();
        if let Some(log) = stages.get_mut(stage) {
            self.close(stage, log);
        }
    }

    /// The run has ended: every stage's log is closed as by [`close_stage`](Self::close_stage).
    pub fn close_all(&self) {
        let mut stages = self.lock();
        for (stage, log) in stages.iter_mut() {
            self.close(stage, log);
        }
    }

    fn close(&self, stage: &str, log: &mut StageLog) {
        if log.dropped_lines > 0 {
            let entry = LogEntry {
                t: now_ms(),
                stream: LogStream::Backend,
                attempt: log.attempt,
                line: format!(
                    "log truncated: {} ({} bytes) dropped past the limit of {} bytes",
                    if log.dropped_lines == 1 {
                        "1 line".to_owned()
                    } else {
                        format!("{} lines", log.dropped_lines)
                    },
                    log.dropped_bytes,
                    self.max_bytes
                ),
                dropped: Some(log.dropped_bytes),
            };
            if let Some(bytes) = encode(&entry) {
                self.append(stage, log, &bytes);
            }
            log.dropped_lines = 0;
            log.dropped_bytes = 0;
        }
        log.file = None;
    }

    fn append(&self, stage: &str, log: &mut StageLog, bytes: &[u8]) {
        self.ensure_open(stage, log);
        if let Some(file) = &mut log.file {
            // One write of the whole line: a reader (or a crash) sees it whole or not at all.
            if file.write_all(bytes).is_ok() {
                log.written += bytes.len() as u64;
            }
        }
    }

    /// Opens the stage's file if it is not open, learning its size: a resumed run appends to
    /// what its crashed process wrote, under the same cap.
    fn ensure_open(&self, stage: &str, log: &mut StageLog) {
        if log.file.is_none() {
            log.file = self.open(stage);
            log.written = log
                .file
                .as_ref()
                .and_then(|f| f.metadata().ok())
                .map_or(log.written, |m| m.len());
        }
    }

    fn open(&self, stage: &str) -> Option<File> {
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .ok()?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(self.dir.join(super::file_name(stage)))
            .ok()
    }
}

/// Unix time now, in milliseconds.
fn now_ms() -> u64 {
    (crate::ledger::now() * 1000.0) as u64
}

fn encode(entry: &LogEntry) -> Option<Vec<u8>> {
    let mut bytes = serde_json::to_vec(entry).ok()?;
    bytes.push(b'\n');
    Some(bytes)
}

impl LogRecorder for RunLogWriter {
    fn line(&self, line: &LogLine) {
        let entry = LogEntry {
            t: now_ms(),
            stream: line.stream,
            attempt: line.attempt,
            line: line.line.clone(),
            dropped: None,
        };
        let Some(bytes) = encode(&entry) else { return };
        let mut stages = self.lock();
        let log = match stages.get_mut(&line.stage) {
            Some(log) => log,
            None => stages.entry(line.stage.clone()).or_default(),
        };
        log.attempt = line.attempt;
        self.ensure_open(&line.stage, log);
        if log.dropped_lines > 0 || log.written + bytes.len() as u64 > self.max_bytes {
            log.dropped_lines += 1;
            log.dropped_bytes += line.line.len() as u64;
            return;
        }
        self.append(&line.stage, log, &bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::super::LogStore;
    use super::*;

    fn line(stage: &str, text: &str) -> LogLine {
        LogLine {
            stage: stage.to_owned(),
            attempt: 1,
            stream: LogStream::Stdout,
            line: text.to_owned(),
        }
    }

    #[test]
    fn lines_are_kept_in_order_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        let writer = store.writer("r1").unwrap();
        writer.line(&line("build", "one"));
        writer.line(&line("test", "other"));
        writer.line(&line("build", "two \"quoted\"\ttab"));
        let read: Vec<_> = store
            .read("r1", "build")
            .unwrap()
            .into_iter()
            .map(|e| e.line)
            .collect();
        assert_eq!(read, ["one", "two \"quoted\"\ttab"]);
        assert_eq!(store.stages("r1").unwrap(), ["build", "test"]);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path("r1", "build").unwrap()), 0o600);
        assert_eq!(mode(&store.run_dir("r1").unwrap()), 0o700);
    }

    #[test]
    fn a_log_at_its_cap_keeps_its_lines_and_one_past_it_closes_with_what_was_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let one = encode(&LogEntry {
            t: now_ms(),
            stream: LogStream::Stdout,
            attempt: 1,
            line: "0123456789".to_owned(),
            dropped: None,
        })
        .unwrap()
        .len() as u64;
        // Room for exactly three lines.
        let store = LogStore::new(dir.path()).with_max_bytes(3 * one);
        let writer = store.writer("r1").unwrap();
        for _ in 0..3 {
            writer.line(&line("s", "0123456789"));
        }
        writer.close_stage("s");
        let kept = store.read("r1", "s").unwrap();
        assert_eq!(kept.len(), 3);
        assert!(kept.iter().all(|e| e.dropped.is_none()));

        let writer = store.writer("r2").unwrap();
        for _ in 0..5 {
            writer.line(&line("s", "0123456789"));
        }
        writer.close_stage("s");
        let kept = store.read("r2", "s").unwrap();
        assert_eq!(kept.len(), 4, "{kept:?}");
        let last = &kept[3];
        assert_eq!(last.dropped, Some(20));
        assert_eq!(last.stream, LogStream::Backend);
        assert_eq!(
            last.line,
            format!(
                "log truncated: 2 lines (20 bytes) dropped past the limit of {} bytes",
                3 * one
            )
        );
    }

    #[test]
    fn a_line_being_written_is_left_for_the_next_read() {
        let dir = tempfile::tempdir().unwrap();
        let store = LogStore::new(dir.path());
        store.writer("r1").unwrap().line(&line("s", "whole"));
        let path = store.path("r1", "s").unwrap();
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(br#"{"t":1,"stream":"stdout","attempt":1,"li"#)
            .unwrap();
        let (lines, next) = store.read_from("r1", "s", 0, usize::MAX).unwrap();
        assert_eq!(lines.len(), 1);
        file.write_all(b"ne\":\"later\"}\n").unwrap();
        let (lines, _) = store.read_from("r1", "s", next, usize::MAX).unwrap();
        assert_eq!(lines[0].line, "later");
    }
}
