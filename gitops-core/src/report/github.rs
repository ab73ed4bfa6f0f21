//! GitHub (and GitHub Enterprise Server) as a [`Forge`]: commit statuses through the REST API.
//!
//! A thin client over `hyper-util`'s pooled client and `hyper-rustls` (both already in the
//! workspace through kube): one endpoint does not justify `octocrab`'s or `reqwest`'s weight.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use hyper::{Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::github_app::{Api, Auth, Credentials, GitHubApp};
use super::{CommitStatus, Forge, ForgeUpdate, SendError};
use crate::Error;
use crate::secret::Secret;

/// The public API.
pub const GITHUB_API_URL: &str = "https://api.github.com";

/// The most of an answer's body read (GitHub's error bodies are small).
pub(super) const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// How long GitHub asks to wait after a secondary rate limit that names no time: "at least one
/// minute".
const SECONDARY_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// Sets up a [`GitHub`].
#[derive(Debug)]
pub struct GitHubBuilder {
    api_url: String,
    auth: Credentials,
    timeout: Duration,
}

impl GitHubBuilder {
    /// The REST API's base (`https://github.example/api/v3` for GitHub Enterprise Server).
    pub fn with_api_url(mut self, url: &str) -> Self {
        self.api_url = url.trim_end_matches('/').to_owned();
        self
    }

    /// The longest a request may take, answer included (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client. Fails on a URL that is not `http(s)://`, a token that cannot be a header,
    /// or, for `https`, no usable system certificates.
    pub fn build(self) -> Result<GitHub, Error> {
        let err = |message: String| Error::Forge {
            forge: "github".into(),
            message,
        };
        self.auth.check().map_err(err)?;
        let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let builder = if self.api_url.starts_with("https://") {
            builder
                .with_provider_and_native_roots(provider)
                .map_err(|e| err(format!("no system certificates: {e}")))?
        } else if self.api_url.starts_with("http://") {
            // Plain http (a stand-in, a proxy on loopback): TLS is never used.
            let tls = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| err(e.to_string()))?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            builder.with_tls_config(tls)
        } else {
            return Err(err(format!(
                "the API URL \"{}\" is not http:// or https://",
                self.api_url
            )));
        };
        let connector = builder.https_or_http().enable_http1().build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        let user_agent = format!("gitops/{}", env!("CARGO_PKG_VERSION"));
        let auth = self.auth.connect(Api {
            client: client.clone(),
            url: self.api_url.clone(),
            user_agent: user_agent.clone(),
            timeout: self.timeout,
        });
        Ok(GitHub {
            client,
            api_url: self.api_url,
            auth,
            timeout: self.timeout,
            user_agent,
        })
    }
}

/// Sends updates to GitHub's REST API with a token or as a GitHub App (`Authorization: Bearer`).
pub struct GitHub {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    api_url: String,
    auth: Auth,
    timeout: Duration,
    user_agent: String,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl GitHub {
    /// A client of the public API authenticated with `token`.
    pub fn builder(token: Secret) -> GitHubBuilder {
        GitHubBuilder {
            api_url: GITHUB_API_URL.to_owned(),
            auth: Credentials::Token(token),
            timeout: Duration::from_secs(30),
        }
    }

    /// A client of the public API authenticated as `app`, with the token of its installation on
    /// each update's repository.
    pub fn app_builder(app: GitHubApp) -> GitHubBuilder {
        GitHubBuilder {
            auth: Credentials::App(app),
            ..GitHub::builder(Secret::new(""))
        }
    }

    async fn post(&self, path: &str, body: Vec<u8>) -> Result<(), SendError> {
        let authorization = self.auth.authorization(path).await?;
        let request = Request::post(format!("{}{path}", self.api_url))
            .header(AUTHORIZATION, authorization.header.clone())
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(USER_AGENT, &self.user_agent)
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| SendError::Final {
                status: None,
                message: format!("cannot make the request to {path}: {e}"),
            })?;
        let exchange = async {
            let answer = self.client.request(request).await.map_err(|e| {
                retry(
                    format!("cannot reach {}: {}", self.api_url, crate::ErrorChain(&e)),
                    None,
                )
            })?;
            let (parts, body) = answer.into_parts();
            // An unreadable body leaves the status to decide.
            let body = match Limited::new(body, MAX_ANSWER_BYTES).collect().await {
                Ok(body) => body.to_bytes(),
                Err(_) => Bytes::new(),
            };
            Ok::<_, SendError>((parts.status, parts.headers, body))
        };
        let (status, headers, body) = tokio::time::timeout(self.timeout, exchange)
            .await
            .map_err(|_| {
                retry(
                    format!("GitHub did not answer within {:?}", self.timeout),
                    None,
                )
            })??;
        (self.auth).judged(&authorization, judge(status, &headers, &body, unix_now()))
    }
}

#[async_trait]
impl Forge for GitHub {
    fn name(&self) -> &str {
        "github"
    }

    async fn send(&self, update: &ForgeUpdate) -> Result<(), SendError> {
        match update {
            ForgeUpdate::Status(status) => {
                let path = status_path(status)?;
                // The body of "Create a commit status" (REST API 2022-11-28): `state` (required:
                // error, failure, pending, success), `target_url`, `description`, `context`.
                let mut body = serde_json::json!({
                    "state": status.state,
                    "description": status.description,
                    "context": status.context,
                });
                if let Some(url) = &status.target_url {
                    body["target_url"] = url.as_str().into();
                }
                self.post(&path, body.to_string().into_bytes()).await
            }
        }
    }
}

