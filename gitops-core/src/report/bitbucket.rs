//! Bitbucket Cloud as a [`Forge`]: build statuses and the pull request comment, through the API
//! 2.0 (`https://api.bitbucket.org/2.0`) with an access token (`Authorization: Bearer`) or an
//! app password (basic). Bitbucket's deployments belong to Bitbucket Pipelines: a deployment's
//! URL is in the comment.

use std::time::Duration;

use async_trait::async_trait;
use base64::Engine;
use hyper::header::{HeaderMap, HeaderValue};
use hyper::{Method, StatusCode};

use super::http::{CommentPlace, Rest, judge_plain, owner_name_path, sensitive, sha};
use super::{
    CommitStatus, Forge, ForgeRefs, ForgeUpdate, PullRequestComment, SendError, StatusState,
};
use crate::Error;
use crate::secret::Secret;

/// Bitbucket Cloud's API.
pub const BITBUCKET_API_URL: &str = "https://api.bitbucket.org/2.0";

/// The longest build status key Bitbucket takes.
const MAX_KEY_CHARS: usize = 40;

/// How a [`Bitbucket`] client authenticates.
#[derive(Debug)]
pub enum BitbucketAuth {
    /// A repository, project or workspace access token (`Authorization: Bearer`).
    Token(Secret),
    /// A user's app password (`Authorization: Basic`).
    AppPassword {
        /// The user's name.
        username: String,
        /// The app password.
        password: Secret,
    },
}

/// Sends updates to Bitbucket Cloud.
pub struct Bitbucket {
    rest: Rest,
    /// The `Authorization` header's value.
    auth: HeaderValue,
}

impl std::fmt::Debug for Bitbucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bitbucket")
            .field("api_url", &self.rest.base())
            .finish_non_exhaustive()
    }
}

impl Bitbucket {
    /// A client of the API at `api_url` (`BITBUCKET_API_URL`), answering within `timeout`.
    pub fn new(api_url: &str, auth: &BitbucketAuth, timeout: Duration) -> Result<Bitbucket, Error> {
        let value = match auth {
            BitbucketAuth::Token(token) => format!("Bearer {}", token.expose()),
            BitbucketAuth::AppPassword { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                )
            }
        };
        let header = sensitive(&value).map_err(|_| Error::Forge {
            forge: "bitbucket".into(),
            message: "the credentials are not a valid header value".into(),
        })?;
        let rest = Rest::new(
            "Bitbucket",
            api_url.trim_end_matches('/'),
            timeout,
            vec![("accept", "application/json")],
            judge,
        )?
        .with_marker_key(value.as_bytes());
        Ok(Bitbucket { rest, auth: header })
    }

    async fn status(&self, status: &CommitStatus) -> Result<(), SendError> {
        let repo = repo_path(&status.repo)?;
        let sha = sha(&status.sha)?;
        let state = match status.state {
            StatusState::Pending => "INPROGRESS",
            StatusState::Success => "SUCCESSFUL",
            StatusState::Failure => "FAILED",
            StatusState::Error
                if status.description.starts_with("superseded")
                    || status.description.contains("cancelled") =>
            {
                "STOPPED"
            }
            StatusState::Error => "FAILED",
        };
        let key = status.context.replacen('/', "-", 1);
        let key: String = key.chars().take(MAX_KEY_CHARS).collect();
        // `url` is required: the run's page, else the commit's page on Bitbucket.
        let url = status
            .target_url
            .clone()
            .unwrap_or_else(|| format!("https://bitbucket.org/{}/commits/{sha}", status.repo));
        let body = serde_json::json!({
            "state": state,
            "key": key,
            "name": status.context,
            "url": url,
            "description": status.description,
        });
        let path = format!("{repo}/commit/{sha}/statuses/build");
        let auth = ("authorization", &self.auth);
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
        let comments = format!(
            "{}/pullrequests/{}/comments",
            repo_path(&comment.repo)?,
            comment.number
        );
        let place = CommentPlace {
            key: format!("comment:{}:{}", comment.repo, comment.number),
            list: comments.clone(),
            edit: comments.clone(),
            edit_method: Method::PUT,
            create: comments,
            page_size: ("pagelen", 100),
            text_at: &["content", "raw"],
        };
        let auth = ("authorization", &self.auth);
        self.rest
            .upsert_comment(&place, auth, refs, &comment.body)
            .await
    }
}

#[async_trait]
impl Forge for Bitbucket {
    fn name(&self) -> &str {
        "bitbucket"
    }

    async fn send(&self, update: &ForgeUpdate, refs: &ForgeRefs) -> Result<(), SendError> {
        match update {
            ForgeUpdate::Status(status) => self.status(status).await,
            ForgeUpdate::Comment(comment) => self.comment(comment, refs).await,
            // Bitbucket's deployments are Bitbucket Pipelines': the URL is in the comment.
            ForgeUpdate::Deployment(_) => Ok(()),
        }
    }
}

/// `/repositories/{owner}/{name}`, refusing names that would change the path.
fn repo_path(repo: &str) -> Result<String, SendError> {
    owner_name_path(repo, "/repositories", "Bitbucket workspace/repository")
}

fn judge(status: StatusCode, headers: &HeaderMap, body: &[u8], _now: u64) -> Result<(), SendError> {
    judge_plain("Bitbucket", status, headers, body)
}
