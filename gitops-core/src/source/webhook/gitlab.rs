//! GitLab webhook payloads: `push`, `tag_push`, `merge_request`, `release`.

use serde::Deserialize;

use super::{Provider, WebhookError, decode, invalid, non_zero_sha};
use crate::event::{
    EventPayload, GitEvent, PullRequestEvent, PushEvent, RefTip, ReleaseEvent, TagAction, TagEvent,
};
use crate::release::parse_tag;

const SUPPORTED: &str = "Push Hook, Tag Push Hook, Merge Request Hook, Release Hook";
const P: Provider = Provider::GitLab;

#[derive(Deserialize)]
struct Project {
    path_with_namespace: String,
}

#[derive(Deserialize)]
struct Kind {
    object_kind: Option<String>,
}

#[derive(Deserialize)]
struct Push {
    #[serde(rename = "ref")]
    git_ref: String,
    before: Option<String>,
    after: Option<String>,
    checkout_sha: Option<String>,
    project: Project,
    #[serde(default)]
    user_username: Option<String>,
}

#[derive(Deserialize)]
struct MergeRequestHook {
    project: Project,
    object_attributes: MergeRequest,
    #[serde(default)]
    user: Option<User>,
    #[serde(default)]
    labels: Vec<Label>,
}

#[derive(Deserialize)]
struct User {
    username: String,
}

#[derive(Deserialize)]
struct Label {
    title: String,
}

#[derive(Deserialize)]
struct MergeRequest {
    iid: u64,
    title: String,
    action: Option<String>,
    state: Option<String>,
    draft: Option<bool>,
    work_in_progress: Option<bool>,
    source_branch: String,
    target_branch: String,
    last_commit: Option<Commit>,
    oldrev: Option<String>,
    #[serde(default)]
    source_project_id: Option<u64>,
    #[serde(default)]
    target_project_id: Option<u64>,
    #[serde(default)]
    source: Option<Project>,
    #[serde(default)]
    target: Option<Project>,
}

#[derive(Deserialize)]
struct Commit {
    id: String,
}

#[derive(Deserialize)]
struct ReleaseHook {
    action: String,
    tag: String,
    project: Project,
    commit: Option<Commit>,
}

/// Maps a `X-Gitlab-Event` header value or an `object_kind` to the `object_kind`.
fn object_kind(event_type: &str) -> Option<&'static str> {
    match event_type {
        "Push Hook" | "push" => Some("push"),
        "Tag Push Hook" | "tag_push" => Some("tag_push"),
        "Merge Request Hook" | "merge_request" => Some("merge_request"),
        "Release Hook" | "release" => Some("release"),
        _ => None,
    }
}

pub(super) fn parse(event_type: &str, body: &[u8]) -> Result<GitEvent, WebhookError> {
    let Some(kind) = object_kind(event_type) else {
        return Err(WebhookError::Unsupported {
            provider: P,
            event_type: event_type.to_owned(),
            supported: SUPPORTED,
        });
    };
    let declared: Kind = decode(P, kind, body)?;
    if let Some(declared) = declared.object_kind.filter(|d| d != kind) {
        return Err(invalid(
            P,
            kind,
            format!(
                "event type \"{event_type}\" does not match the payload's object_kind \"{declared}\""
            ),
        ));
    }
    match kind {
        "push" => push(decode(P, kind, body)?),
        "tag_push" => tag_push(decode(P, kind, body)?),
        "merge_request" => Ok(merge_request(decode(P, kind, body)?)),
        _ => Ok(release(decode(P, kind, body)?)),
    }
}

fn push(p: Push) -> Result<GitEvent, WebhookError> {
    let Some(branch) = p.git_ref.strip_prefix("refs/heads/") else {
        return Err(invalid(
            P,
            "push",
            format!("ref \"{}\" is not a branch", p.git_ref),
        ));
    };
    let before = non_zero_sha(p.before);
    let after = non_zero_sha(p.after);
    let sha = after
        .as_ref()
        .and(non_zero_sha(p.checkout_sha).or(after.clone()));
    Ok(GitEvent {
        payload: EventPayload::Push(PushEvent {
            branch: branch.to_owned(),
            created: before.is_none(),
            deleted: after.is_none(),
            // GitLab does not say whether a push was forced.
            forced: false,
            git_ref: p.git_ref,
            before,
            after,
        }),
        repo: p.project.path_with_namespace,
        sha,
        actor: p.user_username,
    })
}