fn retry(message: String, after: Option<Duration>) -> SendError {
    SendError::Retry { message, after }
}

/// `/repos/{owner}/{repo}/statuses/{sha}`, refusing names that would change the path.
fn status_path(status: &CommitStatus) -> Result<String, SendError> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    let refused = |message: String| SendError::Final {
        status: None,
        message,
    };
    let (owner, repo) = match status.repo.split_once('/') {
        Some((owner, repo)) if name_ok(owner) && name_ok(repo) => (owner, repo),
        _ => {
            return Err(refused(format!(
                "\"{}\" is not a GitHub owner/name",
                status.repo
            )));
        }
    };
    if status.sha.is_empty() || !status.sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refused(format!("\"{}\" is not a commit sha", status.sha)));
    }
    Ok(format!("/repos/{owner}/{repo}/statuses/{}", status.sha))
}

pub(super) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// What an answer means: delivered, worth a retry (when), or refused for good.
pub(super) fn judge(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    now: u64,
) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let said = forge_message(body);
    let message = format!("GitHub answered {}: {said}", status.as_u16());
    let retry_after = header_u64(headers, RETRY_AFTER.as_str()).map(Duration::from_secs);
    if status == StatusCode::FORBIDDEN || status == StatusCode::TOO_MANY_REQUESTS {
        if let Some(after) = retry_after {
            return Err(retry(message, Some(after)));
        }
        if header_u64(headers, "x-ratelimit-remaining") == Some(0) {
            let reset = header_u64(headers, "x-ratelimit-reset").unwrap_or(now + 60);
            return Err(retry(
                message,
                Some(Duration::from_secs(reset.saturating_sub(now))),
            ));
        }
        if said.to_ascii_lowercase().contains("rate limit") {
            return Err(retry(message, Some(SECONDARY_LIMIT_WAIT)));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            return Err(retry(message, None));
        }
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(retry(message, retry_after));
    }
    Err(SendError::Final {
        status: Some(status.as_u16()),
        message,
    })
}

/// GitHub's `message` (and `errors`) from an error body, else the start of the body.
fn forge_message(body: &[u8]) -> String {
    if let Ok(json) = serde_json::from_slice::<serde_json::Value>(body)
        && let Some(message) = json.get("message").and_then(|m| m.as_str())
    {
        return match json.get("errors") {
            Some(errors) => super::truncate_chars(&format!("{message} {errors}"), 500),
            None => super::truncate_chars(message, 500),
        };
    }
    super::truncate_chars(String::from_utf8_lossy(body).trim(), 200)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::StatusState;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, value.parse().unwrap());
        }
        map
    }

    fn after(result: Result<(), SendError>) -> Option<Duration> {
        match result {
            Err(SendError::Retry { after, .. }) => after,
            other => panic!("not a retry: {other:?}"),
        }
    }

    #[test]
    fn rate_limits_say_how_long_to_wait() {
        let now = 1_000;
        let limited = headers(&[
            ("x-ratelimit-remaining", "0"),
            ("x-ratelimit-reset", "1030"),
        ]);
        let judged = judge(StatusCode::FORBIDDEN, &limited, b"{}", now);
        assert_eq!(after(judged), Some(Duration::from_secs(30)));
        let retry_after = headers(&[("retry-after", "7")]);
        let judged = judge(StatusCode::TOO_MANY_REQUESTS, &retry_after, b"", now);
        assert_eq!(after(judged), Some(Duration::from_secs(7)));
        let secondary = br#"{"message":"You have exceeded a secondary rate limit."}"#;
        let judged = judge(StatusCode::FORBIDDEN, &HeaderMap::new(), secondary, now);
        assert_eq!(after(judged), Some(SECONDARY_LIMIT_WAIT));
        let judged = judge(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"<html>", now);
        assert_eq!(after(judged), None);
    }

    #[test]
    fn refusals_are_final_with_githubs_message() {
        for code in [401, 403, 404, 422] {
            let body = br#"{"message":"Validation Failed","errors":[{"code":"custom"}]}"#;
            let status = StatusCode::from_u16(code).unwrap();
            match judge(status, &HeaderMap::new(), body, 0) {
                Err(SendError::Final { status, message }) => {
                    assert_eq!(status, Some(code));
                    assert!(message.contains("Validation Failed"), "{message}");
                }
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn names_that_would_change_the_path_are_refused() {
        let status = |repo: &str, sha: &str| CommitStatus {
            repo: repo.into(),
            sha: sha.into(),
            context: "gitops/ci".into(),
            state: StatusState::Pending,
            description: String::new(),
            target_url: None,
        };
        assert_eq!(
            status_path(&status("o/r.js", "abc1")).unwrap(),
            "/repos/o/r.js/statuses/abc1"
        );
        for (repo, sha) in [
            ("o/../x", "ab"),
            ("o", "ab"),
            ("o/r", "ab/../c"),
            ("o/r?x", "ab"),
        ] {
            assert!(status_path(&status(repo, sha)).is_err(), "{repo} {sha}");
        }
    }
}
