//! GitLab (gitlab.com or self-managed) as a [`Forge`]: commit statuses, environments and
//! deployments, and the merge request note, through the REST API v4 with a token
//! (`PRIVATE-TOKEN`). The project is named by its URL-encoded path (`group%2Fsub%2Fproject`).
//!
//! The states, in GitLab's words: a commit status is `running` while the run goes on (GitLab
//! has no "queued" that a later state may follow in every case), then `success`, `failed`, or
//! `canceled` for a cancelled or superseded run; a deployment is `running`, then `success`,
//! `failed` or `canceled`; a stopped environment is stopped (`POST .../environments/:id/stop`).

use std::time::Duration;

use async_trait::async_trait;
use hyper::header::{HeaderMap, HeaderValue, RETRY_AFTER};
use hyper::{Method, StatusCode};

use super::http::{
    CommentPlace, Rest, forge_message, header_u64, numeric, path_part_ok, refused, sensitive, sha,
};
use super::{
    CommitStatus, DeploymentState, DeploymentUpdate, Forge, ForgeRefs, ForgeUpdate,
    PullRequestComment, SendError, StatusState,
};
use crate::Error;
use crate::secret::Secret;

/// gitlab.com.
pub const GITLAB_URL: &str = "https://gitlab.com";

/// Sets up a [`GitLab`].
#[derive(Debug)]
pub struct GitLabBuilder {
    url: String,
    token: Secret,
    timeout: Duration,
}

impl GitLabBuilder {
    /// The instance's base URL (`https://gitlab.example.com`); the API is under `/api/v4`.
    pub fn with_url(mut self, url: &str) -> Self {
        self.url = url.trim_end_matches('/').to_owned();
        self
    }

    /// The longest a request may take, answer included (default 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The client. Fails on a URL that is not `http(s)://`, a token that cannot be a header,
    /// or, for `https`, no usable system certificates.
    pub fn build(self) -> Result<GitLab, Error> {
        let token = sensitive(self.token.expose()).map_err(|_| Error::Forge {
            forge: "gitlab".into(),
            message: "the token is not a valid header value".into(),
        })?;
        let rest = Rest::new(
            "GitLab",
            &format!("{}/api/v4", self.url),
            self.timeout,
            vec![("accept", "application/json")],
            judge,
        )?
        .with_marker_key(self.token.expose().as_bytes());
        Ok(GitLab { rest, token })
    }
}

/// Sends updates to GitLab's REST API v4.
pub struct GitLab {
    rest: Rest,
    /// The `PRIVATE-TOKEN` header's value.
    token: HeaderValue,
}

impl std::fmt::Debug for GitLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitLab")
            .field("api_url", &self.rest.base())
            .finish_non_exhaustive()
    }
}

impl GitLab {
    /// A client of gitlab.com authenticated with `token` (scope `api`).
    pub fn builder(token: Secret) -> GitLabBuilder {
        GitLabBuilder {
            url: GITLAB_URL.to_owned(),
            token,
            timeout: Duration::from_secs(30),
        }
    }

