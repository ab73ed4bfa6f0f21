//! The webhook endpoints: `POST /webhooks/{github,gitlab,bitbucket,gitea}`. A delivery is read
//! within the body timeout, its signature checked, its events parsed and checked to be of the
//! served repository, then committed to the inbox before the answer; the worker is woken to take
//! them. A Bitbucket push of several changes is several events: each is committed as a delivery
//! of its own, known by the request's id and its place in the push (`<uuid>#<n>`), so that a
//! redelivery of the push is a duplicate of each.
//!
//! Answers: 202 accepted (or ignored: an event type gitops does not handle), 200 for a ping or a
//! duplicate (a redelivery of one that ran, or a body received within the replay window), 400
//! for a malformed payload, 401 for a missing or wrong signature, 403 for another repository's
//! event, 404 for a provider that is not enabled, 408 for a body that did not arrive in time,
//! 413 for a body over the limit, 503 with `Retry-After` when the inbox is full.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use gitops_core::event::{EventKind, GitEvent};
use gitops_core::ledger::{Admission, EncodedEvent, InboxLimits};
use gitops_core::source::webhook::{
    Provider, WebhookError, parse_all, signature_well_formed, verify_bitbucket_signature,
    verify_gitea_signature, verify_github_signature, verify_gitlab_token,
};
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::commit::Committer;
use super::metrics::Metrics;

/// Seconds a sender is asked to wait when the inbox is full.
const RETRY_AFTER_SECS: u64 = 30;

/// What the endpoints share.
pub struct Receiver {
    pub github_secret: Option<Vec<u8>>,
    pub gitlab_token: Option<String>,
    pub bitbucket_secret: Option<Vec<u8>>,
    pub gitea_secret: Option<Vec<u8>>,
    /// Providers without a secret accept unsigned requests (`--allow-unsigned`); else they are
    /// not enabled.
    pub allow_unsigned: bool,
    /// The repositories served (lowercase `owner/name`).
    pub repos: Vec<String>,
    /// Commits deliveries to the inbox.
    pub inbox: Committer,
    pub limits: InboxLimits,
    pub max_body_bytes: usize,
    /// KiB of bodies being read at once, at most (`--max-body-bytes-in-flight`).
    pub bodies: Arc<Semaphore>,
    pub body_timeout: Duration,
    pub metrics: Arc<Metrics>,
    /// Woken when a delivery is committed (the worker waits on it).
    pub wake: Arc<Notify>,
}

pub async fn github(State(app): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    app.receive(Provider::GitHub, &headers, body).await
}

pub async fn gitlab(State(app): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    app.receive(Provider::GitLab, &headers, body).await
}

pub async fn bitbucket(
    State(app): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    app.receive(Provider::Bitbucket, &headers, body).await
}

/// Gitea's and Forgejo's deliveries (Forgejo sends both its own headers and Gitea's).
pub async fn gitea(State(app): State<Arc<Receiver>>, headers: HeaderMap, body: Body) -> Response {
    app.receive(Provider::Gitea, &headers, body).await
}

fn reply(status: StatusCode, body: serde_json::Value) -> Response {
    (status, axum::Json(body)).into_response()
}

/// An answer whose JSON is already written.
fn json_reply(status: StatusCode, json: String) -> Response {
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        json,
    )
        .into_response()
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The first of `names` the request carries (Gitea's header, else Forgejo's).
fn first_header<'a>(headers: &'a HeaderMap, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| header_str(headers, n))
}

/// The header carrying the provider's HMAC signature of the body, and whether its value is
/// `sha256=`-prefixed; `None` for GitLab, whose token binds no body.
fn signature_header(provider: Provider, headers: &HeaderMap) -> Option<(Option<&str>, bool)> {
    match provider {
        Provider::GitHub => Some((header_str(headers, "x-hub-signature-256"), true)),
        Provider::Bitbucket => Some((header_str(headers, "x-hub-signature"), true)),
        Provider::Gitea => Some((
            first_header(headers, &["x-gitea-signature", "x-forgejo-signature"]),
            false,
        )),
        Provider::GitLab => None,
    }
}

