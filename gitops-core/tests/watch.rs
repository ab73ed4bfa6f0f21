//! The repository watcher on real repositories made with git: each kind of change gives exactly
//! the expected events, a restarted watcher reports each change once, and remote repositories
//! are watched through a mirror fetched over `file://` and from a `git daemon` on 127.0.0.1.

mod common;

use std::os::unix::process::CommandExt;
use std::path::Path;

use common::{git, write};
use gitops_core::event::{EventPayload, GitEvent};
use gitops_core::source::watch::{Poll, Watcher};
use serde_json::{Value, json};

fn commit(dir: &Path, file: &str, text: &str) -> String {
    write(dir, file, text);
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-qm", text]);
    git(dir, &["rev-parse", "HEAD"])
}

/// A repository with one commit on `main`; returns its sha.
fn init(dir: &Path) -> String {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q"]);
    commit(dir, "app.txt", "zero")
}

/// The events of one poll, as JSON without `repo` (to compare whole events; a pull request's
/// base is in the repository watched, and says so).
fn poll(w: &mut Watcher) -> Vec<Value> {
    let p = w.poll().unwrap();
    assert!(!p.baseline);
    events(&p)
}

/// A poll's events as [`poll`] gives them.
fn events(p: &Poll) -> Vec<Value> {
    p.events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            let repo = v.as_object_mut().unwrap().remove("repo").unwrap();
            if let Some(base) = v.get_mut("base") {
                assert_eq!(base.as_object_mut().unwrap().remove("repo"), Some(repo));
            }
            v
        })
        .collect()
}

fn push(branch: &str, before: Option<&str>, after: Option<&str>, forced: bool) -> Value {
    json!({"kind": "push", "sha": after, "ref": format!("refs/heads/{branch}"), "branch": branch,
        "before": before, "after": after, "created": before.is_none(), "deleted": after.is_none(),
        "forced": forced, "actor": null})
}

fn tag(action: &str, name: &str, version: Option<&str>, sha: Option<&str>) -> Value {
    json!({"kind": "tag", "sha": sha, "action": action, "name": name, "version": version,
        "actor": null})
}

/// A pull request ref's event: the watcher cannot know where its head came from, so it is a
/// stranger's (`fork`, no head repository).
fn pr(action: &str, n: u64, head: &str, base: &str, merged: bool) -> Value {
    json!({"kind": "pull_request", "sha": head, "action": action, "number": n, "title": "",
        "draft": false, "merged": merged, "fork": true, "labels": [], "author": null,
        "actor": null,
        "head": {"ref": format!("refs/pull/{n}/head"), "sha": head, "repo": null},
        "base": {"ref": "main", "sha": base}})
}

