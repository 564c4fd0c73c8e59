//! The one module that talks to the proxy: every hostcall of the filter goes through here (through
//! the checked bindings of [`crate::abi`], and the SDK's `dispatch_http_call`), so that a host
//! status becomes a typed [`HostError`] instead of a panic.
//!
//! Outputs (dispatch, resume, reply, header edits, metrics, timers, logs) go through the [`Host`]
//! trait so that the driver can be tested natively with a fake; inputs (request headers,
//! properties, callout responses, plugin configuration) are plain functions returning data.

use std::time::Duration;

use crate::abi;
use crate::convert::{self, Pairs};

/// A hostcall that did not succeed: which call, and the host's status (or why its answer could
/// not be read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    /// The hostcall.
    pub call: &'static str,
    /// The host's status code; [`MALFORMED`] when the host's answer could not be parsed.
    pub status: u32,
}

/// [`HostError::status`] of a host answer that could not be parsed (a malformed header map).
pub const MALFORMED: u32 = u32::MAX;

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.status == MALFORMED {
            write!(f, "{} answered a malformed value", self.call)
        } else {
            write!(f, "{} failed with status {}", self.call, self.status)
        }
    }
}

fn wrap<T>(call: &'static str, r: Result<T, u32>) -> Result<T, HostError> {
    r.map_err(|status| HostError { call, status })
}

/// Log severity (the scheduler's).
pub use kubelet_authz::schedule::Level;

/// The kinds of metric the filter defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// A counter (only goes up).
    Counter,
    /// A histogram of samples (Envoy's default buckets, made for milliseconds).
    Histogram,
}

/// What the driver asks of the proxy. Every method acts on the *effective* context, which
/// [`Host::set_effective_context`] selects.
pub trait Host {
    /// Write a log line.
    fn log(&mut self, level: Level, message: &str);
    /// Make `context_id` the context that later calls act on.
    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError>;
    /// Send an HTTP callout; answers the token that its response will carry.
    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError>;
    /// Continue the paused request.
    fn resume_request(&mut self) -> Result<(), HostError>;
    /// Answer the client locally.
    fn send_response(&mut self, status: u16, body: &[u8]) -> Result<(), HostError>;
    /// Remove a request header (every value).
    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError>;
    /// Set a request header (replacing every value).
    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError>;
    /// Define a metric (defining a name again answers the same id); answers its id.
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError>;
    /// Add to a counter.
    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError>;
    /// Record a sample in a histogram.
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError>;
    /// Call the root context's `on_tick` every `ms` milliseconds (0 stops it).
    fn set_tick_period_ms(&mut self, ms: u64) -> Result<(), HostError>;
    /// The effective context's client address (`source.address`, raw; `None` when the proxy does
    /// not have it). Read only when an audit event is written.
    fn source_address(&mut self) -> Result<Option<Vec<u8>>, HostError>;
}

/// The real proxy.
#[derive(Debug, Default, Clone, Copy)]
pub struct Proxy;

impl Host for Proxy {
    fn log(&mut self, level: Level, message: &str) {
        log(level, message);
    }

    fn set_effective_context(&mut self, context_id: u32) -> Result<(), HostError> {
        wrap(
            "set_effective_context",
            abi::set_effective_context(context_id),
        )
    }

    fn dispatch(
        &mut self,
        cluster: &str,
        headers: &[(String, String)],
        body: &[u8],
        timeout: Duration,
    ) -> Result<u32, HostError> {
        let headers: Vec<(&str, &str)> = headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        wrap(
            "dispatch_http_call",
            proxy_wasm::hostcalls::dispatch_http_call(
                cluster,
                headers,
                Some(body),
                Vec::new(),
                timeout,
            )
            .map_err(|s| s as u32),
        )
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        wrap("continue_stream", abi::continue_request())
    }

