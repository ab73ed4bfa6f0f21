//! Policy file parsing never panics, and every error is located.
#![no_main]

use gitops_core::trust::Policy;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Policy::parse("policy.yml", text) {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert!(d.position.line >= 1 && d.position.column >= 1, "{d}");
                assert!(d.to_string().starts_with("policy.yml:"), "{d}");
            }
        }
    }
});
