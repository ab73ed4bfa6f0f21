//! Gitea and Forgejo as a [`Forge`]: commit statuses and the pull request comment, through the
//! API v1 (`{url}/api/v1`) with a token (`Authorization: token ...`). Gitea has no deployments
//! API: a deployment's URL is in the comment.

use std::time::Duration;

use async_trait::async_trait;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};

use super::http::{CommentPlace, Rest, judge_plain, owner_name_path, sensitive, sha};
use super::{CommitStatus, Forge, ForgeRefs, ForgeUpdate, PullRequestComment, SendError};
use crate::Error;
use crate::secret::Secret;

/// Sends updates to a Gitea or Forgejo instance.
pub struct Gitea {
    rest: Rest,
    /// The `Authorization` header's value.
    token: HeaderValue,
}

impl std::fmt::Debug for Gitea {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gitea")
            .field("api_url", &self.rest.base())
            .finish_non_exhaustive()
    }
}

impl Gitea {
    /// A client of the instance at `url` (`https://gitea.example`) with `token` (scope
    /// `write:repository`, `write:issue`), answering within `timeout`.
    pub fn new(url: &str, token: &Secret, timeout: Duration) -> Result<Gitea, Error> {
        let header = sensitive(&format!("token {}", token.expose())).map_err(|_| Error::Forge {
            forge: "gitea".into(),
            message: "the token is not a valid header value".into(),
        })?;
        let base = format!("{}/api/v1", url.trim_end_matches('/'));
        let rest = Rest::new(
            "Gitea",
            &base,
            timeout,
            vec![("accept", "application/json")],
            judge,
        )?
        .with_marker_key(token.expose().as_bytes());
        Ok(Gitea {
            rest,
            token: header,
        })
    }

    async fn status(&self, status: &CommitStatus) -> Result<(), SendError> {
        let path = format!(
            "{}/statuses/{}",
            repo_path(&status.repo)?,
            sha(&status.sha)?
        );
        // "Create a commit status": `state` (pending, success, error, failure, warning),
        // `context`, `target_url`, `description`.
        let mut body = serde_json::json!({
            "state": status.state,
            "context": status.context,
            "description": status.description,
        });
        if let Some(url) = &status.target_url {
            body["target_url"] = url.as_str().into();
        }
        let auth = ("authorization", &self.token);
        self.rest
            .request(Method::POST, &path, auth, Some(&body))
            .await
            .map(drop)
    }

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
            page_size: ("limit", 50),
            text_at: &["body"],
        };
        let auth = ("authorization", &self.token);
        self.rest
            .upsert_comment(&place, auth, refs, &comment.body)
            .await
    }
}

#[async_trait]
impl Forge for Gitea {
    fn name(&self) -> &str {
        "gitea"
    }

    async fn send(&self, update: &ForgeUpdate, refs: &ForgeRefs) -> Result<(), SendError> {
        match update {
            ForgeUpdate::Status(status) => self.status(status).await,
            ForgeUpdate::Comment(comment) => self.comment(comment, refs).await,
            // No deployments API: the preview's URL is in the comment.
            ForgeUpdate::Deployment(_) => Ok(()),
        }
    }
}

/// `/repos/{owner}/{name}`, refusing names that would change the path.
fn repo_path(repo: &str) -> Result<String, SendError> {
    owner_name_path(repo, "/repos", "Gitea owner/name")
}

fn judge(status: StatusCode, headers: &HeaderMap, body: &[u8], _now: u64) -> Result<(), SendError> {
    judge_plain("Gitea", status, headers, body)
}
