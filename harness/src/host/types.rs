//! The plain data the test API hands out: log entries, actions, local replies, captured HTTP calls,
//! call responses and stream outcomes. Nothing here touches wasm.

use std::fmt;
use std::time::Duration;

/// A header list as the test sees it: lower-case names, values in order.
pub type Headers = Vec<(String, String)>;

/// Headers as the host keeps them: raw bytes, names lower-cased (as Envoy's header maps do).
pub(crate) type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Converts the host's raw pairs to a test-friendly header list (lossy UTF-8).
pub(crate) fn pairs_to_headers(pairs: &Pairs) -> Headers {
    pairs
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect()
}

/// Converts test-supplied headers to the host's raw pairs, lower-casing names.
pub(crate) fn headers_to_pairs<K: AsRef<str>, V: AsRef<str>>(headers: &[(K, V)]) -> Pairs {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_ref().to_ascii_lowercase().into_bytes(),
                v.as_ref().as_bytes().to_vec(),
            )
        })
        .collect()
}

/// First value of header `name` (case-insensitive) in a header list.
pub fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// proxy-wasm log levels (`proxy_log`), in ABI order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LogLevel {
    /// 0
    Trace,
    /// 1
    Debug,
    /// 2
    Info,
    /// 3
    Warn,
    /// 4
    Error,
    /// 5
    Critical,
}

impl LogLevel {
    /// The level for an ABI value, `None` when out of range.
    pub fn from_abi(value: u32) -> Option<Self> {
        Some(match value {
            0 => Self::Trace,
            1 => Self::Debug,
            2 => Self::Info,
            3 => Self::Warn,
            4 => Self::Error,
            5 => Self::Critical,
            _ => return None,
        })
    }

    /// The ABI value of this level.
    pub fn to_abi(self) -> u32 {
        match self {
            Self::Trace => 0,
            Self::Debug => 1,
            Self::Info => 2,
            Self::Warn => 3,
            Self::Error => 4,
            Self::Critical => 5,
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Critical => "critical",
        })
    }
}

/// Where a captured log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LogSource {
    /// `proxy_log`.
    Proxy,
    /// WASI `fd_write` to fd 1.
    Stdout,
    /// WASI `fd_write` to fd 2 (a Rust panic message lands here).
    Stderr,
    /// The host itself (e.g. why a hostcall returned an error status).
    Host,
}

/// One captured log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// Level (`Info` for stdout, `Error` for stderr).
    pub level: LogLevel,
    /// The context that was effective when the line was written.
    pub context_id: u32,
    /// Where it came from.
    pub source: LogSource,
    /// The text, without a trailing newline.
    pub message: String,
}

impl fmt::Display for LogEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let source = match self.source {
            LogSource::Proxy => "",
            LogSource::Stdout => " stdout",
            LogSource::Stderr => " stderr",
            LogSource::Host => " host",
        };
        write!(
            f,
            "[{}{} ctx={}] {}",
            self.level, source, self.context_id, self.message
        )
    }
}

/// Formats logs one per line (used in error messages).
pub(crate) fn format_logs(logs: &[LogEntry]) -> String {
    if logs.is_empty() {
        return String::from("\n(no logs)");
    }
    let mut out = String::from("\nlogs:");
    for entry in logs {
        out.push_str("\n  ");
        out.push_str(&entry.to_string());
    }
    out
}

/// What a stream callback returned, or where the stream stands after `proxy_continue_stream`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Iteration continues (the request goes upstream).
    Continue,
    /// Iteration stopped (waiting for a callout, or a local reply was sent).
    Pause,
}

impl Action {
    pub(crate) fn from_abi(value: u32) -> Self {
        if value == 0 {
            Self::Continue
        } else {
            Self::Pause
        }
    }
}

/// A reply the filter produced with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalReply {
    /// HTTP status code.
    pub status: u32,
    /// Extra headers the filter asked for.
    pub headers: Headers,
    /// The body bytes.
    pub body: Vec<u8>,
    /// The `details` string (response code details).
    pub details: String,
    /// gRPC status (-1 when not gRPC).
    pub grpc_status: i32,
}

impl LocalReply {
    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// First value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// Where a request stands, from the test's point of view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The request continues upstream (headers as in [`crate::host::Stream::forwarded_headers`]).
    Forwarded,
    /// The filter answered locally.
    Replied(LocalReply),
    /// The filter paused the request and has not resumed or answered it yet.
    Paused,
    /// The filter reset the stream (`proxy_close_stream`).
    Reset,
}

/// An HTTP callout captured from `proxy_http_call`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCall {
    /// The token the filter got back; pass it to `reply_call`/`fail_call`.
    pub token: u32,
    /// The context that was effective when the call was dispatched.
    pub context_id: u32,
    /// Upstream cluster name.
    pub upstream: String,
    /// Request headers (including `:method`, `:path`, `:authority`).
    pub headers: Headers,
    /// Request body.
    pub body: Vec<u8>,
    /// Request trailers.
    pub trailers: Headers,
    /// The timeout the filter asked for (zero: none).
    pub timeout: Duration,
    /// Virtual time (since host start) at which it was dispatched.
    pub dispatched_at: Duration,
}

