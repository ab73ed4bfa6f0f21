//! Reading real git repositories made by the test: config from a commit (not the work tree),
//! revisions, changed paths, and the changes of pushes and pull requests.

mod common;

use std::path::Path;

use common::{git, write};
use gitops_core::config::LoadOptions;
use gitops_core::event::*;
use gitops_core::plan::Changes;
use gitops_core::repo::{RepoError, Repository};

fn commit(dir: &Path, msg: &str) -> String {
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", msg]);
    git(dir, &["rev-parse", "HEAD"])
}

const CONFIG: &str = "version: 1\npipelines:\n  ci:\n    on: { push: { branches: [main], paths: [\"src/**\"] } }\n    stages: { test: { run: make test } }\n";

#[test]
fn reads_config_from_the_commit_not_the_work_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q"]);
    write(d, ".gitops.yml", CONFIG);
    write(d, "README.md", "hi");
    let c1 = commit(d, "one");
    // The work tree changes, uncommitted: the commit's config is what counts.
    write(d, ".gitops.yml", "garbage: [");
    let repo = Repository::open(d).unwrap();
    let config = repo.config_at(&c1, &LoadOptions::default()).unwrap();
    assert!(config.pipelines.contains_key("ci"));
    assert_eq!(
        repo.read_file(&c1, "README.md").unwrap().as_deref(),
        Some(&b"hi"[..])
    );
    assert_eq!(repo.read_file(&c1, "missing.txt").unwrap(), None);
    assert_eq!(repo.read_file(&c1, "src").unwrap(), None);
    assert_eq!(repo.resolve_commit("main").unwrap(), c1);
    assert_eq!(repo.resolve_commit(&c1[..10]).unwrap(), c1);

    git(d, &["tag", "-a", "v1.0.0", "-m", "release"]);
    assert_eq!(
        repo.resolve_commit("v1.0.0").unwrap(),
        c1,
        "annotated tags peel to their commit"
    );
    assert_eq!(repo.resolve_commit("refs/tags/v1.0.0").unwrap(), c1);

    // A commit whose config is broken reports located errors.
    write(
        d,
        ".gitops.yml",
        "version: 1\npipelines:\n  ci:\n    on: { push: {} }\n    stages: { a: { run: x, needs: [b] } }\n",
    );
    let c2 = commit(d, "broken");
    let err = repo.config_at(&c2, &LoadOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        ".gitops.yml:5:36: pipeline \"ci\": stage \"a\" needs unknown stage \"b\""
    );
    std::fs::remove_file(d.join(".gitops.yml")).unwrap();
    let c3 = commit(d, "no config");
    let err = repo.config_at(&c3, &LoadOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .starts_with(&format!("no .gitops.yml at commit {c3}")),
        "{err}"
    );

    assert!(matches!(
        repo.resolve_commit("no-such-branch"),
        Err(RepoError::UnknownRevision { .. })
    ));
    assert!(matches!(
        Repository::open(tmp.path().join("nope")),
        Err(RepoError::Open { .. })
    ));
}

#[test]
fn changed_paths_of_pushes_and_pull_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q"]);
    write(d, ".gitops.yml", CONFIG);
    write(d, "src/lib.rs", "1");
    write(d, "docs/a.md", "a");
    let base = commit(d, "base");
    write(d, "src/lib.rs", "2");
    write(d, "src/deep/new/mod.rs", "new");
    std::fs::remove_file(d.join("docs/a.md")).unwrap();
    let next = commit(d, "change");
    let repo = Repository::open(d).unwrap();
    assert_eq!(
        repo.changed_paths(&base, &next).unwrap(),
        ["docs/a.md", "src/deep/new/mod.rs", "src/lib.rs"]
    );

    let push = GitEvent {
        payload: EventPayload::Push(PushEvent {
            git_ref: "refs/heads/main".into(),
            branch: "main".into(),
            before: Some(base.clone()),
            after: Some(next.clone()),
            created: false,
            deleted: false,
            forced: false,
        }),
        repo: "o/r".into(),
        sha: Some(next.clone()),
        actor: None,
    };
    assert_eq!(
        repo.changes_for(&push),
        Changes::Paths(vec![
            "docs/a.md".into(),
            "src/deep/new/mod.rs".into(),
            "src/lib.rs".into()
        ])
    );

    // A pull request's changes are from its merge base, not from the base branch's tip: main
    // moves on after the branch was cut, and those changes are not the PR's.
    git(d, &["checkout", "-qb", "feature"]);
    write(d, "feature.txt", "f");
    let head = commit(d, "feature work");
    git(d, &["checkout", "-q", "main"]);
    write(d, "main-only.txt", "m");
    let main_tip = commit(d, "main moves on");
    let pr = GitEvent {
        payload: EventPayload::PullRequest(PullRequestEvent {
            action: "opened".into(),
            number: 1,
            title: "t".into(),
            draft: false,
            merged: false,
            head: RefTip {
                git_ref: "feature".into(),
                sha: Some(head.clone()),
                repo: None,
            },
            base: RefTip {
                git_ref: "main".into(),
                sha: Some(main_tip),
                repo: None,
            },
            author: None,
            fork: false,
            labels: Vec::new(),
        }),
        repo: "o/r".into(),
        sha: Some(head.clone()),
        actor: None,
    };
    assert_eq!(repo.merge_base("main", &head).unwrap(), Some(next.clone()));
    assert_eq!(
        repo.changes_for(&pr),
        Changes::Paths(vec!["feature.txt".into()])
    );
    // GitLab sends no base sha: the base branch is resolved by name.
    let mut gitlab_pr = pr.clone();
    if let EventPayload::PullRequest(p) = &mut gitlab_pr.payload {
        p.base.sha = None;
    }
    assert_eq!(
        repo.changes_for(&gitlab_pr),
        Changes::Paths(vec!["feature.txt".into()])
    );
    assert_eq!(repo.commit_for(&pr).unwrap(), head);

    // Unknown history leaves changes unknown rather than guessing.
    let mut unknown = push.clone();
    if let EventPayload::Push(p) = &mut unknown.payload {
        p.before = Some("1111111111111111111111111111111111111111".into());
    }
    assert_eq!(repo.changes_for(&unknown), Changes::Unknown);
}