    /// Sends a request; the answer's body when GitLab took it.
    async fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<&serde_json::Value>,
    ) -> Result<bytes::Bytes, SendError> {
        (self.rest)
            .request(method, path, ("private-token", &self.token), body)
            .await
    }

    async fn create(&self, path: &str, body: &serde_json::Value) -> Result<String, SendError> {
        (self.rest)
            .create(path, ("private-token", &self.token), body)
            .await
    }

    async fn status(&self, status: &CommitStatus) -> Result<(), SendError> {
        let path = format!(
            "{}/statuses/{}",
            project_path(&status.repo)?,
            sha(&status.sha)?
        );
        let state = match status.state {
            StatusState::Pending => "running",
            StatusState::Success => "success",
            StatusState::Failure => "failed",
            StatusState::Error
                if status.description.starts_with("superseded")
                    || status.description.contains("cancelled") =>
            {
                "canceled"
            }
            StatusState::Error => "failed",
        };
        let mut body = serde_json::json!({
            "state": state,
            "name": status.context,
            "description": status.description,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = url.as_str().into();
        }
        match self.request(Method::POST, &path, Some(&body)).await {
            // The status is in that state already (a resend after a lost answer).
            Err(SendError::Final {
                status: Some(400),
                message,
            }) if message.contains("Cannot transition status") => Ok(()),
            other => other.map(drop),
        }
    }

    /// The environment's id: recorded, found by name, or made.
    async fn environment(
        &self,
        project: &str,
        update: &DeploymentUpdate,
        refs: &ForgeRefs,
    ) -> Result<String, SendError> {
        let key = format!("environment:{}:{}", update.repo, update.environment);
        if let Some(id) = refs.get(&key)?.filter(|id| !id.is_empty()) {
            return Ok(id);
        }
        let query: String = form_urlencoded_name(&update.environment);
        let path = format!("{project}/environments?name={query}");
        let answer = self.request(Method::GET, &path, None).await?;
        let listed: Vec<serde_json::Value> = serde_json::from_slice(&answer).unwrap_or_default();
        let found = listed
            .iter()
            .find(|e| e.get("name").and_then(|n| n.as_str()) == Some(&update.environment))
            .and_then(|e| e.get("id")?.as_u64())
            .map(|id| id.to_string());
        let id = match found {
            Some(id) => id,
            None => {
                let mut body = serde_json::json!({ "name": update.environment });
                if update.production {
                    body["tier"] = "production".into();
                }
                if let Some(url) = &update.environment_url {
                    body["external_url"] = url.as_str().into();
                }
                self.create(&format!("{project}/environments"), &body)
                    .await?
            }
        };
        refs.set(&key, &id)?;
        Ok(id)
    }

    async fn deployment(
        &self,
        update: &DeploymentUpdate,
        refs: &ForgeRefs,
    ) -> Result<(), SendError> {
        let project = project_path(&update.repo)?;
        let environment = self.environment(&project, update, refs).await?;
        let environment = numeric(&environment)?;
        if update.state == DeploymentState::Inactive {
            let path = format!("{project}/environments/{environment}/stop");
            return self.request(Method::POST, &path, None).await.map(drop);
        }
        let status = match update.state {
            DeploymentState::InProgress => "running",
            DeploymentState::Success => "success",
            DeploymentState::Failure => "failed",
            _ => "canceled",
        };
        let key = format!("deployment:{}:{}", update.repo, update.deployment);
        match refs.get(&key)?.filter(|id| !id.is_empty()) {
            Some(id) => {
                let path = format!("{project}/deployments/{}", numeric(&id)?);
                let body = serde_json::json!({ "status": status });
                self.request(Method::PUT, &path, Some(&body)).await?;
            }
            None => {
                let body = serde_json::json!({
                    "environment": update.environment,
                    "sha": sha(&update.sha)?,
                    "ref": update.git_ref.as_deref().unwrap_or(&update.sha),
                    "tag": update.tag,
                    "status": status,
                });
                let id = self
                    .create(&format!("{project}/deployments"), &body)
                    .await?;
                refs.set(&key, &id)?;
            }
        }
        if let Some(url) = &update.environment_url {
            let path = format!("{project}/environments/{environment}");
            let body = serde_json::json!({ "external_url": url });
            self.request(Method::PUT, &path, Some(&body)).await?;
        }
        Ok(())
    }

    /// Edits the merge request's note, or creates it.
    async fn note(&self, comment: &PullRequestComment, refs: &ForgeRefs) -> Result<(), SendError> {
        let notes = format!(
            "{}/merge_requests/{}/notes",
            project_path(&comment.repo)?,
            comment.number
        );
        let place = CommentPlace {
            key: format!("comment:{}:{}", comment.repo, comment.number),
            list: format!("{notes}?sort=asc"),
            edit: notes.clone(),
            edit_method: Method::PUT,
            create: notes,
            page_size: ("per_page", 100),
            text_at: &["body"],
        };
        let auth = ("private-token", &self.token);
        self.rest
            .upsert_comment(&place, auth, refs, &comment.body)
            .await
    }
}

