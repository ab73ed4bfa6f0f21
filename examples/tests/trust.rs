//! Trust through the `gitops` binary: what a pull request (its code, its `.gitops.yml`, its
//! title) can make gitops do, and what each trust level may run, read and deploy. Real git
//! repositories, real processes, the ledger of a state dir.

mod common;

use std::path::{Path, PathBuf};

use common::{git, text};
use serde_json::{Value, json};

/// The default branch's config: the environments every event deploys to.
const MAIN: &str = r#"version: 1
environments:
  preview: { per_pull_request: true }
  staging: { deploy_from: { branches: [main] } }
  production:
    approval: required
    deploy_from: { tags: { semver: ">=1.0.0" } }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      test: { run: "echo \"test: DEPLOY=${DEPLOY_TOKEN:+yes} NPM=${NPM_TOKEN:+yes} SIGN=${SIGNING_KEY:+yes}\" >> \"$MARKS\"", env: { MARKS: "@MARKS@" } }
      preview: { needs: test, deploy: preview, with: { build: "echo \"preview: DEPLOY=${DEPLOY_TOKEN:+yes} NPM=${NPM_TOKEN:+yes}\" >> @MARKS@" } }
  main:
    on: { push: { branches: [main] } }
    stages:
      test: { run: "echo \"test: DEPLOY=${DEPLOY_TOKEN:+yes} NPM=${NPM_TOKEN:+yes} SIGN=${SIGNING_KEY:+yes}\" >> \"$MARKS\"", env: { MARKS: "@MARKS@" } }
      staging: { needs: test, deploy: staging, with: { build: "echo \"staging: DEPLOY=${DEPLOY_TOKEN:+yes} SIGN=${SIGNING_KEY:+yes}\" >> @MARKS@" } }
      production: { needs: test, deploy: production }
  release:
    on: { tag: { semver: ">=0.1.0" } }
    stages:
      production: { deploy: production, with: { build: "echo \"production: DEPLOY=${DEPLOY_TOKEN:+yes}\" >> @MARKS@" } }
"#;

const POLICY: &str = r#"repositories: [acme/app]
forks: approve
trust_label: safe-to-test
secrets:
  DEPLOY_TOKEN: { from_env: GITOPS_TEST_DEPLOY_TOKEN, environments: [staging, production] }
  NPM_TOKEN: { from_env: GITOPS_TEST_NPM_TOKEN, pull_requests: true }
  SIGNING_KEY: { from_file: "@KEY@" }
"#;

const DEPLOY_TOKEN: &str = "deploy-8d1f0c2b9e";
const NPM_TOKEN: &str = "npm-71c3aa90f2";
const SIGNING_KEY: &str = "signing-5e0b7d44aa";

/// A repository whose `main` has [`MAIN`], a state dir, a policy, and a file stages append
/// marks to.
struct World {
    tmp: tempfile::TempDir,
    base: String,
}

impl World {
    fn new() -> World {
        World::with_config(MAIN)
    }

