//! Bitbucket Cloud webhook parsing never panics, whatever the event key and body; every event
//! of a delivery serialises and reads back the same, and `parse` agrees with `parse_all`.
#![no_main]

use gitops_core::event::GitEvent;
use gitops_core::source::webhook::{Provider, parse, parse_all};
use libfuzzer_sys::fuzz_target;

const TYPES: &[&str] = &[
    "repo:push",
    "pullrequest:created",
    "pullrequest:updated",
    "pullrequest:fulfilled",
    "pullrequest:rejected",
];

fuzz_target!(|data: &[u8]| {
    let Some((&first, body)) = data.split_first() else { return };
    let ty = TYPES[first as usize % TYPES.len()];
    let all = parse_all(Provider::Bitbucket, ty, body);
    let one = parse(Provider::Bitbucket, ty, body);
    match &all {
        Ok(events) if events.len() == 1 => assert_eq!(one.as_ref().ok(), events.first()),
        _ => assert!(one.is_err()),
    }
    for event in all.into_iter().flatten() {
        let json = serde_json::to_vec(&event).unwrap();
        let back: GitEvent = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, event);
        // What a payload names as a commit is an id, never a revision for git to evaluate.
        for id in [event.sha.as_deref()].into_iter().flatten() {
            assert!(id.len() <= 40 && id.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
        }
    }
});