#[async_trait]
impl Forge for GitLab {
    fn name(&self) -> &str {
        "gitlab"
    }

    async fn send(&self, update: &ForgeUpdate, refs: &ForgeRefs) -> Result<(), SendError> {
        match update {
            ForgeUpdate::Status(status) => self.status(status).await,
            ForgeUpdate::Deployment(deployment) => self.deployment(deployment, refs).await,
            ForgeUpdate::Comment(comment) => self.note(comment, refs).await,
        }
    }
}

/// `/projects/{url-encoded path}`, refusing paths that are not `group[/subgroup...]/project`.
fn project_path(repo: &str) -> Result<String, SendError> {
    let parts: Vec<&str> = repo.split('/').collect();
    if parts.len() < 2 || !parts.iter().all(|p| path_part_ok(p)) {
        return Err(refused(format!("\"{repo}\" is not a GitLab project path")));
    }
    Ok(format!("/projects/{}", parts.join("%2F")))
}

/// An environment name as a query value (names hold letters, digits, `-`, `_`, `/`, ...).
fn form_urlencoded_name(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// What an answer means: delivered, worth a retry (when), or refused for good.
fn judge(status: StatusCode, headers: &HeaderMap, body: &[u8], now: u64) -> Result<(), SendError> {
    if status.is_success() {
        return Ok(());
    }
    let message = format!(
        "GitLab answered {}: {}",
        status.as_u16(),
        forge_message(body)
    );
    let retry_after = header_u64(headers, RETRY_AFTER.as_str()).map(Duration::from_secs);
    if status == StatusCode::TOO_MANY_REQUESTS {
        let after = retry_after.or_else(|| {
            header_u64(headers, "ratelimit-reset")
                .map(|reset| Duration::from_secs(reset.saturating_sub(now)))
        });
        return Err(SendError::Retry { message, after });
    }
    if status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT {
        return Err(SendError::Retry {
            message,
            after: retry_after,
        });
    }
    Err(SendError::Final {
        status: Some(status.as_u16()),
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn projects_are_named_by_their_encoded_path_and_nothing_else() {
        assert_eq!(project_path("g/p").unwrap(), "/projects/g%2Fp");
        assert_eq!(
            project_path("g/sub/p.js").unwrap(),
            "/projects/g%2Fsub%2Fp.js"
        );
        for bad in ["p", "g/../p", "g/p?x=1", "g//p", "g/p#"] {
            assert!(project_path(bad).is_err(), "{bad}");
        }
        assert_eq!(form_urlencoded_name("review/pr-7 x"), "review%2Fpr-7%20x");
    }

    #[test]
    fn rate_limits_and_outages_are_retried_refusals_are_final() {
        let mut limited = HeaderMap::new();
        limited.insert("ratelimit-reset", "1030".parse().unwrap());
        match judge(StatusCode::TOO_MANY_REQUESTS, &limited, b"{}", 1000) {
            Err(SendError::Retry { after, .. }) => assert_eq!(after, Some(Duration::from_secs(30))),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            judge(StatusCode::BAD_GATEWAY, &HeaderMap::new(), b"", 0),
            Err(SendError::Retry { after: None, .. })
        ));
        let body = br#"{"message":{"name":["has already been taken"]}}"#;
        match judge(StatusCode::BAD_REQUEST, &HeaderMap::new(), body, 0) {
            Err(SendError::Final { status, message }) => {
                assert_eq!(status, Some(400));
                assert!(message.contains("has already been taken"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }
}