fn tag_push(p: Push) -> Result<GitEvent, WebhookError> {
    let Some(name) = p.git_ref.strip_prefix("refs/tags/") else {
        return Err(invalid(
            P,
            "tag_push",
            format!("ref \"{}\" is not a tag", p.git_ref),
        ));
    };
    let before = non_zero_sha(p.before);
    let after = non_zero_sha(p.after);
    let action = match (&before, &after) {
        (None, _) => TagAction::Created,
        (_, None) => TagAction::Deleted,
        _ => TagAction::Moved,
    };
    let sha = after
        .as_ref()
        .and(non_zero_sha(p.checkout_sha).or(after.clone()));
    Ok(GitEvent {
        payload: EventPayload::Tag(TagEvent {
            action,
            name: name.to_owned(),
            version: parse_tag(name),
        }),
        repo: p.project.path_with_namespace,
        sha,
        actor: p.user_username,
    })
}

fn merge_request(h: MergeRequestHook) -> GitEvent {
    let mr = h.object_attributes;
    let raw = mr.action.or(mr.state.clone()).unwrap_or_default();
    let merged = raw == "merge" || mr.state.as_deref() == Some("merged");
    let action = match raw.as_str() {
        "open" | "opened" => "opened".to_owned(),
        "reopen" => "reopened".to_owned(),
        "close" | "closed" | "merge" | "merged" => "closed".to_owned(),
        // `update` is sent for new commits (with `oldrev`) and for edits of the title,
        // description or labels (without): only the first is GitHub's `synchronize`.
        "update" if mr.oldrev.is_some() => "synchronize".to_owned(),
        "update" => "edited".to_owned(),
        _ => raw,
    };
    let head_sha = mr.last_commit.map(|c| c.id);
    let repo = h.project.path_with_namespace;
    // Without both project ids the source cannot be told apart from a fork's: treat it as one.
    let fork = match (mr.source_project_id, mr.target_project_id) {
        (Some(source), Some(target)) => source != target,
        _ => true,
    };
    let head_repo = mr.source.map(|p| p.path_with_namespace);
    let base_repo = mr
        .target
        .map_or_else(|| repo.clone(), |p| p.path_with_namespace);
    GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action,
            number: mr.iid,
            title: mr.title,
            draft: mr.draft.or(mr.work_in_progress).unwrap_or(false),
            merged,
            head: RefTip {
                git_ref: mr.source_branch,
                sha: head_sha.clone(),
                repo: head_repo,
            },
            base: RefTip {
                git_ref: mr.target_branch,
                sha: None,
                repo: Some(base_repo),
            },
            fork,
            labels: h.labels.into_iter().map(|l| l.title).collect(),
            author: None,
        }),
        repo,
        sha: head_sha,
        actor: h.user.map(|u| u.username),
    }
}

fn release(h: ReleaseHook) -> GitEvent {
    let version = parse_tag(&h.tag);
    let prerelease = version.as_ref().is_some_and(|v| !v.pre.is_empty());
    let action = match h.action.as_str() {
        // GitLab releases have no draft stage: creating one publishes it.
        "create" => "published".to_owned(),
        "update" => "edited".to_owned(),
        "delete" => "deleted".to_owned(),
        _ => h.action,
    };
    let sha = if action == "deleted" {
        None
    } else {
        h.commit.map(|c| c.id)
    };
    GitEvent {
        payload: EventPayload::Release(ReleaseEvent {
            action,
            tag: h.tag,
            version,
            prerelease,
            draft: false,
        }),
        repo: h.project.path_with_namespace,
        sha,
        actor: None,
    }
}
