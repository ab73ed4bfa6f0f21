//! Gitea and Forgejo webhook payloads: `push`, `create`, `delete`, `pull_request`, `release`.
//!
//! Their bodies have GitHub's shapes (the same field names, `sender.login`,
//! `repository.full_name`), so [`super::github`]'s types parse them; what differs is named
//! here: the pull request actions (`synchronized`), the draft marker (a `WIP:` title before
//! Gitea 1.22's `draft`), and `create`'s commit.

use super::github;
use super::{Provider, WebhookError, decode};
use crate::event::{EventPayload, GitEvent};

const SUPPORTED: &str = "push, create, delete, pull_request, release";
const P: Provider = Provider::Gitea;

/// Title prefixes that make a pull request a draft ("work in progress"): Gitea's default
/// `WORK_IN_PROGRESS_PREFIXES`, compared without case as Gitea does.
const WIP_PREFIXES: [&str; 2] = ["wip:", "[wip]"];

pub(super) fn parse(event_type: &str, body: &[u8]) -> Result<GitEvent, WebhookError> {
    match event_type {
        "push" => github::push(P, decode(P, event_type, body)?),
        "create" | "delete" => github::create_delete(P, event_type, decode(P, event_type, body)?),
        "pull_request" => Ok(pull_request(decode(P, event_type, body)?)),
        "release" => Ok(github::release(decode(P, event_type, body)?)),
        other => Err(WebhookError::Unsupported {
            provider: P,
            event_type: other.to_owned(),
            supported: SUPPORTED,
        }),
    }
}

fn pull_request(mut hook: github::PullRequestHook) -> GitEvent {
    // Gitea's words where they differ from GitHub's; the others (`opened`, `closed`,
    // `reopened`, `edited`, `label_updated`, ...) are kept as Gitea sends them.
    if hook.action == "synchronized" {
        "synchronize".clone_into(&mut hook.action);
    }
    let mut event = github::pull_request(hook);
    if let EventPayload::PullRequest(pr) = &mut event.payload {
        let title = pr.title.trim_start().to_lowercase();
        pr.draft |= WIP_PREFIXES.iter().any(|p| title.starts_with(p));
    }
    event
}
