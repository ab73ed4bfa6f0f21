//! Webhook payloads from GitHub, GitLab, Bitbucket Cloud and Gitea/Forgejo, parsed into
//! [`GitEvent`]s, and their signature checks.

mod bitbucket;
mod gitea;
mod github;
mod gitlab;
mod signature;

use std::fmt;

use crate::event::GitEvent;

pub use signature::{
    SignatureError, signature_well_formed, verify_bitbucket_signature, verify_gitea_signature,
    verify_github_signature, verify_gitlab_token,
};

/// The forge a webhook comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Provider {
    /// GitHub (`X-GitHub-Event`, `X-Hub-Signature-256`).
    GitHub,
    /// GitLab (`X-Gitlab-Event`, `X-Gitlab-Token`).
    GitLab,
    /// Bitbucket Cloud (`X-Event-Key`, `X-Hub-Signature`).
    Bitbucket,
    /// Gitea and Forgejo (`X-Gitea-Event` / `X-Forgejo-Event`, `X-Gitea-Signature` /
    /// `X-Forgejo-Signature`).
    Gitea,
}

impl Provider {
    /// The provider's lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::GitHub => "github",
            Self::GitLab => "gitlab",
            Self::Bitbucket => "bitbucket",
            Self::Gitea => "gitea",
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
            "bitbucket" => Ok(Self::Bitbucket),
            "gitea" | "forgejo" => Ok(Self::Gitea),
            _ => Err(WebhookError::UnknownProvider(s.to_owned())),
        }
    }
}

/// Why a webhook payload could not be turned into an event.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// The provider name is none of `github`, `gitlab`, `bitbucket`, `gitea` (or `forgejo`).
    #[error("unknown webhook provider \"{0}\" (expected github, gitlab, bitbucket or gitea)")]
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

/// Parses a webhook body into the one event it carries.
///
/// `event_type` is the forge's event header: GitHub's `X-GitHub-Event` (`push`, `pull_request`,
/// ...), GitLab's `X-Gitlab-Event` (`Push Hook`, ...) or its `object_kind` (`push`, ...),
/// Bitbucket's `X-Event-Key` (`repo:push`, `pullrequest:created`, ...), Gitea's or Forgejo's
/// `X-Gitea-Event` / `X-Forgejo-Event` (`push`, `pull_request`, ...).
/// A `ping` (or GitLab's test `System Hook`-less pings) parses to a `ping` event.
///
/// A Bitbucket push carries one change per ref pushed: one that carries other than one is an
/// [`WebhookError::Invalid`] here; [`parse_all`] takes them all.
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
        Provider::Gitea => gitea::parse(event_type, body),
        Provider::Bitbucket => {
            let mut events = bitbucket::parse(event_type, body)?;
            let count = events.len();
            match events.pop() {
                Some(event) if count == 1 => Ok(event),
                _ => Err(invalid(
                    provider,
                    event_type,
                    format!("the delivery carries {count} changes, not one (see parse_all)"),
                )),
            }
        }
    }
}

/// Parses a webhook body into every event it carries, in the order the forge lists them: one
/// for each change of a Bitbucket push (none for a push without changes), else exactly one.
///
/// ```
/// use gitops_core::source::webhook::{parse_all, Provider};
/// let body = br#"{"repository": {"full_name": "ws/app"}, "push": {"changes": [
///   {"old": null, "new": {"type": "branch", "name": "a", "target": {"hash": "1111111111111111111111111111111111111111"}}},
///   {"old": null, "new": {"type": "tag", "name": "v1.0.0", "target": {"hash": "2222222222222222222222222222222222222222"}}}
/// ]}}"#;
/// let events = parse_all(Provider::Bitbucket, "repo:push", body).unwrap();
/// assert_eq!(events.len(), 2);
/// assert_eq!(events[1].tag(), Some("v1.0.0"));
/// ```
pub fn parse_all(
    provider: Provider,
    event_type: &str,
    body: &[u8],
) -> Result<Vec<GitEvent>, WebhookError> {
    match provider {
        Provider::Bitbucket => bitbucket::parse(event_type, body),
        _ => parse(provider, event_type, body).map(|e| vec![e]),
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
