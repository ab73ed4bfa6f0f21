//! `gitops serve` over real HTTP on loopback: the forges' real payloads signed the way they sign
//! them, tampering and missing signatures, redeliveries, limits, a flood of requests, and a
//! pushed commit fetched, run, and finished across a graceful shutdown.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::server::{Server, fixture, github, request, sign, wait_until};
use common::{git, text};
use serde_json::{Value, json};

const FIXTURES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../shared/fixtures/webhooks"
);

/// What `gitops event` prints for a fixture.
fn normalised(provider: &str, event_type: &str, file: &Path) -> Value {
    let out = common::gitops(
        &[
            "event",
            "--provider",
            provider,
            "--type",
            event_type,
            "--file",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn signed_payloads_are_accepted_and_everything_else_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    let mut server = Server::start(
        &tmp.path().join("state"),
        &repo,
        &[
            "--no-run",
            "--github-secret-env",
            "GH_SECRET",
            "--gitlab-token-env",
            "GL_TOKEN",
            "--max-body-bytes",
            "100000",
            "--repo-name",
            "Codertocat/Hello-World",
            "--repo-name",
            "mike/diaspora",
            "--repo-name",
            "gitlabhq/gitlab-test",
        ],
        &[("GH_SECRET", "s3cret"), ("GL_TOKEN", "t0ken")],
    );
    let addr = server.addr;
    let mut expected = Vec::new();

    for (file, event_type) in [
        ("push.with-new-branch.json", "push"),
        ("pull_request.opened.json", "pull_request"),
        ("release.published.json", "release"),
    ] {
        let path = Path::new(FIXTURES).join("github").join(file);
        let body = std::fs::read(&path).unwrap();
        let (status, reply) = github(addr, event_type, file, &body, Some(&sign("s3cret", &body)));
        assert_eq!(status, 202, "{file}: {reply}");
        expected.push(normalised("github", event_type, &path));

        // The same delivery again: acknowledged, not run twice.
        let (status, reply) = github(addr, event_type, file, &body, Some(&sign("s3cret", &body)));
        assert_eq!(
            (status, reply.contains("duplicate")),
            (200, true),
            "{reply}"
        );

        // Tampered (one byte changed after signing), unsigned, signed with another secret.
        let mut tampered = body.clone();
        let at = tampered.iter().position(|&b| b == b'a').unwrap();
        tampered[at] = b'b';
        for (body, sig) in [
            (&tampered, Some(sign("s3cret", &body))),
            (&body, None),
            (&body, Some(sign("guess", &body))),
        ] {
            let (status, reply) = github(
                addr,
                event_type,
                &format!("{file}-bad"),
                body,
                sig.as_deref(),
            );
            assert_eq!(status, 401, "{reply}");
            assert!(reply.contains("X-Hub-Signature-256"), "{reply}");
        }
    }
    for (file, event_type) in [
        ("push.json", "Push Hook"),
        ("merge_request.json", "Merge Request Hook"),
    ] {
        let path = Path::new(FIXTURES).join("gitlab").join(file);
        let body = std::fs::read(&path).unwrap();
        let headers = |token| {
            vec![
                ("X-Gitlab-Event", event_type),
                ("X-Gitlab-Event-UUID", file),
                ("X-Gitlab-Token", token),
            ]
        };
        let (status, reply) = request(addr, "POST", "/webhooks/gitlab", &headers("wrong"), &body);
        assert_eq!(status, 401, "{reply}");
        let (status, reply) = request(addr, "POST", "/webhooks/gitlab", &headers("t0ken"), &body);
        assert_eq!(status, 202, "{file}: {reply}");
        expected.push(normalised("gitlab", event_type, &path));
        // The same body under another event UUID is taken: a GitLab token does not bind the
        // body, and GitLab sends identical bodies for identical pushes (A→B after a rollback).
        let again = [
            ("X-Gitlab-Event", event_type),
            ("X-Gitlab-Event-UUID", "again"),
            ("X-Gitlab-Token", "t0ken"),
        ];
        let (status, reply) = request(addr, "POST", "/webhooks/gitlab", &again, &body);
        assert_eq!(status, 202, "{reply}");
        expected.push(normalised("gitlab", event_type, &path));
        // The same UUID and type again (a retry): a redelivery, answered and not run twice.
        let (status, reply) = request(addr, "POST", "/webhooks/gitlab", &again, &body);
        assert_eq!(
            (status, reply.contains("duplicate")),
            (200, true),
            "{reply}"
        );
    }

    let signed = |body: &[u8]| sign("s3cret", body);
    let (status, reply) = github(
        addr,
        "push",
        "m1",
        b"{\"ref\": ",
        Some(&signed(b"{\"ref\": ")),
    );
    assert_eq!(status, 400, "malformed: {reply}");
    let (status, reply) = github(addr, "issues", "u1", b"{}", Some(&signed(b"{}")));
    assert_eq!(status, 202, "{reply}");
    assert!(
        reply.contains("unsupported github event type \\\"issues\\\""),
        "{reply}"
    );
    let (status, _) = request(
        addr,
        "POST",
        "/webhooks/github",
        &[("X-Hub-Signature-256", &signed(b"{}"))],
        b"{}",
    );
    assert_eq!(status, 400, "no event type header");
    let ping = br#"{"zen": "z", "hook_id": 1, "repository": {"full_name": "o/r"}}"#;
    assert_eq!(github(addr, "ping", "p1", ping, Some(&signed(ping))).0, 200);
    let big = vec![b' '; 200_000];
    assert_eq!(
        github(addr, "push", "big", &big, Some(&signed(&big))).0,
        413
    );
    let (status, health) = request(addr, "GET", "/healthz", &[], b"");
    let health: Value = serde_json::from_str(&health).unwrap();
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    assert_eq!(health.get("warning"), None, "signed: {health}");

    wait_until("the accepted events", || {
        server.lines().len() >= expected.len()
    });
    std::thread::sleep(Duration::from_millis(200));
    let printed: Vec<Value> = server
        .lines()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        printed, expected,
        "exactly the accepted events, as `gitops event` prints them"
    );
    assert!(server.stop().success());
}

#[test]
fn a_flood_of_requests_is_handled_without_loss() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    // The same body each time, under new delivery ids: bodies are not compared here.
    let mut server = Server::start(
        &tmp.path().join("state"),
        &repo,
        &[
            "--no-run",
            "--allow-unsigned",
            "--replay-window",
            "0s",
            "--repo-name",
            "Codertocat/Hello-World",
        ],
        &[],
    );
    let body = Arc::new(
        std::fs::read(Path::new(FIXTURES).join("github/push.with-new-branch.json")).unwrap(),
    );
    let addr = server.addr;
    const THREADS: usize = 16;
    const EACH: usize = 200;
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let body = body.clone();
            std::thread::spawn(move || {
                let mut failed = Vec::new();
                for i in 0..EACH {
                    // Every tenth request is a redelivery of the one before.
                    let id = format!("flood-{t}-{}", if i % 10 == 9 { i - 1 } else { i });
                    let (status, reply) = github(addr, "push", &id, &body, None);
                    let expected = if i % 10 == 9 { 200 } else { 202 };
                    if status != expected {
                        failed.push(format!("{id}: {status} {reply}"));
                    }
                }
                failed
            })
        })
        .collect();
    let failed: Vec<String> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(
        failed.is_empty(),
        "{} failed, e.g. {:?}",
        failed.len(),
        &failed[..failed.len().min(3)]
    );
    let accepted = THREADS * EACH * 9 / 10;
    wait_until("every accepted event", || server.lines().len() >= accepted);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        server.lines().len(),
        accepted,
        "each accepted event printed once"
    );
    assert!(server.stop().success());
    assert_eq!(
        server
            .log
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("panicked"))
            .count(),
        0
    );
}

