//! Webhook parsing never panics, whatever the provider, event type and body.
#![no_main]

use gitops_core::source::webhook::{Provider, parse};
use libfuzzer_sys::fuzz_target;

const TYPES: &[(Provider, &str)] = &[
    (Provider::GitHub, "push"),
    (Provider::GitHub, "pull_request"),
    (Provider::GitHub, "create"),
    (Provider::GitHub, "delete"),
    (Provider::GitHub, "release"),
    (Provider::GitHub, "ping"),
    (Provider::GitLab, "Push Hook"),
    (Provider::GitLab, "Tag Push Hook"),
    (Provider::GitLab, "Merge Request Hook"),
    (Provider::GitLab, "Release Hook"),
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let (provider, ty) = TYPES[first as usize % TYPES.len()];
    if let Ok(event) = parse(provider, ty, body) {
        // What parses also serialises and reads back the same.
        let json = serde_json::to_vec(&event).unwrap();
        let back: gitops_core::event::GitEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, event);
    }
});
