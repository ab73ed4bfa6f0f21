//! Serve's log lines (standard error) and `--no-run`'s event lines (standard output), written in
//! batches: under load a `write` per line was a tenth of a delivery's cost. Lines are gathered
//! and written together at least every [`EVERY`] (by a thread per stream, which sleeps between
//! rounds and is never woken per line), as soon as [`HIGH_WATER`] bytes wait, and when the
//! process ends ([`Flush`], [`flush_all`]). A warning or an error is written at once, after the
//! log lines that waited before it. Each `write` is of whole lines and at most [`PIPE_BUF`] bytes
//! (unless one line is longer), so that lines from two streams sent to one pipe (`2>&1`) are
//! never torn. What a `kill -9` can lose: the lines of the last [`EVERY`]; the inbox, not the
//! log, is the record of what was accepted. Without the threads (they could not be started),
//! every line is written at once.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

/// Lines wait this long at most.
pub const EVERY: Duration = Duration::from_millis(50);
/// Bytes that may wait before they are written without waiting for the round.
pub const HIGH_WATER: usize = 64 * 1024;
/// The most bytes a pipe takes in one piece (POSIX's `PIPE_BUF` on Linux).
pub const PIPE_BUF: usize = 4096;

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
        self.push_parts(&[bytes], now)
    }

    /// [`Batched::push`] of `parts` one after the other, with nothing between them.
    fn push_parts(&self, parts: &[&[u8]], now: bool) -> io::Result<()> {
        let mut inner = self.lock();
        for part in parts {
            inner.waiting.extend_from_slice(part);
        }
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
        let mut written = Ok(());
        for piece in pieces(&self.waiting) {
            written = self.out.write_all(piece);
            if written.is_err() {
                break;
            }
        }
        let written = written.and_then(|()| self.out.flush());
        self.waiting.clear();
        if self.waiting.capacity() > 4 * HIGH_WATER {
            self.waiting.shrink_to(HIGH_WATER);
        }
        written
    }
}

/// `bytes` in pieces of whole lines, each at most [`PIPE_BUF`] bytes or one longer line.
fn pieces(mut bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::from_fn(move || {
        if bytes.is_empty() {
            return None;
        }
        let end = if bytes.len() <= PIPE_BUF {
            bytes.len()
        } else {
            match bytes[..PIPE_BUF].iter().rposition(|&b| b == b'\n') {
                Some(newline) => newline + 1,
                // One line longer than a pipe takes: written alone.
                None => bytes
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(bytes.len(), |n| n + 1),
            }
        };
        let (piece, rest) = bytes.split_at(end);
        bytes = rest;
        Some(piece)
    })
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
/// Whether the flushing threads run; until then every line is written at once.
static BATCHING: AtomicBool = AtomicBool::new(false);
static STARTED: OnceLock<()> = OnceLock::new();

/// Writes what waits on both streams.
pub fn flush_all() {
    let _ = STDERR.flush();
    let _ = STDOUT.flush();
}

/// Starts the threads that write the lines every [`EVERY`] (once per process), one per stream
/// so that a reader of one that stops reading does not hold the other's lines; the lines
/// waiting are written when the [`Flush`] is dropped.
pub fn start() -> Flush {
    STARTED.get_or_init(|| {
        let streams: [(&str, &'static Batched<Std>); 2] =
            [("log-lines", &STDERR), ("event-lines", &STDOUT)];
        let mut running = true;
        for (name, stream) in streams {
            let started = std::thread::Builder::new()
                .name(name.to_owned())
                .spawn(move || {
                    loop {
                        std::thread::sleep(EVERY);
                        let _ = stream.flush();
                    }
                });
            running &= started.is_ok();
        }
        BATCHING.store(running, Ordering::Release);
    });
    Flush(())
}

/// Writes the lines still waiting when dropped (the server stops, or fails to start).
#[must_use = "the lines still waiting are written when it is dropped"]
pub struct Flush(());

impl Drop for Flush {
    fn drop(&mut self) {
        flush_all();
    }
}

/// Whether a line is written without waiting.
fn written_now(now: bool) -> bool {
    now || !BATCHING.load(Ordering::Acquire)
}

/// `--no-run`'s line for an accepted event.
pub fn event_line(json: &str) {
    let _ = STDOUT.push_parts(&[json.as_bytes(), b"\n"], written_now(false));
}

/// The log's writer: a line of level warning or error is written at once.
#[derive(Clone, Copy)]
pub struct Log;

pub struct LogWriter {
    now: bool,
}

impl Write for LogWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        STDERR.push(bytes, written_now(self.now))?;
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
    fn parts_are_pushed_as_one_line() {
        let b = Batched::new(Vec::new());
        b.push_parts(&[br#"{"kind":"push"}"#, b"\n"], false)
            .unwrap();
        b.push(b"next\n", true).unwrap();
        assert_eq!(written(&b), "{\"kind\":\"push\"}\nnext\n");
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
    fn lines_are_written_in_pieces_a_pipe_takes_whole() {
        let b = Batched::new(Recorder::default());
        let line = |c: u8, n: usize| {
            let mut l = vec![c; n];
            l.push(b'\n');
            l
        };
        // 100-byte lines: 40 fit in a piece of 4,000 bytes; a 10,000-byte line goes alone.
        for _ in 0..100 {
            b.push(&line(b'a', 99), false).unwrap();
        }
        b.push(&line(b'b', 9_999), false).unwrap();
        b.push(&line(b'c', 99), false).unwrap();
        b.flush().unwrap();
        let writes = b.with_out(|r| r.writes.clone());
        let sizes: Vec<usize> = writes.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4_000, 4_000, 2_000, 10_000, 100]);
        assert!(writes.iter().all(|w| w.ends_with(b"\n")));
    }

    /// Each `write` it was given.
    #[derive(Default)]
    struct Recorder {
        writes: Vec<Vec<u8>>,
    }

    impl Write for Recorder {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            self.writes.push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
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
