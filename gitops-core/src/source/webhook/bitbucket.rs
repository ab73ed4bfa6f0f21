//! Bitbucket Cloud webhook payloads (`X-Event-Key`): `repo:push`, whose every entry of
//! `push.changes` is an event of its own, and `pullrequest:created`, `:updated`, `:fulfilled`,
//! `:rejected`.
//!
//! Pull request payloads name commits by 12-digit prefixes; they are kept as sent (checked to
//! be hexadecimal) and completed against the repository by whoever has it
//! ([`Repository::complete_ids`](crate::repo::Repository::complete_ids)).

use serde::Deserialize;

use super::{Provider, WebhookError, decode, invalid};
use crate::event::{
    EventPayload, GitEvent, PullRequestEvent, PushEvent, RefTip, TagAction, TagEvent,
};
use crate::release::parse_tag;

const SUPPORTED: &str = "repo:push, pullrequest:created, pullrequest:updated, \
                         pullrequest:fulfilled, pullrequest:rejected";
const P: Provider = Provider::Bitbucket;

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

/// A Bitbucket account. `nickname` is today's public handle; `username` is what payloads sent
/// before 2019 carry; `display_name` is the last resort.
#[derive(Deserialize)]
struct Account {
    #[serde(default)]
    nickname: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
}

fn handle(account: Option<Account>) -> Option<String> {
    let a = account?;
    [a.nickname, a.username, a.display_name]
        .into_iter()
        .flatten()
        .find(|n| !n.is_empty())
}

#[derive(Deserialize)]
struct PushHook {
    push: Push,
    repository: Repository,
    #[serde(default)]
    actor: Option<Account>,
}

#[derive(Deserialize)]
struct Push {
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    old: Option<RefState>,
    new: Option<RefState>,
    #[serde(default)]
    created: bool,
    /// The ref was deleted.
    #[serde(default)]
    closed: bool,
    #[serde(default)]
    forced: bool,
}

#[derive(Deserialize)]
struct RefState {
    #[serde(rename = "type")]
    kind: String,
    name: String,
    #[serde(default)]
    target: Option<Commit>,
}

#[derive(Deserialize)]
struct Commit {
    hash: String,
}

#[derive(Deserialize)]
struct PullRequestHook {
    pullrequest: PullRequest,
    repository: Repository,
    #[serde(default)]
    actor: Option<Account>,
}

#[derive(Deserialize)]
struct PullRequest {
    id: u64,
    title: String,
    #[serde(default)]
    draft: Option<bool>,
    source: Endpoint,
    destination: Endpoint,
    #[serde(default)]
    author: Option<Account>,
}

#[derive(Deserialize)]
struct Endpoint {
    branch: Branch,
    /// Null when the source branch is gone.
    #[serde(default)]
    commit: Option<Commit>,
    /// Null when the source's fork was deleted.
    #[serde(default)]
    repository: Option<Repository>,
}

#[derive(Deserialize)]
struct Branch {
    name: String,
}

/// Parses a delivery: a push gives one event per change (none for a push without changes),
/// a pull request one.
pub(super) fn parse(event_type: &str, body: &[u8]) -> Result<Vec<GitEvent>, WebhookError> {
    let (action, merged) = match event_type {
        "repo:push" => return push(decode(P, event_type, body)?),
        "pullrequest:created" => ("opened", false),
        // Bitbucket says neither what changed nor the commit before: new commits and edits of
        // the title or description look alike in one payload. Both parse as `synchronize`, so
        // that no pushed commit goes unbuilt; whoever keeps the pull request's earlier events
        // can tell an edit by its unmoved head (`gitops serve` makes such a one `edited`).
        "pullrequest:updated" => ("synchronize", false),
        "pullrequest:fulfilled" => ("closed", true),
        "pullrequest:rejected" => ("closed", false),
        other => {
            return Err(WebhookError::Unsupported {
                provider: P,
                event_type: other.to_owned(),
                supported: SUPPORTED,
            });
        }
    };
    let hook: PullRequestHook = decode(P, event_type, body)?;
    Ok(vec![pull_request(event_type, hook, action, merged)?])
}

