//! Every shared fixture, and the documented variants of each supported event type, normalise to
//! the right `GitEvent`; bad payloads give clear errors.

use std::path::PathBuf;

use gitops_core::event::GitEvent;
use gitops_core::source::webhook::{Provider, WebhookError, parse, parse_all};
use serde_json::{Value, json};

fn fixture(path: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures/webhooks")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("cannot read fixture {}: {e}", p.display()))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&fixture(path)).unwrap()
}

fn event(provider: Provider, ty: &str, body: &Value) -> Value {
    let e =
        parse(provider, ty, body.to_string().as_bytes()).unwrap_or_else(|e| panic!("{ty}: {e}"));
    serde_json::to_value(e).unwrap()
}

fn set(v: &mut Value, path: &str, new: Value) {
    let mut cur = v;
    let parts: Vec<&str> = path.split('.').collect();
    for p in &parts[..parts.len() - 1] {
        cur = cur
            .get_mut(*p)
            .unwrap_or_else(|| panic!("no {p} in {path}"));
    }
    cur[parts[parts.len() - 1]] = new;
}

const ZERO: &str = "0000000000000000000000000000000000000000";

#[test]
fn github_pull_request_opened_fixture() {
    let e = parse(
        Provider::GitHub,
        "pull_request",
        &fixture("github/pull_request.opened.json"),
    )
    .unwrap();
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({
            "kind": "pull_request", "repo": "Codertocat/Hello-World",
            "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
            "action": "opened", "number": 2, "title": "Update the README with new information.",
            "draft": false, "merged": false,
            "head": {"ref": "changes", "sha": "ec26c3e57ca3a959ca5aad62de7213c562f8c821",
                     "repo": "Codertocat/Hello-World"},
            "base": {"ref": "master", "sha": "f95f852bd8fca8fcc58a9a2d6c842781e32a215e",
                     "repo": "Codertocat/Hello-World"},
            "fork": false, "labels": ["bug"], "author": "Codertocat", "actor": "Codertocat"
        })
    );
    let back: GitEvent = serde_json::from_value(serde_json::to_value(&e).unwrap()).unwrap();
    assert_eq!(back, e);
}

#[test]
fn github_pull_request_variants() {
    let base = fixture_json("github/pull_request.opened.json");
    for action in [
        "synchronize",
        "reopened",
        "edited",
        "labeled",
        "ready_for_review",
    ] {
        let mut p = base.clone();
        p["action"] = json!(action);
        assert_eq!(
            event(Provider::GitHub, "pull_request", &p)["action"],
            action
        );
    }
    let mut merged = base.clone();
    merged["action"] = json!("closed");
    set(&mut merged, "pull_request.merged", json!(true));
    set(&mut merged, "pull_request.draft", json!(true));
    let e = event(Provider::GitHub, "pull_request", &merged);
    assert_eq!(
        (e["action"].clone(), e["merged"].clone(), e["draft"].clone()),
        (json!("closed"), json!(true), json!(true))
    );
    // Older payloads have no `draft`, and `merged` may be null.
    let mut old = base.clone();
    old["pull_request"].as_object_mut().unwrap().remove("draft");
    set(&mut old, "pull_request.merged", Value::Null);
    let e = event(Provider::GitHub, "pull_request", &old);
    assert_eq!(
        (e["draft"].clone(), e["merged"].clone()),
        (json!(false), json!(false))
    );
}

#[test]
fn github_push_fixture_and_variants() {
    let base = fixture_json("github/push.with-new-branch.json");
    assert_eq!(
        event(Provider::GitHub, "push", &base),
        json!({
            "kind": "push", "repo": "Codertocat/Hello-World",
            "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "ref": "refs/heads/master", "branch": "master",
            "before": null, "after": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
            "created": true, "deleted": false, "forced": false, "actor": "Codertocat"
        })
    );
    let mut forced = base.clone();
    forced["before"] = json!("1111111111111111111111111111111111111111");
    forced["created"] = json!(false);
    forced["forced"] = json!(true);
    let e = event(Provider::GitHub, "push", &forced);
    assert_eq!(
        (
            e["created"].clone(),
            e["forced"].clone(),
            e["before"].clone()
        ),
        (
            json!(false),
            json!(true),
            json!("1111111111111111111111111111111111111111")
        )
    );

    let mut deleted = base.clone();
    deleted["before"] = json!("6113728f27ae82c7b1a177c8d03f9e96e0adf246");
    deleted["after"] = json!(ZERO);
    deleted["created"] = json!(false);
    deleted["deleted"] = json!(true);
    let e = event(Provider::GitHub, "push", &deleted);
    assert_eq!(
        (e["sha"].clone(), e["after"].clone(), e["deleted"].clone()),
        (Value::Null, Value::Null, json!(true))
    );

    let mut tag = base.clone();
    tag["ref"] = json!("refs/tags/v1.2.0");
    assert_eq!(
        event(Provider::GitHub, "push", &tag),
        json!({"kind": "tag", "repo": "Codertocat/Hello-World", "sha": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
               "action": "created", "name": "v1.2.0", "version": "1.2.0", "actor": "Codertocat"})
    );
    let mut moved = tag.clone();
    moved["before"] = json!("1111111111111111111111111111111111111111");
    moved["created"] = json!(false);
    assert_eq!(event(Provider::GitHub, "push", &moved)["action"], "moved");
    let mut tag_deleted = deleted.clone();
    tag_deleted["ref"] = json!("refs/tags/nightly");
    let e = event(Provider::GitHub, "push", &tag_deleted);
    assert_eq!(
        (e["action"].clone(), e["version"].clone(), e["sha"].clone()),
        (json!("deleted"), Value::Null, Value::Null)
    );

    let mut notes = base.clone();
    notes["ref"] = json!("refs/notes/commits");
    let err = parse(Provider::GitHub, "push", notes.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid github push payload: ref \"refs/notes/commits\" is neither a branch nor a tag"
    );
}