/// A delivery turned down, with the metric outcome it counts as.
struct Refusal {
    outcome: &'static str,
    status: StatusCode,
    message: String,
}

impl Refusal {
    fn new(outcome: &'static str, status: StatusCode, message: impl Into<String>) -> Refusal {
        Refusal {
            outcome,
            status,
            message: message.into(),
        }
    }
}

/// A delivery's identity, for the log line.
struct Received<'a> {
    provider: Provider,
    delivery_id: Option<&'a str>,
}

impl Receiver {
    async fn receive(&self, provider: Provider, headers: &HeaderMap, body: Body) -> Response {
        let key = delivery_key(provider, headers);
        let received = Received {
            provider,
            delivery_id: key.as_deref(),
        };
        match self
            .take(provider, headers, body, received.delivery_id)
            .await
        {
            Ok((outcome, repo, response)) => {
                self.log(&received, outcome, repo.as_deref(), response.status(), None);
                self.metrics.delivery(provider.as_str(), outcome);
                response
            }
            Err(r) => {
                self.log(&received, r.outcome, None, r.status, Some(&r.message));
                self.metrics.delivery(provider.as_str(), r.outcome);
                reply(r.status, json!({"error": r.message}))
            }
        }
    }

    fn log(
        &self,
        received: &Received<'_>,
        outcome: &str,
        repo: Option<&str>,
        status: StatusCode,
        error: Option<&str>,
    ) {
        let (provider, delivery) = (
            received.provider.as_str(),
            received.delivery_id.unwrap_or(""),
        );
        match error {
            None => tracing::info!(
                provider,
                delivery,
                repo = repo.unwrap_or(""),
                outcome,
                status = status.as_u16(),
                "delivery"
            ),
            Some(error) => tracing::warn!(
                provider,
                delivery,
                outcome,
                status = status.as_u16(),
                error = %super::log_safe(error),
                "delivery refused"
            ),
        }
    }

    /// The outcome, the event's repository and the answer; or why it was turned down.
    async fn take(
        &self,
        provider: Provider,
        headers: &HeaderMap,
        body: Body,
        delivery_id: Option<&str>,
    ) -> Result<(&'static str, Option<String>, Response), Refusal> {
        self.check_enabled(provider)?;
        // What can be checked without the body is, before a byte of it is read: a client
        // without the secret cannot make the server hold bodies.
        self.verify_headers(provider, headers)?;
        let _budget = self.body_budget(headers)?;
        let body = self.read_body(body).await?;
        self.verify(provider, headers, &body)?;
        let type_headers: &[&str] = match provider {
            Provider::GitHub => &["x-github-event"],
            Provider::Bitbucket => &["x-event-key"],
            Provider::Gitea => &["x-gitea-event", "x-forgejo-event"],
            Provider::GitLab => &["x-gitlab-event"],
        };
        let Some(event_type) = first_header(headers, type_headers) else {
            return Err(Refusal::new(
                "malformed",
                StatusCode::BAD_REQUEST,
                format!("no {} header: which event is this?", type_headers[0]),
            ));
        };
        let events = match parse_all(provider, event_type, &body) {
            Ok(e) => e,
            Err(e @ WebhookError::Unsupported { .. }) => {
                let answer = reply(StatusCode::ACCEPTED, json!({"ignored": e.to_string()}));
                return Ok(("ignored", None, answer));
            }
            Err(e) => {
                return Err(Refusal::new(
                    "malformed",
                    StatusCode::BAD_REQUEST,
                    e.to_string(),
                ));
            }
        };
        let event = match events.as_slice() {
            [] => {
                let answer = reply(
                    StatusCode::ACCEPTED,
                    json!({"ignored": format!("the {provider} {event_type} delivery carries no change")}),
                );
                return Ok(("ignored", None, answer));
            }
            [one] => one,
            [first, ..] => {
                for event in &events {
                    self.check_repo(event)?;
                }
                let hash = self.body_hash(provider, event_type, headers, &body);
                let (outcome, response) = self
                    .admit_each(provider, delivery_id, &hash, &events)
                    .await?;
                return Ok((outcome, Some(first.repo.clone()), response));
            }
        };
        if event.kind() == EventKind::Ping {
            return Ok(("ping", None, reply(StatusCode::OK, json!({"ok": "pong"}))));
        }
        self.check_repo(event)?;
        let hash = self.body_hash(provider, event_type, headers, &body);
        let (outcome, response) = self.admit(provider, delivery_id, hash, event).await?;
        Ok((outcome, Some(event.repo.clone()), response))
    }

