//! `gitops serve` with Bitbucket Cloud and Gitea/Forgejo deliveries over real HTTP on loopback,
//! signed as those forges sign them: a pull request opened deploys its preview (Bitbucket's
//! 12-digit commit ids completed against the fetched repository), closed tears it down, a push to
//! main deploys staging, a tag production. Also: the real Bitbucket signature, tampering, bad
//! bodies, Bitbucket pushes of several changes, and ambiguous or unknown commit prefixes.

mod common;

use std::path::{Path, PathBuf};

use common::git;
use common::server::{Server, request, sign, wait_until};
use gitops_core::ledger::{EnvironmentStatus, Ledger};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/webhooks"
);

const CONFIG: &str = r#"version: 1
environments:
  preview: { per_pull_request: true, backend: local }
  staging: { backend: local }
  production: { backend: local }
pipelines:
  pull-request:
    on: { pull_request: { types: [opened, synchronize, reopened] } }
    stages:
      preview: { deploy: preview }
  pull-request-closed:
    on: { pull_request: { types: [closed] } }
    stages:
      teardown: { stop: preview }
  main:
    on: { push: { branches: [main] } }
    stages:
      deploy: { deploy: staging }
  release:
    on: { tag: { semver: ">=0.1.0" } }
    stages:
      deploy: { deploy: production }
"#;

/// An upstream repository, a clone the server serves, and commits made upstream after the
/// clone (the server must fetch them): `feature` (a pull request's head), a new `main`, and
/// the tag `v1.0.0` on it.
struct Forge {
    tmp: tempfile::TempDir,
    upstream: PathBuf,
    clone: PathBuf,
    base: String,
    head: String,
    main: String,
}

impl Forge {
    fn new() -> Forge {
        let tmp = tempfile::tempdir().unwrap();
        let upstream = tmp.path().join("upstream");
        std::fs::create_dir_all(&upstream).unwrap();
        git(&upstream, &["init", "-q", "-b", "main"]);
        std::fs::write(upstream.join(".gitops.yml"), CONFIG).unwrap();
        git(&upstream, &["add", "-A"]);
        git(&upstream, &["commit", "-qm", "one"]);
        let base = git(&upstream, &["rev-parse", "HEAD"]);
        let clone = tmp.path().join("clone");
        let (from, to) = (upstream.to_str().unwrap(), clone.to_str().unwrap());
        git(tmp.path(), &["clone", "-q", from, to]);
        git(&upstream, &["checkout", "-qb", "feature"]);
        std::fs::write(upstream.join("app.txt"), "feature").unwrap();
        git(&upstream, &["add", "-A"]);
        git(&upstream, &["commit", "-qm", "feature"]);
        let head = git(&upstream, &["rev-parse", "HEAD"]);
        git(&upstream, &["checkout", "-q", "main"]);
        git(
            &upstream,
            &["merge", "-q", "--no-ff", "-m", "merge", "feature"],
        );
        let main = git(&upstream, &["rev-parse", "HEAD"]);
        git(&upstream, &["tag", "v1.0.0"]);
        Forge {
            tmp,
            upstream,
            clone,
            base,
            head,
            main,
        }
    }

    fn state(&self) -> PathBuf {
        self.tmp.path().join("state")
    }

    fn ledger(&self) -> Ledger {
        Ledger::open(&self.state()).unwrap()
    }

    fn preview(&self, n: u64) -> Option<EnvironmentStatus> {
        let env = self
            .ledger()
            .environment(&format!("preview-pr-{n}"))
            .unwrap();
        env.map(|e| e.status)
    }

    fn deployed(&self, environment: &str) -> Option<String> {
        let current = self.ledger().current_deployment(environment).unwrap();
        current.and_then(|d| d.sha)
    }
}

/// The server's JSON log lines whose message is `message`.
fn logged(server: &Server, message: &str) -> Vec<Value> {
    server
        .log()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == message)
        .collect()
}

/// Waits for the delivery `seq` to be done; how it ended (`ran`, `failed`, ...).
fn done(server: &Server, seq: u64) -> String {
    let mut outcome = None;
    wait_until(&format!("delivery {seq} to be done"), || {
        outcome = logged(server, "delivery done")
            .into_iter()
            .find(|l| l["seq"] == seq)
            .map(|l| l["outcome"].as_str().unwrap_or_default().to_owned());
        outcome.is_some()
    });
    outcome.unwrap()
}