fn create_delete(ref_type: &str, name: &str) -> Value {
    json!({"ref": name, "ref_type": ref_type, "master_branch": "main", "description": null,
           "pusher_type": "user", "repository": {"full_name": "octo/app", "id": 1}, "sender": {"login": "octocat"}})
}

#[test]
fn github_create_and_delete() {
    assert_eq!(
        event(
            Provider::GitHub,
            "create",
            &create_delete("tag", "v2.0.0-rc.1")
        ),
        json!({"kind": "tag", "repo": "octo/app", "sha": null, "action": "created", "name": "v2.0.0-rc.1", "version": "2.0.0-rc.1", "actor": "octocat"})
    );
    assert_eq!(
        event(Provider::GitHub, "delete", &create_delete("tag", "v1")),
        json!({"kind": "tag", "repo": "octo/app", "sha": null, "action": "deleted", "name": "v1", "version": null, "actor": "octocat"})
    );
    assert_eq!(
        event(
            Provider::GitHub,
            "create",
            &create_delete("branch", "feature/x")
        ),
        json!({"kind": "branch", "repo": "octo/app", "sha": null, "action": "created", "name": "feature/x", "actor": "octocat"})
    );
    assert_eq!(
        event(Provider::GitHub, "delete", &create_delete("branch", "old"))["action"],
        "deleted"
    );
    let err = parse(
        Provider::GitHub,
        "create",
        create_delete("repository", "x").to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("ref_type \"repository\""), "{err}");
}

#[test]
fn github_release_fixture_and_variants() {
    let base = fixture_json("github/release.published.json");
    assert_eq!(
        event(Provider::GitHub, "release", &base),
        json!({"kind": "release", "repo": "Codertocat/Hello-World", "sha": null,
               "action": "published", "tag": "0.0.1", "version": "0.0.1", "prerelease": false, "draft": false,
               "actor": "Codertocat"})
    );
    let mut pre = base.clone();
    pre["action"] = json!("prereleased");
    set(&mut pre, "release.tag_name", json!("v1.0.0-beta.2"));
    set(&mut pre, "release.prerelease", json!(true));
    set(
        &mut pre,
        "release.target_commitish",
        json!("6113728f27ae82c7b1a177c8d03f9e96e0adf246"),
    );
    let e = event(Provider::GitHub, "release", &pre);
    assert_eq!(
        (
            e["action"].clone(),
            e["version"].clone(),
            e["prerelease"].clone(),
            e["sha"].clone()
        ),
        (
            json!("prereleased"),
            json!("1.0.0-beta.2"),
            json!(true),
            json!("6113728f27ae82c7b1a177c8d03f9e96e0adf246")
        )
    );
    let mut draft = base.clone();
    draft["action"] = json!("created");
    set(&mut draft, "release.draft", json!(true));
    set(&mut draft, "release.tag_name", json!("latest"));
    let e = event(Provider::GitHub, "release", &draft);
    assert_eq!(
        (e["draft"].clone(), e["version"].clone()),
        (json!(true), Value::Null)
    );
}

#[test]
fn github_ping() {
    let ping = json!({"zen": "Keep it logically awesome.", "hook_id": 1, "hook": {"type": "Repository"},
                      "repository": {"full_name": "octo/app"}});
    assert_eq!(
        event(Provider::GitHub, "ping", &ping),
        json!({"kind": "ping", "repo": "octo/app", "sha": null, "actor": null})
    );
    let org = json!({"zen": "x", "hook_id": 1, "organization": {"login": "octo-org"}});
    assert_eq!(event(Provider::GitHub, "ping", &org)["repo"], "octo-org");
}

