//! Gitea/Forgejo webhook parsing never panics, whatever the event type and body; what parses
//! serialises and reads back the same.
#![no_main]

use gitops_core::event::GitEvent;
use gitops_core::source::webhook::{Provider, parse};
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &["push", "create", "delete", "pull_request", "release"];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let ty = TYPES[first as usize % TYPES.len()];
    if let Ok(event) = parse(Provider::Gitea, ty, body) {
        let json = serde_json::to_vec(&event).unwrap();
        let back: GitEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, event);
    }
});