    /// Commits each event of a delivery that carries several (a Bitbucket push of several
    /// changes), in order, as a delivery of its own (`<id>#<n>`, the body's hash with `#<n>`).
    /// One answer for all: 503 as soon as the inbox is full (a retry finds those committed
    /// already to be duplicates), 200 when all were duplicates, else 202.
    async fn admit_each(
        &self,
        provider: Provider,
        delivery_id: Option<&str>,
        hash: &str,
        events: &[GitEvent],
    ) -> Result<(&'static str, Response), Refusal> {
        let mut answers = Vec::new();
        let mut new = false;
        for (n, event) in events.iter().enumerate() {
            let id = delivery_id.map(|d| format!("{d}#{n}"));
            let hash = format!("{hash}#{n}");
            let (outcome, response) = self.admit(provider, id.as_deref(), hash, event).await?;
            if outcome == "inbox_full" {
                return Ok((outcome, response));
            }
            new |= outcome != "duplicate";
            answers.push(json!({"kind": event.kind().as_str(), "outcome": outcome}));
        }
        Ok(if new {
            (
                "accepted",
                reply(StatusCode::ACCEPTED, json!({"events": answers})),
            )
        } else {
            (
                "duplicate",
                reply(StatusCode::OK, json!({"events": answers})),
            )
        })
    }

    fn check_enabled(&self, provider: Provider) -> Result<(), Refusal> {
        let has_secret = match provider {
            Provider::GitHub => self.github_secret.is_some(),
            Provider::Bitbucket => self.bitbucket_secret.is_some(),
            Provider::Gitea => self.gitea_secret.is_some(),
            Provider::GitLab => self.gitlab_token.is_some(),
        };
        if has_secret || self.allow_unsigned {
            return Ok(());
        }
        let flag = match provider {
            Provider::GitHub => "--github-secret-env",
            Provider::Bitbucket => "--bitbucket-secret-env",
            Provider::Gitea => "--gitea-secret-env",
            Provider::GitLab => "--gitlab-token-env",
        };
        Err(Refusal::new(
            "not_enabled",
            StatusCode::NOT_FOUND,
            format!(
                "{provider} webhooks are not enabled on this server (it is started without {flag})"
            ),
        ))
    }

    fn verify_headers(&self, provider: Provider, headers: &HeaderMap) -> Result<(), Refusal> {
        let refused = |e: String| Refusal::new("bad_signature", StatusCode::UNAUTHORIZED, e);
        if provider == Provider::GitLab {
            return match &self.gitlab_token {
                Some(t) => verify_gitlab_token(t, header_str(headers, "x-gitlab-token"))
                    .map_err(|e| refused(e.to_string())),
                None => Ok(()),
            };
        }
        let Some((header, prefixed)) = signature_header(provider, headers) else {
            return Ok(());
        };
        if self.secret(provider).is_none()
            || header.is_some_and(|h| signature_well_formed(prefixed, h))
        {
            return Ok(());
        }
        // The full check says precisely what is wrong (missing, malformed).
        let e = self.check_signature(provider, b"", b"", header);
        Err(refused(e.err().map_or_else(
            || format!("bad {provider} signature header"),
            |e| e.to_string(),
        )))
    }

    /// The HMAC secret of a provider that signs bodies with one.
    fn secret(&self, provider: Provider) -> Option<&[u8]> {
        match provider {
            Provider::GitHub => self.github_secret.as_deref(),
            Provider::Bitbucket => self.bitbucket_secret.as_deref(),
            Provider::Gitea => self.gitea_secret.as_deref(),
            Provider::GitLab => None,
        }
    }