#[test]
fn gitlab_push_fixture_and_variants() {
    let base = fixture_json("gitlab/push.json");
    let expected = json!({
        "kind": "push", "repo": "mike/diaspora", "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "ref": "refs/heads/master", "branch": "master",
        "before": "95790bf891e76fee5e1747ab589903a6a1f80f22", "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
        "created": false, "deleted": false, "forced": false, "actor": "jsmith"
    });
    assert_eq!(event(Provider::GitLab, "Push Hook", &base), expected);
    assert_eq!(event(Provider::GitLab, "push", &base), expected);
    let mut created = base.clone();
    created["before"] = json!(ZERO);
    assert_eq!(
        event(Provider::GitLab, "Push Hook", &created)["created"],
        true
    );
    let mut deleted = base.clone();
    deleted["after"] = json!(ZERO);
    deleted["checkout_sha"] = Value::Null;
    let e = event(Provider::GitLab, "Push Hook", &deleted);
    assert_eq!(
        (e["deleted"].clone(), e["sha"].clone()),
        (json!(true), Value::Null)
    );
}

#[test]
fn gitlab_tag_push() {
    let mut tag = fixture_json("gitlab/push.json");
    tag["object_kind"] = json!("tag_push");
    tag["event_name"] = json!("tag_push");
    tag["ref"] = json!("refs/tags/v1.0.0");
    tag["before"] = json!(ZERO);
    assert_eq!(
        event(Provider::GitLab, "Tag Push Hook", &tag),
        json!({"kind": "tag", "repo": "mike/diaspora", "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
               "action": "created", "name": "v1.0.0", "version": "1.0.0", "actor": "jsmith"})
    );
    let mut del = tag.clone();
    del["before"] = json!("da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
    del["after"] = json!(ZERO);
    del["checkout_sha"] = Value::Null;
    let e = event(Provider::GitLab, "Tag Push Hook", &del);
    assert_eq!(
        (e["action"].clone(), e["sha"].clone()),
        (json!("deleted"), Value::Null)
    );
}

#[test]
fn gitlab_merge_request_fixture_and_actions() {
    let base = fixture_json("gitlab/merge_request.json");
    assert_eq!(
        event(Provider::GitLab, "Merge Request Hook", &base),
        json!({"kind": "pull_request", "repo": "gitlabhq/gitlab-test",
               "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7", "action": "opened", "number": 1,
               "title": "MS-Viewport", "draft": false, "merged": false,
               "head": {"ref": "ms-viewport", "sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
                        "repo": "awesome_space/awesome_project"},
               "base": {"ref": "master", "sha": null, "repo": "awesome_space/awesome_project"},
               "fork": false, "labels": ["API"], "author": null, "actor": "user1"})
    );
    let with = |action: &str, extra: &[(&str, Value)]| {
        let mut p = base.clone();
        p["object_attributes"]["action"] = json!(action);
        for (k, v) in extra {
            p["object_attributes"][*k] = v.clone();
        }
        event(Provider::GitLab, "Merge Request Hook", &p)
    };
    assert_eq!(
        with(
            "update",
            &[("oldrev", json!("95790bf891e76fee5e1747ab589903a6a1f80f22"))]
        )["action"],
        "synchronize"
    );
    assert_eq!(with("update", &[])["action"], "edited");
    assert_eq!(with("reopen", &[])["action"], "reopened");
    let closed = with("close", &[("state", json!("closed"))]);
    assert_eq!(
        (closed["action"].clone(), closed["merged"].clone()),
        (json!("closed"), json!(false))
    );
    let merged = with("merge", &[("state", json!("merged"))]);
    assert_eq!(
        (merged["action"].clone(), merged["merged"].clone()),
        (json!("closed"), json!(true))
    );
    assert_eq!(with("approved", &[])["action"], "approved");
    assert_eq!(with("open", &[("draft", json!(true))])["draft"], true);
    assert_eq!(
        with("open", &[("work_in_progress", json!(true))])["draft"],
        true
    );
}

#[test]
fn gitlab_release() {
    let body = json!({
        "object_kind": "release", "id": 1, "created_at": "2020-11-02 12:55:12 UTC",
        "description": "v1.1 has been released", "name": "v1.1", "released_at": "2020-11-02 12:55:12 UTC",
        "tag": "v1.1.0-rc.2", "object_kind_extra": null,
        "project": {"id": 2, "name": "release-webhook-example", "path_with_namespace": "example/release-webhook-example"},
        "url": "https://example.com/example/release-webhook-example/-/releases/v1.1",
        "action": "create",
        "assets": {"count": 0, "links": [], "sources": []},
        "commit": {"id": "ee0a3fb31ac16e11b9dbb596ad16d4af654d08f8", "message": "Release v1.1"}
    });
    assert_eq!(
        event(Provider::GitLab, "Release Hook", &body),
        json!({"kind": "release", "repo": "example/release-webhook-example", "sha": "ee0a3fb31ac16e11b9dbb596ad16d4af654d08f8",
               "action": "published", "tag": "v1.1.0-rc.2", "version": "1.1.0-rc.2", "prerelease": true, "draft": false,
               "actor": null})
    );
    let mut deleted = body.clone();
    deleted["action"] = json!("delete");
    let e = event(Provider::GitLab, "Release Hook", &deleted);
    assert_eq!(
        (e["action"].clone(), e["sha"].clone()),
        (json!("deleted"), Value::Null)
    );
}

#[test]
fn bad_payloads_give_clear_errors() {
    let full = fixture("github/pull_request.opened.json");
    let truncated = &full[..full.len() / 2];
    let err = parse(Provider::GitHub, "pull_request", truncated).unwrap_err();
    assert!(matches!(err, WebhookError::Malformed { .. }));
    assert!(
        err.to_string()
            .starts_with("invalid github pull_request payload: EOF while parsing"),
        "{err}"
    );

    let err = parse(Provider::GitHub, "push", b"payload=%7B%7D").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid github push payload: expected value at line 1 column 1"),
        "{err}"
    );

    let err = parse(Provider::GitHub, "issues", b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported github event type \"issues\" (supported: push, pull_request, create, delete, release, ping)"
    );
    let err = parse(Provider::GitLab, "Note Hook", b"{}").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unsupported gitlab event type \"Note Hook\""),
        "{err}"
    );

    let err = parse(Provider::GitHub, "push", br#"{"ref": 5}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("invalid type: integer `5`, expected a string"),
        "{err}"
    );
    let err = parse(Provider::GitHub, "pull_request", br#"{"action": "opened"}"#).unwrap_err();
    assert!(err.to_string().contains("missing field"), "{err}");

    let mr = fixture("gitlab/merge_request.json");
    let err = parse(Provider::GitLab, "Push Hook", &mr).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid gitlab push payload: event type \"Push Hook\" does not match the payload's object_kind \"merge_request\""
    );
    for body in [
        &b""[..],
        b"null",
        b"[]",
        b"\xff\xfe",
        b"{\"ref\": \"refs/heads/a\"}",
    ] {
        assert!(parse(Provider::GitLab, "push", body).is_err());
        assert!(parse(Provider::GitHub, "push", body).is_err());
    }
    assert!("sourcehut".parse::<Provider>().is_err());
    assert_eq!("forgejo".parse::<Provider>().unwrap(), Provider::Gitea);
}