#[test]
fn each_change_to_the_refs_gives_exactly_its_events() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path().join("repo"), tmp.path().join("state"));
    let zero = init(&dir);
    let mut w = Watcher::open(dir.to_str().unwrap(), &state).unwrap();
    let first = w.poll().unwrap();
    assert!(
        first.baseline && first.events.is_empty(),
        "the baseline reports nothing"
    );
    assert_eq!(w.poll().unwrap().events, Vec::<GitEvent>::new());
    assert_eq!(w.repo_name(), "repo");

    // A new branch, then a fast-forward push to it.
    git(&dir, &["checkout", "-qb", "feature"]);
    let one = commit(&dir, "app.txt", "one");
    assert_eq!(poll(&mut w), [push("feature", None, Some(&one), false)]);
    let two = commit(&dir, "app.txt", "two");
    assert_eq!(
        poll(&mut w),
        [push("feature", Some(&one), Some(&two), false)]
    );

    // A force push: the new tip does not contain the old one.
    git(&dir, &["reset", "-q", "--hard", &zero]);
    let other = commit(&dir, "app.txt", "other");
    assert_eq!(
        poll(&mut w),
        [push("feature", Some(&two), Some(&other), true)]
    );

    // Tags: created (an annotated tag is peeled to its commit), moved, deleted; not semver.
    git(&dir, &["tag", "-a", "v1.2.0", "-m", "release", &zero]);
    assert_eq!(
        poll(&mut w),
        [tag("created", "v1.2.0", Some("1.2.0"), Some(&zero))]
    );
    git(&dir, &["tag", "-f", "v1.2.0", &other]);
    assert_eq!(
        poll(&mut w),
        [tag("moved", "v1.2.0", Some("1.2.0"), Some(&other))]
    );
    git(&dir, &["tag", "-d", "v1.2.0"]);
    git(&dir, &["tag", "nightly"]);
    assert_eq!(
        poll(&mut w),
        [
            tag("created", "nightly", None, Some(&other)),
            tag("deleted", "v1.2.0", Some("1.2.0"), None)
        ]
    );

    // Branch deleted.
    git(&dir, &["checkout", "-q", "main"]);
    git(&dir, &["branch", "-qD", "feature"]);
    assert_eq!(poll(&mut w), [push("feature", Some(&other), None, false)]);

    // Pull requests as forges expose them: opened, updated, closed unmerged.
    git(&dir, &["update-ref", "refs/pull/7/head", &other]);
    assert_eq!(poll(&mut w), [pr("opened", 7, &other, &zero, false)]);
    git(&dir, &["checkout", "-q", &other]);
    let pr_two = commit(&dir, "app.txt", "pr two");
    git(&dir, &["checkout", "-q", "main"]);
    git(&dir, &["update-ref", "refs/pull/7/head", &pr_two]);
    assert_eq!(poll(&mut w), [pr("synchronize", 7, &pr_two, &zero, false)]);
    git(&dir, &["update-ref", "-d", "refs/pull/7/head"]);
    assert_eq!(poll(&mut w), [pr("closed", 7, &pr_two, &zero, false)]);

    // A pull request merged: main moves to contain its head, and its ref goes.
    git(&dir, &["checkout", "-qb", "feature-8"]);
    let eight = commit(&dir, "app.txt", "eight");
    git(&dir, &["checkout", "-q", "main"]);
    git(&dir, &["update-ref", "refs/pull/8/head", &eight]);
    assert_eq!(
        poll(&mut w),
        [
            push("feature-8", None, Some(&eight), false),
            pr("opened", 8, &eight, &zero, false)
        ]
    );
    git(&dir, &["merge", "-q", "--ff-only", "feature-8"]);
    git(&dir, &["update-ref", "-d", "refs/pull/8/head"]);
    assert_eq!(
        poll(&mut w),
        [
            push("main", Some(&zero), Some(&eight), false),
            pr("closed", 8, &eight, &eight, true)
        ]
    );

    // GitLab's merge request refs too; other refs (remotes, notes) are not events.
    git(&dir, &["update-ref", "refs/merge-requests/3/head", &eight]);
    git(&dir, &["update-ref", "refs/remotes/origin/main", &eight]);
    git(&dir, &["update-ref", "refs/pull/3/merge", &eight]);
    let events = w.poll().unwrap();
    assert_eq!(events.events.len(), 1);
    match &events.events[0].payload {
        EventPayload::PullRequest(p) => assert_eq!((p.number, p.action.as_str()), (3, "opened")),
        other => panic!("{other:?}"),
    }
    assert_eq!(events.open_pull_requests, [3]);
}

#[test]
fn a_restarted_watcher_reports_what_changed_while_it_was_down_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path().join("repo"), tmp.path().join("state"));
    let zero = init(&dir);
    Watcher::open(dir.to_str().unwrap(), &state)
        .unwrap()
        .poll()
        .unwrap();
    // Down: two changes happen.
    let one = commit(&dir, "app.txt", "one");
    git(&dir, &["tag", "v2.0.0"]);
    let mut w = Watcher::open(dir.to_str().unwrap(), &state).unwrap();
    assert_eq!(
        poll(&mut w),
        [
            push("main", Some(&zero), Some(&one), false),
            tag("created", "v2.0.0", Some("2.0.0"), Some(&one))
        ]
    );
    let mut again = Watcher::open(dir.to_str().unwrap(), &state).unwrap();
    assert_eq!(poll(&mut again), Vec::<Value>::new(), "reported once");

    // A corrupt snapshot is a clear error, not a panic.
    let snapshot = std::fs::read_dir(state.join("watch"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&snapshot, "{not json").unwrap();
    let err = again.poll().unwrap_err().to_string();
    assert!(
        err.starts_with("watching ") && err.contains(&snapshot.display().to_string()),
        "{err}"
    );
}

