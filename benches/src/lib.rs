//! Benchmarks of gitops, each measured against a baseline in the same run.
//!
//! `compare` (a binary) runs every comparison once and prints a table; the criterion benches in
//! `benches/` measure the same things with criterion's statistics.
#![warn(missing_docs)]

pub mod checkout_bench;
pub mod impls;
pub mod ledger_bench;
pub mod planner_bench;
pub mod shapes;
pub mod watcher_bench;

use std::path::PathBuf;

/// The real webhook payloads of `../shared/fixtures/webhooks/`, as `(provider, event type, body)`.
pub fn webhook_fixtures() -> Vec<(
    gitops_core::source::webhook::Provider,
    &'static str,
    Vec<u8>,
)> {
    use gitops_core::source::webhook::Provider::{Bitbucket, GitHub, GitLab, Gitea};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks");
    [
        (GitHub, "pull_request", "github/pull_request.opened.json"),
        (GitHub, "push", "github/push.with-new-branch.json"),
        (GitHub, "release", "github/release.published.json"),
        (GitLab, "merge_request", "gitlab/merge_request.json"),
        (GitLab, "push", "gitlab/push.json"),
        (
            Bitbucket,
            "pullrequest:created",
            "bitbucket/pullrequest-created.fork.json",
        ),
        (
            Bitbucket,
            "pullrequest:created",
            "bitbucket/pullrequest-created.same-repo.json",
        ),
        (
            Bitbucket,
            "repo:push",
            "bitbucket/repo-push.branch-created.json",
        ),
        (
            Bitbucket,
            "repo:push",
            "bitbucket/repo-push.branch-updated.json",
        ),
        (
            Bitbucket,
            "repo:push",
            "bitbucket/repo-push.tag-created.json",
        ),
        (Bitbucket, "repo:push", "bitbucket/signed.json"),
        (Gitea, "create", "gitea/create-event.json"),
        (Gitea, "delete", "gitea/delete-event.json"),
        (Gitea, "pull_request", "gitea/pull-request-event.json"),
        (Gitea, "push", "gitea/push-event.json"),
        (Gitea, "release", "gitea/release-event.json"),
    ]
    .into_iter()
    .filter_map(|(p, t, f)| Some((p, t, std::fs::read(dir.join(f)).ok()?)))
    .collect()
}

/// `git ARGS` in `dir` (with a committer and `main` as the default branch), `stdin` written to
/// it when given; its standard output, trimmed. Panics when git cannot run or fails: a bench's
/// fixture that cannot be made is no measurement.
pub fn git(dir: &std::path::Path, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let failed = |e: &dyn std::fmt::Display| -> ! {
        panic!("bench: git {args:?} in {}: {e}", dir.display())
    };
    let mut child = Command::new("git")
        .args(["-c", "user.name=b", "-c", "user.email=b@b"])
        .args(["-c", "init.defaultBranch=main"])
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| failed(&e));
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .unwrap_or_else(|e| failed(&e));
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap_or_else(|e| failed(&e));
    if !out.status.success() {
        failed(&out.status);
    }
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// This process's peak resident set size (`VmHWM`), in MiB.
pub fn peak_rss_mb() -> Option<f64> {
    status_mb("VmHWM:")
}

/// Resets this process's peak resident set size (`VmHWM`) to its resident size now, so that a
/// later [`peak_rss_mb`] is the peak since (Linux 4.0 and later). False when it cannot.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's resident set size now (`VmRSS`), in MiB.
pub fn rss_mb() -> Option<f64> {
    status_mb("VmRSS:")
}

/// A size in kB from `/proc/self/status` (`field` with its colon), in MiB.
fn status_mb(field: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// A pause before every timed scheduler run, the same for every implementation, so that each run
/// starts on an idle runtime however long its preparation took. Without it the runs that follow
/// a short preparation start early and, in `chain`, measured slower: `minimal` took 0.9 to 1.1
/// µs a stage started at once after its preparation (a few milliseconds) and 0.4 to 0.6 after
/// this pause, while `gitops`, whose preparation (config and plan) takes about as long as the
/// pause, gave the same either way. An engine starts its runs on a runtime that was idle.
pub fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(250));
}

/// The 2-worker multi-thread runtime every scheduler runs on.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("cannot build the runtime: {e}"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn resetting_the_peak_forgets_memory_given_back() {
        let mb = 1024 * 1024;
        {
            // Large enough to be its own mapping, unmapped when freed.
            let v = vec![1u8; 64 * mb];
            std::hint::black_box(&v);
        }
        let peak = super::peak_rss_mb().expect("VmHWM");
        assert!(super::reset_peak_rss(), "clear_refs is writable");
        let after = super::peak_rss_mb().expect("VmHWM");
        assert!(
            after < peak - 32.0,
            "peak {peak} MB, after the reset {after} MB"
        );
    }
}
