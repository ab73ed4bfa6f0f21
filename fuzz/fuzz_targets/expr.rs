//! Expression and template parsing never panic; what parses prints and parses back the same.
#![no_main]

use gitops_core::expr::{Expr, Template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(e) = Expr::parse(text) {
            let printed = e.to_string();
            assert_eq!(Expr::parse(&printed).as_ref(), Ok(&e), "{printed}");
        }
        let _ = Template::parse(text);
    }
});