#[test]
fn pull_requests_from_forks_say_so() {
    let base = fixture_json("github/pull_request.opened.json");
    let mut fork = base.clone();
    set(
        &mut fork,
        "pull_request.head.repo.full_name",
        json!("evil/Hello-World"),
    );
    let e = event(Provider::GitHub, "pull_request", &fork);
    assert_eq!(
        (e["fork"].clone(), e["head"]["repo"].clone()),
        (json!(true), json!("evil/Hello-World"))
    );
    // The fork was deleted: its head has no repository, and it is still a stranger's.
    let mut gone = base.clone();
    set(&mut gone, "pull_request.head.repo", Value::Null);
    let e = event(Provider::GitHub, "pull_request", &gone);
    assert_eq!(
        (e["fork"].clone(), e["head"]["repo"].clone()),
        (json!(true), Value::Null)
    );
    let mr = fixture_json("gitlab/merge_request.json");
    let mut fork = mr.clone();
    fork["object_attributes"]["source_project_id"] = json!(99);
    assert_eq!(
        event(Provider::GitLab, "Merge Request Hook", &fork)["fork"],
        true
    );
    let mut unknown = mr.clone();
    unknown["object_attributes"]
        .as_object_mut()
        .unwrap()
        .remove("source_project_id");
    assert_eq!(
        event(Provider::GitLab, "Merge Request Hook", &unknown)["fork"],
        true
    );
    assert_eq!(
        event(Provider::GitLab, "Merge Request Hook", &mr)["fork"],
        false
    );
}

// Bitbucket Cloud.

fn bitbucket(ty: &str, body: &Value) -> Vec<Value> {
    parse_all(Provider::Bitbucket, ty, body.to_string().as_bytes())
        .unwrap_or_else(|e| panic!("{ty}: {e}"))
        .into_iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect()
}

/// A fixture's event, as JSON that also reads back as the same event.
fn fixture_event(provider: Provider, name: &str, ty: &str) -> Value {
    let e = parse(provider, ty, &fixture(&format!("{provider}/{name}")))
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let v = serde_json::to_value(&e).unwrap();
    let back: GitEvent = serde_json::from_value(v.clone()).unwrap();
    assert_eq!(back, e);
    v
}

fn bitbucket_fixture(name: &str, ty: &str) -> Value {
    fixture_event(Provider::Bitbucket, name, ty)
}