#[test]
fn a_pushed_commit_is_fetched_run_and_finished_across_a_graceful_shutdown() {
    let tmp = tempfile::tempdir().unwrap();
    let marks = tmp.path().join("marks");
    let config = format!(
        r#"version: 1
pipelines:
  main:
    on: {{ push: {{ branches: [main] }} }}
    stages:
      build: {{ run: "echo start-$GITOPS_SHA >> {m}; sleep 1; echo end-$GITOPS_SHA >> {m}" }}
"#,
        m = marks.display()
    );
    // `after` is pushed after the clone was made: the server must fetch it.
    let fx = fixture(&config);
    let (clone, before, after) = (&fx.clone, &fx.before, &fx.after);

    let state = &fx.state;
    let mut server = Server::start(
        state,
        clone,
        &["--allow-unsigned", "--repo-name", "o/upstream"],
        &[],
    );
    let payload = json!({"ref": "refs/heads/main", "before": before, "after": after,
        "created": false, "deleted": false, "forced": false,
        "repository": {"full_name": "o/upstream"}});
    let body = serde_json::to_vec(&payload).unwrap();
    let (status, reply) = github(server.addr, "push", "d-1", &body, None);
    assert_eq!(status, 202, "{reply}");
    assert!(
        !marks.exists() || !text(&std::fs::read(&marks).unwrap()).contains("end-"),
        "answered before the run ended"
    );

    wait_until("the stage to start", || marks.exists());
    let status = server.stop();
    assert!(status.success(), "{:?}", server.log.lock().unwrap());
    assert_eq!(
        std::fs::read_to_string(&marks).unwrap(),
        format!("start-{after}\nend-{after}\n"),
        "the running stage finished before the server exited"
    );
    let ledger = gitops_core::ledger::Ledger::open(state).unwrap();
    let runs = ledger.runs(10).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].commit.as_deref(), Some(after.as_str()));
    assert!(!runs[0].is_interrupted());
}