fn seq(reply: &str) -> u64 {
    let v: Value = serde_json::from_str(reply).unwrap_or_else(|e| panic!("{reply}: {e}"));
    v["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("no seq in {reply}"))
}

fn fixture_json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(Path::new(FIXTURES).join(path)).unwrap()).unwrap()
}

fn bitbucket(server: &Server, key: &str, id: &str, body: &Value, secret: &str) -> (u16, String) {
    let body = serde_json::to_vec(body).unwrap();
    let signature = sign(secret, &body);
    let headers = [
        ("X-Event-Key", key),
        ("X-Request-UUID", id),
        ("X-Hub-Signature", signature.as_str()),
    ];
    request(server.addr, "POST", "/webhooks/bitbucket", &headers, &body)
}

/// A Bitbucket pull request of `forge`'s feature branch, with 12-digit commit ids.
fn bitbucket_pr(forge: &Forge, number: u64) -> Value {
    let mut pr = fixture_json("bitbucket/pullrequest-created.same-repo.json");
    pr["repository"]["full_name"] = json!("ws/app");
    let p = &mut pr["pullrequest"];
    p["id"] = json!(number);
    for (side, branch, sha) in [
        ("source", "feature", &forge.head),
        ("destination", "main", &forge.base),
    ] {
        p[side]["branch"]["name"] = json!(branch);
        p[side]["commit"]["hash"] = json!(&sha[..12]);
        p[side]["repository"]["full_name"] = json!("ws/app");
    }
    pr
}

fn bitbucket_change(kind: &str, name: &str, old: Option<&str>, new: &str) -> Value {
    let state = |hash: &str| json!({"type": kind, "name": name, "target": {"type": "commit", "hash": hash}});
    json!({"old": old.map(state), "new": state(new), "created": old.is_none(),
           "closed": false, "forced": false, "truncated": false, "commits": []})
}

