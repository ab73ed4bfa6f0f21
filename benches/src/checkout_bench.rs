//! Event → first stage started: a pull request event through [`Engine`] (a cached working tree
//! reused, or a fresh checkout with `checkout: fresh`) against what a hook script would do
//! (`git worktree add` of the commit, then `sh -c true`) and against `git clone --shared` with
//! a checkout. The repositories are generated with `git fast-import` (1,000 to 50,000 files in
//! nested directories, sizes like source code's, 100 files changed a commit) and cached under
//! the target dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use gitops_core::backend::BackendRegistry;
use gitops_core::backend::local::LocalBackend;
use gitops_core::engine::{Engine, RunOptions};
use gitops_core::event::GitEvent;
use gitops_core::repo::Repository;

/// Files in the repositories compared.
pub const SIZES: [usize; 3] = [1_000, 10_000, 50_000];

/// Files changed between two consecutive commits.
pub const CHANGED: usize = 100;

/// Commits after the first (each event builds one).
const COMMITS: usize = 40;

/// The implementations compared, in table order.
pub const IMPLS: [&str; 4] = [
    "gitops_reuse",
    "gitops_fresh",
    "git_worktree",
    "git_clone_shared",
];

const CONFIG: &str = r#"version: 1
pipelines:
  pr:
    on: { pull_request: { branches: [main] } }
    stages:
      first: { run: 'date +%s%N > "$STAMP"' }
  pr-fresh:
    on: { pull_request: { branches: [fresh] } }
    checkout: fresh
    stages:
      first: { run: 'date +%s%N > "$STAMP"' }
"#;

/// A generated repository: its directory and its commits, oldest first.
pub struct BenchRepo {
    /// The repository (bare).
    pub dir: PathBuf,
    /// The first commit and the 40 (`COMMITS`) after it.
    pub commits: Vec<String>,
}

fn fail(what: &str, e: impl std::fmt::Display) -> ! {
    panic!("checkout bench: {what}: {e}")
}

/// Where generated repositories are kept between runs.
fn cache_root() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    target.join("checkout-bench")
}

fn git(dir: &Path, args: &[&str]) -> String {
    crate::git(dir, args, None)
}

/// Path of file `i`: up to four levels of eight directories, sixteen files a directory.
fn path_of(i: usize) -> String {
    let mut parts = Vec::new();
    let mut x = i / 16;
    loop {
        parts.push(format!("d{}", x % 8));
        x /= 8;
        if x == 0 {
            break;
        }
    }
    format!("src/{}/f{}.rs", parts.join("/"), i % 16)
}

/// splitmix64: the generator's randomness, the same in every run.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Version `v` of file `i`: 200 bytes to 6 kB of code-like text, one file in a hundred 50 kB.
fn content(i: usize, v: usize) -> Vec<u8> {
    const WORDS: [&str; 24] = [
        "fn",
        "let",
        "mut",
        "self",
        "return",
        "impl",
        "struct",
        "pub",
        "use",
        "match",
        "if",
        "else",
        "for",
        "while",
        "Some",
        "None",
        "Ok(value)",
        "Err(e)",
        "async",
        "await",
        "where",
        "trait",
        "enum",
        "x.len()",
    ];
    let mut r = mix((i as u64) << 20 | v as u64);
    let size = if r % 100 == 0 {
        50_000
    } else {
        200 + (r >> 8) as usize % 6_000
    };
    let mut out = Vec::with_capacity(size + 80);
    while out.len() < size {
        r = mix(r);
        let words = 2 + (r % 10) as usize;
        for w in 0..words {
            if w > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(WORDS[(r >> (4 + w * 4)) as usize % WORDS.len()].as_bytes());
        }
        out.push(b'\n');
    }
    out
}

impl BenchRepo {
    /// The repository of `n` files, generated (once: it is cached) with `git fast-import`.
    pub fn get(n: usize) -> BenchRepo {
        let root = cache_root();
        let dir = root.join(format!("repo-{n}-v1.git"));
        if !dir.join("gitops-bench-done").exists() {
            std::fs::create_dir_all(&root).unwrap_or_else(|e| fail("cache dir", e));
            let tmp = tempfile::tempdir_in(&root).unwrap_or_else(|e| fail("temp dir", e));
            let repo = tmp.path().join("repo.git");
            std::fs::create_dir_all(&repo).unwrap_or_else(|e| fail("repo dir", e));
            git(&repo, &["init", "-q", "--bare", "-b", "main"]);
            generate(&repo, n);
            std::fs::write(repo.join("gitops-bench-done"), "")
                .unwrap_or_else(|e| fail("marker", e));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::rename(&repo, &dir).unwrap_or_else(|e| fail("rename", e));
        }
        let commits = git(&dir, &["rev-list", "--reverse", "main"])
            .lines()
            .map(str::to_owned)
            .collect();
        BenchRepo { dir, commits }
    }
}

