//! Webhook payloads from GitHub and GitLab, parsed into [`GitEvent`]s, and their signature checks.

mod github;
mod gitlab;
mod signature;

use std::fmt;

use crate::event::GitEvent;

pub use signature::{SignatureError, verify_github_signature, verify_gitlab_token};

/// The forge a webhook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (`X-GitHub-Event`, `X-Hub-Signature-256`).
    GitHub,
    /// GitLab (`X-Gitlab-Event`, `X-Gitlab-Token`).
    GitLab,
}

impl Provider {
    /// The provider's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Provider {
    type Err = WebhookError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "github" => Ok(Self::GitHub),
            "gitlab" => Ok(Self::GitLab),
            _ => Err(WebhookError::UnknownProvider(s.to_owned())),
        }
    }
}

/// Why a webhook payload could not be turned into an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The provider name is neither `github` nor `gitlab`.
    #[error("unknown webhook provider \"{0}\" (expected github or gitlab)")]
    UnknownProvider(String),
    /// The event type is one this project does not handle.
    #[error("unsupported {provider} event type \"{event_type}\" (supported: {supported})")]
    Unsupported {
        /// The forge.
        provider: Provider,
        /// The event type as given (header value).
        event_type: String,
        /// The supported types, for the message.
        supported: &'static str,
    },
    /// The body is not valid JSON of the expected shape.
    #[error("invalid {provider} {event_type} payload: {source}")]
    Malformed {
        /// The forge.
        provider: Provider,
        /// The event type being parsed.
        event_type: String,
        /// What serde_json found, with line and column.
        #[source]
        source: serde_json::Error,
    },
    /// The body is JSON of the right shape, but its content makes no event.
    #[error("invalid {provider} {event_type} payload: {message}")]
    Invalid {
        /// The forge.
        provider: Provider,
        /// The event type being parsed.
        event_type: String,
        /// What is wrong.
        message: String,
    },
}

/// Parses a webhook body into an event.
///
/// `event_type` is the forge's event header: GitHub's `X-GitHub-Event` (`push`, `pull_request`,
/// ...), GitLab's `X-Gitlab-Event` (`Push Hook`, ...) or its `object_kind` (`push`, ...).
/// A `ping` (or GitLab's test `System Hook`-less pings) parses to a `ping` event.
///
/// ```
/// use gitops_core::source::webhook::{parse, Provider};
/// let body = br#"{"zen": "Design for failure.", "hook_id": 1,
///                 "repository": {"full_name": "octo/app"}}"#;
/// let event = parse(Provider::GitHub, "ping", body).unwrap();
/// assert_eq!(event.repo, "octo/app");
/// ```
pub fn parse(provider: Provider, event_type: &str, body: &[u8]) -> Result<GitEvent, WebhookError> {
    match provider {
        Provider::GitHub => github::parse(event_type, body),
        Provider::GitLab => gitlab::parse(event_type, body),
    }
}

/// Git's all-zero object id, which forges send for "no commit" (creation, deletion).
fn non_zero_sha(sha: Option<String>) -> Option<String> {
    sha.filter(|s| !s.is_empty() && !s.bytes().all(|b| b == b'0'))
}

fn decode<'a, T: serde::Deserialize<'a>>(
    provider: Provider,
    event_type: &str,
    body: &'a [u8],
) -> Result<T, WebhookError> {
    // Checked as UTF-8 once, the body's strings are not checked again one by one. A body that
    // is not UTF-8 is parsed as bytes, for serde_json's own verdict and message.
    let parsed = match std::str::from_utf8(body) {
        Ok(text) => serde_json::from_str(text),
        Err(_) => serde_json::from_slice(body),
    };
    parsed.map_err(|source| WebhookError::Malformed {
        provider,
        event_type: event_type.to_owned(),
        source,
    })
}

fn invalid(provider: Provider, event_type: &str, message: impl Into<String>) -> WebhookError {
    WebhookError::Invalid {
        provider,
        event_type: event_type.to_owned(),
        message: message.into(),
    }
}
