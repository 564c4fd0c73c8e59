//! The one module that talks to the proxy: every `proxy_wasm::hostcalls` call of the filter is
//! here, wrapped so that a host status becomes a typed [`HostError`] instead of a panic.
//!
//! Outputs (dispatch, resume, reply, header edits, metrics, timers, logs) go through the [`Host`]
//! trait so that the driver can be tested natively with a fake; inputs (request headers,
//! properties, callout responses, plugin configuration) are plain functions returning data.

use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

/// A hostcall that did not succeed: which call, and the host's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostError {
    /// The hostcall.
    pub call: &'static str,
    /// The host's status code.
    pub status: u32,
}

impl std::fmt::Display for HostError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} failed with status {}", self.call, self.status)
    }
}

fn wrap<T>(call: &'static str, r: Result<T, Status>) -> Result<T, HostError> {
    r.map_err(|s| HostError {
        call,
        status: s as u32,
    })
}

/// Log severity (the subset the filter uses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Debug.
    Debug,
    /// Info (audit lines).
    Info,
    /// Warn.
    Warn,
    /// Error.
    Error,
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
    /// Define a counter; answers its id.
    fn define_counter(&mut self, name: &str) -> Result<u32, HostError>;
    /// Add to a counter.
    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError>;
    /// Call the root context's `on_tick` every `ms` milliseconds (0 stops it).
    fn set_tick_period_ms(&mut self, ms: u64) -> Result<(), HostError>;
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
            hostcalls::set_effective_context(context_id),
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
            hostcalls::dispatch_http_call(cluster, headers, Some(body), Vec::new(), timeout),
        )
    }

    fn resume_request(&mut self) -> Result<(), HostError> {
        wrap("resume_http_request", hostcalls::resume_http_request())
    }

    fn send_response(&mut self, status: u16, body: &[u8]) -> Result<(), HostError> {
        wrap(
            "send_http_response",
            hostcalls::send_http_response(
                u32::from(status),
                vec![("content-type", "text/plain; charset=utf-8")],
                Some(body),
            ),
        )
    }

    fn remove_request_header(&mut self, name: &str) -> Result<(), HostError> {
        wrap(
            "remove_header_map_value",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None),
        )
    }

    fn set_request_header(&mut self, name: &str, value: &str) -> Result<(), HostError> {
        wrap(
            "replace_header_map_value",
            hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value)),
        )
    }

    fn define_counter(&mut self, name: &str) -> Result<u32, HostError> {
        wrap(
            "define_metric",
            hostcalls::define_metric(MetricType::Counter, name),
        )
    }

    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError> {
        let by = i64::try_from(by).unwrap_or(i64::MAX);
        wrap("increment_metric", hostcalls::increment_metric(id, by))
    }

    fn set_tick_period_ms(&mut self, ms: u64) -> Result<(), HostError> {
        wrap(
            "set_tick_period",
            hostcalls::set_tick_period(Duration::from_millis(ms)),
        )
    }
}

/// Write a log line through the proxy (errors are ignored: there is nowhere else to report them).
pub fn log(level: Level, message: &str) {
    let level = match level {
        Level::Debug => LogLevel::Debug,
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    };
    let _ = hostcalls::log(level, message);
}

/// Log at critical level (the panic hook).
pub fn log_critical(message: &str) {
    let _ = hostcalls::log(LogLevel::Critical, message);
}

/// Milliseconds since the Unix epoch, by the proxy's clock.
pub fn now_ms() -> Result<u64, HostError> {
    let t = wrap("get_current_time", hostcalls::get_current_time())?;
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The plugin configuration bytes (empty when there are none).
pub fn plugin_configuration(size: usize) -> Result<Vec<u8>, HostError> {
    let b = wrap(
        "get_buffer_bytes",
        hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size),
    )?;
    Ok(b.unwrap_or_default())
}

/// Every request header of the effective context, in order.
pub fn request_headers() -> Result<Vec<(String, String)>, HostError> {
    wrap(
        "get_header_map_pairs",
        hostcalls::get_map(MapType::HttpRequestHeaders),
    )
}

/// A property's raw value (`None` when the proxy does not have it).
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, HostError> {
    wrap("get_property", hostcalls::get_property(path.to_vec()))
}

/// The headers of the callout response being delivered.
pub fn call_response_headers() -> Result<Vec<(String, String)>, HostError> {
    wrap(
        "get_header_map_pairs",
        hostcalls::get_map(MapType::HttpCallResponseHeaders),
    )
}

/// The body of the callout response being delivered (empty when there is none).
pub fn call_response_body(size: usize) -> Result<Vec<u8>, HostError> {
    let b = wrap(
        "get_buffer_bytes",
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, size),
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
