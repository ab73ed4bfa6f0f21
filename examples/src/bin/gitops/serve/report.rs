//! Reporting to the forge from `serve`: with `--github-token-env`, runs of GitHub deliveries
//! set a commit status per pipeline, through the ledger's outbox and a background sender.

use std::sync::Arc;

use gitops_core::ErrorChain;
use gitops_core::ledger::Ledger;
use gitops_core::report::{GitHub, Reporter, Sender};
use gitops_core::secret::Secret;

use super::ServeArgs;

/// The reporter for the worker, and the sender to spawn; `None` without a token.
pub fn github(
    args: &ServeArgs,
    ledger: &Ledger,
    public_url: Option<&str>,
) -> Result<Option<(Reporter, Sender)>, String> {
    let Some(token) = super::secret("--github-token-env", &args.github_token_env)? else {
        return Ok(None);
    };
    let github = GitHub::builder(Secret::new(token))
        .with_api_url(&args.github_api_url)
        .build()
        .map_err(|e| format!("error: {}", ErrorChain(&e)))?;
    let mut reporter = Reporter::new(ledger.clone());
    if let Some(url) = public_url {
        reporter = reporter.with_public_url(url);
    }
    let sender = Sender::new(ledger.clone())
        .with_forge(Arc::new(github))
        .with_wake(reporter.wake());
    Ok(Some((reporter, sender)))
}
