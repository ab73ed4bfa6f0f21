//! The repository watcher's benchmark: a repository with many refs (branches, tags, pull
//! request heads, packed as `git gc` leaves them), a hundred of which move between two polls, or
//! none.

use std::path::{Path, PathBuf};

use gitops_core::source::watch::Watcher;

use crate::git;

/// A scratch repository with `n` refs and a watcher that has seen it.
pub struct Repo {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    commits: [String; 2],
    n: usize,
    watcher: std::cell::RefCell<Watcher>,
}

/// The name of ref `i`: a mix like a busy forge repository's.
fn name(i: usize) -> String {
    match i % 4 {
        0 => format!("refs/heads/feature-{i}"),
        1 => format!("refs/tags/v{}.{}.{}", i / 1000, i / 10 % 100, i % 10),
        _ => format!("refs/pull/{i}/head"),
    }
}

impl Repo {
    /// Makes the repository, packs its refs, and takes the watcher's baseline. The watcher's
    /// racy margin is zero: the fixture is not changed behind its back while it runs.
    pub fn new(n: usize) -> Repo {
        let tmp = tempfile::tempdir().unwrap_or_else(|e| panic!("watcher bench: {e}"));
        let dir = tmp.path().join("repo");
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("watcher bench: {e}"));
        git(&dir, &["init", "-q"], None);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "one"], None);
        let one = git(&dir, &["rev-parse", "HEAD"], None);
        git(&dir, &["commit", "-q", "--allow-empty", "-m", "two"], None);
        let two = git(&dir, &["rev-parse", "HEAD"], None);
        // `packed-refs` as `git pack-refs --all` writes it (sorted, no annotated tags), without
        // writing and packing 100,000 loose refs first.
        let mut names: Vec<String> = (0..n).map(name).collect();
        names.sort_unstable();
        let mut packed = String::from("# pack-refs with: peeled fully-peeled sorted \n");
        for name in &names {
            packed.push_str(&format!("{one} {name}\n"));
        }
        std::fs::write(dir.join(".git/packed-refs"), packed)
            .unwrap_or_else(|e| panic!("watcher bench: {e}"));
        let mut watcher = Watcher::open(
            dir.to_str().unwrap_or_else(|| panic!("path")),
            &tmp.path().join("state"),
        )
        .unwrap_or_else(|e| panic!("watcher bench: {e}"))
        .with_racy_margin(std::time::Duration::ZERO);
        watcher
            .poll()
            .unwrap_or_else(|e| panic!("watcher bench: {e}"));
        Repo {
            _tmp: tmp,
            dir,
            commits: [one, two],
            n,
            watcher: std::cell::RefCell::new(watcher),
        }
    }

    /// Moves `count` refs (a different set each round) to the other commit.
    pub fn move_refs(&self, round: usize, count: usize) {
        let script: String = (0..count)
            .map(|k| {
                let i = (round * count + k) * 7 % self.n;
                format!("update {} {}\n", name(i), self.commits[(round + 1) % 2])
            })
            .collect();
        git(&self.dir, &["update-ref", "--stdin"], Some(&script));
    }

    /// Where the repository is.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// One poll of the watcher: snapshot, diff against the last one, save; or, when the ref
    /// storage is as at the last poll, nothing more. Whether it listed the refs.
    pub fn poll(&self) -> bool {
        let poll = self
            .watcher
            .borrow_mut()
            .poll()
            .unwrap_or_else(|e| panic!("watcher bench: {e}"));
        std::hint::black_box(poll).listed
    }

    /// Past the clock tick of the last change, a poll that lists: the next poll with nothing
    /// changed does not.
    pub fn settle(&self) {
        std::thread::sleep(std::time::Duration::from_millis(20));
        self.poll();
    }

    /// `git for-each-ref` listing every ref with its object.
    pub fn for_each_ref(&self) {
        let out = git(
            &self.dir,
            &["for-each-ref", "--format=%(objectname) %(refname)"],
            None,
        );
        std::hint::black_box(out);
    }
}