#[test]
fn bitbucket_pull_request_push_and_tag_deploy_and_tear_down() {
    let forge = Forge::new();
    let secret = "bb-secret-4d1f";
    let server = Server::start(
        &forge.state(),
        &forge.clone,
        &[
            "--log-format",
            "json",
            "--bitbucket-secret-env",
            "BB_SECRET",
            "--repo-name",
            "ws/app",
        ],
        &[("BB_SECRET", secret)],
    );

    // Opened: the 12-digit head is completed once the server has fetched it.
    let pr = bitbucket_pr(&forge, 7);
    let (status, reply) = bitbucket(&server, "pullrequest:created", "{u-1}", &pr, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran", "{:?}", server.log());
    assert_eq!(forge.preview(7), Some(EnvironmentStatus::Active));
    let preview = forge
        .ledger()
        .current_deployment("preview-pr-7")
        .unwrap()
        .unwrap();
    assert_eq!(preview.sha.as_deref(), Some(forge.head.as_str()));
    let runs = forge.ledger().runs(10).unwrap();
    assert_eq!(runs[0].commit.as_deref(), Some(forge.head.as_str()));

    // Updated with the same head (a title edited): `edited`, which runs nothing here.
    let (_, reply) = bitbucket(&server, "pullrequest:updated", "{u-1e}", &pr, secret);
    assert_eq!(done(&server, seq(&reply)), "nothing", "{:?}", server.log());
    // Updated with a new head: `synchronize`, the preview redeployed at it.
    let mut moved = pr.clone();
    moved["pullrequest"]["source"]["commit"]["hash"] = json!(&forge.main[..12]);
    let (_, reply) = bitbucket(&server, "pullrequest:updated", "{u-1s}", &moved, secret);
    assert_eq!(done(&server, seq(&reply)), "ran", "{:?}", server.log());
    let preview = forge.ledger().current_deployment("preview-pr-7").unwrap();
    assert_eq!(preview.and_then(|d| d.sha), Some(forge.main.clone()));

    // Merged (fulfilled): torn down.
    let (status, reply) = bitbucket(&server, "pullrequest:fulfilled", "{u-2}", &pr, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.preview(7), Some(EnvironmentStatus::Stopped));

    // One push of two changes: main moved (staging), and a tag (production).
    let mut push = fixture_json("bitbucket/signed.json");
    push["repository"]["full_name"] = json!("ws/app");
    push["push"]["changes"] = json!([
        bitbucket_change("branch", "main", Some(&forge.base), &forge.main),
        bitbucket_change("tag", "v1.0.0", None, &forge.main),
    ]);
    let (status, reply) = bitbucket(&server, "repo:push", "{u-3}", &push, secret);
    assert_eq!(status, 202, "{reply}");
    let answer: Value = serde_json::from_str(&reply).unwrap();
    assert_eq!(
        answer,
        json!({"events": [{"kind": "push", "outcome": "accepted"},
                          {"kind": "tag", "outcome": "accepted"}]})
    );
    wait_until("staging and production to be deployed", || {
        forge.deployed("staging").is_some() && forge.deployed("production").is_some()
    });
    assert_eq!(forge.deployed("staging"), Some(forge.main.clone()));
    assert_eq!(forge.deployed("production"), Some(forge.main.clone()));
    // Redelivered: each of its events is a duplicate.
    let (status, reply) = bitbucket(&server, "repo:push", "{u-3}", &push, secret);
    assert_eq!(status, 200, "{reply}");
    assert!(reply.contains(r#""outcome":"duplicate""#), "{reply}");

    // A declined pull request from the same branch, numbered 8: its preview goes too.
    let pr8 = bitbucket_pr(&forge, 8);
    let (_, reply) = bitbucket(&server, "pullrequest:created", "{u-4}", &pr8, secret);
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.preview(8), Some(EnvironmentStatus::Active));
    let (_, reply) = bitbucket(&server, "pullrequest:rejected", "{u-5}", &pr8, secret);
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.preview(8), Some(EnvironmentStatus::Stopped));
}

/// Commits made on branch `crowd` of `dir` (in one `git fast-import`) until two share their
/// first `digits` hexadecimal digits; the prefix.
fn ambiguous_prefix(dir: &Path, digits: usize) -> String {
    use std::io::Write;
    let mut stream = String::new();
    for n in 0..2000 {
        stream += &format!(
            "commit refs/heads/crowd\ncommitter t <t@example.com> {} +0000\ndata 3\nn{:<1}\n\n",
            1_700_000_000 + n,
            n % 10
        );
    }
    let mut child = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    let mut seen = std::collections::HashSet::new();
    for id in git(dir, &["rev-list", "crowd"]).lines() {
        if !seen.insert(&id[..digits]) {
            return id[..digits].to_owned();
        }
    }
    panic!("no two of 2000 commits share {digits} digits")
}

#[test]
fn bitbucket_commit_prefixes_that_are_ambiguous_or_unknown_fail_the_delivery() {
    let forge = Forge::new();
    // Upstream commits until two share 4 digits.
    let prefix = ambiguous_prefix(&forge.upstream, 4);
    let server = Server::start(
        &forge.state(),
        &forge.clone,
        &[
            "--log-format",
            "json",
            "--allow-unsigned",
            "--repo-name",
            "ws/app",
        ],
        &[],
    );
    let send = |pr: &Value, id: &str| {
        let body = serde_json::to_vec(pr).unwrap();
        let headers = [
            ("X-Event-Key", "pullrequest:created"),
            ("X-Request-UUID", id),
        ];
        let (status, reply) = request(server.addr, "POST", "/webhooks/bitbucket", &headers, &body);
        assert_eq!(status, 202, "{reply}");
        seq(&reply)
    };
    let mut pr = bitbucket_pr(&forge, 9);
    pr["pullrequest"]["source"]["commit"]["hash"] = json!(prefix);
    let why = |seq: u64| {
        let errors = logged(&server, "the event's commit cannot be told");
        let error = errors.iter().find(|l| l["seq"] == seq);
        error.map(|l| l["error"].as_str().unwrap_or_default().to_owned())
    };
    let first = send(&pr, "{a}");
    assert_eq!(done(&server, first), "failed");
    let error = why(first).unwrap();
    assert!(
        error.starts_with(&format!("commit id \"{prefix}\" is ambiguous in "))
            && error.contains("it begins "),
        "{error}"
    );
    pr["pullrequest"]["source"]["commit"]["hash"] = json!("0123456789ab");
    let second = send(&pr, "{b}");
    assert_eq!(done(&server, second), "failed");
    let error = why(second).unwrap();
    assert!(
        error.starts_with("revision \"0123456789ab\" not found in ")
            && error.ends_with(": no commit has this prefix"),
        "{error}"
    );
    assert_eq!(forge.preview(9), None);
}

#[test]
fn bitbucket_signatures_and_bad_bodies() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let server = Server::start(
        &tmp.path().join("state"),
        &repo,
        &[
            "--no-run",
            "--bitbucket-secret-env",
            "BB",
            "--repo-name",
            "nfalco79/test-repos",
            "--repo-name",
            "cloudbeers/temp",
        ],
        &[("BB", "Gkvl$k$wyNpQAF42")],
    );
    let send = |key: &str, id: &str, body: &[u8], signature: Option<&str>| {
        let mut headers = vec![("X-Event-Key", key), ("X-Request-UUID", id)];
        headers.extend(signature.map(|s| ("X-Hub-Signature", s)));
        request(server.addr, "POST", "/webhooks/bitbucket", &headers, body)
    };
    // The real delivery, exactly as Bitbucket signed it.
    let body = std::fs::read(Path::new(FIXTURES).join("bitbucket/signed.json")).unwrap();
    let real = "sha256=f205c729821c6954aff2afe72b965c34015b4baf96ea8ddc2cc44999c014a035";
    let (status, reply) = send("repo:push", "{real}", &body, Some(real));
    assert_eq!(status, 202, "{reply}");
    wait_until("the event to be printed", || !server.lines().is_empty());
    let printed: Value = serde_json::from_str(&server.lines()[0]).unwrap();
    assert_eq!(printed["branch"], "feature/webhook");

    // One character off, in the body or in the signature.
    let mut tampered = body.clone();
    let at = tampered.iter().position(|&b| b == b'N').unwrap();
    tampered[at] = b'M';
    let mut wrong = real.to_owned();
    wrong.replace_range(wrong.len() - 1.., "b");
    for (body, signature) in [(&tampered, real), (&body, wrong.as_str())] {
        let (status, reply) = send("repo:push", "{bad}", body, Some(signature));
        assert_eq!(status, 401, "{reply}");
        assert!(reply.contains("X-Hub-Signature does not match"), "{reply}");
    }
    let (status, reply) = send("repo:push", "{none}", &body, None);
    assert_eq!(
        (status, reply.contains("missing X-Hub-Signature")),
        (401, true),
        "{reply}"
    );

    // Bad bodies, signed: 400 with a message, and the server still answers after them.
    for (key, bad) in [
        ("repo:push", &b"{\"push\": "[..]),
        ("repo:push", b"[]"),
        ("pullrequest:created", b"{\"pullrequest\": {\"id\": -1}}"),
        ("repo:push", b"\xff\xfe\x00"),
    ] {
        let signature = sign("Gkvl$k$wyNpQAF42", bad);
        let (status, reply) = send(key, "{x}", bad, Some(&signature));
        assert_eq!(status, 400, "{reply}");
        let error = serde_json::from_str::<Value>(&reply).unwrap()["error"].clone();
        assert!(
            error
                .as_str()
                .unwrap()
                .starts_with(&format!("invalid bitbucket {key} payload")),
            "{reply}"
        );
    }
    // An event key gitops does not handle: accepted and ignored.
    let signature = sign("Gkvl$k$wyNpQAF42", b"{}");
    let (status, reply) = send("repo:fork", "{fork}", b"{}", Some(&signature));
    assert_eq!((status, reply.contains("ignored")), (202, true), "{reply}");
    // Without X-Event-Key.
    let headers = [("X-Hub-Signature", real)];
    let (status, reply) = request(server.addr, "POST", "/webhooks/bitbucket", &headers, &body);
    assert_eq!(
        (status, reply.contains("x-event-key")),
        (400, true),
        "{reply}"
    );
    // Another forge's endpoint is not enabled.
    let (status, _) = request(server.addr, "POST", "/webhooks/gitea", &[], &body);
    assert_eq!(status, 404);
}

