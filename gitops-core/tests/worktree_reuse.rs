//! Cached working trees, through the engine on real repositories: a reused tree is exactly the
//! event's commit whatever the stages before did to it; a tree changed behind the cache's back
//! or holding a lock file is replaced; two runs at once never share a tree; a fork's leftovers
//! never reach a trusted run.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::{git, write};
use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;
use gitops_core::scheduler::RunResult;
use gitops_core::trust::Policy;

const CONFIG: &str = r#"version: 1
pipelines:
  main:
    on: { push: { branches: [main] } }
    stages:
      s: { run: 'sh "$OUT/main.sh"' }
  other:
    on: { push: { branches: [two] } }
    stages:
      s: { run: 'sh "$OUT/main.sh"' }
  also:
    on: { push: { branches: [two] } }
    stages:
      s: { run: 'sh "$OUT/main.sh"' }
  pr:
    on: { pull_request: {} }
    stages:
      s: { run: 'sh "$OUT/pr.sh"' }
  fresh:
    on: { push: { branches: [fresh] } }
    checkout: fresh
    stages:
      s: { run: 'sh "$OUT/main.sh"' }
"#;

/// A repository with two commits, an engine, and a directory for what stages report.
struct World {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    out: PathBuf,
    engine: Engine,
    /// The first and the second commit.
    a: String,
    b: String,
}

impl World {
    fn new() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("repo");
        let out = tmp.path().join("out");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::create_dir_all(&out).unwrap();
        git(&dir, &["init", "-q"]);
        write(&dir, ".gitops.yml", CONFIG);
        write(&dir, ".gitignore", "ignored/\n*.log\n");
        write(&dir, "a.txt", "one\n");
        write(&dir, "dir/b.txt", "bee\n");
        write(&dir, "dir/sub/c.txt", "sea\n");
        write(&dir, "x", "a file that becomes a directory\n");
        write(&dir, "run.sh", "#!/bin/sh\necho hi\n");
        std::fs::set_permissions(dir.join("run.sh"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-qm", "a"]);
        let a = git(&dir, &["rev-parse", "HEAD"]);
        write(&dir, "a.txt", "two\n");
        std::fs::remove_file(dir.join("dir/sub/c.txt")).unwrap();
        write(&dir, "new/d.txt", "dee\n");
        std::fs::remove_file(dir.join("x")).unwrap();
        write(&dir, "x/y", "now a directory\n");
        std::fs::remove_file(dir.join("link")).unwrap();
        std::os::unix::fs::symlink("dir/b.txt", dir.join("link")).unwrap();
        git(&dir, &["add", "-A"]);
        git(&dir, &["commit", "-qm", "b"]);
        let b = git(&dir, &["rev-parse", "HEAD"]);
        let policy = Policy::parse("policy.yml", "forks: run\n").unwrap();
        let registry = BackendRegistry::new().with_executor("local", Arc::new(LocalBackend::new()));
        let engine = Engine::open(tmp.path().join("state"), registry)
            .unwrap()
            .with_policy(policy);
        World {
            _tmp: tmp,
            dir,
            out,
            engine,
            a,
            b,
        }
    }

    /// Sets what the stages of `pipeline` (`main` or `pr`) do: `script`, then a snapshot of
    /// the tree they were given and its path, in `out/<tag>/`.
    fn stage(&self, pipeline: &str, tag: &str, script: &str) {
        let snap = self.out.join(tag);
        let text = format!(
            "set -e\nmkdir -p '{snap}'\npwd -P > '{snap}/pwd'\ncp -a . '{snap}/tree'\n{script}\n",
            snap = snap.display()
        );
        std::fs::write(self.out.join(format!("{pipeline}.sh")), text).unwrap();
    }

    async fn handle(&self, event: &GitEvent) -> Vec<RunResult> {
        let repo = Repository::open(&self.dir).unwrap();
        let mut options = RunOptions::default();
        options
            .env
            .insert("OUT".into(), self.out.display().to_string());
        let handled = self.engine.handle(event, &repo, &options).await.unwrap();
        handled.reports.iter().map(|r| r.result).collect()
    }

    async fn push(&self, branch: &str, sha: &str) -> Vec<RunResult> {
        self.handle(&GitEvent::push("acme/app", branch, None, sha))
            .await
    }

    /// The tree the stages of run `tag` saw, and where it was.
    fn seen(&self, tag: &str) -> (BTreeMap<String, String>, String) {
        let snap = self.out.join(tag);
        let pwd = std::fs::read_to_string(snap.join("pwd")).unwrap();
        (listing(&snap.join("tree")), pwd.trim().to_owned())
    }

    /// The tree of `commit`, as git writes it.
    fn tree_of(&self, commit: &str) -> BTreeMap<String, String> {
        let dest = self.out.join(format!("expected-{commit}"));
        if !dest.exists() {
            std::fs::create_dir_all(&dest).unwrap();
            let status = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!(
                    "git -C '{}' archive {commit} | tar -x -C '{}'",
                    self.dir.display(),
                    dest.display()
                ))
                .status()
                .unwrap();
            assert!(status.success());
        }
        listing(&dest)
    }
}