/// Writes the history into `repo` through one `git fast-import`.
fn generate(repo: &Path, n: usize) {
    let mut child = Command::new("git")
        .args([
            "-c",
            "core.compression=1",
            "-c",
            "pack.compression=1",
            "fast-import",
            "--quiet",
        ])
        .current_dir(repo)
        .stdin(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| fail("git fast-import", e));
    let stdin = child.stdin.take().unwrap_or_else(|| fail("stdin", "none"));
    let mut w = std::io::BufWriter::with_capacity(1 << 20, stdin);
    let emit = |w: &mut std::io::BufWriter<_>, mark: usize, data: &[u8]| {
        write!(w, "blob\nmark :{mark}\ndata {}\n", data.len())
            .and_then(|()| w.write_all(data))
            .and_then(|()| w.write_all(b"\n"))
            .unwrap_or_else(|e| fail("fast-import stream", e));
    };
    for i in 0..n {
        emit(&mut w, i + 1, &content(i, 0));
    }
    emit(&mut w, n + 1, CONFIG.as_bytes());
    let mut text = format!(
        "commit refs/heads/main\ncommitter b <b@b> 1700000000 +0000\ndata 5\nbase\n\nM 100644 :{} .gitops.yml\n",
        n + 1
    );
    for i in 0..n {
        text += &format!("M 100644 :{} {}\n", i + 1, path_of(i));
    }
    w.write_all(text.as_bytes())
        .and_then(|()| w.write_all(b"\n"))
        .unwrap_or_else(|e| fail("fast-import stream", e));
    let mut mark = n + 2;
    for c in 1..=COMMITS {
        let files: Vec<usize> = (0..CHANGED)
            .map(|j| mix((c * 1_000 + j) as u64) as usize % n)
            .collect();
        let first = mark;
        for &i in &files {
            emit(&mut w, mark, &content(i, c));
            mark += 1;
        }
        let mut text = format!(
            "commit refs/heads/main\ncommitter b <b@b> {} +0000\ndata 3\nc{:<1}\n\n",
            1_700_000_000 + c,
            c % 10
        );
        for (k, &i) in files.iter().enumerate() {
            text += &format!("M 100644 :{} {}\n", first + k, path_of(i));
        }
        w.write_all(text.as_bytes())
            .and_then(|()| w.write_all(b"\n"))
            .unwrap_or_else(|e| fail("fast-import stream", e));
    }
    drop(w);
    let status = child.wait().unwrap_or_else(|e| fail("git fast-import", e));
    if !status.success() {
        fail("git fast-import", status);
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// Times, in µs, of `events` events (after one untimed, which makes the first tree) with
/// implementation `imp` on the repository of `n` files.
pub fn measure(imp: &str, n: usize, events: usize) -> Option<Vec<f64>> {
    let repo = BenchRepo::get(n);
    let scratch = tempfile::tempdir_in(cache_root()).unwrap_or_else(|e| fail("temp dir", e));
    let mut times = Vec::new();
    match imp {
        "gitops_reuse" | "gitops_fresh" => {
            let base = if imp == "gitops_reuse" {
                "main"
            } else {
                "fresh"
            };
            let rt = crate::runtime();
            let registry = BackendRegistry::new()
                .with_executor("local", std::sync::Arc::new(LocalBackend::new()));
            let engine = Engine::open(scratch.path().join("state"), registry)
                .unwrap_or_else(|e| fail("engine", e));
            let opened = Repository::open(&repo.dir).unwrap_or_else(|e| fail("repo", e));
            let stamp = scratch.path().join("stamp");
            let mut options = RunOptions::default();
            options
                .env
                .insert("STAMP".into(), stamp.display().to_string());
            for e in 0..=events {
                let (before, head) = (&repo.commits[e], &repo.commits[e + 1]);
                let event = GitEvent::pull_request_event(
                    "bench/app",
                    "synchronize",
                    7,
                    ("feature", head),
                    (base, before),
                );
                let _ = std::fs::remove_file(&stamp);
                let t0 = now_ns();
                let runs = engine
                    .start(&event, &opened, &options)
                    .unwrap_or_else(|e| fail("start", e));
                for run in runs {
                    let report = rt
                        .block_on(run.execute())
                        .unwrap_or_else(|e| fail("run", e));
                    if report.result != gitops_core::scheduler::RunResult::Success {
                        fail("run", format!("{:?}", report.result));
                    }
                }
                let at: u128 = std::fs::read_to_string(&stamp)
                    .ok()
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or_else(|| fail("stamp", "unreadable"));
                if e > 0 {
                    times.push(at.saturating_sub(t0) as f64 / 1e3);
                }
            }
        }
        "git_worktree" | "git_clone_shared" => {
            for e in 0..=events {
                let head = &repo.commits[e + 1];
                let dir = scratch.path().join(format!("w{e}"));
                let d = dir.to_str().unwrap_or_else(|| fail("path", "not UTF-8"));
                let start = Instant::now();
                if imp == "git_worktree" {
                    git(&repo.dir, &["worktree", "add", "-q", "--detach", d, head]);
                } else {
                    git(
                        &repo.dir,
                        &["clone", "-q", "--shared", "--no-checkout", ".", d],
                    );
                    git(&dir, &["checkout", "-q", "--detach", head]);
                }
                let ok = Command::new("sh")
                    .args(["-c", "true"])
                    .current_dir(&dir)
                    .status()
                    .is_ok_and(|s| s.success());
                let took = start.elapsed().as_secs_f64() * 1e6;
                if !ok {
                    fail("sh", "failed");
                }
                if e > 0 {
                    times.push(took);
                }
            }
            // Removed once the cell is timed, not between its events: on ext4, files made
            // within seconds of many being removed wait for the inode allocator to skip the
            // recently freed ones (`recently_deleted` in a kernel profile of `git worktree add`
            // right after a tree of 50,000 files was removed: 11 s instead of 1.8).
            for e in 0..=events {
                let _ = std::fs::remove_dir_all(scratch.path().join(format!("w{e}")));
            }
            if imp == "git_worktree" {
                git(&repo.dir, &["worktree", "prune"]);
            }
        }
        _ => return None,
    }
    Some(times)
}

/// The `p`th percentile (0 to 100) of `times`, nearest rank.
pub fn percentile(times: &[f64], p: f64) -> f64 {
    let mut v = times.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}