    fn check_signature(
        &self,
        provider: Provider,
        secret: &[u8],
        body: &[u8],
        header: Option<&str>,
    ) -> Result<(), gitops_core::source::webhook::SignatureError> {
        match provider {
            Provider::Bitbucket => verify_bitbucket_signature(secret, body, header),
            Provider::Gitea => verify_gitea_signature(secret, body, header),
            _ => verify_github_signature(secret, body, header),
        }
    }

    /// A share of the memory bodies in flight may take (`--max-body-bytes-in-flight`), sized by
    /// the body's declared length; 503 when it is taken up.
    fn body_budget(&self, headers: &HeaderMap) -> Result<OwnedSemaphorePermit, Refusal> {
        let declared =
            header_str(headers, "content-length").and_then(|v| v.trim().parse::<usize>().ok());
        let bytes = declared
            .unwrap_or(self.max_body_bytes)
            .min(self.max_body_bytes);
        let kib = u32::try_from(bytes.div_ceil(1024).max(1)).unwrap_or(u32::MAX);
        self.bodies
            .clone()
            .try_acquire_many_owned(kib)
            .map_err(|_| {
                Refusal::new(
                    "busy",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "too many request bodies are being read; try again later",
                )
            })
    }

    async fn read_body(&self, body: Body) -> Result<axum::body::Bytes, Refusal> {
        match tokio::time::timeout(
            self.body_timeout,
            axum::body::to_bytes(body, self.max_body_bytes),
        )
        .await
        {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => {
                let e = e.into_inner();
                if e.is::<http_body_util::LengthLimitError>() {
                    Err(Refusal::new(
                        "too_large",
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("body over {} bytes", self.max_body_bytes),
                    ))
                } else {
                    Err(Refusal::new(
                        "malformed",
                        StatusCode::BAD_REQUEST,
                        format!("reading the body failed: {e}"),
                    ))
                }
            }
            Err(_) => Err(Refusal::new(
                "timeout",
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {:?}", self.body_timeout),
            )),
        }
    }

    fn verify(&self, provider: Provider, headers: &HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let verified = match (provider, signature_header(provider, headers)) {
            (Provider::GitLab, _) => self
                .gitlab_token
                .as_ref()
                .map(|t| verify_gitlab_token(t, header_str(headers, "x-gitlab-token"))),
            (_, Some((header, _))) => self
                .secret(provider)
                .map(|s| self.check_signature(provider, s, body, header)),
            (_, None) => None,
        };
        match verified {
            Some(Err(e)) => Err(Refusal::new(
                "bad_signature",
                StatusCode::UNAUTHORIZED,
                e.to_string(),
            )),
            _ => Ok(()),
        }
    }

    fn check_repo(&self, event: &GitEvent) -> Result<(), Refusal> {
        let repo = event.repo.to_ascii_lowercase();
        if self.repos.contains(&repo) {
            return Ok(());
        }
        Err(Refusal::new(
            "other_repository",
            StatusCode::FORBIDDEN,
            format!(
                "this server serves {}, not {}",
                self.repos.join(", "),
                event.repo
            ),
        ))
    }

