//! GitHub (and GitHub Enterprise Server) as a [`Forge`]: commit statuses, deployments and their
//! statuses, and the pull request comment, through the REST API.
//!
//! A thin client over `hyper-util`'s pooled client and `hyper-rustls` (both already in the
//! workspace through kube): a handful of endpoints do not justify `octocrab`'s or `reqwest`'s
//! weight.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, RETRY_AFTER, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use super::github_app::{Api, Auth, Credentials, GitHubApp};
use super::{
    COMMENT_MARKER, CommitStatus, DeploymentState, DeploymentUpdate, Forge, ForgeRefs, ForgeUpdate,
    PullRequestComment, SendError,
};
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

    /// Sends a request; the answer's body when GitHub took it.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<Bytes, SendError> {
        let authorization = self.auth.authorization(path).await?;
        let mut request = Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.api_url))
            .header(AUTHORIZATION, authorization.header.clone())
            .header(ACCEPT, "application/vnd.github+json")
            .header("X-GitHub-Api-Version", "2022-11-28")
            .header(USER_AGENT, &self.user_agent);
        if body.is_some() {
            request = request.header(CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let request = request
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
        let judged = judge(status, &headers, &body, unix_now());
        (self.auth).judged(&authorization, judged).map(|()| body)
    }

    /// Sends a request whose answer is an object with an `id`; that id.
    async fn create(&self, path: &str, body: &serde_json::Value) -> Result<String, SendError> {
        let answer = self.request(Method::POST, path, Some(body)).await?;
        created_id(&answer)
            .ok_or_else(|| retry(format!("GitHub's answer to POST {path} has no id"), None))
    }

    async fn status(&self, status: &CommitStatus) -> Result<(), SendError> {
        let path = format!(
            "{}/statuses/{}",
            repo_path(&status.repo)?,
            sha(&status.sha)?
        );
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
        self.request(Method::POST, &path, Some(&body))
            .await
            .map(drop)
    }

    /// Creates the deployment when GitHub has none for it yet, then sets its state.
    async fn deployment(
        &self,
        update: &DeploymentUpdate,
        refs: &ForgeRefs,
    ) -> Result<(), SendError> {
        let repo = repo_path(&update.repo)?;
        let key = format!("deployment:{}:{}", update.repo, update.deployment);
        let id = match refs.get(&key)?.filter(|id| !id.is_empty()) {
            Some(id) => id,
            None => {
                // "Create a deployment": `ref` (required), `environment`, `auto_merge`,
                // `required_contexts`, `transient_environment`, `production_environment`,
                // `description`, `payload`.
                let body = serde_json::json!({
                    "ref": sha(&update.sha)?,
                    "environment": update.environment,
                    "auto_merge": false,
                    "required_contexts": [],
                    "transient_environment": update.transient,
                    "production_environment": update.production,
                    "description": update.description,
                    "payload": {"gitops_deployment": update.deployment},
                });
                let id = self.create(&format!("{repo}/deployments"), &body).await?;
                refs.set(&key, &id)?;
                id
            }
        };
        let id = numeric(&id)?;
        // "Create a deployment status": `state` (required), `log_url`, `description`,
        // `environment_url`, `auto_inactive`.
        let mut body = serde_json::json!({
            "state": update.state,
            "description": update.description,
        });
        if let Some(url) = &update.log_url {
            body["log_url"] = url.as_str().into();
        }
        if let Some(url) = &update.environment_url {
            body["environment_url"] = url.as_str().into();
        }
        let path = format!("{repo}/deployments/{id}/statuses");
        match self.request(Method::POST, &path, Some(&body)).await {
            // The deployment was deleted on GitHub: the next try makes a new one.
            Err(SendError::Final {
                status: Some(404), ..
            }) if update.state != DeploymentState::Inactive => {
                refs.set(&key, "")?;
                Err(retry(
                    format!("deployment {id} is gone from GitHub; a new one will be made"),
                    None,
                ))
            }
            other => other.map(drop),
        }
    }

    /// Edits the pull request's comment, or creates it.
    async fn comment(
        &self,
        comment: &PullRequestComment,
        refs: &ForgeRefs,
    ) -> Result<(), SendError> {
        let repo = repo_path(&comment.repo)?;
        let key = format!("comment:{}:{}", comment.repo, comment.number);
        let known = match refs.get(&key)?.filter(|id| !id.is_empty()) {
            Some(id) => Some(id),
            None => self.find_comment(&repo, comment.number).await?,
        };
        let body = serde_json::json!({ "body": comment.body });
        if let Some(id) = known {
            let path = format!("{repo}/issues/comments/{}", numeric(&id)?);
            match self.request(Method::PATCH, &path, Some(&body)).await {
                Ok(_) => return refs.set(&key, &id),
                // Deleted since, or not ours (someone else's comment copying the marker): a
                // new one is made.
                Err(SendError::Final {
                    status: Some(403 | 404),
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        let path = format!("{repo}/issues/{}/comments", comment.number);
        let id = self.create(&path, &body).await?;
        refs.set(&key, &id)
    }

    /// The id of a comment of the pull request that starts with the marker (one gitops made
    /// from another state directory, or before its id was recorded), among its first 1,000.
    async fn find_comment(&self, repo: &str, number: u64) -> Result<Option<String>, SendError> {
        for page in 1..=10 {
            let path = format!("{repo}/issues/{number}/comments?per_page=100&page={page}");
            let answer = self.request(Method::GET, &path, None).await?;
            let comments: Vec<serde_json::Value> =
                serde_json::from_slice(&answer).unwrap_or_default();
            let found = comments.iter().find(|c| {
                c.get("body")
                    .and_then(|b| b.as_str())
                    .is_some_and(|b| b.starts_with(COMMENT_MARKER))
            });
            if let Some(id) = found.and_then(|c| c.get("id")).and_then(|id| id.as_u64()) {
                return Ok(Some(id.to_string()));
            }
            if comments.len() < 100 {
                break;
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl Forge for GitHub {
    fn name(&self) -> &str {
        "github"
    }

    async fn send(&self, update: &ForgeUpdate, refs: &ForgeRefs) -> Result<(), SendError> {
        match update {
            ForgeUpdate::Status(status) => self.status(status).await,
            ForgeUpdate::Deployment(deployment) => self.deployment(deployment, refs).await,
            ForgeUpdate::Comment(comment) => self.comment(comment, refs).await,
        }
    }
}

fn retry(message: String, after: Option<Duration>) -> SendError {
    SendError::Retry { message, after }
}

fn refused(message: String) -> SendError {
    SendError::Final {
        status: None,
        message,
    }
}

/// `/repos/{owner}/{repo}`, refusing names that would change the path.
fn repo_path(repo: &str) -> Result<String, SendError> {
    let name_ok = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match repo.split_once('/') {
        Some((owner, name)) if name_ok(owner) && name_ok(name) => {
            Ok(format!("/repos/{owner}/{name}"))
        }
        _ => Err(refused(format!("\"{repo}\" is not a GitHub owner/name"))),
    }
}

/// A commit sha, refused unless hexadecimal.
fn sha(sha: &str) -> Result<&str, SendError> {
    if sha.is_empty() || !sha.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(refused(format!("\"{sha}\" is not a commit sha")));
    }
    Ok(sha)
}

/// An id GitHub gave, refused unless a number (it goes into a path).
fn numeric(id: &str) -> Result<&str, SendError> {
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        return Err(refused(format!("\"{id}\" is not a GitHub id")));
    }
    Ok(id)
}

/// The `id` of a created object.
fn created_id(answer: &[u8]) -> Option<String> {
    let json: serde_json::Value = serde_json::from_slice(answer).ok()?;
    json.get("id")?.as_u64().map(|id| id.to_string())
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
        let path = |s: &CommitStatus| -> Result<String, SendError> {
            Ok(format!("{}/statuses/{}", repo_path(&s.repo)?, sha(&s.sha)?))
        };
        assert_eq!(
            path(&status("o/r.js", "abc1")).unwrap(),
            "/repos/o/r.js/statuses/abc1"
        );
        for (repo, sha) in [
            ("o/../x", "ab"),
            ("o", "ab"),
            ("o/r", "ab/../c"),
            ("o/r?x", "ab"),
        ] {
            assert!(path(&status(repo, sha)).is_err(), "{repo} {sha}");
        }
        assert!(numeric("12/../x").is_err());
        assert_eq!(numeric("42").unwrap(), "42");
    }
}
