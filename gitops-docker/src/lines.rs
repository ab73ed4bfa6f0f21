//! A container's output as log lines.

use bollard::container::LogOutput;
use bollard::errors::Error as ApiError;
use futures_util::StreamExt;
use gitops_core::backend::{LogSink, LogStream};

/// A container's output turned into log lines: chunks are joined until a newline, and bytes
/// already forwarded are counted per stream, so that a second read of the log (after the
/// container ended) forwards only what the first missed.
pub(crate) struct Lines {
    sink: LogSink,
    partial: [Vec<u8>; 2],
    /// Bytes forwarded (or held in `partial`) per stream.
    seen: [usize; 2],
}

impl Lines {
    pub(crate) fn new(sink: LogSink) -> Lines {
        Lines {
            sink,
            partial: [Vec::new(), Vec::new()],
            seen: [0, 0],
        }
    }

    fn split(chunk: LogOutput) -> Option<(usize, LogStream, bytes::Bytes)> {
        match chunk {
            LogOutput::StdErr { message } => Some((1, LogStream::Stderr, message)),
            LogOutput::StdOut { message } | LogOutput::Console { message } => {
                Some((0, LogStream::Stdout, message))
            }
            LogOutput::StdIn { .. } => None,
        }
    }

    /// Takes the bytes of stream `i` from `offset` on (earlier ones were forwarded already).
    fn feed(&mut self, i: usize, stream: LogStream, bytes: &[u8], offset: usize) {
        let skip = self.seen[i].saturating_sub(offset).min(bytes.len());
        let new = &bytes[skip..];
        self.seen[i] += new.len();
        self.partial[i].extend_from_slice(new);
        while let Some(end) = self.partial[i].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[i].drain(..=end).collect();
            self.sink.line(stream, &String::from_utf8_lossy(&line));
        }
    }

    /// Forwards a log stream; `replay` when it starts from the beginning again.
    pub(crate) async fn read(
        &mut self,
        mut logs: impl futures_util::Stream<Item = Result<LogOutput, ApiError>> + Unpin,
        replay: bool,
    ) {
        let mut offsets = [0usize; 2];
        while let Some(Ok(chunk)) = logs.next().await {
            let Some((i, stream, bytes)) = Self::split(chunk) else {
                continue;
            };
            let offset = if replay { offsets[i] } else { self.seen[i] };
            self.feed(i, stream, &bytes, offset);
            offsets[i] += bytes.len();
        }
    }

    /// Forwards what is left of unfinished lines.
    pub(crate) fn finish(self) {
        for (i, stream) in [(0, LogStream::Stdout), (1, LogStream::Stderr)] {
            if !self.partial[i].is_empty() {
                self.sink
                    .line(stream, &String::from_utf8_lossy(&self.partial[i]));
            }
        }
    }
}