#[test]
fn bitbucket_push_fixtures() {
    assert_eq!(
        bitbucket_fixture("repo-push.branch-created.json", "repo:push"),
        json!({
            "kind": "push", "repo": "cloudbeers/temp",
            "sha": "501bf5b99365d1d870882254b9360c17172bda0e",
            "ref": "refs/heads/main", "branch": "main",
            "before": null, "after": "501bf5b99365d1d870882254b9360c17172bda0e",
            "created": true, "deleted": false, "forced": false, "actor": "stephenc"
        })
    );
    assert_eq!(
        bitbucket_fixture("repo-push.branch-updated.json", "repo:push"),
        json!({
            "kind": "push", "repo": "cloudbeers/temp",
            "sha": "e42fac24456e4a56f1b7f9358afc3070e3b7ddec",
            "ref": "refs/heads/main", "branch": "main",
            "before": "501bf5b99365d1d870882254b9360c17172bda0e",
            "after": "e42fac24456e4a56f1b7f9358afc3070e3b7ddec",
            "created": false, "deleted": false, "forced": false, "actor": "stephenc"
        })
    );
    assert_eq!(
        bitbucket_fixture("repo-push.tag-created.json", "repo:push"),
        json!({
            "kind": "tag", "repo": "acme/tds.cm.maven.plugins-java",
            "sha": "fee1dcdb330d1318502f303ccd4792531c28dc8e",
            "action": "created", "name": "test", "version": null, "actor": "nfalco79"
        })
    );
    // Today's payloads: the actor's `nickname`, no `username`.
    assert_eq!(
        bitbucket_fixture("signed.json", "repo:push"),
        json!({
            "kind": "push", "repo": "nfalco79/test-repos",
            "sha": "d7f300a32270053bdfd97a6d64113f58202c33e7",
            "ref": "refs/heads/feature/webhook", "branch": "feature/webhook",
            "before": null, "after": "d7f300a32270053bdfd97a6d64113f58202c33e7",
            "created": true, "deleted": false, "forced": false, "actor": "Nikolas Falco"
        })
    );
}

#[test]
fn bitbucket_pull_request_fixtures() {
    assert_eq!(
        bitbucket_fixture("pullrequest-created.same-repo.json", "pullrequest:created"),
        json!({
            "kind": "pull_request", "repo": "cloudbeers/temp", "sha": "a72355f35fde",
            "action": "opened", "number": 1, "title": "README.md edited online with Bitbucket",
            "draft": false, "merged": false,
            "head": {"ref": "foo", "sha": "a72355f35fde", "repo": "cloudbeers/temp"},
            "base": {"ref": "main", "sha": "f612156eff2c", "repo": "cloudbeers/temp"},
            "fork": false, "labels": [], "author": "Stephen Connolly", "actor": "stephenc"
        })
    );
    assert_eq!(
        bitbucket_fixture("pullrequest-created.fork.json", "pullrequest:created"),
        json!({
            "kind": "pull_request", "repo": "cloudbeers/temp", "sha": "1c48041a96db",
            "action": "opened", "number": 3, "title": "Forking for PR",
            "draft": false, "merged": false,
            "head": {"ref": "main", "sha": "1c48041a96db", "repo": "stephenc/temp-fork"},
            "base": {"ref": "main", "sha": "1986c2284946", "repo": "cloudbeers/temp"},
            "fork": true, "labels": [], "author": "Stephen Connolly", "actor": "stephenc"
        })
    );
}

#[test]
fn bitbucket_pull_request_actions() {
    let base = fixture_json("bitbucket/pullrequest-created.same-repo.json");
    let pr = |ty: &str, body: &Value| bitbucket(ty, body).remove(0);
    // Bitbucket does not say whether an update moved the source: every update is a
    // synchronize (see bitbucket.rs).
    for (ty, action, merged) in [
        ("pullrequest:created", "opened", false),
        ("pullrequest:updated", "synchronize", false),
        ("pullrequest:fulfilled", "closed", true),
        ("pullrequest:rejected", "closed", false),
    ] {
        let e = pr(ty, &base);
        assert_eq!(
            (&e["action"], &e["merged"]),
            (&json!(action), &json!(merged)),
            "{ty}"
        );
    }
    // A declined pull request as Bitbucket documents it: state DECLINED, closed_by set.
    let mut declined = base.clone();
    declined["pullrequest"]["state"] = json!("DECLINED");
    declined["pullrequest"]["closed_by"] = declined["actor"].clone();
    declined["pullrequest"]["reason"] = json!("not needed");
    let e = pr("pullrequest:rejected", &declined);
    assert_eq!(
        (&e["action"], &e["merged"]),
        (&json!("closed"), &json!(false))
    );

    let mut draft = base.clone();
    draft["pullrequest"]["draft"] = json!(true);
    assert_eq!(pr("pullrequest:created", &draft)["draft"], true);
    // A full id (as the API gives) is kept, and made lowercase like git's.
    let mut full = base.clone();
    full["pullrequest"]["source"]["commit"]["hash"] =
        json!("A72355F35FDE0000000000000000000000000000");
    assert_eq!(
        pr("pullrequest:created", &full)["sha"],
        "a72355f35fde0000000000000000000000000000"
    );
    // The source branch is gone: no commit to name.
    let mut gone = base.clone();
    gone["pullrequest"]["source"]["commit"] = Value::Null;
    let e = pr("pullrequest:fulfilled", &gone);
    assert_eq!((&e["sha"], &e["head"]["sha"]), (&Value::Null, &Value::Null));
    // The actor as today's payloads give it: nickname first, display_name last.
    let mut actor = base.clone();
    actor["actor"] = json!({"display_name": "Ann Example", "nickname": "ann", "type": "user"});
    assert_eq!(pr("pullrequest:created", &actor)["actor"], "ann");
    actor["actor"] = json!({"display_name": "Ann Example", "type": "user"});
    assert_eq!(pr("pullrequest:created", &actor)["actor"], "Ann Example");
}