    fn with_config(config: &str) -> World {
        let tmp = tempfile::tempdir().unwrap();
        let w = World {
            tmp,
            base: String::new(),
        };
        let repo = w.repo();
        std::fs::create_dir_all(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        let base = w.commit("main", None, &[(".gitops.yml", &w.config(config))]);
        std::fs::write(w.path("signing.key"), format!("{SIGNING_KEY}\n")).unwrap();
        let policy = POLICY.replace("@KEY@", &w.path("signing.key").display().to_string());
        std::fs::write(w.path("policy.yml"), policy).unwrap();
        World { base, ..w }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn repo(&self) -> PathBuf {
        self.path("repo")
    }

    fn state(&self) -> PathBuf {
        self.path("state")
    }

    fn config(&self, text: &str) -> String {
        text.replace("@MARKS@", &self.path("marks").display().to_string())
    }

    /// Commits `files` on `branch` (from `parent`, else the branch's tip); its sha.
    fn commit(&self, branch: &str, parent: Option<&str>, files: &[(&str, &str)]) -> String {
        let repo = self.repo();
        match parent {
            Some(p) => git(&repo, &["checkout", "-q", "-B", branch, p]),
            None => git(&repo, &["checkout", "-q", "-B", branch]),
        };
        for (name, text) in files {
            let path = repo.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        git(&repo, &["add", "-A"]);
        git(&repo, &["commit", "-qm", "change", "--allow-empty"]);
        let sha = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["checkout", "-q", "main"]);
        sha
    }

    fn marks(&self) -> Vec<String> {
        std::fs::read_to_string(self.path("marks"))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// `gitops run` of `event` with the policy and the secrets in the environment, plus
    /// `extra` arguments.
    fn run(&self, event: &Value, extra: &[&str]) -> std::process::Output {
        let file = self.path("event.json");
        std::fs::write(&file, event.to_string()).unwrap();
        let mut args = vec![
            "run",
            "--event",
            file.to_str().unwrap(),
            "--repo",
            self.repo().to_str().unwrap().to_owned().leak(),
            "--state",
            self.state().to_str().unwrap().to_owned().leak(),
            "--report",
            self.path("report.json").to_str().unwrap().to_owned().leak(),
        ];
        args.extend_from_slice(extra);
        common::gitops_with_env(
            &args,
            None,
            &[
                ("GITOPS_TEST_DEPLOY_TOKEN", DEPLOY_TOKEN),
                ("GITOPS_TEST_NPM_TOKEN", NPM_TOKEN),
                ("HOST_ONLY_SETTING", "host-value-3f9a"),
            ],
        )
    }

    fn run_with_policy(&self, event: &Value) -> std::process::Output {
        let policy = self.path("policy.yml");
        self.run(
            event,
            &["--policy", policy.to_str().unwrap().to_owned().leak()],
        )
    }

    fn gitops(&self, args: &[&str]) -> std::process::Output {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--state", self.state().to_str().unwrap().to_owned().leak()]);
        common::gitops(&all, None)
    }

    /// The deployments in the ledger, as `gitops history --json` prints them, oldest first.
    fn deployments(&self) -> Vec<Value> {
        let ledger = gitops_core::ledger::Ledger::open(&self.state()).unwrap();
        let mut all: Vec<Value> = ledger
            .history(None, 1000)
            .unwrap()
            .iter()
            .map(|d| {
                json!({"environment": d.environment, "action": d.action, "result": d.result.name(),
                    "by": d.triggered_by, "trust": d.trust.map(|t| t.as_str())})
            })
            .collect();
        all.reverse();
        all
    }

    fn push(&self, sha: &str) -> Value {
        json!({"kind": "push", "repo": "acme/app", "sha": sha, "ref": "refs/heads/main",
            "branch": "main", "before": null, "after": sha, "created": false, "deleted": false,
            "forced": false, "actor": "alice"})
    }

    fn tag(&self, name: &str, sha: &str) -> Value {
        json!({"kind": "tag", "repo": "acme/app", "sha": sha, "action": "created",
            "name": name, "version": name.trim_start_matches('v'), "actor": "release-bot"})
    }

    /// A pull request event from `head_repo` (`acme/app`: a member's).
    fn pr(&self, number: u64, head: &str, head_repo: &str, title: &str, labels: &[&str]) -> Value {
        json!({"kind": "pull_request", "repo": "acme/app", "sha": head, "action": "opened",
            "number": number, "title": title, "draft": false, "merged": false,
            "head": {"ref": "feature", "sha": head, "repo": head_repo},
            "base": {"ref": "main", "sha": self.base, "repo": "acme/app"},
            "fork": head_repo != "acme/app", "labels": labels, "author": "mallory",
            "actor": "mallory"})
    }
}

/// Every file under `dir`, recursively, with its bytes (links not followed).
fn files(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            out.extend(files(&path));
        } else if meta.is_file() {
            out.push((path.clone(), std::fs::read(&path).unwrap_or_default()));
        }
    }
    out
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// No file under the state dir, nor the report, holds any secret's value.
fn assert_no_secret_at_rest(w: &World) {
    let mut all = files(&w.state());
    if let Ok(report) = std::fs::read(w.path("report.json")) {
        all.push((w.path("report.json"), report));
    }
    assert!(!all.is_empty());
    for (path, bytes) in all {
        for secret in [DEPLOY_TOKEN, NPM_TOKEN, SIGNING_KEY] {
            assert!(
                !contains(&bytes, secret),
                "{} holds the secret {secret}",
                path.display()
            );
        }
    }
}

#[test]
fn a_pull_request_cannot_deploy_or_stop_production_nor_read_secrets_with_its_own_config() {
    let w = World::new();
    // The pull request's .gitops.yml drops the approval, makes production its own, and adds
    // stages that deploy and stop it and dump the environment.
    let hostile = r#"version: 1
environments:
  preview: { per_pull_request: true }
  production: { backend: local }
  staging: {}
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      dump: { run: "env > @MARKS@.env" }
      ship: { needs: dump, deploy: production }
      stop: { needs: dump, stop: staging }
"#;
    let head = w.commit(
        "feature",
        Some(&w.base),
        &[(".gitops.yml", &w.config(hostile))],
    );
    let out = w.run(
        &w.pr(7, &head, "acme/app", "Harmless", &[]),
        &["--secret-env", "GITOPS_TEST_DEPLOY_TOKEN"],
    );
    let stderr = text(&out.stderr);
    let stdout = text(&out.stdout);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    // The default branch's environments are used, and the run says so.
    assert!(
        stderr.contains("note: environment \"production\" differs in this commit's .gitops.yml from its definition on the trusted ref refs/heads/main, which is used"),
        "{stderr}"
    );
    let report: Value =
        serde_json::from_slice(&std::fs::read(w.path("report.json")).unwrap()).unwrap();
    let message = |stage: &str| {
        report["stages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == stage)
            .map(|s| s["message"].as_str().unwrap_or_default().to_owned())
            .unwrap()
    };
    assert_eq!(
        message("ship"),
        "pull request #7 may deploy and stop only its own per-pull-request environments; \"production\" is not one"
    );
    assert_eq!(
        message("stop"),
        "pull request #7 may deploy and stop only its own per-pull-request environments; \"staging\" is not one"
    );
    // Nothing deployed or stopped, no secret and nothing of the host in the dump.
    assert_eq!(w.deployments(), Vec::<Value>::new());
    assert!(!w.state().join("environments/production").exists());
    let dump = std::fs::read_to_string(w.path("marks.env")).unwrap();
    assert!(!dump.contains(DEPLOY_TOKEN), "{dump}");
    assert!(!dump.contains("GITOPS_TEST_DEPLOY_TOKEN"), "{dump}");
    assert!(!dump.contains("host-value-3f9a"), "{dump}");
    assert!(dump.contains("GITOPS_PR_NUMBER=7"), "{dump}");
    assert!(dump.lines().any(|l| l.starts_with("PATH=")), "{dump}");
    assert_no_secret_at_rest(&w);
}

#[test]
fn an_environment_a_pull_request_adds_does_not_exist_for_it() {
    let w = World::new();
    let added = r#"version: 1
environments:
  preview: { per_pull_request: true }
  sandbox: { per_pull_request: true }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      sandbox: { deploy: sandbox }
"#;
    let head = w.commit("feature", Some(&w.base), &[(".gitops.yml", added)]);
    let out = w.run(&w.pr(8, &head, "acme/app", "Add a sandbox", &[]), &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("note: environment \"sandbox\" is defined by this commit's .gitops.yml but not on the trusted ref refs/heads/main"),
        "{stderr}"
    );
    let report = std::fs::read_to_string(w.path("report.json")).unwrap();
    assert!(
        report.contains("environment \\\"sandbox\\\" is not defined on the trusted ref refs/heads/main: an environment that a pull request or branch adds exists only once it is merged"),
        "{report}"
    );
    assert_eq!(w.deployments(), Vec::<Value>::new());
}

#[test]
fn the_trust_table_levels_run_read_and_deploy_what_they_may() {
    let w = World::new();
    let head = w.commit("feature", Some(&w.base), &[("app.txt", "pr\n")]);

    // A trusted push to main: every stage runs; DEPLOY_TOKEN only in staging's deploy; the
    // unscoped SIGNING_KEY everywhere; production refused by its deploy_from.
    let out = w.run_with_policy(&w.push(&w.base));
    assert!(
        !out.status.success(),
        "production is refused, so the run fails"
    );
    assert_eq!(
        w.marks(),
        [
            "test: DEPLOY= NPM=yes SIGN=yes",
            "staging: DEPLOY=yes SIGN=yes"
        ]
    );
    let report = std::fs::read_to_string(w.path("report.json")).unwrap();
    assert!(
        report.contains("environment \\\"production\\\" may be deployed only from tags matching \\\">=1.0.0\\\" (deploy_from); a push to branch \\\"main\\\" is not"),
        "{report}"
    );
    assert_eq!(
        w.deployments(),
        [
            json!({"environment": "staging", "action": "deploy", "result": "success", "by": "alice", "trust": "trusted"})
        ]
    );
    std::fs::remove_file(w.path("marks")).unwrap();

    // A tag: production, which waits for an approval (the trusted config says so); approve it
    // from another process while it waits.
    let state = w.state();
    let approver = std::thread::spawn(move || {
        let ledger = gitops_core::ledger::Ledger::open(&state).unwrap();
        for _ in 0..600 {
            if let Some(a) = ledger.pending_approvals().unwrap().first() {
                let out = common::gitops(
                    &[
                        "approve",
                        &a.run_id,
                        &a.stage,
                        "--state",
                        state.to_str().unwrap(),
                    ],
                    None,
                );
                assert!(out.status.success(), "{}", text(&out.stderr));
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("no approval was asked for");
    });
    let out = w.run_with_policy(&w.tag("v1.2.0", &w.base));
    approver.join().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(w.marks(), ["production: DEPLOY=yes"]);
    std::fs::remove_file(w.path("marks")).unwrap();

    // A member's pull request: NPM_TOKEN only, its own preview deployed.
    let out = w.run_with_policy(&w.pr(7, &head, "acme/app", "Feature", &[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        w.marks(),
        ["test: DEPLOY= NPM=yes SIGN=", "preview: DEPLOY= NPM=yes"]
    );
    let last = w.deployments().pop().unwrap();
    assert_eq!(
        last,
        json!({"environment": "preview-pr-7", "action": "deploy", "result": "success", "by": "mallory", "trust": "member"})
    );
    std::fs::remove_file(w.path("marks")).unwrap();

    // A fork's, unlabelled: nothing runs, and the message says what would let it.
    let fork = w.pr(9, &head, "evil/app", "Fix typo", &[]);
    let out = w.run_with_policy(&fork);
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).trim(),
        "error: pull request #9 comes from a fork (evil/app): not run until a maintainer adds the label \"safe-to-test\" or runs gitops trust-pr 9"
    );
    assert_eq!(w.marks(), Vec::<String>::new());

    // Labelled: it runs, without secrets, and deploys nothing.
    let labelled = w.pr(9, &head, "evil/app", "Fix typo", &["safe-to-test"]);
    let out = w.run_with_policy(&labelled);
    assert!(!out.status.success(), "its preview is refused");
    assert_eq!(w.marks(), ["test: DEPLOY= NPM= SIGN="]);
    let report = std::fs::read_to_string(w.path("report.json")).unwrap();
    assert!(
        report.contains(
            "pull request #9 comes from a fork (evil/app): it may not deploy or stop environments"
        ),
        "{report}"
    );
    assert!(!w.state().join("environments/preview-pr-9").exists());
    std::fs::remove_file(w.path("marks")).unwrap();

    // `gitops trust-pr 9 --sha HEAD`: that commit runs; a new push needs trusting again.
    let out = w.gitops(&["trust-pr", "9", "--sha", &head]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(w.run_with_policy(&fork).status.code() == Some(1));
    assert_eq!(w.marks(), ["test: DEPLOY= NPM= SIGN="]);
    let newer = w.commit("feature", Some(&head), &[("app.txt", "more\n")]);
    let out = w.run_with_policy(&w.pr(9, &newer, "evil/app", "Fix typo", &[]));
    assert!(text(&out.stderr).contains("not run until a maintainer"));
    assert!(w.gitops(&["trust-pr", "9", "--revoke"]).status.success());
    assert_no_secret_at_rest(&w);
}

#[test]
fn the_policy_can_ignore_or_run_forks() {
    let w = World::new();
    let head = w.commit("feature", Some(&w.base), &[("app.txt", "pr\n")]);
    let fork = w.pr(3, &head, "evil/app", "x", &["safe-to-test"]);
    let policy = std::fs::read_to_string(w.path("policy.yml")).unwrap();
    std::fs::write(
        w.path("policy.yml"),
        policy.replace("forks: approve", "forks: ignore"),
    )
    .unwrap();
    let out = w.run_with_policy(&fork);
    assert!(
        text(&out.stderr).contains("pull request #3 comes from a fork (evil/app): not run, the policy ignores pull requests from forks (forks: ignore)"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(w.marks(), Vec::<String>::new());
    std::fs::write(
        w.path("policy.yml"),
        policy.replace("forks: approve", "forks: run"),
    )
    .unwrap();
    let out = w.run_with_policy(&w.pr(3, &head, "evil/app", "x", &[]));
    assert!(!out.status.success(), "its preview is refused");
    assert_eq!(w.marks(), ["test: DEPLOY= NPM= SIGN="]);
    // An event of a repository the policy does not serve.
    let mut other = w.push(&w.base);
    other["repo"] = json!("acme/other");
    let out = w.run_with_policy(&other);
    assert!(
        text(&out.stderr).contains(
            "events of repository \"acme/other\" are not served here (the policy's repositories: acme/app)"
        ),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn secrets_never_reach_the_ledger_the_report_or_a_failure_message() {
    let config = r#"version: 1
environments:
  staging: {}
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      leak: { run: "echo token=$MY_SECRET >> $GITOPS_OUTPUT; echo the token is $MY_SECRET" }
      staging:
        needs: leak
        deploy: staging
        with: { serve: "echo serving with $MY_SECRET; exit 3", ready_timeout: 5 }
"#;
    let w = World::with_config(config);
    let out = common::gitops_with_env(
        &[
            "run",
            "--event",
            {
                let f = w.path("event.json");
                std::fs::write(&f, w.push(&w.base).to_string()).unwrap();
                f.to_str().unwrap().to_owned().leak()
            },
            "--repo",
            w.repo().to_str().unwrap(),
            "--state",
            w.state().to_str().unwrap(),
            "--report",
            w.path("report.json").to_str().unwrap(),
            "--secret-env",
            "MY_SECRET",
        ],
        None,
        &[("MY_SECRET", DEPLOY_TOKEN)],
    );
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success());
    assert!(!stdout.contains(DEPLOY_TOKEN) && !stderr.contains(DEPLOY_TOKEN));
    assert!(stdout.contains("the token is ***"), "{stdout}");
    let report: Value =
        serde_json::from_slice(&std::fs::read(w.path("report.json")).unwrap()).unwrap();
    let stages = report["stages"].as_array().unwrap();
    assert_eq!(stages[0]["outputs"]["token"], "***");
    let failure = stages[1]["message"].as_str().unwrap();
    assert!(failure.contains("serving with ***"), "{failure}");
    assert_no_secret_at_rest(&w);
    // The deployment records which secret it had, by name.
    let ledger = gitops_core::ledger::Ledger::open(&w.state()).unwrap();
    let d = &ledger.history(Some("staging"), 1).unwrap()[0];
    assert_eq!(d.inputs.secrets, ["MY_SECRET"]);
    assert!(!d.inputs.env.contains_key("MY_SECRET"));
    // The state dir and the ledger are the owner's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&w.state()), 0o700);
    assert_eq!(mode(&w.state().join("ledger.sqlite3")), 0o600);
}

#[test]
fn an_instance_name_from_event_data_is_a_dns_label_or_nothing() {
    let config = r#"version: 1
environments:
  preview: { per_pull_request: true, name: "${{ event.pr.title }}" }
pipelines:
  pr:
    on: { pull_request: { types: [opened, closed] } }
    stages:
      preview: { deploy: preview }
"#;
    let w = World::with_config(config);
    let head = w.commit("feature", Some(&w.base), &[("app.txt", "x\n")]);
    for title in ["..", "../../etc", "a/b", "UPPER", "", "fix-"] {
        let out = w.run(&w.pr(5, &head, "acme/app", title, &[]), &[]);
        let stderr = text(&out.stderr);
        assert!(!out.status.success());
        assert!(
            stderr.contains(&format!(
                "environment \"preview\" has no usable name for this event (rendered \"{title}\"; an instance name is lowercase letters"
            )),
            "{title}: {stderr}"
        );
    }
    // Closing it stops nothing and removes nothing of the state dir.
    let mut closed = w.pr(5, &head, "acme/app", "..", &[]);
    closed["action"] = json!("closed");
    let _ = w.run(&closed, &[]);
    assert!(w.state().join("ledger.sqlite3").exists());
    assert_eq!(w.deployments(), Vec::<Value>::new());
}

#[test]
fn a_policy_file_with_a_mistake_is_a_located_error() {
    let w = World::new();
    std::fs::write(
        w.path("bad.yml"),
        "forks: approve\nsecrets:\n  X: { from_env: A, from_file: /b }\n",
    )
    .unwrap();
    let out = w.run(
        &w.push(&w.base),
        &[
            "--policy",
            w.path("bad.yml").to_str().unwrap().to_owned().leak(),
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).starts_with(&format!(
            "{}:3:6: secrets.X: give from_env or from_file, not both",
            w.path("bad.yml").display()
        )),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_policys_protection_rules_override_the_trusted_configs() {
    let w = World::new();
    let policy = std::fs::read_to_string(w.path("policy.yml")).unwrap();
    // The default branch lets main deploy staging; the policy says only tags may.
    std::fs::write(
        w.path("policy.yml"),
        format!("{policy}environments:\n  staging: {{ deploy_from: {{ tags: {{ names: [\"v*\"] }} }} }}\n"),
    )
    .unwrap();
    let out = w.run_with_policy(&w.push(&w.base));
    assert!(!out.status.success());
    let report = std::fs::read_to_string(w.path("report.json")).unwrap();
    assert!(
        report.contains("environment \\\"staging\\\" may be deployed only from tags named v* (deploy_from); a push to branch \\\"main\\\" is not"),
        "{report}"
    );
    assert_eq!(w.deployments(), Vec::<Value>::new());
}

#[test]
fn pull_request_refs_seen_by_the_watcher_are_forks_unless_the_policy_says_members() {
    let w = World::new();
    let watch = |policy: Option<&Path>| {
        let mut args = vec![
            "watch",
            "--repo",
            w.repo().to_str().unwrap().to_owned().leak(),
            "--once",
            "--state",
            w.state().to_str().unwrap().to_owned().leak(),
        ];
        if let Some(p) = policy {
            args.extend(["--policy", p.to_str().unwrap().to_owned().leak()]);
        }
        common::gitops_with_env(
            &args,
            None,
            &[
                ("GITOPS_TEST_NPM_TOKEN", NPM_TOKEN),
                ("GITOPS_TEST_DEPLOY_TOKEN", DEPLOY_TOKEN),
            ],
        )
    };
    let out = watch(None);
    assert!(out.status.success(), "the baseline: {}", text(&out.stderr));
    let head = w.commit("feature", Some(&w.base), &[("app.txt", "pr\n")]);
    git(&w.repo(), &["update-ref", "refs/pull/1/head", &head]);
    let out = watch(None);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("pull request #1 comes from a fork (a pull request ref, whose source the watcher cannot know): not run until a maintainer adds the label"),
        "{stderr}"
    );
    assert_eq!(w.marks(), Vec::<String>::new());
    let members = w.path("members.yml");
    std::fs::write(&members, "watch_pull_requests: member\n").unwrap();
    let newer = w.commit("feature", Some(&head), &[("app.txt", "more\n")]);
    git(&w.repo(), &["update-ref", "refs/pull/1/head", &newer]);
    let out = watch(Some(&members));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        w.marks(),
        ["test: DEPLOY= NPM= SIGN=", "preview: DEPLOY= NPM="]
    );
}

#[test]
fn an_instance_is_its_environments_and_its_pull_requests_alone() {
    let config = r#"version: 1
environments:
  production: {}
  preview: { per_pull_request: true, name: "${{ event.pr.head_ref }}" }
  shared: { per_pull_request: true, name: "shared-preview" }
pipelines:
  pr:
    on: { pull_request: {} }
    stages:
      preview: { deploy: preview }
  pr-shared:
    on: { pull_request: { types: [labeled] } }
    stages:
      shared: { deploy: shared }
"#;
    let w = World::with_config(config);
    let head = w.commit("production", Some(&w.base), &[("app.txt", "x\n")]);
    // A branch named after production: its preview would be production's instance.
    let mut pr = w.pr(4, &head, "acme/app", "t", &[]);
    pr["head"]["ref"] = json!("production");
    let out = w.run(&pr, &[]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("environment \"preview\" renders the instance name \"production\", which is environment \"production\"'s own"),
        "{stderr}"
    );
    assert_eq!(w.deployments(), Vec::<Value>::new());
    // One pull request's instance is not another's to deploy to.
    let labeled = |n: u64| {
        let mut e = w.pr(n, &head, "acme/app", "t", &[]);
        e["action"] = json!("labeled");
        e
    };
    assert!(w.run(&labeled(5), &[]).status.success());
    let out = w.run(&labeled(6), &[]);
    assert!(!out.status.success());
    let report = std::fs::read_to_string(w.path("report.json")).unwrap();
    assert!(
        report.contains("environment instance \\\"shared-preview\\\" belongs to environment \\\"shared\\\" of acme/app pull request #5; environment \\\"shared\\\" of acme/app pull request #6 may not deploy to or stop it"),
        "{report}"
    );
    assert_eq!(
        w.deployments(),
        [
            json!({"environment": "shared-preview", "action": "deploy", "result": "success", "by": "mallory", "trust": "member"})
        ]
    );
}