#[test]
fn a_crafted_tree_never_writes_through_a_link_it_checks_out() {
    // A link `a` to a directory outside, and a tree also named `a` holding `x`: a checkout that
    // followed the link would write `x` outside the checkout.
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir(&dir).unwrap();
    git(&dir, &["init", "-q"]);
    // git with `input` on its standard input; its output.
    let git_in = |args: &[&str], input: &str| {
        let mut child = std::process::Command::new("git")
            .args(args)
            .current_dir(&dir)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        String::from_utf8(child.wait_with_output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let hash = |text: &str| git_in(&["hash-object", "-w", "--stdin"], text);
    let mktree = |entries: &str| git_in(&["mktree"], entries);
    let link = hash(outside.to_str().unwrap());
    let file = hash("pwned\n");
    let sub = mktree(&format!("100644 blob {file}\tx\n"));
    let root = mktree(&format!("120000 blob {link}\ta\n040000 tree {sub}\ta\n"));
    let commit = git(&dir, &["commit-tree", &root, "-m", "crafted"]);
    let repo = Repository::open(&dir).unwrap();
    let err = repo
        .checkout(&commit, &tmp.path().join("checkout"))
        .unwrap_err();
    assert!(
        err.to_string().contains("refusing to check out path"),
        "{err}"
    );
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "something was written outside the checkout"
    );
}

#[test]
fn abbreviated_commit_ids_are_completed_only_when_they_name_one_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    git(d, &["init", "-q", "-b", "main"]);
    write(d, "README.md", "hi");
    let base = commit(d, "one");
    write(d, "README.md", "two");
    let head = commit(d, "two");
    let repo = Repository::open(d).unwrap();
    let event = GitEvent::pull_request_event(
        "ws/app",
        "opened",
        1,
        ("f", &head[..12]),
        ("main", &base[..12]),
    );
    assert!(Repository::has_short_ids(&event));
    let full = repo.complete_ids(&event).unwrap();
    assert!(!Repository::has_short_ids(&full));
    assert_eq!(full.sha.as_deref(), Some(head.as_str()));
    let pr = full.pull_request().unwrap();
    assert_eq!(
        (pr.head.sha.as_deref(), pr.base.sha.as_deref()),
        (Some(head.as_str()), Some(base.as_str()))
    );
    // Full ids are kept as they are, even ones this repository does not have.
    let foreign = GitEvent::push("ws/app", "main", None, &"ab".repeat(20));
    assert_eq!(repo.complete_ids(&foreign).unwrap(), foreign);
    // Only commits count: a tree's or a blob's id is no commit's.
    let blob = git(d, &["rev-parse", "HEAD:README.md"]);
    assert!(matches!(
        repo.complete_commit_id(&blob[..12]),
        Err(RepoError::UnknownRevision { .. })
    ));
    // Never a revision: `main`, `HEAD~1` are not ids.
    for rev in ["main", "HEAD~1"] {
        assert!(repo.complete_commit_id(rev).is_err(), "{rev}");
    }
    // Two commits sharing a prefix: ambiguous, naming both. (The 1000 commits made at once have
    // the same ids on every run, and two of them share their first 4 digits.)
    let stream: String = (0..1000)
        .map(|n| format!("commit refs/heads/crowd\ncommitter t <t@e> {n} +0000\ndata 0\n\n"))
        .collect();
    let mut import = std::process::Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(d)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    import
        .stdin
        .take()
        .unwrap()
        .write_all(stream.as_bytes())
        .unwrap();
    assert!(import.wait().unwrap().success());
    let mut seen = std::collections::HashMap::new();
    let (prefix, a, b) = git(d, &["rev-list", "crowd"])
        .lines()
        .find_map(|id| {
            let other = seen.insert(id[..4].to_owned(), id.to_owned())?;
            Some((id[..4].to_owned(), other, id.to_owned()))
        })
        .expect("two of 1000 commits share 4 digits");
    match repo.complete_commit_id(&prefix) {
        Err(RepoError::AmbiguousCommit { candidates, .. }) => {
            let mut both = vec![a, b];
            both.sort();
            assert_eq!(candidates, both);
        }
        other => panic!("{other:?}"),
    }
}
