//! GitHub (and GitHub Enterprise Server) as a [`Forge`]: commit statuses, deployments and their
//! statuses, and the pull request comment, through the REST API.
//!
//! A thin client over `hyper-util`'s pooled client and `hyper-rustls` (both already in the
//! workspace through kube): a handful of endpoints do not justify `octocrab`'s or `reqwest`'s
//! weight.

use std::time::Duration;

use async_trait::async_trait;
use hyper::header::{HeaderMap, RETRY_AFTER};
use hyper::{Method, StatusCode};

use super::github_app::{Auth, Credentials, GitHubApp};
use super::http::{
    CommentPlace, Rest, created_id, forge_message, header_u64, numeric, owner_name_path, sha,
};
use super::{
    CommitStatus, DeploymentState, DeploymentUpdate, Forge, ForgeRefs, ForgeUpdate,
    PullRequestComment, SendError,
};
use crate::Error;
use crate::secret::Secret;

/// The public API.
pub const GITHUB_API_URL: &str = "https://api.github.com";

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
        let rest = Rest::new(
            "GitHub",
            &self.api_url,
            self.timeout,
            vec![
                ("accept", "application/vnd.github+json"),
                ("x-github-api-version", "2022-11-28"),
            ],
            judge,
        )?;
        let rest = rest.with_marker_key(&self.auth.marker_key());
        let auth = self.auth.connect(rest.clone());
        Ok(GitHub { rest, auth })
    }
}

/// Sends updates to GitHub's REST API with a token or as a GitHub App (`Authorization: Bearer`).
pub struct GitHub {
    rest: Rest,
    auth: Auth,
}

impl std::fmt::Debug for GitHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHub")
            .field("api_url", &self.rest.base())
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
    ) -> Result<bytes::Bytes, SendError> {
        let authorization = self.auth.authorization(path).await?;
        let answer = self
            .rest
            .request(method, path, ("authorization", &authorization.header), body)
            .await;
        let (judged, body) = match answer {
            Ok(body) => (Ok(()), body),
            Err(e) => (Err(e), bytes::Bytes::new()),
        };
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
        let place = CommentPlace {
            key: format!("comment:{}:{}", comment.repo, comment.number),
            list: format!("{repo}/issues/{}/comments", comment.number),
            edit: format!("{repo}/issues/comments"),
            edit_method: Method::PATCH,
            create: format!("{repo}/issues/{}/comments", comment.number),
            page_size: ("per_page", 100),
            text_at: &["body"],
        };
        // With the path of the pull request's repository: an App's token is the installation's.
        let authorization = self.auth.authorization(&place.create).await?;
        let sent = self
            .rest
            .upsert_comment(
                &place,
                ("authorization", &authorization.header),
                refs,
                &comment.body,
            )
            .await;
        (self.auth).judged(&authorization, sent)
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

/// `/repos/{owner}/{name}`, refusing names that would change the path.
fn repo_path(repo: &str) -> Result<String, SendError> {
    owner_name_path(repo, "/repos", "GitHub owner/name")
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
