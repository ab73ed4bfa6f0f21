//! GitHub webhook payloads: `push`, `pull_request`, `create`, `delete`, `release`, `ping`.
//! Gitea and Forgejo send the same shapes (see [`super::gitea`]), parsed by the same code.

use serde::Deserialize;

use super::{Provider, WebhookError, decode, invalid, non_zero_sha};
use crate::event::{
    BranchAction, BranchEvent, EventPayload, GitEvent, PullRequestEvent, PushEvent, RefTip,
    ReleaseEvent, TagAction, TagEvent,
};
use crate::release::parse_tag;

const SUPPORTED: &str = "push, pull_request, create, delete, release, ping";
const P: Provider = Provider::GitHub;

#[derive(Deserialize)]
struct Repository {
    full_name: String,
}

#[derive(Deserialize)]
struct Organization {
    login: String,
}

/// A GitHub user (`sender`, `pull_request.user`).
#[derive(Deserialize)]
struct User {
    login: String,
}

#[derive(Deserialize)]
struct Label {
    name: String,
}

fn login(user: Option<User>) -> Option<String> {
    user.map(|u| u.login)
}

#[derive(Deserialize)]
pub(super) struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: Option<String>,
    #[serde(default)]
    created: bool,
    #[serde(default)]
    deleted: bool,
    #[serde(default)]
    forced: bool,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Deserialize)]
pub(super) struct PullRequestHook {
    pub(super) action: String,
    number: u64,
    pull_request: PullRequest,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Deserialize)]
struct PullRequest {
    title: String,
    #[serde(default)]
    draft: Option<bool>,
    #[serde(default)]
    merged: Option<bool>,
    head: Branch,
    base: Branch,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct Branch {
    #[serde(rename = "ref")]
    git_ref: String,
    sha: String,
    /// Null when the head's fork was deleted.
    #[serde(default)]
    repo: Option<Repository>,
}

#[derive(Deserialize)]
pub(super) struct CreateDelete {
    #[serde(rename = "ref")]
    git_ref: String,
    /// Gitea's `create` only.
    #[serde(default)]
    sha: Option<String>,
    ref_type: String,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Deserialize)]
pub(super) struct ReleaseHook {
    action: String,
    release: Release,
    repository: Repository,
    #[serde(default)]
    sender: Option<User>,
}

#[derive(Deserialize)]
struct Release {
    tag_name: String,
    #[serde(default)]
    target_commitish: Option<String>,
    #[serde(default)]
    prerelease: bool,
    #[serde(default)]
    draft: bool,
}

#[derive(Deserialize)]
struct Ping {
    repository: Option<Repository>,
    organization: Option<Organization>,
    #[serde(default)]
    sender: Option<User>,
}

pub(super) fn parse(event_type: &str, body: &[u8]) -> Result<GitEvent, WebhookError> {
    match event_type {
        "push" => push(P, decode(P, event_type, body)?),
        "pull_request" => Ok(pull_request(decode(P, event_type, body)?)),
        "create" | "delete" => create_delete(P, event_type, decode(P, event_type, body)?),
        "release" => Ok(release(decode(P, event_type, body)?)),
        "ping" => {
            let ping: Ping = decode(P, event_type, body)?;
            let repo = match (ping.repository, ping.organization) {
                (Some(r), _) => r.full_name,
                (None, Some(o)) => o.login,
                (None, None) => String::new(),
            };
            Ok(GitEvent {
                payload: EventPayload::Ping,
                repo,
                sha: None,
                actor: login(ping.sender),
            })
        }
        other => Err(WebhookError::Unsupported {
            provider: P,
            event_type: other.to_owned(),
            supported: SUPPORTED,
        }),
    }
}

