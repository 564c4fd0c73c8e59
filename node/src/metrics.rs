//! The agent's own metrics: a few counters the `run` loop updates, served in the Prometheus text
//! format on a unix socket in the pod's shared `admin` directory.
//!
//! Envoy's metrics listener routes `GET /metrics/agent` to this socket ([`crate::bootstrap`]), so
//! one scrape port carries both Envoy's and the agent's series. The server is tiny and blocking:
//! one thread, one connection at a time, a bounded request read with a timeout, `GET /metrics` or
//! 404.
//!
//! The series' names are the constants below; the monitoring rules and their tests use them.

use std::io::{Read as _, Write as _};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Gauge: 1 when the filter ConfigMap's current content was accepted (or is unchanged), 0 when
/// the agent refused it (Envoy keeps the previous configuration).
pub const FILTER_CONFIG_VALID: &str = "kubelet_authz_agent_filter_config_valid";
/// Counter: filter ConfigMap contents the agent refused (engine error or node-only fields).
pub const FILTER_CONFIG_REFUSALS_TOTAL: &str = "kubelet_authz_agent_filter_config_refusals_total";
/// Counter: filter configurations the agent wrote to Envoy's ECDS file.
pub const FILTER_CONFIG_WRITES_TOTAL: &str = "kubelet_authz_agent_filter_config_writes_total";
/// Counter: failed checks or renewals of the proxy's certificate (retried).
pub const CERTIFICATE_RENEWAL_FAILURES_TOTAL: &str =
    "kubelet_authz_agent_certificate_renewal_failures_total";
/// Gauge: always 1, labelled with the agent's `version`.
pub const INFO: &str = "kubelet_authz_agent_info";
/// Every series the agent exports, with its labels (the scrape adds its own).
pub const SERIES: [(&str, &[&str]); 5] = [
    (FILTER_CONFIG_VALID, &[]),
    (FILTER_CONFIG_REFUSALS_TOTAL, &[]),
    (FILTER_CONFIG_WRITES_TOTAL, &[]),
    (CERTIFICATE_RENEWAL_FAILURES_TOTAL, &[]),
    (INFO, &["version"]),
];

/// The path Envoy's metrics listener serves the agent's series on (rewritten to `/metrics`).
pub const ENVOY_PATH: &str = "/metrics/agent";
/// The path the agent answers.
pub const PATH: &str = "/metrics";
/// The `Content-Type` of the Prometheus text format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4";
/// The longest request (line and headers) read; a longer one is answered 431.
pub const MAX_REQUEST_BYTES: usize = 8192;
/// The time a client has to send its request.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// The agent's counters, shared between the `run` loop and the metrics thread.
#[derive(Debug)]
pub struct AgentMetrics {
    valid: AtomicBool,
    refusals: AtomicU64,
    writes: AtomicU64,
    renewal_failures: AtomicU64,
    version: String,
}

impl Default for AgentMetrics {
    fn default() -> Self {
        AgentMetrics::new(env!("CARGO_PKG_VERSION"))
    }
}

impl AgentMetrics {
    /// Fresh counters (configuration valid: `init` refuses a bad one before `run` starts).
    pub fn new(version: &str) -> AgentMetrics {
        AgentMetrics {
            valid: AtomicBool::new(true),
            refusals: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            renewal_failures: AtomicU64::new(0),
            version: version.to_string(),
        }
    }

