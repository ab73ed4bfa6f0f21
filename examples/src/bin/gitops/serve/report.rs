//! Reporting to the forge from `serve`: with `--github-token-env` (or as a GitHub App, with
//! `--github-app-id` and `--github-app-key-file`), runs of GitHub deliveries set a commit status
//! per pipeline, through the ledger's outbox and a background sender.

use std::sync::Arc;

use gitops_core::ErrorChain;
use gitops_core::ledger::Ledger;
use gitops_core::report::{GitHub, GitHubApp, Reporter, Sender};
use gitops_core::secret::Secret;

use super::ServeArgs;

/// The reporter for the worker, and the sender to spawn; `None` without a token or an App.
pub fn github(
    args: &ServeArgs,
    ledger: &Ledger,
    public_url: Option<&str>,
) -> Result<Option<(Reporter, Sender)>, String> {
    let error = |e: gitops_core::Error| format!("error: {}", ErrorChain(&e));
    let builder = match (&args.github_app_id, &args.github_app_key_file) {
        (Some(id), Some(key_file)) => {
            GitHub::app_builder(GitHubApp::from_key_file(id, key_file).map_err(error)?)
        }
        _ => match super::secret("--github-token-env", &args.github_token_env)? {
            Some(token) => GitHub::builder(Secret::new(token)),
            None => return Ok(None),
        },
    };
    let github = builder
        .with_api_url(&args.github_api_url)
        .build()
        .map_err(error)?;
    let mut reporter = Reporter::new(ledger.clone());
    if let Some(url) = public_url {
        reporter = reporter.with_public_url(url);
    }
    let sender = Sender::new(ledger.clone())
        .with_forge(Arc::new(github))
        .with_wake(reporter.wake());
    Ok(Some((reporter, sender)))
}