#[test]
fn bitbucket_fork_pull_requests_say_so() {
    let base = fixture_json("bitbucket/pullrequest-created.same-repo.json");
    let mut fork = base.clone();
    fork["pullrequest"]["source"]["repository"]["full_name"] = json!("evil/temp");
    let e = bitbucket("pullrequest:created", &fork).remove(0);
    assert_eq!(
        (&e["fork"], &e["head"]["repo"]),
        (&json!(true), &json!("evil/temp"))
    );
    // The fork was deleted: no source repository, still a stranger's.
    let mut gone = base.clone();
    gone["pullrequest"]["source"]["repository"] = Value::Null;
    let e = bitbucket("pullrequest:updated", &gone).remove(0);
    assert_eq!(
        (&e["fork"], &e["head"]["repo"]),
        (&json!(true), &Value::Null)
    );
}

/// A ref state of a push change, as Bitbucket documents it.
fn ref_state(kind: &str, name: &str, hash: &str) -> Value {
    json!({"type": kind, "name": name,
           "target": {"type": "commit", "hash": hash, "message": "m\n", "parents": []}})
}

fn change(old: Value, new: Value, created: bool, closed: bool, forced: bool) -> Value {
    json!({"old": old, "new": new, "created": created, "closed": closed, "forced": forced,
           "truncated": false, "commits": []})
}

fn bitbucket_push(changes: Vec<Value>) -> Value {
    let mut body = fixture_json("bitbucket/signed.json");
    body["push"]["changes"] = Value::Array(changes);
    body
}

const A: &str = "1111111111111111111111111111111111111111";
const B: &str = "2222222222222222222222222222222222222222";

#[test]
fn bitbucket_push_variants() {
    let deleted = bitbucket_push(vec![change(
        ref_state("branch", "old-feature", A),
        Value::Null,
        false,
        true,
        false,
    )]);
    assert_eq!(
        bitbucket("repo:push", &deleted),
        vec![json!({
            "kind": "push", "repo": "nfalco79/test-repos", "sha": null,
            "ref": "refs/heads/old-feature", "branch": "old-feature",
            "before": A, "after": null,
            "created": false, "deleted": true, "forced": false, "actor": "Nikolas Falco"
        })]
    );
    let forced = bitbucket_push(vec![change(
        ref_state("branch", "main", A),
        ref_state("branch", "main", B),
        false,
        false,
        true,
    )]);
    let e = bitbucket("repo:push", &forced).remove(0);
    assert_eq!(
        (&e["forced"], &e["before"], &e["after"], &e["sha"]),
        (&json!(true), &json!(A), &json!(B), &json!(B))
    );
    let tag_deleted = bitbucket_push(vec![change(
        ref_state("tag", "v1.2.0", A),
        Value::Null,
        false,
        true,
        false,
    )]);
    assert_eq!(
        bitbucket("repo:push", &tag_deleted),
        vec![json!({
            "kind": "tag", "repo": "nfalco79/test-repos", "sha": null,
            "action": "deleted", "name": "v1.2.0", "version": "1.2.0", "actor": "Nikolas Falco"
        })]
    );
    let tag_moved = bitbucket_push(vec![change(
        ref_state("tag", "v1.2.0", A),
        ref_state("tag", "v1.2.0", B),
        false,
        false,
        true,
    )]);
    let e = bitbucket("repo:push", &tag_moved).remove(0);
    assert_eq!((&e["action"], &e["sha"]), (&json!("moved"), &json!(B)));
    let empty = bitbucket_push(vec![]);
    assert_eq!(bitbucket("repo:push", &empty), Vec::<Value>::new());
}

