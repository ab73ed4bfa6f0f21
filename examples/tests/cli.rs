//! The `gitops` binary end to end: exit codes, output shapes, and planning from a real repository.

mod common;

use std::path::Path;

use common::{git, gitops, text};

use serde_json::{Value, json};

const DESIGN: &str = include_str!("../../gitops-core/tests/data/design.gitops.yml");

fn fixture(path: &str) -> String {
    format!(
        "{}/../../shared/fixtures/webhooks/{path}",
        env!("CARGO_MANIFEST_DIR")
    )
}

#[test]
fn validate_exits_0_on_good_and_1_on_bad_configs() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.yml");
    std::fs::write(&good, DESIGN).unwrap();
    let out = gitops(&["validate", "--config", good.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("ok (4 pipelines, 8 stages, 3 environments)"));

    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        DESIGN.replace(
            "needs: [build], deploy: preview",
            "needs: [biuld], deploy: preview",
        ),
    )
    .unwrap();
    let out = gitops(&["validate", "--config", bad.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "{}:21:26: pipeline \"pull-request\": stage \"preview\" needs unknown stage \"biuld\"",
            bad.display()
        )
    );
    let out = gitops(
        &[
            "validate",
            "--config",
            tmp.path().join("missing.yml").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot read file"));
}

#[test]
fn event_normalises_fixtures_from_files_and_stdin() {
    let out = gitops(
        &[
            "event",
            "--provider",
            "github",
            "--type",
            "push",
            "--file",
            &fixture("github/push.with-new-branch.json"),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["kind"].clone(), v["branch"].clone(), v["created"].clone()),
        (json!("push"), json!("master"), json!(true))
    );

    let body = std::fs::read(fixture("gitlab/merge_request.json")).unwrap();
    let out = gitops(
        &[
            "event",
            "--provider",
            "gitlab",
            "--type",
            "Merge Request Hook",
        ],
        Some(&body),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v["kind"].clone(), v["number"].clone()),
        (json!("pull_request"), json!(1))
    );

    let out = gitops(
        &["event", "--provider", "github", "--type", "push"],
        Some(b"{\"ref\":"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: invalid github push payload: EOF while parsing"),
        "{}",
        text(&out.stderr)
    );
    let out = gitops(
        &["event", "--provider", "sourcehut", "--type", "push"],
        Some(b"{}"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        "error: unknown webhook provider \"sourcehut\" (expected github, gitlab, bitbucket or gitea)"
    );
}

#[test]
fn event_takes_bitbucket_and_gitea_payloads() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks");
    let event = |provider: &str, ty: &str, body: &[u8]| {
        let out = gitops(&["event", "--provider", provider, "--type", ty], Some(body));
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        serde_json::from_slice::<Value>(&out.stdout).unwrap()
    };
    let pr = std::fs::read(fixtures.join("bitbucket/pullrequest-created.fork.json")).unwrap();
    let e = event("bitbucket", "pullrequest:created", &pr);
    assert_eq!(
        (&e["kind"], &e["sha"], &e["fork"]),
        (&json!("pull_request"), &json!("1c48041a96db"), &json!(true))
    );
    // A push of two changes: an array of two events.
    let mut push: Value =
        serde_json::from_slice(&std::fs::read(fixtures.join("bitbucket/signed.json")).unwrap())
            .unwrap();
    let change = push["push"]["changes"][0].clone();
    push["push"]["changes"] = json!([change, change]);
    let events = event("bitbucket", "repo:push", push.to_string().as_bytes());
    assert_eq!(events.as_array().map(Vec::len), Some(2), "{events}");
    let pr = std::fs::read(fixtures.join("gitea/pull-request-event.json")).unwrap();
    for provider in ["gitea", "forgejo"] {
        assert_eq!(event(provider, "pull_request", &pr)["number"], 2);
    }
}

#[test]
fn plan_reads_the_config_and_changes_from_the_repository() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q"]);
    std::fs::write(d.join(".gitops.yml"), DESIGN).unwrap();
    std::fs::write(d.join("README.md"), "x").unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-qm", "init"]);
    git(d, &["checkout", "-qb", "feature"]);
    std::fs::create_dir(d.join("src")).unwrap();
    std::fs::write(d.join("src/main.rs"), "fn main() {}").unwrap();
    git(d, &["add", "-A"]);
    git(d, &["commit", "-qm", "feature"]);
    let head = git(d, &["rev-parse", "HEAD"]);
    let base = git(d, &["rev-parse", "main"]);
    let event = json!({"kind": "pull_request", "repo": "o/r", "sha": head, "action": "opened", "number": 12,
        "title": "$(touch /tmp/pwned)", "draft": false, "merged": false,
        "head": {"ref": "feature", "sha": head}, "base": {"ref": "main", "sha": base}});
    let event_file = d.join("event.json");
    std::fs::write(&event_file, event.to_string()).unwrap();

    let out = gitops(
        &[
            "plan",
            "--event",
            event_file.to_str().unwrap(),
            "--repo",
            d.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let p = &plan["pipelines"][0];
    assert_eq!(p["name"], "pull-request");
    assert_eq!(
        p["order"],
        json!(["test", "build", "preview", "integration"])
    );
    assert_eq!(p["paths_checked"], json!(true));
    assert_eq!(p["stages"][2]["environment"], "preview-pr-12");
    assert_eq!(p["stages"][2]["action"], "deploy");
    assert_eq!(p["stages"][0]["needs"], json!([]));
    assert_eq!(p["stages"][0]["backend"], "local");

    // The same PR touching only README.md: the paths filter leaves nothing to run.
    git(d, &["checkout", "-q", "main"]);
    git(d, &["checkout", "-qb", "docs"]);
    std::fs::write(d.join("README.md"), "docs").unwrap();
    git(d, &["commit", "-qam", "docs"]);
    let docs_head = git(d, &["rev-parse", "HEAD"]);
    let mut docs = event.clone();
    docs["sha"] = json!(docs_head);
    docs["head"] = json!({"ref": "docs", "sha": docs_head});
    std::fs::write(&event_file, docs.to_string()).unwrap();
    let out = gitops(
        &[
            "plan",
            "--event",
            event_file.to_str().unwrap(),
            "--repo",
            d.to_str().unwrap(),
        ],
        None,
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["pipelines"], json!([]));

    // Without a repository, paths cannot be checked, and the plan says so.
    let cfg = d.join("cfg.yml");
    std::fs::write(&cfg, DESIGN).unwrap();
    let out = gitops(
        &["plan", "--event", "-", "--config", cfg.to_str().unwrap()],
        Some(docs.to_string().as_bytes()),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(plan["pipelines"][0]["paths_checked"], json!(false));

    let out = gitops(
        &["plan", "--event", "-", "--config", cfg.to_str().unwrap()],
        Some(b"{\"kind\": \"nope\"}"),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).starts_with("error: - is not a normalised event"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn graph_prints_dot_and_names_missing_pipelines() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("c.yml");
    std::fs::write(&cfg, DESIGN).unwrap();
    let out = gitops(
        &[
            "graph",
            "--pipeline",
            "main",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(0));
    let dot = text(&out.stdout);
    assert!(dot.starts_with("digraph \"main\" {"), "{dot}");
    assert!(dot.contains("\"test\" -> \"deploy\";"), "{dot}");
    assert!(dot.contains("label=\"deploy\\ndeploy staging\""), "{dot}");
    let out = gitops(
        &[
            "graph",
            "--pipeline",
            "nope",
            "--config",
            cfg.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        text(&out.stderr).trim(),
        format!(
            "error: no pipeline \"nope\" in {} (pipelines: pull-request, pull-request-closed, main, release)",
            cfg.display()
        )
    );
}

#[test]
fn demo_walks_the_flow_and_cleans_up() {
    let out = gitops(&["demo"], None);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let mut rest = stdout.as_str();
    // The story, in order.
    for line in [
        "pipeline pull-request: test ✓  build ✓  preview ✓  smoke ✓",
        "● preview-pr-1 now runs",
        "pipeline pull-request: test ✓  build ✓  preview ✓  smoke ✓",
        "● preview-pr-1 now runs",
        "pipeline pull-request-closed: teardown ✓",
        "■ preview-pr-1 stopped",
        "pipeline main: test ✓  deploy ✓",
        "● staging now runs",
        "● production now runs v1.0.0",
        "● production now runs v1.1.0",
        "production rolled back: v1.0.0 is live again",
        "production serves: hello, world!\n",
    ] {
        let at = rest
            .find(line)
            .unwrap_or_else(|| panic!("missing {line:?} (in this order) in:\n{stdout}"));
        rest = &rest[at + line.len()..];
    }
    let table: Vec<Vec<&str>> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let row = |name: &str| {
        table
            .iter()
            .find(|r| r.first() == Some(&name) && r.len() >= 6 && r[1] != "is")
            .unwrap_or_else(|| panic!("no {name} row in:\n{stdout}"))
            .clone()
    };
    assert_eq!(row("preview-pr-1")[1], "stopped");
    assert_eq!(&row("production")[1..3], ["active", "1.0.0"]);
    assert_eq!(
        row("production")[4],
        "yes",
        "production is pinned after the rollback"
    );
    assert_eq!(row("#8")[2], "rollback");
    assert!(
        row("#8").contains(&"#5)"),
        "the rollback redeploys v1.0.0's deployment"
    );
    let dir = stdout.lines().next().unwrap().rsplit(' ').next().unwrap();
    assert!(!Path::new(dir).exists(), "the demo left {dir} behind");
}
