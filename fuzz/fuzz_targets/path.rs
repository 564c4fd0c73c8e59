//! The canonical-path check and the subresource mapping: no panic; what is accepted has no `//`,
//! `.`/`..` segment or backslash, is a fixed point once `?` and `#` are encoded again (`%3F` and
//! `%23` decode to them, and in a target they would start a query or fragment), and maps to
//! subresources for every version.
#![no_main]

use kubelet_authz::kubelet::KubeletModel;
use kubelet_authz::path::canonical_path;
use kubelet_authz::KubeletVersion;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(target) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(p) = canonical_path(target) {
        let again = p.replace('?', "%3F").replace('#', "%23");
        assert_eq!(canonical_path(&again).as_deref(), Ok(p.as_str()));
        assert!(!p.contains("//") && !p.contains('\\'));
        assert!(!p.split('/').any(|s| s == "." || s == ".."));
        for minor in 21..=36 {
            if let Ok(v) = KubeletVersion::new(minor) {
                let _ = KubeletModel::for_version(v).subresources(&p);
            }
        }
    }
});