#[test]
fn a_remote_repository_is_watched_through_a_mirror_fetched_over_file_urls() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path().join("upstream"), tmp.path().join("state"));
    let zero = init(&dir);
    git(&dir, &["update-ref", "refs/pull/1/head", &zero]);
    let url = format!("file://{}", dir.display());
    let mut w = Watcher::open(&url, &state).unwrap();
    assert!(w.poll().unwrap().baseline);
    assert_eq!(
        w.repo_name(),
        format!(
            "{}/upstream",
            tmp.path().file_name().unwrap().to_str().unwrap()
        )
    );

    let one = commit(&dir, "app.txt", "one");
    git(&dir, &["update-ref", "-d", "refs/pull/1/head"]);
    let events = poll(&mut w);
    assert_eq!(
        events,
        [
            push("main", Some(&zero), Some(&one), false),
            pr("closed", 1, &zero, &one, true)
        ]
    );
    // The mirror has the new commit's objects: its config and files can be read.
    assert_eq!(
        w.repository().read_file(&one, "app.txt").unwrap().unwrap(),
        b"one"
    );
    assert!(
        !w.repository()
            .refs()
            .unwrap()
            .contains_key("refs/pull/1/head"),
        "pruned"
    );

    let err = Watcher::open("file:///nonexistent/repo.git", &state)
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("cannot fetch from file:///nonexistent/repo.git: "),
        "{err}"
    );
}