pub(super) fn push(provider: Provider, p: Push) -> Result<GitEvent, WebhookError> {
    let before = non_zero_sha(p.before);
    let after = non_zero_sha(p.after);
    let sha = if p.deleted { None } else { after.clone() };
    let payload = if let Some(name) = p.git_ref.strip_prefix("refs/tags/") {
        let action = if p.created || before.is_none() {
            TagAction::Created
        } else if p.deleted || after.is_none() {
            TagAction::Deleted
        } else {
            TagAction::Moved
        };
        EventPayload::Tag(TagEvent {
            action,
            name: name.to_owned(),
            version: parse_tag(name),
        })
    } else if let Some(branch) = p.git_ref.strip_prefix("refs/heads/") {
        EventPayload::Push(PushEvent {
            branch: branch.to_owned(),
            created: p.created || before.is_none(),
            deleted: p.deleted || after.is_none(),
            git_ref: p.git_ref,
            before,
            after,
            forced: p.forced,
        })
    } else {
        return Err(invalid(
            provider,
            "push",
            format!("ref \"{}\" is neither a branch nor a tag", p.git_ref),
        ));
    };
    Ok(GitEvent {
        payload,
        repo: p.repository.full_name,
        sha,
        actor: login(p.sender),
    })
}

pub(super) fn pull_request(h: PullRequestHook) -> GitEvent {
    let pr = h.pull_request;
    let sha = Some(pr.head.sha.clone());
    let head_repo = pr.head.repo.map(|r| r.full_name);
    let base_repo = pr
        .base
        .repo
        .map_or_else(|| h.repository.full_name.clone(), |r| r.full_name);
    // A head whose repository is gone (a deleted fork) is a stranger's.
    let fork = head_repo.as_deref() != Some(base_repo.as_str());
    GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action: h.action,
            number: h.number,
            title: pr.title,
            draft: pr.draft.unwrap_or(false),
            merged: pr.merged.unwrap_or(false),
            head: RefTip {
                git_ref: pr.head.git_ref,
                sha: Some(pr.head.sha),
                repo: head_repo,
            },
            base: RefTip {
                git_ref: pr.base.git_ref,
                sha: Some(pr.base.sha),
                repo: Some(base_repo),
            },
            fork,
            labels: pr.labels.into_iter().map(|l| l.name).collect(),
            author: login(pr.user),
        }),
        repo: h.repository.full_name,
        sha,
        actor: login(h.sender),
    }
}

pub(super) fn create_delete(
    provider: Provider,
    event_type: &str,
    c: CreateDelete,
) -> Result<GitEvent, WebhookError> {
    let created = event_type == "create";
    let payload = match c.ref_type.as_str() {
        "tag" => EventPayload::Tag(TagEvent {
            action: if created {
                TagAction::Created
            } else {
                TagAction::Deleted
            },
            version: parse_tag(&c.git_ref),
            name: c.git_ref,
        }),
        "branch" => EventPayload::Branch(BranchEvent {
            action: if created {
                BranchAction::Created
            } else {
                BranchAction::Deleted
            },
            name: c.git_ref,
        }),
        other => {
            return Err(invalid(
                provider,
                event_type,
                format!("ref_type \"{other}\" is neither \"branch\" nor \"tag\""),
            ));
        }
    };
    // GitHub's create/delete payloads carry no commit (the repository resolves the ref);
    // Gitea's create carries the ref's `sha`.
    let sha = if created { non_zero_sha(c.sha) } else { None };
    Ok(GitEvent {
        payload,
        repo: c.repository.full_name,
        sha,
        actor: login(c.sender),
    })
}

pub(super) fn release(h: ReleaseHook) -> GitEvent {
    let r = h.release;
    let version = parse_tag(&r.tag_name);
    let prerelease = r.prerelease || version.as_ref().is_some_and(|v| !v.pre.is_empty());
    // `target_commitish` is a branch name or a commit id; only the latter is a sha.
    let sha = r
        .target_commitish
        .filter(|t| t.len() == 40 && t.bytes().all(|b| b.is_ascii_hexdigit()));
    GitEvent {
        payload: EventPayload::Release(ReleaseEvent {
            action: h.action,
            tag: r.tag_name,
            version,
            prerelease,
            draft: r.draft,
        }),
        repo: h.repository.full_name,
        sha,
        actor: login(h.sender),
    }
}
