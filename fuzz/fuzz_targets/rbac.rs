//! The RBAC YAML/JSON loader: no panic on any text.
#![no_main]

use kubelet_authz::rbac::RbacStore;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let mut store = RbacStore::new();
        let _ = store.load_str(text, "fuzz");
    }
});
