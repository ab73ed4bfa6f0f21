//! Log lines from stages, with secrets masked before anyone sees them.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::secret::{Masker, Secret};

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
    /// A message of the backend itself (pulling an image, waiting for health).
    Backend,
}

/// One line of a stage's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    /// The stage.
    pub stage: String,
    /// The attempt (1-based).
    pub attempt: u32,
    /// The stream.
    pub stream: LogStream,
    /// The text, without its line ending, secrets masked.
    pub line: String,
}

type Callback = dyn Fn(LogLine) + Send + Sync;

/// What the sinks of one run share: where lines go and what to mask.
pub(crate) struct LogTarget {
    callback: Box<Callback>,
    masker: Masker,
}

impl LogTarget {
    pub(crate) fn new(
        masker: Masker,
        callback: impl Fn(LogLine) + Send + Sync + 'static,
    ) -> Arc<LogTarget> {
        Arc::new(LogTarget {
            callback: Box::new(callback),
            masker,
        })
    }
}

/// Where a backend writes a stage's log lines. Cheap to clone.
#[derive(Clone)]
pub struct LogSink {
    target: Option<Arc<LogTarget>>,
    stage: Arc<str>,
    attempt: u32,
}

impl fmt::Debug for LogSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LogSink")
            .field("stage", &self.stage)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl LogSink {
    /// A sink that drops every line.
    pub fn discard() -> Self {
        LogSink {
            target: None,
            stage: Arc::from(""),
            attempt: 1,
        }
    }

    /// A sink that hands every line of `stage`, secrets masked, to `f`.
    pub fn new(
        stage: &str,
        attempt: u32,
        secrets: Vec<String>,
        f: impl Fn(LogLine) + Send + Sync + 'static,
    ) -> Self {
        let secrets: Vec<Secret> = secrets.into_iter().map(Secret::new).collect();
        LogSink {
            target: Some(LogTarget::new(Masker::new(&secrets), f)),
            stage: Arc::from(stage),
            attempt,
        }
    }

    /// A sink of `stage` into a target shared by many (none: lines are dropped).
    pub(crate) fn shared(target: Option<&Arc<LogTarget>>, stage: &Arc<str>, attempt: u32) -> Self {
        LogSink {
            target: target.cloned(),
            stage: stage.clone(),
            attempt,
        }
    }

    /// Writes one line (a trailing line ending is dropped).
    pub fn line(&self, stream: LogStream, text: &str) {
        let Some(target) = &self.target else { return };
        let text = text.strip_suffix('\n').unwrap_or(text);
        let text = text.strip_suffix('\r').unwrap_or(text);
        (target.callback)(LogLine {
            stage: self.stage.to_string(),
            attempt: self.attempt,
            stream,
            line: target.masker.mask(text),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn masks_secrets_in_every_line() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        let secrets = vec![
            "hunter2".to_owned(),
            "hunter2-long".to_owned(),
            String::new(),
        ];
        let sink = LogSink::new("build", 1, secrets, move |l| {
            s2.lock().unwrap().push(l.line)
        });
        sink.line(LogStream::Stdout, "token=hunter2-long and hunter2\n");
        sink.line(LogStream::Stderr, "nothing secret");
        assert_eq!(
            *seen.lock().unwrap(),
            ["token=*** and ***", "nothing secret"]
        );
        LogSink::discard().line(LogStream::Stdout, "dropped");
    }
}
