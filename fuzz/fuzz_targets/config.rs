//! The filter configuration parser: no panic; every error names a field.
#![no_main]

use kubelet_authz::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Err(e) = Config::from_json(data) {
        assert!(!e.field.is_empty());
    }
});