/// Every entry under `root`: a directory, a file with its executable bit and content, or a
/// link with its target.
fn listing(root: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            let what = if meta.is_dir() {
                dirs.push(path.clone());
                "dir".to_owned()
            } else if meta.file_type().is_symlink() {
                format!("link to {}", std::fs::read_link(&path).unwrap().display())
            } else if !meta.is_file() {
                "special file".to_owned()
            } else {
                let exec = meta.permissions().mode() & 0o111 != 0;
                format!(
                    "file exec={exec} {:?}",
                    String::from_utf8_lossy(&std::fs::read(&path).unwrap())
                )
            };
            out.insert(rel, what);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_tree_is_exactly_the_next_commits_tree_whatever_stages_did_to_it() {
    let w = World::new();
    // Untracked and ignored files, a `.git` with a hook, a directory of them: all removed,
    // and the tree reused.
    w.stage(
        "main",
        "1",
        "echo x > new.tmp; mkdir -p ignored dir/untracked .git/hooks\n\
         echo evil > ignored/evil; echo log > debug.log; echo deep > dir/untracked/deep.txt\n\
         echo 'rm -rf /' > .git/hooks/pre-commit; mkfifo dir/fifo",
    );
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (seen, first) = w.seen("1");
    assert_eq!(seen, w.tree_of(&w.a));
    w.stage(
        "main",
        "2",
        "echo changed >> a.txt; rm dir/b.txt; rm -rf dir/sub; ln -s / dir/sub; echo x > y.log",
    );
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    let (seen, second) = w.seen("2");
    assert_eq!(
        seen,
        w.tree_of(&w.b),
        "the stages of the second run saw commit b"
    );
    assert_eq!(first, second, "the first run's tree was reused");
    // The second run's stage changed, deleted and replaced tracked files: the cache cannot
    // trust the tree, and the third run gets a fresh one, exactly commit a.
    w.stage("main", "3", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (seen, third) = w.seen("3");
    assert_eq!(
        seen,
        w.tree_of(&w.a),
        "the stages of the third run saw commit a"
    );
    assert_ne!(
        third, second,
        "a tree whose tracked files changed is not reused"
    );
    // And back to b through the (clean) third tree.
    w.stage("main", "4", "true");
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    let (seen, fourth) = w.seen("4");
    assert_eq!(seen, w.tree_of(&w.b));
    assert_eq!(fourth, third);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_changed_behind_the_caches_back_or_with_a_lock_file_is_replaced() {
    let w = World::new();
    w.stage("main", "1", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (_, first) = w.seen("1");
    // Between runs, a file of the idle tree is rewritten with the same size.
    std::fs::write(Path::new(&first).join("a.txt"), "eno\n").unwrap();
    w.stage(
        "main",
        "2",
        "mkdir -p .git; : > .git/index.lock; kill -KILL $$",
    );
    assert_eq!(w.push("main", &w.a).await, [RunResult::Failure]);
    let (seen, second) = w.seen("2");
    assert_eq!(
        seen,
        w.tree_of(&w.a),
        "the changed file was not handed to a run"
    );
    assert_ne!(second, first);
    // The killed stage left Git's lock file: that tree is not reused either.
    w.stage("main", "3", "true");
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    let (seen, third) = w.seen("3");
    assert_eq!(seen, w.tree_of(&w.b));
    assert_ne!(third, second, "a tree with a lock file is not reused");
    // A directory of the idle tree replaced by a link leading out of it.
    let outside = w.out.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::remove_dir_all(Path::new(&third).join("new")).unwrap();
    std::os::unix::fs::symlink(&outside, Path::new(&third).join("new")).unwrap();
    w.stage("main", "4", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (seen, fourth) = w.seen("4");
    assert_eq!(seen, w.tree_of(&w.a));
    assert_ne!(fourth, third);
    assert_eq!(
        std::fs::read_dir(&outside).unwrap().count(),
        0,
        "nothing written through the link"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_runs_at_once_never_share_a_tree() {
    let w = World::new();
    git(&w.dir, &["branch", "two", &w.a]);
    // Each stage waits (up to 20 s) until both have started, so the two runs overlap.
    let out = w.out.display().to_string();
    let script = |round: &str| {
        format!(
            "set -e\nd=$(mktemp -d '{out}/{round}-XXXXXX')\npwd -P > \"$d/pwd\"\n\
             for i in $(seq 200); do [ \"$(ls -d '{out}/{round}-'* | wc -l)\" -ge 2 ] && break; sleep 0.1; done\n"
        )
    };
    std::fs::write(w.out.join("main.sh"), script("r1")).unwrap();
    assert_eq!(
        w.push("two", &w.a).await,
        [RunResult::Success, RunResult::Success]
    );
    std::fs::write(w.out.join("main.sh"), script("r2")).unwrap();
    assert_eq!(
        w.push("two", &w.b).await,
        [RunResult::Success, RunResult::Success]
    );
    let pwds = |round: &str| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&w.out)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(round))
            .map(|e| std::fs::read_to_string(e.path().join("pwd")).unwrap())
            .collect();
        v.sort();
        v
    };
    let (r1, r2) = (pwds("r1-"), pwds("r2-"));
    assert_eq!(r1.len(), 2);
    assert_ne!(r1[0], r1[1], "the two runs of one event had a tree each");
    assert_ne!(r2[0], r2[1]);
    assert_eq!(r1, r2, "the next two runs reused both trees");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fork_pull_requests_leftovers_never_reach_a_trusted_run() {
    let w = World::new();
    let fork_pr = |number: u64, sha: &str| {
        GitEvent::pull_request_event(
            "acme/app",
            "synchronize",
            number,
            ("feature", sha),
            ("main", &w.a),
        )
        .from_fork("evil/app")
    };
    w.stage(
        "pr",
        "fork",
        "mkdir -p ignored .git/hooks; echo evil > ignored/evil; echo 'curl evil' > .git/hooks/post-checkout",
    );
    assert_eq!(w.handle(&fork_pr(7, &w.a)).await, [RunResult::Success]);
    let (_, fork) = w.seen("fork");
    w.stage("main", "trusted", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (seen, trusted) = w.seen("trusted");
    assert_ne!(
        trusted, fork,
        "a fork's tree is never handed to a trusted run"
    );
    assert_eq!(seen, w.tree_of(&w.a));
    // Nor to another pull request's run.
    w.stage("pr", "other", "true");
    assert_eq!(w.handle(&fork_pr(8, &w.b)).await, [RunResult::Success]);
    let (seen, other) = w.seen("other");
    assert_ne!(other, fork);
    assert_eq!(seen, w.tree_of(&w.b));
    // The same pull request's next run gets its own tree back, cleaned.
    w.stage("pr", "again", "true");
    assert_eq!(w.handle(&fork_pr(7, &w.b)).await, [RunResult::Success]);
    let (seen, again) = w.seen("again");
    assert_eq!(again, fork);
    assert_eq!(seen, w.tree_of(&w.b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkout_fresh_never_reuses_a_tree() {
    let w = World::new();
    git(&w.dir, &["branch", "fresh", &w.a]);
    w.stage("main", "1", "true");
    assert_eq!(w.push("fresh", &w.a).await, [RunResult::Success]);
    w.stage("main", "2", "true");
    assert_eq!(w.push("fresh", &w.b).await, [RunResult::Success]);
    let ((_, one), (seen, two)) = (w.seen("1"), w.seen("2"));
    assert_ne!(one, two);
    assert_eq!(seen, w.tree_of(&w.b));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_rewritten_in_place_never_reaches_a_hard_link_a_stage_made() {
    let w = World::new();
    // Commit a to b changes a.txt ("one" to "two"): a reused tree rewrites it in place.
    w.stage("main", "1", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (_, first) = w.seen("1");
    w.stage("main", "2", "true");
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    let (seen, second) = w.seen("2");
    assert_eq!(seen, w.tree_of(&w.b));
    assert_eq!(first, second, "a clean tree is reused");
    // A stage links a tracked file from outside the tree: the next update must not write
    // through it (the link changed the file's ctime, so the tree is not reused).
    let outside = w.out.join("kept.txt");
    w.stage("main", "3", &format!("ln a.txt '{}'", outside.display()));
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    w.stage("main", "4", "true");
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (seen, fourth) = w.seen("4");
    assert_eq!(seen, w.tree_of(&w.a));
    assert_ne!(fourth, second, "a tree with a linked file is not reused");
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "two\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_stage_left_running_in_its_tree_is_stopped_before_the_tree_is_reused() {
    let w = World::new();
    let late = w.out.join("late");
    // A daemon in a session of its own (out of the stage's process group), still working in
    // the tree when the run ends, that would write into the next run's tree.
    w.stage(
        "main",
        "1",
        &format!(
            "setsid sh -c 'echo > \"{}.started\"; sleep 2; echo late > \"{}\"; echo tampered >> a.txt' </dev/null >/dev/null 2>&1 &\n\
             while [ ! -f '{}.started' ]; do sleep 0.05; done",
            late.display(),
            late.display(),
            late.display()
        ),
    );
    assert_eq!(w.push("main", &w.a).await, [RunResult::Success]);
    let (_, first) = w.seen("1");
    w.stage("main", "2", "sleep 3");
    assert_eq!(w.push("main", &w.b).await, [RunResult::Success]);
    let (seen, second) = w.seen("2");
    assert_eq!(first, second, "the tree was reused");
    assert_eq!(seen, w.tree_of(&w.b));
    assert!(!late.exists(), "the daemon was stopped with the first run");
    assert_eq!(
        std::fs::read_to_string(Path::new(&second).join("a.txt")).unwrap(),
        "two\n"
    );
}