#[test]
fn a_remote_repository_is_watched_from_a_git_daemon_on_loopback() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, state) = (tmp.path().join("served"), tmp.path().join("state"));
    let dir = base.join("app");
    let zero = init(&dir);
    // A default branch other than main: the mirror learns it from the remote's HEAD.
    git(&dir, &["branch", "-qm", "main", "trunk"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let daemon = std::process::Command::new("git")
        .args([
            "daemon",
            "--reuseaddr",
            "--export-all",
            "--listen=127.0.0.1",
        ])
        .arg(format!("--port={port}"))
        .arg(format!("--base-path={}", base.display()))
        .arg(&base)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    /// Stops the daemon and the processes it forked for connections.
    struct Stop(std::process::Child);
    impl Drop for Stop {
        fn drop(&mut self) {
            let group = nix::unistd::Pid::from_raw(self.0.id() as i32);
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
            let _ = self.0.wait();
        }
    }
    let _daemon = Stop(daemon);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            std::time::Instant::now() < deadline,
            "git daemon did not start"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let url = format!("git://127.0.0.1:{port}/app");
    let mut w = Watcher::open(&url, &state).unwrap();
    assert!(w.poll().unwrap().baseline);
    git(&dir, &["tag", "v1.0.0"]);
    let one = commit(&dir, "app.txt", "one");
    git(&dir, &["update-ref", "refs/pull/4/head", &one]);
    let events = w.poll().unwrap().events;
    let json: Vec<Value> = events
        .iter()
        .map(|e| serde_json::to_value(e).unwrap())
        .collect();
    assert_eq!(json.len(), 3, "{json:?}");
    assert_eq!(
        (json[0]["kind"].as_str(), json[0]["branch"].as_str()),
        (Some("push"), Some("trunk"))
    );
    assert_eq!(json[0]["before"], zero.as_str());
    assert_eq!(json[1]["name"], "v1.0.0");
    assert_eq!(
        json[2]["base"],
        json!({"ref": "trunk", "sha": one, "repo": json[2]["repo"]})
    );
}

#[test]
fn watching_what_is_not_a_repository_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Watcher::open(tmp.path().to_str().unwrap(), &tmp.path().join("state"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("cannot open git repository at "), "{err}");
    let err = Watcher::open("/no/such/dir", &tmp.path().join("state"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("/no/such/dir"), "{err}");
}

/// The margin a test waits out instead of the real one (2 s).
const MARGIN: std::time::Duration = std::time::Duration::from_millis(50);

/// Waits out the racy margin and polls until a poll does not list the refs: the watcher then
/// holds a trusted fingerprint, and the next change is made right after a poll that did not
/// list.
fn settle(w: &mut Watcher) {
    std::thread::sleep(MARGIN * 2);
    let p = w.poll().unwrap();
    assert!(p.events.is_empty(), "{:?}", p.events);
    let p = w.poll().unwrap();
    assert!(
        p.events.is_empty() && !p.listed,
        "nothing changed past the margin: the refs are not listed"
    );
}

/// A poll that must have listed the refs.
fn listed(w: &mut Watcher) -> Vec<Value> {
    let p = w.poll().unwrap();
    assert!(p.listed, "the ref storage changed: the refs are listed");
    events(&p)
}

#[test]
fn a_poll_after_nothing_changed_does_not_list_the_refs_and_misses_no_change() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, state) = (tmp.path().join("repo"), tmp.path().join("state"));
    let zero = init(&dir);
    let one = commit(&dir, "app.txt", "one");
    git(&dir, &["branch", "keep", &zero]);
    git(&dir, &["tag", "v1.0.0", &zero]);
    git(&dir, &["update-ref", "refs/pull/5/head", &one]);
    git(&dir, &["pack-refs", "--all"]);
    // Stamps within the margin (2 s) of the fingerprint are not trusted: nothing changed, but
    // a change in the same clock tick could have left them as they were.
    let mut strict = Watcher::open(dir.to_str().unwrap(), &state).unwrap();
    assert!(strict.poll().unwrap().baseline);
    assert!(strict.poll().unwrap().listed);

    let mut w = Watcher::open(dir.to_str().unwrap(), &state)
        .unwrap()
        .with_racy_margin(MARGIN);
    let first = w.poll().unwrap();
    assert!(!first.baseline && first.listed);

    // Right after a poll whose fingerprint is racy: listed, and seen.
    git(&dir, &["update-ref", "refs/heads/fresh", &one]);
    assert_eq!(listed(&mut w), [push("fresh", None, Some(&one), false)]);

    // Each change right after a poll that did not list (same clock tick) is seen by the next.
    let steps: [(&[&str], Vec<Value>); 6] = [
        (
            &["update-ref", "refs/heads/loose", &one],
            vec![push("loose", None, Some(&one), false)],
        ),
        (
            &["update-ref", "refs/heads/loose", &zero],
            vec![push("loose", Some(&one), Some(&zero), true)],
        ),
        (
            &["branch", "-qD", "loose"],
            vec![push("loose", Some(&zero), None, false)],
        ),
        // Packing changes no ref, but the refs are listed.
        (&["pack-refs", "--all"], vec![]),
        (
            &["update-ref", "refs/heads/keep", &one],
            vec![push("keep", Some(&zero), Some(&one), false)],
        ),
        (
            &["update-ref", "-d", "refs/tags/v1.0.0"],
            vec![tag("deleted", "v1.0.0", Some("1.0.0"), None)],
        ),
    ];
    for (args, expected) in steps {
        settle(&mut w);
        git(&dir, args);
        assert_eq!(listed(&mut w), expected, "git {args:?}");
    }

    // A poll that does not list still names the open pull requests.
    settle(&mut w);
    let p = w.poll().unwrap();
    assert_eq!((p.listed, p.open_pull_requests), (false, vec![5]));

    // Another watcher of the same state dir wrote the snapshot: this one lists again.
    let mut other = Watcher::open(dir.to_str().unwrap(), &state).unwrap();
    git(&dir, &["update-ref", "refs/heads/other", &one]);
    std::thread::sleep(MARGIN * 2);
    assert_eq!(other.poll().unwrap().events.len(), 1);
    let p = w.poll().unwrap();
    assert!(p.listed && p.events.is_empty(), "{:?}", p.events);
}

#[test]
fn a_linked_worktree_and_a_bare_repository_see_changes_to_the_shared_refs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    let zero = init(&dir);
    let linked = tmp.path().join("linked");
    git(&dir, &["worktree", "add", "-q", linked.to_str().unwrap()]);
    let bare = tmp.path().join("bare.git");
    git(
        tmp.path(),
        &["clone", "-q", "--bare", dir.to_str().unwrap(), "bare.git"],
    );
    for (i, (watched, changed)) in [(&linked, &dir), (&dir, &linked), (&bare, &bare)]
        .into_iter()
        .enumerate()
    {
        let state = tempfile::tempdir().unwrap();
        let mut w = Watcher::open(watched.to_str().unwrap(), state.path())
            .unwrap()
            .with_racy_margin(MARGIN);
        assert!(w.poll().unwrap().baseline);
        settle(&mut w);
        let name = format!("branch-{i}");
        git(
            changed,
            &["update-ref", &format!("refs/heads/{name}"), &zero],
        );
        assert_eq!(
            listed(&mut w),
            [push(&name, None, Some(&zero), false)],
            "{}",
            watched.display()
        );
    }
}