fn gitea(
    server: &Server,
    forgejo: bool,
    event: &str,
    id: &str,
    body: &Value,
    secret: &str,
) -> (u16, String) {
    let body = serde_json::to_vec(body).unwrap();
    let signature = sign(secret, &body);
    let bare = signature.trim_start_matches("sha256=");
    let names = if forgejo {
        [
            "X-Forgejo-Event",
            "X-Forgejo-Delivery",
            "X-Forgejo-Signature",
        ]
    } else {
        ["X-Gitea-Event", "X-Gitea-Delivery", "X-Gitea-Signature"]
    };
    let headers = [(names[0], event), (names[1], id), (names[2], bare)];
    request(server.addr, "POST", "/webhooks/gitea", &headers, &body)
}

#[test]
fn gitea_and_forgejo_pull_request_push_and_tag_deploy_and_tear_down() {
    let forge = Forge::new();
    let secret = "gitea-secret-9a0c";
    let server = Server::start(
        &forge.state(),
        &forge.clone,
        &[
            "--log-format",
            "json",
            "--gitea-secret-env",
            "GITEA_SECRET",
            "--repo-name",
            "example/example",
        ],
        &[("GITEA_SECRET", secret)],
    );
    let mut pr = fixture_json("gitea/pull-request-event.json");
    let p = &mut pr["pull_request"];
    p["number"] = json!(5);
    p["head"]["ref"] = json!("feature");
    p["head"]["sha"] = json!(forge.head);
    p["head"]["repo"] = p["base"]["repo"].clone();
    p["base"]["ref"] = json!("main");
    p["base"]["sha"] = json!(forge.base);
    pr["number"] = json!(5);
    let (status, reply) = gitea(&server, false, "pull_request", "g-1", &pr, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran", "{:?}", server.log());
    assert_eq!(forge.preview(5), Some(EnvironmentStatus::Active));

    // Forgejo's headers; the pull request is merged.
    pr["action"] = json!("closed");
    pr["pull_request"]["merged"] = json!(true);
    let (status, reply) = gitea(&server, true, "pull_request", "f-2", &pr, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.preview(5), Some(EnvironmentStatus::Stopped));

    let mut push = fixture_json("gitea/push-event.json");
    push["ref"] = json!("refs/heads/main");
    push["before"] = json!(forge.base);
    push["after"] = json!(forge.main);
    let (status, reply) = gitea(&server, false, "push", "g-3", &push, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.deployed("staging"), Some(forge.main.clone()));

    let mut tag = fixture_json("gitea/create-event.json");
    tag["ref_type"] = json!("tag");
    tag["ref"] = json!("v1.0.0");
    tag["sha"] = json!(forge.main);
    let (status, reply) = gitea(&server, true, "create", "f-4", &tag, secret);
    assert_eq!(status, 202, "{reply}");
    assert_eq!(done(&server, seq(&reply)), "ran");
    assert_eq!(forge.deployed("production"), Some(forge.main.clone()));

    // Redelivered: a duplicate. Tampered or signed with GitHub's prefix: refused.
    let (status, reply) = gitea(&server, true, "create", "f-4", &tag, secret);
    assert_eq!(status, 200, "{reply}");
    let body = serde_json::to_vec(&tag).unwrap();
    let signed = sign(secret, &body);
    let mut tampered = signed["sha256=".len()..].to_owned();
    let last = if tampered.ends_with('0') { "1" } else { "0" };
    tampered.replace_range(63.., last);
    for signature in [signed.as_str(), &tampered] {
        let headers = [
            ("X-Gitea-Event", "create"),
            ("X-Gitea-Signature", signature),
        ];
        let (status, reply) = request(server.addr, "POST", "/webhooks/gitea", &headers, &body);
        assert_eq!(status, 401, "{signature}: {reply}");
        assert!(reply.contains("X-Gitea-Signature"), "{reply}");
    }
    let bad = b"{\"ref\": 5}";
    let signature = sign(secret, bad);
    let headers = [
        ("X-Gitea-Event", "push"),
        ("X-Gitea-Signature", &signature["sha256=".len()..]),
    ];
    let (status, reply) = request(server.addr, "POST", "/webhooks/gitea", &headers, bad);
    assert_eq!(
        (status, reply.contains("invalid gitea push payload")),
        (400, true),
        "{reply}"
    );

    // Counted under the provider `gitea`, whichever forge's headers.
    let (_, text) = request(server.addr, "GET", "/metrics", &[], b"");
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).unwrap();
    let count = |outcome: &str| {
        let sample = scrape.samples.iter().find(|s| {
            s.metric == "gitops_webhook_deliveries_total"
                && s.labels.get("provider") == Some("gitea")
                && s.labels.get("outcome") == Some(outcome)
        });
        sample.map(|s| match s.value {
            prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    let counts = ["accepted", "duplicate", "bad_signature", "malformed"].map(count);
    assert_eq!(
        counts,
        [Some(4.0), Some(1.0), Some(2.0), Some(1.0)],
        "{text}"
    );
}

#[test]
fn serve_refuses_to_start_without_any_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let state = tmp.path().join("state");
    let out = common::gitops(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--repo",
            repo.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--repo-name",
            "a/b",
            "--bitbucket-secret-env",
            "NO_SUCH_VARIABLE_7f3e",
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        common::text(&out.stderr)
            .contains("--bitbucket-secret-env NO_SUCH_VARIABLE_7f3e: no such environment variable"),
        "{}",
        common::text(&out.stderr)
    );
}
