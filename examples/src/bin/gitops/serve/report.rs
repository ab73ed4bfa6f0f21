//! Reporting to the forges from `serve`: with `--github-token-env` (or as a GitHub App, with
//! `--github-app-id` and `--github-app-key-file`), `--gitlab-api-token-env`,
//! `--gitea-api-token-env` or `--bitbucket-api-token-env` (or an app password), the runs of that
//! forge's deliveries set a commit status per pipeline, a deployment per deploy (GitHub,
//! GitLab) and the pull request's comment, through the ledger's outbox and a background sender.

use std::sync::Arc;

use gitops_core::ErrorChain;
use gitops_core::ledger::Ledger;
use std::time::Duration;

use gitops_core::report::{
    Bitbucket, BitbucketAuth, GitHub, GitHubApp, GitLab, Gitea, Reporter, Sender,
};
use gitops_core::secret::Secret;

use super::ServeArgs;

/// What reports: the reporter for the worker and the forges it reports to (by provider name).
pub struct Reporting {
    pub reporter: Reporter,
    pub forges: Vec<&'static str>,
}

impl Reporting {
    /// The reporter, when deliveries of `provider` are reported.
    pub fn to(&self, provider: &str) -> Option<&Reporter> {
        self.forges.contains(&provider).then_some(&self.reporter)
    }
}

/// The reporting and the sender to spawn; `None` without a forge token.
pub fn forges(
    args: &ServeArgs,
    ledger: &Ledger,
    public_url: Option<&str>,
) -> Result<Option<(Reporting, Sender)>, String> {
    let failed = |e: gitops_core::Error| format!("error: {}", ErrorChain(&e));
    let mut reporter = Reporter::new(ledger.clone());
    if let Some(url) = public_url {
        reporter = reporter.with_public_url(url);
    }
    let mut sender = Sender::new(ledger.clone()).with_wake(reporter.wake());
    let mut forges = Vec::new();
    let github = match (&args.github_app_id, &args.github_app_key_file) {
        (Some(id), Some(key_file)) => Some(GitHub::app_builder(
            GitHubApp::from_key_file(id, key_file).map_err(failed)?,
        )),
        _ => super::secret("--github-token-env", &args.github_token_env)?
            .map(|token| GitHub::builder(Secret::new(token))),
    };
    if let Some(builder) = github {
        let github = builder
            .with_api_url(&args.github_api_url)
            .build()
            .map_err(failed)?;
        sender = sender.with_forge(Arc::new(github));
        forges.push("github");
    }
    if let Some(token) = super::secret("--gitlab-api-token-env", &args.gitlab_api_token_env)? {
        let gitlab = GitLab::builder(Secret::new(token))
            .with_url(&args.gitlab_url)
            .build()
            .map_err(failed)?;
        sender = sender.with_forge(Arc::new(gitlab));
        forges.push("gitlab");
    }
    let timeout = Duration::from_secs(30);
    if let (Some(token), Some(url)) = (
        super::secret("--gitea-api-token-env", &args.gitea_api_token_env)?,
        &args.gitea_url,
    ) {
        let gitea = Gitea::new(url, &Secret::new(token), timeout).map_err(failed)?;
        sender = sender.with_forge(Arc::new(gitea));
        forges.push("gitea");
    }
    let bitbucket = match (
        super::secret("--bitbucket-api-token-env", &args.bitbucket_api_token_env)?,
        super::secret(
            "--bitbucket-app-password-env",
            &args.bitbucket_app_password_env,
        )?,
        &args.bitbucket_username,
    ) {
        (Some(token), _, _) => Some(BitbucketAuth::Token(Secret::new(token))),
        (None, Some(password), Some(username)) => Some(BitbucketAuth::AppPassword {
            username: username.clone(),
            password: Secret::new(password),
        }),
        _ => None,
    };
    if let Some(auth) = bitbucket {
        let bitbucket = Bitbucket::new(&args.bitbucket_api_url, &auth, timeout).map_err(failed)?;
        sender = sender.with_forge(Arc::new(bitbucket));
        forges.push("bitbucket");
    }
    if forges.is_empty() {
        return Ok(None);
    }
    Ok(Some((Reporting { reporter, forges }, sender)))
}
