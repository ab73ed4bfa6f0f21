//! Serve's log lines (standard error) and `--no-run`'s event lines (standard output), written in
//! batches: under load a `write` per line was a tenth of a delivery's cost. Lines are gathered
//! and written together at least every [`EVERY`] (by a thread of their own, which sleeps between
//! rounds and is never woken per line), as soon as [`HIGH_WATER`] bytes wait, and when the server
//! stops ([`Flush`]). A warning or an error is written at once, after what waited before it, so
//! that what precedes an exit is never held back. What a `kill -9` can lose: the lines of the
//! last [`EVERY`]; the inbox, not the log, is the record of what was accepted.

use std::io::{self, Write};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Lines wait this long at most.
pub const EVERY: Duration = Duration::from_millis(50);
/// Bytes that may wait before they are written without waiting for the round.
pub const HIGH_WATER: usize = 64 * 1024;

/// Lines waiting for one stream, in the order they came.
pub struct Batched<W> {
    inner: Mutex<Inner<W>>,
}

struct Inner<W> {
    waiting: Vec<u8>,
    out: W,
}

impl<W: Write> Batched<W> {
    pub const fn new(out: W) -> Batched<W> {
        Batched {
            inner: Mutex::new(Inner {
                waiting: Vec::new(),
                out,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner<W>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds `bytes` (whole lines); written with what waits when `now`, or past the high water.
    pub fn push(&self, bytes: &[u8], now: bool) -> io::Result<()> {
        let mut inner = self.lock();
        inner.waiting.extend_from_slice(bytes);
        if now || inner.waiting.len() >= HIGH_WATER {
            inner.write_out()
        } else {
            Ok(())
        }
    }

    /// Writes what waits.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().write_out()
    }

    /// Runs `f` with the stream itself, once what waits is written (for tests).
    #[cfg(test)]
    fn with_out<T>(&self, f: impl FnOnce(&mut W) -> T) -> T {
        f(&mut self.lock().out)
    }
}

impl<W: Write> Inner<W> {
    fn write_out(&mut self) -> io::Result<()> {
        if self.waiting.is_empty() {
            return Ok(());
        }
        // Written even when it fails (a full disk): lines are not kept to grow without end.
        let written = self
            .out
            .write_all(&self.waiting)
            .and_then(|()| self.out.flush());
        self.waiting.clear();
        if self.waiting.capacity() > 4 * HIGH_WATER {
            self.waiting.shrink_to(HIGH_WATER);
        }
        written
    }
}

/// Standard output or error, as a `Write` a static can hold.
struct Std(fn(&[u8]) -> io::Result<()>);

impl Write for Std {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        (self.0)(bytes)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

static STDOUT: Batched<Std> = Batched::new(Std(|b| {
    let mut out = io::stdout().lock();
    out.write_all(b).and_then(|()| out.flush())
}));
static STDERR: Batched<Std> = Batched::new(Std(|b| io::stderr().lock().write_all(b)));
static FLUSHER: OnceLock<()> = OnceLock::new();

/// Writes what waits on both streams.
fn flush_both() {
    let _ = STDERR.flush();
    let _ = STDOUT.flush();
}

/// Starts the thread that writes the lines every [`EVERY`] (once per process); the lines
/// waiting are written when the [`Flush`] is dropped.
pub fn start() -> Flush {
    FLUSHER.get_or_init(|| {
        let started = std::thread::Builder::new()
            .name("log-lines".to_owned())
            .spawn(|| {
                loop {
                    std::thread::sleep(EVERY);
                    flush_both();
                }
            });
        if let Err(e) = started {
            // Without the thread lines are still written: at the high water, at a warning, at
            // the end.
            let _ = writeln!(io::stderr(), "gitops: log lines are written late: {e}");
        }
    });
    Flush(())
}

/// Writes the lines still waiting when dropped (the server stops, or fails to start).
#[must_use = "the lines still waiting are written when it is dropped"]
pub struct Flush(());

impl Drop for Flush {
    fn drop(&mut self) {
        flush_both();
    }
}

/// `--no-run`'s line for an accepted event.
pub fn event_line(json: &str) {
    let mut line = Vec::with_capacity(json.len() + 1);
    line.extend_from_slice(json.as_bytes());
    line.push(b'\n');
    let _ = STDOUT.push(&line, false);
}

/// The log's writer: a line of level warning or error is written at once.
#[derive(Clone, Copy)]
pub struct Log;

pub struct LogWriter {
    now: bool,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        STDERR.push(bytes, self.now)?;
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Log {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> LogWriter {
        LogWriter { now: true }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> LogWriter {
        LogWriter {
            now: at_once(meta.level()),
        }
    }
}

/// Whether a line of `level` is written at once: a warning or an error.
fn at_once(level: &tracing::Level) -> bool {
    *level <= tracing::Level::WARN
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What reached the stream, as text.
    fn written(b: &Batched<Vec<u8>>) -> String {
        b.with_out(|out| String::from_utf8(out.clone()).unwrap())
    }

    #[test]
    fn lines_wait_until_a_flush_then_are_written_in_order() {
        let b = Batched::new(Vec::new());
        b.push(b"one\n", false).unwrap();
        b.push(b"two\n", false).unwrap();
        assert_eq!(written(&b), "");
        b.flush().unwrap();
        assert_eq!(written(&b), "one\ntwo\n");
        b.flush().unwrap();
        assert_eq!(written(&b), "one\ntwo\n");
    }

    #[test]
    fn a_line_written_now_takes_what_waited_before_it_first() {
        let b = Batched::new(Vec::new());
        b.push(b"info\n", false).unwrap();
        b.push(b"warning\n", true).unwrap();
        assert_eq!(written(&b), "info\nwarning\n");
    }

    #[test]
    fn lines_past_the_high_water_are_written_without_waiting() {
        let b = Batched::new(Vec::new());
        let line = [b'x'; 99].iter().chain(b"\n").copied().collect::<Vec<u8>>();
        let mut pushed = 0;
        while pushed + line.len() < HIGH_WATER {
            b.push(&line, false).unwrap();
            pushed += line.len();
        }
        assert_eq!(written(&b).len(), 0);
        b.push(&line, false).unwrap();
        assert_eq!(written(&b).len(), pushed + line.len());
    }

    #[test]
    fn a_failing_stream_drops_the_lines_instead_of_keeping_them() {
        struct Full;
        impl Write for Full {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::other("no space left on device"))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let b = Batched::new(Full);
        b.push(b"lost\n", false).unwrap();
        assert!(b.flush().is_err());
        assert!(b.lock().waiting.is_empty());
        assert!(b.flush().is_ok());
    }

    #[test]
    fn warnings_and_errors_are_written_at_once_and_the_rest_waits() {
        use tracing::Level;
        let now: Vec<bool> = [
            Level::ERROR,
            Level::WARN,
            Level::INFO,
            Level::DEBUG,
            Level::TRACE,
        ]
        .iter()
        .map(at_once)
        .collect();
        assert_eq!(now, [true, true, false, false, false]);
    }
}
