//! The events between two snapshots of a repository's refs.

use std::collections::BTreeMap;

use crate::event::{
    EventPayload, GitEvent, PullRequestEvent, PushEvent, RefTip, TagAction, TagEvent,
};
use crate::release::parse_tag;
use crate::repo::{RepoError, Repository};

/// Ref name → commit id.
pub type Refs = BTreeMap<String, String>;

/// What a ref is to the watcher.
enum RefKind<'a> {
    Branch(&'a str),
    Tag(&'a str),
    PullRequest(u64),
    Other,
}

fn kind(name: &str) -> RefKind<'_> {
    if let Some(b) = name.strip_prefix("refs/heads/") {
        return RefKind::Branch(b);
    }
    if let Some(t) = name.strip_prefix("refs/tags/") {
        return RefKind::Tag(t);
    }
    let pr = name
        .strip_prefix("refs/pull/")
        .or_else(|| name.strip_prefix("refs/merge-requests/"))
        .and_then(|rest| rest.strip_suffix("/head"))
        .and_then(|n| n.parse().ok());
    match pr {
        Some(n) => RefKind::PullRequest(n),
        None => RefKind::Other,
    }
}

/// The events that turn `old` into `new`: branch pushes (with `forced` when the old tip is not
/// an ancestor of the new), tags created, moved and deleted, and pull requests opened, updated
/// and closed (`merged` when their last head is in `base_branch`). Branches first, then tags,
/// then pull requests, each in name order.
pub fn events_between(
    old: &Refs,
    new: &Refs,
    repo: &Repository,
    repo_name: &str,
    base_branch: &str,
) -> Result<Vec<GitEvent>, RepoError> {
    let (mut branches, mut tags, mut prs) = (Vec::new(), Vec::new(), Vec::new());
    let event = |payload, sha: Option<&String>| GitEvent {
        payload,
        repo: repo_name.to_owned(),
        sha: sha.cloned(),
        actor: None,
    };
    for (name, before, after) in changed(old, new) {
        match kind(name) {
            RefKind::Branch(branch) => {
                let push = push_event(repo, name, branch, before, after)?;
                branches.push(event(push, after));
            }
            RefKind::Tag(tag) => tags.push(event(tag_event(tag, before, after), after)),
            RefKind::PullRequest(number) => {
                let base_ref = format!("refs/heads/{base_branch}");
                let base = (
                    base_branch,
                    new.get(&base_ref).or_else(|| old.get(&base_ref)),
                );
                let pr = pull_request_event(repo, repo_name, name, number, base, before, after)?;
                prs.push((number, event(pr, after.or(before))));
            }
            RefKind::Other => {}
        }
    }
    prs.sort_by_key(|(n, _)| *n);
    branches.extend(tags);
    branches.extend(prs.into_iter().map(|(_, e)| e));
    Ok(branches)
}

/// Branch `name` (`refs/heads/<branch>`) moved from `before` to `after`: forced when the old
/// tip is not an ancestor of the new.
fn push_event(
    repo: &Repository,
    name: &str,
    branch: &str,
    before: Option<&String>,
    after: Option<&String>,
) -> Result<EventPayload, RepoError> {
    let forced = match (before, after) {
        (Some(b), Some(a)) => !repo.is_ancestor(b, a)?,
        _ => false,
    };
    Ok(EventPayload::Push(PushEvent {
        git_ref: name.to_owned(),
        branch: branch.to_owned(),
        before: before.cloned(),
        after: after.cloned(),
        created: before.is_none(),
        deleted: after.is_none(),
        forced,
    }))
}

/// Tag `tag` created, moved or deleted.
fn tag_event(tag: &str, before: Option<&String>, after: Option<&String>) -> EventPayload {
    let action = match (before, after) {
        (None, _) => TagAction::Created,
        (_, None) => TagAction::Deleted,
        _ => TagAction::Moved,
    };
    EventPayload::Tag(TagEvent {
        action,
        name: tag.to_owned(),
        version: parse_tag(tag),
    })
}

/// Pull request `number` (its head ref `name`) opened, updated or closed: merged when its
/// last head is in the base branch, `base` (its name and tip).
fn pull_request_event(
    repo: &Repository,
    repo_name: &str,
    name: &str,
    number: u64,
    (base_branch, base_sha): (&str, Option<&String>),
    before: Option<&String>,
    after: Option<&String>,
) -> Result<EventPayload, RepoError> {
    let (action, merged) = match (before, after) {
        (None, _) => ("opened", false),
        (Some(head), None) => (
            "closed",
            match base_sha {
                Some(base) => repo.is_ancestor(head, base)?,
                None => false,
            },
        ),
        _ => ("synchronize", false),
    };
    Ok(EventPayload::PullRequest(PullRequestEvent {
        action: action.to_owned(),
        number,
        title: String::new(),
        draft: false,
        merged,
        head: RefTip {
            git_ref: name.to_owned(),
            sha: after.or(before).cloned(),
            repo: None,
        },
        base: RefTip {
            git_ref: base_branch.to_owned(),
            sha: base_sha.cloned(),
            repo: Some(repo_name.to_owned()),
        },
        // A pull request ref says nothing of where its head came from: a stranger's, unless the
        // policy says that here they are members'.
        fork: true,
        labels: Vec::new(),
        author: None,
    }))
}

/// The refs that differ between `old` and `new` with their two values, in name order: one pass
/// over both sorted maps.
fn changed<'a>(
    old: &'a Refs,
    new: &'a Refs,
) -> impl Iterator<Item = (&'a String, Option<&'a String>, Option<&'a String>)> {
    let (mut a, mut b) = (old.iter().peekable(), new.iter().peekable());
    std::iter::from_fn(move || {
        loop {
            let next = match (a.peek(), b.peek()) {
                (None, None) => return None,
                (Some(_), None) => a.next().map(|(k, v)| (k, Some(v), None)),
                (None, Some(_)) => b.next().map(|(k, v)| (k, None, Some(v))),
                (Some((ka, _)), Some((kb, _))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => a.next().map(|(k, v)| (k, Some(v), None)),
                    std::cmp::Ordering::Greater => b.next().map(|(k, v)| (k, None, Some(v))),
                    std::cmp::Ordering::Equal => {
                        let (k, va) = a.next()?;
                        let (_, vb) = b.next()?;
                        (va != vb).then_some((k, Some(va), Some(vb)))
                    }
                },
            };
            if next.is_some() {
                return next;
            }
        }
    })
}

/// The pull requests whose head ref is in `refs`: the ones still open.
pub fn open_pull_requests(refs: &Refs) -> Vec<u64> {
    let mut out: Vec<u64> = refs
        .keys()
        .filter_map(|name| match kind(name) {
            RefKind::PullRequest(n) => Some(n),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
