//! `x-forwarded-client-cert`: the parser and the certificate selection never panic; a
//! certificate is only ever taken when the digest matches.
#![no_main]

use kubelet_authz::identity::xfcc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = xfcc::parse(text);
    // Split at the first NUL: header value | peer digest.
    let (header, digest) = text.split_once('\0').unwrap_or((text, ""));
    for mtls in [false, true] {
        let _ = xfcc::client_cert(&[header], mtls, Some(digest));
        let _ = xfcc::client_cert(&[header, header], mtls, None);
    }
});