/// What a pull request runs under `serve` never sees the server's own environment: its webhook
/// secret, its other variables; and the default branch of origin, not the pull request, says
/// what its environments are.
#[test]
fn a_stage_started_by_serve_sees_nothing_of_the_servers_environment() {
    let tmp = tempfile::tempdir().unwrap();
    let dump = tmp.path().join("dump");
    let upstream = tmp.path().join("upstream");
    std::fs::create_dir_all(&upstream).unwrap();
    git(&upstream, &["init", "-q"]);
    let config = format!(
        "version: 1\npipelines:\n  pr:\n    on: {{ pull_request: {{}} }}\n    stages:\n      dump: {{ run: \"env > {}\" }}\n",
        dump.display()
    );
    std::fs::write(upstream.join(".gitops.yml"), config).unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "one"]);
    let base = git(&upstream, &["rev-parse", "HEAD"]);
    git(&upstream, &["checkout", "-qb", "feature"]);
    std::fs::write(upstream.join("app.txt"), "two").unwrap();
    git(&upstream, &["add", "-A"]);
    git(&upstream, &["commit", "-qm", "two"]);
    let head = git(&upstream, &["rev-parse", "HEAD"]);
    git(&upstream, &["checkout", "-q", "main"]);
    let clone = tmp.path().join("clone");
    git(
        tmp.path(),
        &[
            "clone",
            "-q",
            upstream.to_str().unwrap(),
            clone.to_str().unwrap(),
        ],
    );
    let state = tmp.path().join("state");
    let secret = "webhook-secret-0d6c1e";
    let _server = Server::start(
        &state,
        &clone,
        &[
            "--github-secret-env",
            "HOOK_SECRET",
            "--repo-name",
            "o/upstream",
        ],
        &[("HOOK_SECRET", secret), ("SERVER_ONLY", "server-only-77aa")],
    );
    let payload = json!({"action": "opened", "number": 4, "sender": {"login": "mallory"},
        "pull_request": {"title": "t", "draft": false, "merged": false, "labels": [],
            "user": {"login": "mallory"},
            "head": {"ref": "feature", "sha": head, "repo": {"full_name": "o/upstream"}},
            "base": {"ref": "main", "sha": base, "repo": {"full_name": "o/upstream"}}},
        "repository": {"full_name": "o/upstream"}});
    let body = serde_json::to_vec(&payload).unwrap();
    let signature = sign(secret, &body);
    let (status, reply) = github(
        _server.addr,
        "pull_request",
        "d-env",
        &body,
        Some(&signature),
    );
    assert_eq!(status, 202, "{reply}");
    wait_until("the stage to dump its environment", || {
        std::fs::read_to_string(&dump).is_ok_and(|d| d.contains("GITOPS_PR_NUMBER=4"))
    });
    let dumped = std::fs::read_to_string(&dump).unwrap();
    assert!(!dumped.contains(secret), "{dumped}");
    assert!(!dumped.contains("HOOK_SECRET"), "{dumped}");
    assert!(!dumped.contains("server-only-77aa"), "{dumped}");
    assert!(dumped.contains("GITOPS_PR_TITLE=t"), "{dumped}");
}