impl HttpCall {
    /// First value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The `:method` header.
    pub fn method(&self) -> Option<&str> {
        self.header(":method")
    }

    /// The `:path` header.
    pub fn path(&self) -> Option<&str> {
        self.header(":path")
    }

    /// The `:authority` header.
    pub fn authority(&self) -> Option<&str> {
        self.header(":authority")
    }

    /// The body as UTF-8 (lossy).
    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON into `T`.
    ///
    /// # Errors
    /// When the body is not JSON of that shape.
    pub fn body_json<T: serde::de::DeserializeOwned>(&self) -> Result<T, serde_json::Error> {
        serde_json::from_slice(&self.body)
    }
}

/// The answer a test gives to a captured callout.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    /// Response headers, `:status` included (see [`CallResponse::new`]).
    pub headers: Headers,
    /// Response body.
    pub body: Vec<u8>,
    /// Response trailers.
    pub trailers: Headers,
    /// Headers as raw bytes, sent after [`CallResponse::headers`] exactly as given (any byte, no
    /// lower-casing): what a test uses to hand the filter a value that is not UTF-8.
    pub raw_headers: Vec<(Vec<u8>, Vec<u8>)>,
}

impl CallResponse {
    /// A response with `:status` set to `status`, the given extra headers and body.
    pub fn new<K: AsRef<str>, V: AsRef<str>>(
        status: u16,
        headers: &[(K, V)],
        body: impl Into<Vec<u8>>,
    ) -> Self {
        let mut all = vec![(String::from(":status"), status.to_string())];
        all.extend(
            headers
                .iter()
                .map(|(k, v)| (k.as_ref().to_ascii_lowercase(), v.as_ref().to_owned())),
        );
        Self {
            headers: all,
            body: body.into(),
            trailers: Vec::new(),
            raw_headers: Vec::new(),
        }
    }

    /// A response whose headers (`:status` included, if any) are raw bytes exactly as given.
    pub fn raw(headers: Vec<(Vec<u8>, Vec<u8>)>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            headers: Vec::new(),
            body: body.into(),
            trailers: Vec::new(),
            raw_headers: headers,
        }
    }

    /// A JSON response: `:status`, `content-type: application/json` and the serialized value.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self::new(
            status,
            &[("content-type", "application/json")],
            value.to_string(),
        )
    }
}

/// Metric kinds (`proxy_define_metric`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetricKind {
    /// 0
    Counter,
    /// 1
    Gauge,
    /// 2
    Histogram,
}

/// The series Envoy's `/stats/prometheus` prints for the custom (wasm) metric `name`, when its
/// bootstrap's `stats_config.stats_tags` has the entry `(<tag>=\.=(.*?);\.;)` (Istio's form) for
/// every tag that `name` carries in Istio's encoding `<tag>=.=<value>;.;`: the encodings leave the
/// name and become labels, in order; Envoy strips the `wasmcustom.` namespace and adds no `envoy_`
/// prefix; any other character outside `[a-zA-Z0-9_:]` becomes `_`. An unlabelled name comes back
/// without the `{}` Envoy prints after it.
///
/// `kubelet_authz.outcome=.=allowed;.;subresource=.=pods;.;decisions_total` ->
/// `kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}`.
pub fn prometheus_series(name: &str) -> String {
    let mut rest = name;
    let mut bare = String::new();
    let mut labels = Vec::new();
    while let Some(at) = rest.find("=.=") {
        let (before, after) = rest.split_at(at);
        let tag_start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(0, |i| i + 1);
        let after = after.get(3..).unwrap_or_default();
        let Some(end) = after.find(";.;") else {
            break;
        };
        bare.push_str(before.get(..tag_start).unwrap_or_default());
        labels.push(format!(
            "{}=\"{}\"",
            before.get(tag_start..).unwrap_or_default(),
            after.get(..end).unwrap_or_default()
        ));
        rest = after.get(end + 3..).unwrap_or_default();
    }
    bare.push_str(rest);
    let mut out: String = bare
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if !labels.is_empty() {
        out.push('{');
        out.push_str(&labels.join(","));
        out.push('}');
    }
    out
}

/// A metric as the host holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    /// Its kind.
    pub kind: MetricKind,
    /// Counter or gauge value (histograms: number of samples).
    pub value: i64,
    /// Histogram samples in recording order.
    pub samples: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use rstest::rstest;

    use super::prometheus_series;

    #[rstest]
    #[case(
        "kubelet_authz.outcome=.=allowed;.;subresource=.=pods;.;decisions_total",
        r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#
    )]
    #[case(
        "kubelet_authz.kind=.=tokenreview;.;callout_duration_milliseconds",
        r#"kubelet_authz_callout_duration_milliseconds{kind="tokenreview"}"#
    )]
    #[case(
        "kubelet_authz.internal_errors_total",
        "kubelet_authz_internal_errors_total"
    )]
    #[case("probe_requests", "probe_requests")]
    #[case("a-b.c/d", "a_b_c_d")]
    #[case("x.tag=.=unterminated", "x_tag___unterminated")]
    fn prometheus_series_as_envoy_prints_it(#[case] name: &str, #[case] series: &str) {
        assert_eq!(prometheus_series(name), series);
    }
}
