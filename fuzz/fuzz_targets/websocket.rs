//! The WebSocket bearer-token subprotocol: the parser never panics, whatever the values.
#![no_main]

use kubelet_authz::identity::{is_websocket_request, websocket_token};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // NUL separates header values.
    let values: Vec<&str> = text.split('\0').collect();
    let _ = websocket_token(&values);
    let _ = is_websocket_request(&values, &values);
});
