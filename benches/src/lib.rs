//! Benchmarks of gitops, each measured against a baseline in the same run (see `benches/`).
//!
//! This library holds what the benchmarks share: the fixture payloads.
#![warn(missing_docs)]

use std::path::PathBuf;

/// The real webhook payloads of `../shared/fixtures/webhooks/`, as `(provider, event type, body)`.
pub fn webhook_fixtures() -> Vec<(
    gitops_core::source::webhook::Provider,
    &'static str,
    Vec<u8>,
)> {
    use gitops_core::source::webhook::Provider::{GitHub, GitLab};
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/webhooks");
    [
        (GitHub, "pull_request", "github/pull_request.opened.json"),
        (GitHub, "push", "github/push.with-new-branch.json"),
        (GitHub, "release", "github/release.published.json"),
        (GitLab, "merge_request", "gitlab/merge_request.json"),
        (GitLab, "push", "gitlab/push.json"),
    ]
    .into_iter()
    .filter_map(|(p, t, f)| Some((p, t, std::fs::read(dir.join(f)).ok()?)))
    .collect()
}