    /// The ConfigMap's current content was accepted; `written` when the ECDS file changed.
    pub fn accepted(&self, written: bool) {
        self.valid.store(true, Ordering::Relaxed);
        if written {
            self.writes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The ConfigMap's current content was refused.
    pub fn refused(&self) {
        self.valid.store(false, Ordering::Relaxed);
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// A certificate check or renewal failed.
    pub fn renewal_failed(&self) {
        self.renewal_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// The series in the Prometheus text format (0.0.4).
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut one = |name: &str, kind: &str, help: &str, sample: String| {
            out.push_str(&format!(
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{sample}\n"
            ));
        };
        one(
            FILTER_CONFIG_VALID,
            "gauge",
            "1 when the filter ConfigMap's current content was accepted, 0 when the agent refused it.",
            format!(
                "{FILTER_CONFIG_VALID} {}",
                u8::from(self.valid.load(Ordering::Relaxed))
            ),
        );
        one(
            FILTER_CONFIG_REFUSALS_TOTAL,
            "counter",
            "Filter ConfigMap contents the agent refused.",
            format!(
                "{FILTER_CONFIG_REFUSALS_TOTAL} {}",
                self.refusals.load(Ordering::Relaxed)
            ),
        );
        one(
            FILTER_CONFIG_WRITES_TOTAL,
            "counter",
            "Filter configurations written to Envoy's ECDS file.",
            format!(
                "{FILTER_CONFIG_WRITES_TOTAL} {}",
                self.writes.load(Ordering::Relaxed)
            ),
        );
        one(
            CERTIFICATE_RENEWAL_FAILURES_TOTAL,
            "counter",
            "Failed checks or renewals of the proxy's certificate.",
            format!(
                "{CERTIFICATE_RENEWAL_FAILURES_TOTAL} {}",
                self.renewal_failures.load(Ordering::Relaxed)
            ),
        );
        one(
            INFO,
            "gauge",
            "The node agent's version.",
            format!("{INFO}{{version=\"{}\"}} 1", escape_label(&self.version)),
        );
        out
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// What a request gets: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code.
    pub status: u16,
    /// The body.
    pub body: String,
}

/// The answer to one request (`head`: the bytes read up to the end of the headers, or all of
/// them when the request was cut short).
pub fn answer(head: &[u8], metrics: &AgentMetrics) -> Answer {
    let not = |status: u16, body: &str| Answer {
        status,
        body: body.to_string(),
    };
    let Some(end) = find(head, b"\r\n\r\n") else {
        return if head.len() >= MAX_REQUEST_BYTES {
            not(431, "request too large\n")
        } else {
            not(400, "bad request\n")
        };
    };
    let Ok(text) = std::str::from_utf8(head.get(..end).unwrap_or_default()) else {
        return not(400, "bad request\n");
    };
    let line = text.split("\r\n").next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return not(400, "bad request\n");
    };
    if !version.starts_with("HTTP/1.") {
        return not(400, "bad request\n");
    }
    let path = target.split('?').next().unwrap_or_default();
    if method == "GET" && path == PATH {
        Answer {
            status: 200,
            body: metrics.render(),
        }
    } else {
        not(404, "not found\n")
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    }
}

/// The whole HTTP/1.1 response to `a`.
pub fn response(a: &Answer) -> String {
    let kind = if a.status == 200 {
        CONTENT_TYPE
    } else {
        "text/plain"
    };
    format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.status,
        reason(a.status),
        a.body.len(),
        a.body
    )
}

/// Read one request (at most [`MAX_REQUEST_BYTES`]) and answer it; errors are the client's.
fn serve_one(mut s: UnixStream, metrics: &AgentMetrics) -> std::io::Result<()> {
    s.set_read_timeout(Some(READ_TIMEOUT))?;
    s.set_write_timeout(Some(READ_TIMEOUT))?;
    let mut buf = vec![0u8; MAX_REQUEST_BYTES];
    let mut n = 0;
    while n < buf.len() {
        let Some(rest) = buf.get_mut(n..) else { break };
        let got = s.read(rest)?;
        if got == 0 {
            break;
        }
        n += got;
        if find(buf.get(..n).unwrap_or_default(), b"\r\n\r\n").is_some() {
            break;
        }
    }
    let a = answer(buf.get(..n).unwrap_or_default(), metrics);
    s.write_all(response(&a).as_bytes())?;
    s.flush()
}

/// Errors of [`bind`].
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The socket could not be made.
    #[error(
        "--metrics-socket {path}: {source} (is the pod's admin directory mounted and writable?)"
    )]
    Bind {
        /// The socket's path.
        path: std::path::PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Listen on `path` (a stale socket there from a previous container is replaced).
pub fn bind(path: &Path) -> Result<UnixListener, MetricsError> {
    let err = |source| MetricsError::Bind {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let l = UnixListener::bind(path).map_err(err)?;
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    Ok(l)
}

/// Answer requests on `listener` in a thread of its own, one at a time, for as long as the
/// process runs.
pub fn spawn(listener: UnixListener, metrics: Arc<AgentMetrics>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            match conn {
                Ok(s) => {
                    // A client that hangs up or times out is its own problem.
                    let _ = serve_one(s, &metrics);
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rstest::rstest;

    const FRESH: &str = "\
# HELP kubelet_authz_agent_filter_config_valid 1 when the filter ConfigMap's current content was accepted, 0 when the agent refused it.
# TYPE kubelet_authz_agent_filter_config_valid gauge
kubelet_authz_agent_filter_config_valid 1
# HELP kubelet_authz_agent_filter_config_refusals_total Filter ConfigMap contents the agent refused.
# TYPE kubelet_authz_agent_filter_config_refusals_total counter
kubelet_authz_agent_filter_config_refusals_total 0
# HELP kubelet_authz_agent_filter_config_writes_total Filter configurations written to Envoy's ECDS file.
# TYPE kubelet_authz_agent_filter_config_writes_total counter
kubelet_authz_agent_filter_config_writes_total 0
# HELP kubelet_authz_agent_certificate_renewal_failures_total Failed checks or renewals of the proxy's certificate.
# TYPE kubelet_authz_agent_certificate_renewal_failures_total counter
kubelet_authz_agent_certificate_renewal_failures_total 0
# HELP kubelet_authz_agent_info The node agent's version.
# TYPE kubelet_authz_agent_info gauge
kubelet_authz_agent_info{version=\"0.1.0\"} 1
";

    #[test]
    fn fresh_counters_render_byte_for_byte() {
        assert_eq!(AgentMetrics::new("0.1.0").render(), FRESH);
    }

    /// Events, then the sample lines (valid, refusals, writes, renewal failures).
    #[rstest]
    #[case::nothing("", [1, 0, 0, 0])]
    #[case::written("w", [1, 0, 1, 0])]
    #[case::unchanged("u", [1, 0, 0, 0])]
    #[case::refused("r", [0, 1, 0, 0])]
    #[case::refused_twice("rr", [0, 2, 0, 0])]
    #[case::refused_then_fixed("rw", [1, 1, 1, 0])]
    #[case::refused_then_old_content_back("ru", [1, 1, 0, 0])]
    #[case::written_then_refused("wr", [0, 1, 1, 0])]
    #[case::renewal_failures("ff", [1, 0, 0, 2])]
    fn events_move_the_series(#[case] events: &str, #[case] want: [u64; 4]) {
        let m = AgentMetrics::new("0.1.0");
        for e in events.chars() {
            match e {
                'w' => m.accepted(true),
                'u' => m.accepted(false),
                'r' => m.refused(),
                'f' => m.renewal_failed(),
                _ => unreachable!(),
            }
        }
        let text = m.render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        let expected = [
            format!("{FILTER_CONFIG_VALID} {}", want[0]),
            format!("{FILTER_CONFIG_REFUSALS_TOTAL} {}", want[1]),
            format!("{FILTER_CONFIG_WRITES_TOTAL} {}", want[2]),
            format!("{CERTIFICATE_RENEWAL_FAILURES_TOTAL} {}", want[3]),
            format!("{INFO}{{version=\"0.1.0\"}} 1"),
        ];
        assert_eq!(samples, expected);
    }

    #[test]
    fn series_lists_every_rendered_series_with_its_labels() {
        let text = AgentMetrics::new("0.1.0").render();
        let samples: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(samples.len(), SERIES.len());
        for ((name, labels), line) in SERIES.iter().zip(samples) {
            let head = line.split(' ').next().unwrap();
            let want = if labels.is_empty() {
                name.to_string()
            } else {
                let ls: Vec<String> = labels.iter().map(|l| format!("{l}=\"0.1.0\"")).collect();
                format!("{name}{{{}}}", ls.join(","))
            };
            assert_eq!(head, want);
        }
    }

    #[test]
    fn the_version_label_is_escaped() {
        let text = AgentMetrics::new("a\"b\\c\nd").render();
        assert!(
            text.contains(r#"kubelet_authz_agent_info{version="a\"b\\c\nd"} 1"#),
            "{text}"
        );
    }

    #[rstest]
    #[case::metrics("GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n", 200)]
    #[case::metrics_http10("GET /metrics HTTP/1.0\r\n\r\n", 200)]
    #[case::metrics_query("GET /metrics?x=1 HTTP/1.1\r\n\r\n", 200)]
    #[case::envoy_path_not_rewritten("GET /metrics/agent HTTP/1.1\r\n\r\n", 404)]
    #[case::root("GET / HTTP/1.1\r\n\r\n", 404)]
    #[case::post("POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n", 404)]
    #[case::head("HEAD /metrics HTTP/1.1\r\n\r\n", 404)]
    #[case::lower_get("get /metrics HTTP/1.1\r\n\r\n", 404)]
    #[case::prefix("GET /metricsx HTTP/1.1\r\n\r\n", 404)]
    #[case::no_version("GET /metrics\r\n\r\n", 400)]
    #[case::extra_word("GET /metrics HTTP/1.1 x\r\n\r\n", 400)]
    #[case::http2("GET /metrics HTTP/2\r\n\r\n", 400)]
    #[case::cut_short("GET /metrics HTTP/1.1\r\nHost: x\r\n", 400)]
    #[case::empty("", 400)]
    #[case::unicode_path("GET /\u{fffd} HTTP/1.1\r\n\r\n", 404)]
    fn requests_are_answered(#[case] req: &str, #[case] status: u16) {
        let a = answer(req.as_bytes(), &AgentMetrics::new("0.1.0"));
        assert_eq!(a.status, status, "{req:?}");
        if status == 200 {
            assert_eq!(a.body, FRESH);
        }
    }

    #[rstest]
    #[case::binary(vec![0xff, 0xfe, b'\r', b'\n', b'\r', b'\n'], 400)]
    #[case::too_large(vec![b'a'; MAX_REQUEST_BYTES], 431)]
    fn raw_requests_are_answered(#[case] req: Vec<u8>, #[case] status: u16) {
        assert_eq!(answer(&req, &AgentMetrics::new("0.1.0")).status, status);
    }

    #[test]
    fn the_response_is_http_1_1_and_closes() {
        let a = Answer {
            status: 200,
            body: "x 1\n".into(),
        };
        assert_eq!(
            response(&a),
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: 4\r\nConnection: close\r\n\r\nx 1\n"
        );
    }

    fn get(path: &Path, req: &[u8]) -> String {
        let mut s = UnixStream::connect(path).unwrap();
        s.write_all(req).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_socket_serves_the_current_counters_and_replaces_a_stale_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/agent.sock");
        drop(bind(&path).unwrap()); // a stale socket, as a previous container leaves it
        let m = Arc::new(AgentMetrics::new("0.1.0"));
        spawn(bind(&path).unwrap(), m.clone());
        m.refused();
        let out = get(&path, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        assert!(out.contains("\r\nConnection: close\r\n"), "{out}");
        assert!(
            out.contains(&format!("\n{FILTER_CONFIG_VALID} 0\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("\n{FILTER_CONFIG_REFUSALS_TOTAL} 1\n")),
            "{out}"
        );
        assert!(get(&path, b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
        // Too large: answered once the bound is reached, without waiting for the end.
        // (Exactly the bound: bytes left unread would reset the connection.)
        let big = vec![b'a'; MAX_REQUEST_BYTES];
        assert!(get(&path, &big).starts_with("HTTP/1.1 431 "));
        // A silent client that hangs up does not stop the server.
        drop(UnixStream::connect(&path).unwrap());
        assert!(get(&path, b"GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200 "));
    }
}
