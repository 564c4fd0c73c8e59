//! Issue 16 through a real Envoy 1.40 with the release filter: a header byte that is not UTF-8
//! (Envoy passes obs-text on) used to kill the filter's VM, so that every later request on that
//! worker got 503. Now each header family with such a byte gets the kubelet's answer, the VM lives
//! on (no panic in Envoy's log), and the next request is served, over HTTP/1.1 and HTTP/2 alike.
//!
//! The requests are sent by `curl` (`-H` with raw bytes, `--http1.1` or `--http2` over TLS with
//! ALPN), which writes header bytes as given.
//!
//! Needs Envoy (`ENVOY_BIN`), the release filter (`KUBELET_AUTHZ_FILTER_WASM`) and `curl`; fails
//! without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::stack::{ProxyOptions, Standins, PODLISTER_TOKEN};

/// Status and HTTP version (`1.1` or `2`) of one request sent by curl with raw header bytes.
async fn curl(
    s: &Standins,
    envoy: &Envoy,
    http2: bool,
    path: &[u8],
    headers: &[Vec<u8>],
) -> (u16, String) {
    let mut url = envoy.url().into_bytes();
    url.extend_from_slice(path);
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args([
        "-sS",
        "--path-as-is",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{http_version}",
    ])
    .arg("--max-time")
    .arg("20")
    .arg("--cacert")
    .arg(&s.ca)
    .arg(if http2 { "--http2" } else { "--http1.1" });
    for h in headers {
        cmd.arg("-H").arg(OsStr::from_bytes(h));
    }
    cmd.arg(OsStr::from_bytes(&url));
    let out = cmd
        .output()
        .await
        .expect("run curl (Debian package `curl`, installed by scripts/setup.sh)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, version) = text.split_once(' ').unwrap_or((&text, ""));
    (code.parse().unwrap_or(0), version.to_string())
}

fn bearer(token: &[u8]) -> Vec<u8> {
    [b"Authorization: Bearer ".as_slice(), token].concat()
}

fn ws_protocol(extra: &[u8]) -> Vec<u8> {
    let token = kubelet_authz_test_support::encode::websocket_token(PODLISTER_TOKEN);
    [
        b"Sec-WebSocket-Protocol: v4.channel.k8s.io, ".as_slice(),
        token.as_bytes(),
        extra,
    ]
    .concat()
}

/// One row: a request with a non-UTF-8 byte, and the status the kubelet would answer.
struct Row {
    name: &'static str,
    path: &'static [u8],
    headers: Vec<Vec<u8>>,
    status: u16,
    /// The TokenReviews it must send (tokens as the API server received them).
    reviews: Vec<&'static str>,
}

fn rows() -> Vec<Row> {
    let ok = bearer(PODLISTER_TOKEN.as_bytes());
    vec![
        Row {
            name: "user-agent",
            path: b"/pods",
            headers: vec![ok.clone(), b"User-Agent: \xff".to_vec()],
            status: 200,
            reviews: vec![],
        },
        Row {
            name: "cookie",
            path: b"/pods",
            headers: vec![ok.clone(), b"Cookie: a=\x80".to_vec()],
            status: 200,
            reviews: vec![],
        },
        Row {
            name: "any other header",
            path: b"/pods",
            headers: vec![ok.clone(), b"X-Anything: caf\xe9".to_vec()],
            status: 200,
            reviews: vec![],
        },
        Row {
            name: "x-forwarded-client-cert (replaced by Envoy)",
            path: b"/pods",
            headers: vec![ok.clone(), b"X-Forwarded-Client-Cert: Hash=\xff".to_vec()],
            status: 200,
            reviews: vec![],
        },
        // Reviewed as the kubelet's JSON encoding sends it (U+FFFD), and rejected.
        Row {
            name: "authorization",
            path: b"/pods",
            headers: vec![bearer(b"\xff")],
            status: 401,
            reviews: vec!["\u{fffd}"],
        },
        Row {
            name: "authorization (token with a trailing byte)",
            path: b"/pods",
            headers: vec![bearer(b"podlister-token\xfe")],
            status: 401,
            reviews: vec!["podlister-token\u{fffd}"],
        },
        // A non-token entry with the byte is ignored; the pod lister's token is used.
        Row {
            name: "sec-websocket-protocol (other entry)",
            path: b"/pods",
            headers: vec![
                b"Connection: Upgrade".to_vec(),
                b"Upgrade: websocket".to_vec(),
                ws_protocol(b", x\xff"),
            ],
            status: 200,
            reviews: vec![],
        },
        // The byte in the token entry fails its decoding: 401 without a review.
        Row {
            name: "sec-websocket-protocol (token entry)",
            path: b"/pods",
            headers: vec![
                b"Connection: Upgrade".to_vec(),
                b"Upgrade: websocket".to_vec(),
                b"Sec-WebSocket-Protocol: v4.channel.k8s.io, base64url.bearer.authorization.k8s.io.\xff".to_vec(),
            ],
            status: 401,
            reviews: vec![],
        },
    ]
}

async fn rows_hold(http2: bool) {
    let s = Standins::start().await.unwrap();
    let envoy = s
        .front_proxy(
            if http2 { "bytes-h2" } else { "bytes-h1" },
            &ProxyOptions::version("1.36"),
        )
        .await
        .unwrap();
    let ok = bearer(PODLISTER_TOKEN.as_bytes());
    let want_version = if http2 { "2" } else { "1.1" };
    for row in rows() {
        // HTTP/2 has no connection-specific headers: curl drops them, so the row is moot.
        if http2 && row.headers.iter().any(|h| h.starts_with(b"Connection:")) {
            continue;
        }
        let mark = s.apiserver.records().len();
        let (status, version) = curl(&s, &envoy, http2, row.path, &row.headers).await;
        assert_eq!(version, want_version, "{}: protocol", row.name);
        assert_eq!(status, row.status, "{}: status", row.name);
        let reviewed: Vec<String> = s
            .apiserver
            .token_reviews_since(mark)
            .into_iter()
            .filter(|t| t != PODLISTER_TOKEN)
            .collect();
        assert_eq!(reviewed, row.reviews, "{}: TokenReviews", row.name);
        // The VM is alive: the next ordinary request is served, and nothing panicked.
        let (next, _) = curl(&s, &envoy, http2, b"/pods", std::slice::from_ref(&ok)).await;
        assert_eq!(next, 200, "{}: the next request", row.name);
        let panics: Vec<String> = envoy
            .log_lines()
            .into_iter()
            .filter(|l| l.contains("panic") || l.contains("RuntimeError"))
            .collect();
        assert!(
            panics.is_empty(),
            "{}: the VM trapped: {panics:#?}",
            row.name
        );
    }
    envoy.stop().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_header_bytes_over_http1() {
    rows_hold(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_utf8_header_bytes_over_http2() {
    rows_hold(true).await;
}