#[test]
fn bitbucket_push_with_several_changes_is_one_event_each() {
    let body = bitbucket_push(vec![
        change(
            ref_state("branch", "main", A),
            ref_state("branch", "main", B),
            false,
            false,
            false,
        ),
        change(
            Value::Null,
            ref_state("tag", "v2.0.0", B),
            true,
            false,
            false,
        ),
        change(
            ref_state("branch", "topic", A),
            Value::Null,
            false,
            true,
            false,
        ),
    ]);
    let events = bitbucket("repo:push", &body);
    let summary: Vec<(Value, Value, Value)> = events
        .iter()
        .map(|e| {
            (
                e["kind"].clone(),
                e["sha"].clone(),
                e.get("deleted").cloned().unwrap_or(e["action"].clone()),
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            (json!("push"), json!(B), json!(false)),
            (json!("tag"), json!(B), json!("created")),
            (json!("push"), Value::Null, json!(true)),
        ]
    );
    assert!(events.iter().all(|e| e["repo"] == "nfalco79/test-repos"));
    // `parse` takes a delivery of one event only, and says why.
    let err = parse(
        Provider::Bitbucket,
        "repo:push",
        body.to_string().as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid bitbucket repo:push payload: the delivery carries 3 changes, not one (see parse_all)"
    );
}

#[test]
fn bitbucket_bad_payloads_give_clear_errors() {
    let err = parse_all(Provider::Bitbucket, "repo:fork", b"{}").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("unsupported bitbucket event type \"repo:fork\" (supported: repo:push, "),
        "{err}"
    );
    let revision = {
        let mut pr = fixture_json("bitbucket/pullrequest-created.same-repo.json");
        pr["pullrequest"]["source"]["commit"]["hash"] = json!("HEAD~1");
        pr
    };
    let err = parse_all(
        Provider::Bitbucket,
        "pullrequest:created",
        revision.to_string().as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid bitbucket pullrequest:created payload: \"HEAD~1\" is not a commit id (4 to 40 hexadecimal digits)"
    );
    let neither = bitbucket_push(vec![change(Value::Null, Value::Null, false, false, false)]);
    let err = parse_all(
        Provider::Bitbucket,
        "repo:push",
        neither.to_string().as_bytes(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid bitbucket repo:push payload: a change has neither an old nor a new ref"
    );
    let bookmark = bitbucket_push(vec![change(
        Value::Null,
        ref_state("bookmark", "b", A),
        true,
        false,
        false,
    )]);
    let err = parse_all(
        Provider::Bitbucket,
        "repo:push",
        bookmark.to_string().as_bytes(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("is of type \"bookmark\""), "{err}");
    let full = fixture("bitbucket/repo-push.branch-updated.json");
    for body in [
        &full[..full.len() / 2],
        b"",
        b"null",
        b"[]",
        b"\xff\xfe",
        br#"{"push": {"changes": 5}, "repository": {"full_name": "a/b"}}"#,
    ] {
        assert!(matches!(
            parse_all(Provider::Bitbucket, "repo:push", body),
            Err(WebhookError::Malformed { .. })
        ));
        assert!(parse_all(Provider::Bitbucket, "pullrequest:created", body).is_err());
    }
}

// Gitea and Forgejo.

fn gitea_fixture(name: &str, ty: &str) -> Value {
    fixture_event(Provider::Gitea, name, ty)
}

#[test]
fn gitea_fixtures() {
    assert_eq!(
        gitea_fixture("push-event.json", "push"),
        json!({
            "kind": "push", "repo": "example/example",
            "sha": "67b56589a45103f891bdee7c0546e5d40bc02001",
            "ref": "refs/heads/master", "branch": "master",
            "before": null, "after": "67b56589a45103f891bdee7c0546e5d40bc02001",
            "created": true, "deleted": false, "forced": false, "actor": "example"
        })
    );
    assert_eq!(
        gitea_fixture("create-event.json", "create"),
        json!({
            "kind": "branch", "repo": "example/example",
            "sha": "67b56589a45103f891bdee7c0546e5d40bc02001",
            "action": "created", "name": "master", "actor": "example"
        })
    );
    assert_eq!(
        gitea_fixture("delete-event.json", "delete"),
        json!({
            "kind": "branch", "repo": "example/example", "sha": null,
            "action": "deleted", "name": "example3", "actor": "example"
        })
    );
    assert_eq!(
        gitea_fixture("pull-request-event.json", "pull_request"),
        json!({
            "kind": "pull_request", "repo": "example/example",
            "sha": "48e773f892a831faa47c0a160d1b7f0cd369ae2a",
            "action": "opened", "number": 2, "title": "update", "draft": false, "merged": false,
            "head": {"ref": "master", "sha": "48e773f892a831faa47c0a160d1b7f0cd369ae2a",
                     "repo": "example2/example"},
            "base": {"ref": "master", "sha": "67b56589a45103f891bdee7c0546e5d40bc02001",
                     "repo": "example/example"},
            "fork": true, "labels": [], "author": "example2", "actor": "example2"
        })
    );
    assert_eq!(
        gitea_fixture("release-event.json", "release"),
        json!({
            "kind": "release", "repo": "example/example", "sha": null,
            "action": "published", "tag": "example", "version": null,
            "prerelease": false, "draft": false, "actor": "example"
        })
    );
}

#[test]
fn gitea_pull_request_variants() {
    let base = fixture_json("gitea/pull-request-event.json");
    let gitea = |body: &Value| event(Provider::Gitea, "pull_request", body);
    for (given, ours) in [
        ("synchronized", "synchronize"),
        ("reopened", "reopened"),
        ("edited", "edited"),
        ("label_updated", "label_updated"),
    ] {
        let mut p = base.clone();
        p["action"] = json!(given);
        assert_eq!(gitea(&p)["action"], ours);
    }
    let mut merged = base.clone();
    merged["action"] = json!("closed");
    merged["pull_request"]["merged"] = json!(true);
    merged["pull_request"]["state"] = json!("closed");
    let e = gitea(&merged);
    assert_eq!(
        (&e["action"], &e["merged"]),
        (&json!("closed"), &json!(true))
    );
    let mut wip = base.clone();
    wip["pull_request"]["title"] = json!("WIP: update");
    assert_eq!(gitea(&wip)["draft"], true);
    wip["pull_request"]["title"] = json!("[wip] update");
    assert_eq!(gitea(&wip)["draft"], true);
    let mut draft = base.clone();
    draft["pull_request"]["draft"] = json!(true);
    assert_eq!(gitea(&draft)["draft"], true);
    // A member's pull request: head and base in the same repository.
    let mut member = base.clone();
    member["pull_request"]["head"]["repo"] = member["pull_request"]["base"]["repo"].clone();
    assert_eq!(gitea(&member)["fork"], false);
    let mut labelled = base.clone();
    labelled["pull_request"]["labels"] =
        json!([{"id": 1, "name": "safe-to-test", "color": "00ff00"}]);
    assert_eq!(gitea(&labelled)["labels"], json!(["safe-to-test"]));
}

#[test]
fn gitea_tags_and_other_variants() {
    let push = fixture_json("gitea/push-event.json");
    let mut tag = push.clone();
    tag["ref"] = json!("refs/tags/v1.0.0");
    let e = event(Provider::Gitea, "push", &tag);
    assert_eq!(
        (&e["kind"], &e["action"], &e["version"]),
        (&json!("tag"), &json!("created"), &json!("1.0.0"))
    );
    let mut update = push.clone();
    update["before"] = json!(A);
    let e = event(Provider::Gitea, "push", &update);
    assert_eq!((&e["created"], &e["before"]), (&json!(false), &json!(A)));
    let mut deleted_tag = fixture_json("gitea/delete-event.json");
    deleted_tag["ref_type"] = json!("tag");
    deleted_tag["ref"] = json!("v0.9.0");
    let e = event(Provider::Gitea, "delete", &deleted_tag);
    assert_eq!(
        (&e["kind"], &e["action"], &e["sha"]),
        (&json!("tag"), &json!("deleted"), &Value::Null)
    );
    let mut created_tag = fixture_json("gitea/create-event.json");
    created_tag["ref_type"] = json!("tag");
    created_tag["ref"] = json!("v1.0.0");
    let e = event(Provider::Gitea, "create", &created_tag);
    assert_eq!(
        (&e["kind"], &e["name"], &e["sha"]),
        (
            &json!("tag"),
            &json!("v1.0.0"),
            &json!("67b56589a45103f891bdee7c0546e5d40bc02001")
        )
    );
    let mut pre = fixture_json("gitea/release-event.json");
    pre["release"]["tag_name"] = json!("v2.0.0-rc.1");
    pre["release"]["prerelease"] = json!(true);
    pre["release"]["target_commitish"] = json!(B);
    let e = event(Provider::Gitea, "release", &pre);
    assert_eq!(
        (&e["prerelease"], &e["version"], &e["sha"]),
        (&json!(true), &json!("2.0.0-rc.1"), &json!(B))
    );
    let err = parse(Provider::Gitea, "issues", b"{}").unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported gitea event type \"issues\" (supported: push, create, delete, pull_request, release)"
    );
    let err = parse(Provider::Gitea, "push", b"{\"ref\": 1}").unwrap_err();
    assert!(
        err.to_string().starts_with("invalid gitea push payload: "),
        "{err}"
    );
    let mut branchless = push.clone();
    branchless["ref"] = json!("refs/notes/x");
    let err = parse(Provider::Gitea, "push", branchless.to_string().as_bytes()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("invalid gitea push payload: ref"),
        "{err}"
    );
}