    fn send_response(&mut self, status: u16, body: &[u8]) -> Result<(), HostError> {
        let headers = convert::serialize_pairs(&[(
            b"content-type".as_slice(),
            b"text/plain; charset=utf-8".as_slice(),
        )]);
        wrap(
            "send_local_response",
            abi::send_local_response(u32::from(status), &headers, body),
        )
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        wrap(
            "remove_header_map_value",
            abi::remove_header(abi::MAP_REQUEST_HEADERS, name.as_bytes()),
        )
    }

    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        wrap(
            "replace_header_map_value",
            abi::replace_header(abi::MAP_REQUEST_HEADERS, name.as_bytes(), value.as_bytes()),
        )
    }

    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        let kind = match kind {
            MetricKind::Counter => abi::METRIC_COUNTER,
            MetricKind::Histogram => abi::METRIC_HISTOGRAM,
        };
        wrap("define_metric", abi::define_metric(kind, name))
    }

    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError> {
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        wrap("increment_metric", abi::increment_metric(id, by))
    }

    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        wrap("record_metric", abi::record_metric(id, value))
    }

    fn set_tick_period_ms(&mut self, ms: u64) -> Result<(), HostError> {
        let ms = u32::try_from(ms).unwrap_or(u32::MAX);
        wrap("set_tick_period", abi::set_tick_period_ms(ms))
    }

    fn source_address(&mut self) -> Result<Option<Vec<u8>>, HostError> {
        property(abi::PROPERTY_SOURCE_ADDRESS)
    }
}

/// Write a log line through the proxy (errors are ignored: there is nowhere else to report them).
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => 1,
        Level::Info => 2,
        Level::Warn => 3,
        Level::Error => 4,
    };
    let _ = abi::log(level, message);
}

/// Log at critical level (the panic hook).
pub fn log_critical(message: &str) {
    let _ = abi::log(5, message);
}

/// Milliseconds since the Unix epoch, by the proxy's clock.
pub fn now_ms() -> Result<u64, HostError> {
    let ns = wrap("get_current_time", abi::current_time_ns())?;
    Ok(ns / 1_000_000)
}

/// The plugin configuration bytes (empty when there are none).
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, HostError> {
    let b = wrap(
        "get_buffer_bytes",
        abi::buffer(abi::BUFFER_PLUGIN_CONFIGURATION, 0, size),
    )?;
    Ok(b.unwrap_or_default())
}

/// Every request header of the effective context, in order, as the bytes the proxy holds.
pub fn request_headers() -> Result<Pairs, HostError> {
    header_map("get_header_map_pairs", abi::MAP_REQUEST_HEADERS)
}

/// The effective context's request headers in the ABI's serialized form, in one hostcall: parse
/// it with [`convert::parse_pair_refs`] (borrowed, nothing copied) or [`request_header_refs`].
pub fn request_header_map() -> Result<Vec<u8>, HostError> {
    wrap(
        "get_header_map_pairs",
        abi::header_map_pairs(abi::MAP_REQUEST_HEADERS),
    )
}

/// The pairs of a map from [`request_header_map`], borrowed from it.
pub fn request_header_refs(raw: &[u8]) -> Result<convert::PairRefs<'_>, HostError> {
    convert::parse_pair_refs(raw).ok_or(HostError {
        call: "get_header_map_pairs",
        status: MALFORMED,
    })
}

fn header_map(call: &'static str, map: u32) -> Result<Pairs, HostError> {
    let raw = wrap(call, abi::header_map_pairs(map))?;
    convert::parse_pairs(&raw).ok_or(HostError {
        call,
        status: MALFORMED,
    })
}

/// A property's raw value (`None` when the proxy does not have it), by its serialized path
/// (segments joined by NUL: the `abi::PROPERTY_*` constants).
pub fn property(path: &[u8]) -> Result<Option<Vec<u8>>, HostError> {
    wrap("get_property", abi::property(path))
}

/// The headers of the callout response being delivered, as bytes.
pub fn call_response_headers() -> Result<Pairs, HostError> {
    header_map("get_header_map_pairs", abi::MAP_CALL_RESPONSE_HEADERS)
}

/// The body of the callout response being delivered (empty when there is none).
pub fn call_response_body(size: usize) -> Result<Vec<u8>, HostError> {
    let b = wrap(
        "get_buffer_bytes",
        abi::buffer(abi::BUFFER_CALL_RESPONSE_BODY, 0, size),
    )?;
    Ok(b.unwrap_or_default())
}

/// Answer the effective context with a plain 500, outside any session (no configuration, or the
/// request could not be read). Errors are logged.
pub fn reply_internal_error(why: &str) {
    log(
        Level::Error,
        &format!("kubelet-authz: internal error: {why}"),
    );
    let mut p = Proxy;
    if let Err(e) = p.send_response(500, b"Internal Server Error") {
        log(Level::Error, &format!("kubelet-authz: {e}"));
    }
}
