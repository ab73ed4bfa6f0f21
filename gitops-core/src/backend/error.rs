//! [`BackendError`]: why a backend could not carry out a call, with the error that caused it;
//! [`ErrorChain`] shows an error with its causes.

use std::error::Error;
use std::fmt;
use std::path::Path;

/// Any error, as the cause of another.
pub type BoxError = Box<dyn Error + Send + Sync + 'static>;

/// Why a backend could not carry out a call at all (as opposed to a stage that ran and failed).
///
/// Its message says what failed; the error that caused it, when there is one (the Docker
/// engine's, the cluster's, the file system's, a process's), is its
/// [`source`](Error::source), for a caller to inspect and for [`ErrorChain`] to show.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The infrastructure it needs does not answer (no Docker daemon, no cluster).
    #[error("backend unavailable: {message}")]
    Unavailable {
        /// What is unavailable, for people.
        message: String,
        /// What it failed with.
        #[source]
        source: Option<BoxError>,
    },
    /// The stage's parameters make no sense for this backend.
    #[error("invalid parameters: {0}")]
    InvalidParameters(String),
    /// The call was cancelled and stopped what it had started.
    #[error("cancelled")]
    Cancelled,
    /// Anything else.
    #[error("{message}")]
    Failed {
        /// What failed, for people.
        message: String,
        /// What it failed with.
        #[source]
        source: Option<BoxError>,
    },
}

impl BackendError {
    /// [`Unavailable`](Self::Unavailable), with no cause to tell.
    pub fn unavailable(message: impl Into<String>) -> Self {
        BackendError::Unavailable {
            message: message.into(),
            source: None,
        }
    }

    /// [`Unavailable`](Self::Unavailable) because of `source`.
    pub fn unavailable_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        BackendError::Unavailable {
            message: message.into(),
            source: Some(source.into()),
        }
    }

    /// [`Failed`](Self::Failed), with no cause to tell.
    pub fn failed(message: impl Into<String>) -> Self {
        BackendError::Failed {
            message: message.into(),
            source: None,
        }
    }

    /// [`Failed`](Self::Failed) because of `source`.
    pub fn failed_with(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        BackendError::Failed {
            message: message.into(),
            source: Some(source.into()),
        }
    }
}

/// [`BackendError::Failed`]: `what` (`cannot read`) failed on `path` because of `source`.
pub(crate) fn io_failed(what: &str, path: &Path, source: impl Into<BoxError>) -> BackendError {
    BackendError::failed_with(format!("{what} {}", path.display()), source)
}

/// Shows an error and each of its causes: `message: caused by: cause: caused by: ...`. A cause
/// whose text its error's message already ends with is not said twice.
///
/// ```
/// use gitops_core::backend::{BackendError, ErrorChain};
///
/// let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such socket");
/// let err = BackendError::unavailable_with("cannot reach the Docker engine", io);
/// assert_eq!(
///     ErrorChain(&err).to_string(),
///     "backend unavailable: cannot reach the Docker engine: caused by: no such socket"
/// );
/// ```
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut said = self.0.to_string();
        f.write_str(&said)?;
        let mut cause = self.0.source();
        while let Some(e) = cause {
            let text = e.to_string();
            if !text.is_empty() && !said.ends_with(&text) {
                write!(f, ": caused by: {text}")?;
            }
            said = text;
            cause = e.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_source_is_the_original_error() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err = BackendError::unavailable_with("cannot reach the engine", io);
        // Its message is today's; the cause is apart from it.
        assert_eq!(
            err.to_string(),
            "backend unavailable: cannot reach the engine"
        );
        let source = err.source().expect("a source");
        let io = source
            .downcast_ref::<std::io::Error>()
            .expect("the original error, not a copy of its text");
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);

        let err = BackendError::failed_with("terraform apply", "exit status 1".to_owned());
        assert_eq!(err.source().unwrap().to_string(), "exit status 1");
        assert!(BackendError::failed("x").source().is_none());
        assert!(BackendError::Cancelled.source().is_none());
    }

    #[test]
    fn a_chain_says_each_cause_once() {
        #[derive(Debug, thiserror::Error)]
        #[error("client error: {0}")]
        struct Repeats(#[source] std::io::Error);

        let io = std::io::Error::other("no such file");
        let err = BackendError::failed_with("connect", Repeats(io));
        assert_eq!(
            ErrorChain(&err).to_string(),
            "connect: caused by: client error: no such file"
        );
        assert_eq!(
            ErrorChain(&BackendError::Cancelled).to_string(),
            "cancelled"
        );
    }
}
