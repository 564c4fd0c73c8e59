//! `Authorization: Bearer`: the parser never panics.
#![no_main]

use kubelet_authz::identity::parse_bearer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = parse_bearer(Some(text));
    }
});