/// A commit id as Bitbucket sends it: full, or a prefix of at least 4 digits. Anything else
/// (a revision such as `HEAD~1`) is refused, so that it never reaches `git rev-parse`.
fn commit_id(event_type: &str, commit: Option<Commit>) -> Result<Option<String>, WebhookError> {
    let Some(Commit { hash }) = commit else {
        return Ok(None);
    };
    if (4..=40).contains(&hash.len()) && hash.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(Some(hash.to_ascii_lowercase()))
    } else {
        Err(invalid(
            P,
            event_type,
            format!("\"{hash}\" is not a commit id (4 to 40 hexadecimal digits)"),
        ))
    }
}

fn push(hook: PushHook) -> Result<Vec<GitEvent>, WebhookError> {
    let actor = handle(hook.actor);
    let repo = hook.repository.full_name;
    hook.push
        .changes
        .into_iter()
        .map(|change| {
            let (payload, sha) = change_event(change)?;
            Ok(GitEvent {
                payload,
                repo: repo.clone(),
                sha,
                actor: actor.clone(),
            })
        })
        .collect()
}

/// One change of a push, and the commit it builds (none for a deletion).
fn change_event(change: Change) -> Result<(EventPayload, Option<String>), WebhookError> {
    const T: &str = "repo:push";
    let Some(state) = change.new.as_ref().or(change.old.as_ref()) else {
        return Err(invalid(P, T, "a change has neither an old nor a new ref"));
    };
    let (kind, name) = (state.kind.clone(), state.name.clone());
    let before = commit_id(T, change.old.and_then(|o| o.target))?;
    let after = commit_id(T, change.new.and_then(|n| n.target))?.filter(|_| !change.closed);
    match kind.as_str() {
        "branch" | "named_branch" => Ok((
            EventPayload::Push(PushEvent {
                git_ref: format!("refs/heads/{name}"),
                branch: name,
                created: change.created || before.is_none(),
                deleted: after.is_none(),
                forced: change.forced,
                before,
                after: after.clone(),
            }),
            after,
        )),
        "tag" | "annotated_tag" => {
            let action = match (&before, &after) {
                (_, None) => TagAction::Deleted,
                (None, Some(_)) => TagAction::Created,
                (Some(_), Some(_)) => TagAction::Moved,
            };
            let tag = TagEvent {
                action,
                version: parse_tag(&name),
                name,
            };
            Ok((EventPayload::Tag(tag), after))
        }
        other => Err(invalid(
            P,
            T,
            format!("ref \"{name}\" is of type \"{other}\", neither a branch nor a tag"),
        )),
    }
}

fn pull_request(
    event_type: &str,
    hook: PullRequestHook,
    action: &str,
    merged: bool,
) -> Result<GitEvent, WebhookError> {
    let pr = hook.pullrequest;
    let head_sha = commit_id(event_type, pr.source.commit)?;
    let base_sha = commit_id(event_type, pr.destination.commit)?;
    let head_repo = pr.source.repository.map(|r| r.full_name);
    let base_repo = pr
        .destination
        .repository
        .map_or_else(|| hook.repository.full_name.clone(), |r| r.full_name);
    // A source whose repository is gone (a deleted fork) is a stranger's.
    let fork = head_repo.as_deref() != Some(base_repo.as_str());
    Ok(GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action: action.to_owned(),
            number: pr.id,
            title: pr.title,
            draft: pr.draft.unwrap_or(false),
            merged,
            head: RefTip {
                git_ref: pr.source.branch.name,
                sha: head_sha.clone(),
                repo: head_repo,
            },
            base: RefTip {
                git_ref: pr.destination.branch.name,
                sha: base_sha,
                repo: Some(base_repo),
            },
            fork,
            // Bitbucket pull requests have no labels.
            labels: Vec::new(),
            author: handle(pr.author),
        }),
        repo: hook.repository.full_name,
        sha: head_sha,
        actor: handle(hook.actor),
    })
}
