//! `.gitops.yml` parsing and validation never panic, and every error is located.
#![no_main]

use gitops_core::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = Config::parse(".gitops.yml", text) {
            assert!(!e.diagnostics.is_empty());
            for d in &e.diagnostics {
                assert!(d.position.line >= 1 && d.position.column >= 1, "{d}");
            }
        }
    }
});