    /// Commits the delivery to the inbox, with those waiting beside it (see [`super::commit`]).
    async fn admit(
        &self,
        provider: Provider,
        delivery_id: Option<&str>,
        hash: String,
        event: &GitEvent,
    ) -> Result<(&'static str, Response), Refusal> {
        let internal = |e: String| Refusal::new("error", StatusCode::INTERNAL_SERVER_ERROR, e);
        let encoded = Arc::new(
            EncodedEvent::new(event)
                .map_err(|e| internal(gitops_core::ErrorChain(&e).to_string()))?,
        );
        let admission = self
            .inbox
            .admit(
                provider.as_str(),
                delivery_id,
                hash,
                // A GitLab token does not bind the body: anyone holding it can send any body, so
                // comparing bodies protects nothing, and GitLab's identical pushes (A→B again
                // after a rollback) would be lost.
                provider != Provider::GitLab,
                encoded.clone(),
            )
            .await
            .map_err(internal)?;
        let kind = event.kind().as_str();
        Ok(match admission {
            // Built without a `serde_json::Value`: every delivery gets one of these two.
            Admission::Accepted { seq } => {
                self.accepted(&encoded);
                (
                    "accepted",
                    json_reply(
                        StatusCode::ACCEPTED,
                        format!(r#"{{"accepted":"{kind}","seq":{seq}}}"#),
                    ),
                )
            }
            Admission::Requeued { seq } => {
                self.accepted(&encoded);
                (
                    "redelivered",
                    json_reply(
                        StatusCode::ACCEPTED,
                        format!(r#"{{"accepted":"{kind}","seq":{seq},"redelivery":true}}"#),
                    ),
                )
            }
            Admission::Duplicate { seq, matched } => (
                "duplicate",
                reply(StatusCode::OK, json!({"duplicate": matched, "seq": seq})),
            ),
            Admission::Full { queued } => {
                let mut response = reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": format!("{queued} events wait to run already; try again later")}),
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
                ("inbox_full", response)
            }
            _ => {
                return Err(internal(
                    "an admission this server does not know".to_owned(),
                ));
            }
        })
    }

    /// The hash a replayed body is known by. A body checked against a secret already has one:
    /// its signature, HMAC-SHA256 of the body, the same for the same body (kept apart from plain
    /// hashes by its prefix, and from other forges' by their name). Others: SHA-256 of the
    /// provider and the body.
    ///
    /// Bitbucket's and Gitea's event type is in a header only (a pull request's body is the same
    /// whether it was created or merged), so theirs is part of the hash: the same body of another
    /// type is another event.
    fn body_hash(
        &self,
        provider: Provider,
        event_type: &str,
        headers: &HeaderMap,
        body: &[u8],
    ) -> String {
        let typed = matches!(provider, Provider::Bitbucket | Provider::Gitea);
        let event_type = if typed { event_type } else { "" };
        if let (Some(_), Some((Some(signature), _))) =
            (self.secret(provider), signature_header(provider, headers))
        {
            // Verified before: 64 hexadecimal digits (after `sha256=` for GitHub, Bitbucket).
            let signature = signature.trim().to_ascii_lowercase();
            return match provider {
                // As GitHub's were always kept.
                Provider::GitHub => format!("hmac:{signature}"),
                _ => format!("hmac:{provider}:{event_type}:{signature}"),
            };
        }
        let mut h = Sha256::new();
        h.update(provider.as_str().as_bytes());
        h.update(b"\n");
        if typed {
            h.update(event_type.as_bytes());
            h.update(b"\n");
        }
        h.update(body);
        hex(&h.finalize())
    }

    fn accepted(&self, event: &EncodedEvent) {
        if self.limits.run {
            self.wake.notify_one();
        } else {
            // `--no-run`: the event, as a line of JSON.
            super::lines::event_line(event.as_str());
        }
    }
}

/// The id a delivery is known by: GitHub's `X-GitHub-Delivery`, Bitbucket's `X-Request-UUID`,
/// Gitea's `X-Gitea-Delivery` (Forgejo's `X-Forgejo-Delivery`); for GitLab its
/// `Idempotency-Key` (stable across retries, GitLab 17.4+), else `X-Gitlab-Event-UUID` with the
/// event type (GitLab gives one UUID to the hooks one request causes, of several types).
fn delivery_key(provider: Provider, headers: &HeaderMap) -> Option<String> {
    let own = |names: &[&str]| first_header(headers, names).map(str::to_owned);
    match provider {
        Provider::GitHub => own(&["x-github-delivery"]),
        Provider::Bitbucket => own(&["x-request-uuid"]),
        Provider::Gitea => own(&["x-gitea-delivery", "x-forgejo-delivery"]),
        Provider::GitLab => header_str(headers, "idempotency-key")
            .map(|k| format!("idempotency:{k}"))
            .or_else(|| {
                let uuid = header_str(headers, "x-gitlab-event-uuid")?;
                let kind = header_str(headers, "x-gitlab-event").unwrap_or("");
                Some(format!("{uuid}/{kind}"))
            }),
    }
}

/// Lowercase hexadecimal.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 15)]));
    }
    out
}
