//! A proxy-wasm ABI 0.2.1 host on wasmtime, for driving an HTTP filter module (ours:
//! `kubelet_authz_filter.wasm`) from tests, without Envoy.
//!
//! The module file is compiled once per process (a cache keyed by path, size and mtime, one shared
//! `Engine`); every [`Host`] is a fresh instance with its own state, so tests run in parallel.
//! Time is virtual, randomness is seeded, callouts are captured and answered by the test.
//!
//! ```no_run
//! use std::time::Duration;
//! use kubelet_authz_harness::host::{Action, CallResponse, Host, Outcome};
//!
//! # fn main() -> Result<(), kubelet_authz_harness::host::HostError> {
//! let vm = Host::load_default()?; // $KUBELET_AUTHZ_FILTER_WASM or the release artefact
//! vm.configure(r#"{"nodeName":"worker-1"}"#)?; // Err(HostError::Configure { logs }) if rejected
//!
//! let rq = vm
//!     .request()
//!     .method("GET")
//!     .path("/pods")
//!     .authority("worker-1:10250")
//!     .header("authorization", "Bearer abc")
//!     .property("connection.mtls", [0])
//!     .property("source.address", "10.0.0.1:1234")
//!     .send_headers(true)?; // proxy_on_context_create + proxy_on_request_headers
//! assert_eq!(rq.action(), Action::Pause);
//!
//! let calls = vm.pending_calls(); // captured proxy_http_call
//! assert_eq!(calls[0].path(), Some("/apis/authentication.k8s.io/v1/tokenreviews"));
//! let review: serde_json::Value = calls[0].body_json().unwrap();
//! vm.reply_call(calls[0].token, 201, &[("content-type", "application/json")], "{...}")?;
//! // or: vm.reply_call_with(token, CallResponse::json(201, &value))?; vm.fail_call(token)?;
//!
//! match rq.outcome() {
//!     Outcome::Forwarded => assert!(rq.request_header("authorization").is_none()),
//!     Outcome::Replied(reply) => assert_eq!(reply.status, 403),
//!     other => panic!("{other:?}"),
//! }
//! vm.advance_clock(Duration::from_secs(120))?; // fires proxy_on_tick, call timeouts
//! vm.advance_clock(Duration::from_secs(1))?; // the filter flushes its counters on the tick
//! let allowed = r#"kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}"#;
//! assert_eq!(vm.series(allowed), Some(1));
//! assert!(vm.logs_contain("decision"));
//! rq.finish()?; // proxy_on_done, proxy_on_log, proxy_on_delete
//! # Ok(()) }
//! ```
//!
//! Semantics worth knowing (they follow Envoy):
//! - Context ids: the root context is 1, streams count up from 2. Hostcalls apply to the context
//!   the host entered, or the one set with `proxy_set_effective_context`.
//! - [`Stream::action`] is what the last request-path callback returned, turned into
//!   `Continue` by `proxy_continue_stream`; [`Stream::outcome`] folds in local replies and resets.
//! - `proxy_http_call` needs `:method`, `:path`, `:authority` (else `BadArgument`, with a host log
//!   line saying why). A failed call ([`Host::fail_call`]: a reset) calls
//!   `proxy_on_http_call_response` with 0 headers, 0 body bytes, and the response maps absent; a
//!   timeout while [`Host::advance_clock`] runs is answered as Envoy does, with its local reply
//!   `504 upstream request timeout`. Finishing a stream cancels its pending calls.
//! - A trap (panic, abort, `proc_exit`, an unimplemented import) is [`HostError::Trap`] with all
//!   logs (a Rust panic message arrives on stderr); the VM is then dead and every later call is
//!   [`HostError::Dead`].
//! - Plugin/VM configuration buffers are readable only during `proxy_on_configure` /
//!   `proxy_on_vm_start`; request bodies are buffered (each `on_request_body` sees all bytes so
//!   far).

mod buffers;
mod error;
mod headers;
mod http;
mod logging;
mod memory;
mod metrics;
mod module;
mod properties;
mod shared;
mod state;
mod timers;
mod types;
mod vm;
mod wasi;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use error::HostError;
pub use module::Abi;
pub use properties::{dotted_key, segments_key};
pub use types::{
    find_header, prometheus_series, Action, CallResponse, Headers, HttpCall, LocalReply, LogEntry,
    LogLevel, LogSource, Metric, MetricKind, Outcome,
};

use state::{CallResponseState, ConfigWindow, HostState, StreamState, ROOT_CONTEXT_ID};
use types::{headers_to_pairs, pairs_to_headers};
use vm::Vm;

/// Environment variable naming the filter module for [`Host::load_default`].
pub const FILTER_WASM_ENV: &str = "KUBELET_AUTHZ_FILTER_WASM";

/// Options for [`Host::load_with`].
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Bytes passed as VM configuration to `proxy_on_vm_start`.
    pub vm_configuration: Vec<u8>,
    /// Log lines below this level are dropped (default `Trace`: keep everything).
    pub log_level: LogLevel,
    /// Wall-clock time at which the virtual clock starts (default 2026-01-01T00:00:00Z).
    pub start_time: SystemTime,
    /// Seed for WASI `random_get`.
    pub random_seed: u64,
}

impl Default for HostOptions {
    fn default() -> Self {
        Self {
            vm_configuration: Vec::new(),
            log_level: LogLevel::Trace,
            start_time: UNIX_EPOCH + Duration::from_secs(1_767_225_600),
            random_seed: 0x6b75_6265_6c65_7421,
        }
    }
}

/// One VM running one module, with its root context created and started. Cheap to clone (the
/// clones share the VM); [`Stream`]s hold a clone too.
#[derive(Clone)]
pub struct Host {
    vm: Arc<Mutex<Vm>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host").finish_non_exhaustive()
    }
}

fn to_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

impl Host {
    /// Loads the module at `path` with default options: instantiates it, runs `_initialize`,
    /// creates the root context and calls `proxy_on_vm_start`.
    ///
    /// # Errors
    /// [`HostError::Load`] when the file cannot be compiled or is not proxy-wasm 0.2.x;
    /// [`HostError::Trap`] or [`HostError::VmStart`] when starting fails.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, HostError> {
        Self::load_with(path, HostOptions::default())
    }

    /// [`Host::load`] on [`Host::default_module_path`].
    ///
    /// # Errors
    /// As [`Host::load`]; the load error says how to build the artefact when it is missing.
    pub fn load_default() -> Result<Self, HostError> {
        let path = Self::default_module_path();
        if !path.exists() {
            return Err(HostError::Load {
                path,
                message: format!(
                    "not found: build it with `cargo build -p kubelet-authz-filter --target wasm32-wasip1 --release` or set {FILTER_WASM_ENV}"
                ),
            });
        }
        Self::load(path)
    }

    /// `$KUBELET_AUTHZ_FILTER_WASM`, else `$CARGO_TARGET_DIR` (or the workspace's `target/`)
    /// `/wasm32-wasip1/release/kubelet_authz_filter.wasm`.
    pub fn default_module_path() -> PathBuf {
        if let Some(path) = std::env::var_os(FILTER_WASM_ENV) {
            return PathBuf::from(path);
        }
        let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(
            || {
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("..")
                    .join("target")
            },
            PathBuf::from,
        );
        target
            .join("wasm32-wasip1")
            .join("release")
            .join("kubelet_authz_filter.wasm")
    }

    /// Loads with explicit options.
    ///
    /// # Errors
    /// As [`Host::load`].
    pub fn load_with(path: impl AsRef<Path>, options: HostOptions) -> Result<Self, HostError> {
        let compiled = module::compiled(path.as_ref())?;
        let start = options
            .start_time
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let vm_config_len = to_u32(options.vm_configuration.len());
        let state = HostState::new(
            options.log_level,
            start,
            options.random_seed,
            options.vm_configuration,
        );
        let mut vm = Vm::instantiate(&compiled, state)?;
        let create = vm.exports.on_context_create.clone();
        vm.invoke(
            "proxy_on_context_create",
            ROOT_CONTEXT_ID,
            create,
            (ROOT_CONTEXT_ID, 0),
        )?;
        vm.store.data_mut().config_window = ConfigWindow::Vm;
        let start_fn = vm.exports.on_vm_start.clone();
        let started = vm.invoke(
            "proxy_on_vm_start",
            ROOT_CONTEXT_ID,
            start_fn,
            (ROOT_CONTEXT_ID, vm_config_len),
        );
        vm.store.data_mut().config_window = ConfigWindow::None;
        if started?.unwrap_or(1) == 0 {
            return Err(HostError::VmStart { logs: vm.logs() });
        }
        Ok(Self {
            vm: Arc::new(Mutex::new(vm)),
        })
    }

    fn vm(&self) -> MutexGuard<'_, Vm> {
        self.vm.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Calls `proxy_on_configure` with `config` as the plugin configuration.
    ///
    /// # Errors
    /// [`HostError::Configure`] (with the logs) when the filter returns false; a trap.
    pub fn configure(&self, config: impl AsRef<[u8]>) -> Result<(), HostError> {
        let mut vm = self.vm();
        let config = config.as_ref().to_vec();
        let len = to_u32(config.len());
        vm.store.data_mut().plugin_configuration = config;
        vm.store.data_mut().config_window = ConfigWindow::Plugin;
        let func = vm.exports.on_configure.clone();
        let result = vm.invoke(
            "proxy_on_configure",
            ROOT_CONTEXT_ID,
            func,
            (ROOT_CONTEXT_ID, len),
        );
        vm.store.data_mut().config_window = ConfigWindow::None;
        if result?.unwrap_or(1) == 0 {
            return Err(HostError::Configure { logs: vm.logs() });
        }
        Ok(())
    }

    /// Starts building a request (a new HTTP context).
    pub fn request(&self) -> RequestBuilder {
        RequestBuilder {
            host: self.clone(),
            headers: Vec::new(),
            properties: Vec::new(),
        }
    }

    /// The module's ABI version.
    pub fn abi(&self) -> Abi {
        self.vm().abi
    }

    /// How long compiling the module took (once per process; later hosts reuse it).
    pub fn compile_time(&self) -> Duration {
        self.vm().compile_time
    }

    /// Whether the VM trapped.
    pub fn is_dead(&self) -> bool {
        self.vm().dead.is_some()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.vm().logs()
    }

    /// Every log line so far, removing them from the host.
    pub fn take_logs(&self) -> Vec<LogEntry> {
        let mut vm = self.vm();
        vm.store.data_mut().flush_stdio();
        std::mem::take(&mut vm.store.data_mut().logs)
    }

    /// Whether any log line contains `needle`.
    pub fn logs_contain(&self, needle: &str) -> bool {
        self.logs().iter().any(|e| e.message.contains(needle))
    }

    /// Callouts dispatched and not answered yet, in token order.
    pub fn pending_calls(&self) -> Vec<HttpCall> {
        self.vm()
            .store
            .data()
            .pending_calls
            .values()
            .cloned()
            .collect()
    }

    /// Every callout dispatched so far, in order (answered or not).
    pub fn calls(&self) -> Vec<HttpCall> {
        self.vm().store.data().call_history.clone()
    }

    /// Answers callout `token` with `status`, extra headers and body.
    ///
    /// # Errors
    /// [`HostError::UnknownCall`] when not pending; a trap in `proxy_on_http_call_response`.
    pub fn reply_call<K: AsRef<str>, V: AsRef<str>>(
        &self,
        token: u32,
        status: u16,
        headers: &[(K, V)],
        body: impl Into<Vec<u8>>,
    ) -> Result<(), HostError> {
        self.reply_call_with(token, CallResponse::new(status, headers, body))
    }

    /// Answers callout `token` with a full response (headers as given; include `:status`).
    ///
    /// # Errors
    /// As [`Host::reply_call`].
    pub fn reply_call_with(&self, token: u32, response: CallResponse) -> Result<(), HostError> {
        self.vm().answer_call(token, Some(response))
    }

    /// Fails callout `token` (a reset): `proxy_on_http_call_response` with no headers.
    ///
    /// # Errors
    /// As [`Host::reply_call`].
    pub fn fail_call(&self, token: u32) -> Result<(), HostError> {
        self.vm().answer_call(token, None)
    }

    /// Moves the virtual clock forward, firing `proxy_on_tick` once per elapsed tick period and
    /// failing callouts whose timeout expires, in time order.
    ///
    /// # Errors
    /// A trap in a fired callback.
    pub fn advance_clock(&self, by: Duration) -> Result<(), HostError> {
        self.vm().advance_clock(by)
    }

    /// Calls `proxy_on_tick` now, without moving the clock.
    ///
    /// # Errors
    /// A trap.
    pub fn tick(&self) -> Result<(), HostError> {
        let mut vm = self.vm();
        let func = vm.exports.on_tick.clone();
        vm.invoke("proxy_on_tick", ROOT_CONTEXT_ID, func, ROOT_CONTEXT_ID)?;
        Ok(())
    }

    /// The tick period the filter set (`None`: no ticks).
    pub fn tick_period(&self) -> Option<Duration> {
        self.vm().store.data().tick_period
    }

    /// Virtual time since the host started.
    pub fn elapsed(&self) -> Duration {
        self.vm().store.data().elapsed
    }

    /// Virtual wall-clock time.
    pub fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_nanos(self.vm().store.data().now_unix_nanos())
    }

    /// A counter's or gauge's value (histograms: number of samples).
    pub fn metric(&self, name: &str) -> Option<i64> {
        self.vm()
            .store
            .data()
            .metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, m)| m.value)
    }

    /// Every metric by name.
    pub fn metrics(&self) -> BTreeMap<String, Metric> {
        self.vm().store.data().metrics.iter().cloned().collect()
    }

    /// Every metric by the series Envoy's `/stats/prometheus` prints for it
    /// ([`prometheus_series`]: the shipped bootstraps' tag extraction).
    pub fn prometheus(&self) -> BTreeMap<String, Metric> {
        self.vm()
            .store
            .data()
            .metrics
            .iter()
            .map(|(n, m)| (prometheus_series(n), m.clone()))
            .collect()
    }

    /// A counter's value by its Prometheus series, e.g.
    /// `kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}` (histograms: the
    /// number of samples, as `_count`).
    pub fn series(&self, series: &str) -> Option<i64> {
        self.vm()
            .store
            .data()
            .metrics
            .iter()
            .find(|(n, _)| prometheus_series(n) == series)
            .map(|(_, m)| m.value)
    }

    /// The metric hostcalls (`proxy_define_metric`, `proxy_increment_metric`,
    /// `proxy_record_metric`, `proxy_get_metric`) made so far, by `(callback, hostcall)`, the
    /// callback being the export the host entered (`proxy_on_request_headers`, `proxy_on_tick`...).
    pub fn metric_calls(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.vm().store.data().metric_calls.clone()
    }

    /// The clock reads (`proxy_get_current_time_nanoseconds`) made so far, by the callback the
    /// host entered.
    pub fn clock_reads(&self) -> BTreeMap<&'static str, u64> {
        self.vm().store.data().clock_reads.clone()
    }

    /// A shared-data value.
    pub fn shared_data(&self, key: &str) -> Option<Vec<u8>> {
        self.vm()
            .store
            .data()
            .shared
            .get(key.as_bytes())
            .map(|e| e.value.clone())
    }

    /// Writes shared data (as another VM would; bumps the CAS).
    pub fn set_shared_data(&self, key: &str, value: impl Into<Vec<u8>>) {
        let mut vm = self.vm();
        // A zero CAS never mismatches.
        let _ = shared::store(
            vm.store.data_mut(),
            key.as_bytes().to_vec(),
            value.into(),
            0,
        );
    }

    /// Sets a VM-wide property (seen by every context), dotted path (`"plugin_name"`).
    pub fn set_property(&self, path: &str, value: impl Into<Vec<u8>>) {
        self.set_property_key(dotted_key(path), value);
    }

    /// Sets a VM-wide property by ABI key (see [`segments_key`]).
    pub fn set_property_key(&self, key: Vec<u8>, value: impl Into<Vec<u8>>) {
        self.vm()
            .store
            .data_mut()
            .vm_properties
            .insert(key, value.into());
    }

    /// How many times the filter called `proxy_done`.
    pub fn done_calls(&self) -> u32 {
        self.vm().store.data().done_calls
    }
}

impl Vm {
    fn answer_call(&mut self, token: u32, response: Option<CallResponse>) -> Result<(), HostError> {
        self.check_alive()?;
        let call = self
            .store
            .data_mut()
            .pending_calls
            .remove(&token)
            .ok_or(HostError::UnknownCall(token))?;
        let (headers, body, trailers) = match response {
            Some(r) => {
                let mut headers = headers_to_pairs(&r.headers);
                headers.extend(r.raw_headers);
                let state = CallResponseState {
                    headers,
                    body: r.body,
                    trailers: headers_to_pairs(&r.trailers),
                };
                let sizes = (
                    to_u32(state.headers.len()),
                    to_u32(state.body.len()),
                    to_u32(state.trailers.len()),
                );
                self.store.data_mut().call_response = Some(state);
                sizes
            }
            None => (0, 0, 0),
        };
        let func = self.exports.on_http_call_response.clone();
        let result = self.invoke(
            "proxy_on_http_call_response",
            call.context_id,
            func,
            (call.context_id, token, headers, body, trailers),
        );
        self.store.data_mut().call_response = None;
        result.map(|_| ())
    }

    fn advance_clock(&mut self, by: Duration) -> Result<(), HostError> {
        self.check_alive()?;
        let target = self.store.data().elapsed.saturating_add(by);
        loop {
            let state = self.store.data();
            let tick = state.next_tick.filter(|t| *t <= target);
            let timeout = state
                .pending_calls
                .values()
                .filter(|c| !c.timeout.is_zero())
                .map(|c| (c.dispatched_at.saturating_add(c.timeout), c.token))
                .filter(|(deadline, _)| *deadline <= target)
                .min();
            match (tick, timeout) {
                (Some(at), t) if t.is_none_or(|(deadline, _)| at <= deadline) => {
                    let state = self.store.data_mut();
                    state.elapsed = at;
                    state.next_tick = state.tick_period.map(|p| at.saturating_add(p));
                    let func = self.exports.on_tick.clone();
                    self.invoke("proxy_on_tick", ROOT_CONTEXT_ID, func, ROOT_CONTEXT_ID)?;
                }
                (_, Some((deadline, token))) => {
                    self.store.data_mut().elapsed = deadline;
                    // As Envoy 1.40 answers a callout whose timeout fired: its router's local
                    // reply (tests/tests/hardening_retries.rs observes it through Envoy).
                    let timed_out = CallResponse::new(
                        504,
                        &[("content-type", "text/plain")],
                        "upstream request timeout",
                    );
                    self.answer_call(token, Some(timed_out))?;
                }
                _ => break,
            }
        }
        self.store.data_mut().elapsed = target;
        Ok(())
    }
}

/// Builds a request; [`RequestBuilder::send_headers`] creates the HTTP context and runs
/// `proxy_on_request_headers`.
#[derive(Debug)]
#[must_use = "call send_headers to run the filter"]
pub struct RequestBuilder {
    host: Host,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    properties: Vec<(Vec<u8>, Vec<u8>)>,
}

impl RequestBuilder {
    /// Adds a request header (name lower-cased, as Envoy's codecs do; repeats allowed).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((
            name.to_ascii_lowercase().into_bytes(),
            value.as_bytes().to_vec(),
        ));
        self
    }

    /// Adds a request header as raw bytes: any byte in the name or the value, as Envoy's codecs
    /// pass obs-text on (ASCII letters of the name lower-cased, as Envoy does).
    pub fn header_bytes(mut self, name: &[u8], value: &[u8]) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_vec()));
        self
    }

    /// Adds several headers.
    pub fn headers<K: AsRef<str>, V: AsRef<str>>(mut self, headers: &[(K, V)]) -> Self {
        self.headers.extend(headers_to_pairs(headers));
        self
    }

    /// Sets `:method`.
    pub fn method(self, method: &str) -> Self {
        self.header(":method", method)
    }

    /// Sets `:path`.
    pub fn path(self, path: &str) -> Self {
        self.header(":path", path)
    }

    /// Sets `:authority`.
    pub fn authority(self, authority: &str) -> Self {
        self.header(":authority", authority)
    }

    /// Sets a stream property by dotted path, raw bytes (`"connection.mtls", [1]`,
    /// `"source.address", "10.0.0.1:1234"`).
    pub fn property(mut self, path: &str, value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((dotted_key(path), value.into()));
        self
    }

    /// Sets a stream property by explicit segments (for segments containing dots).
    pub fn property_segments(mut self, segments: &[&str], value: impl Into<Vec<u8>>) -> Self {
        self.properties.push((segments_key(segments), value.into()));
        self
    }

    /// Sets a boolean property (one byte 0/1, as Envoy serializes it).
    pub fn property_bool(self, path: &str, value: bool) -> Self {
        self.property(path, [u8::from(value)])
    }

    /// Creates the context and calls `proxy_on_request_headers`.
    ///
    /// # Errors
    /// A trap (or a dead VM).
    pub fn send_headers(self, end_of_stream: bool) -> Result<Stream, HostError> {
        let Self {
            host,
            headers,
            properties,
        } = self;
        let id = {
            let mut vm = host.vm();
            vm.check_alive()?;
            let state = vm.store.data_mut();
            let id = state.next_context_id;
            state.next_context_id = id.saturating_add(1);
            let count = to_u32(headers.len());
            state.streams.insert(
                id,
                StreamState {
                    request_headers: headers,
                    properties: properties.into_iter().collect(),
                    ..StreamState::default()
                },
            );
            let create = vm.exports.on_context_create.clone();
            vm.invoke("proxy_on_context_create", id, create, (id, ROOT_CONTEXT_ID))?;
            let func = vm.exports.on_request_headers.clone();
            let action = vm
                .invoke(
                    "proxy_on_request_headers",
                    id,
                    func,
                    (id, count, u32::from(end_of_stream)),
                )?
                .unwrap_or(0);
            if let Some(stream) = vm.store.data_mut().streams.get_mut(&id) {
                stream.request_action = Some(action == 0);
            }
            id
        };
        Ok(Stream { host, id })
    }
}

/// One HTTP stream (context) of a [`Host`].
#[derive(Debug, Clone)]
pub struct Stream {
    host: Host,
    id: u32,
}

impl Stream {
    /// The context id.
    pub fn id(&self) -> u32 {
        self.id
    }

    fn read<T>(&self, f: impl FnOnce(&StreamState) -> T) -> Option<T> {
        self.host.vm().store.data().streams.get(&self.id).map(f)
    }

    /// The request path's state: `Continue` when the last callback returned it or the filter
    /// resumed the request since.
    pub fn action(&self) -> Action {
        match self.read(|s| s.request_action).flatten() {
            Some(true) => Action::Continue,
            _ => Action::Pause,
        }
    }

    /// The response path's state, likewise.
    pub fn response_action(&self) -> Action {
        match self.read(|s| s.response_action).flatten() {
            Some(true) => Action::Continue,
            _ => Action::Pause,
        }
    }

    /// Where the request stands: reset, answered locally, forwarded, or paused.
    pub fn outcome(&self) -> Outcome {
        let summary = self.read(|s| (s.reset, s.local_reply.clone(), s.request_action));
        match summary {
            Some((true, _, _)) => Outcome::Reset,
            Some((_, Some(reply), _)) => Outcome::Replied(reply),
            Some((_, None, Some(true))) => Outcome::Forwarded,
            _ => Outcome::Paused,
        }
    }

    /// The local reply, if the filter sent one.
    pub fn local_reply(&self) -> Option<LocalReply> {
        self.read(|s| s.local_reply.clone()).flatten()
    }

    /// The request headers as the filter left them (what would go upstream).
    pub fn forwarded_headers(&self) -> Headers {
        self.read(|s| pairs_to_headers(&s.request_headers))
            .unwrap_or_default()
    }

    /// The request headers as the filter left them, as raw bytes.
    pub fn forwarded_pairs(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.read(|s| s.request_headers.clone()).unwrap_or_default()
    }

    /// One request header as the filter left it.
    pub fn request_header(&self, name: &str) -> Option<String> {
        find_header(&self.forwarded_headers(), name).map(str::to_owned)
    }

    /// The request body as the filter left it.
    pub fn request_body(&self) -> Vec<u8> {
        self.read(|s| s.request_body.clone()).unwrap_or_default()
    }

    /// The response headers as the filter left them.
    pub fn response_headers(&self) -> Headers {
        self.read(|s| s.response_headers.as_ref().map(pairs_to_headers))
            .flatten()
            .unwrap_or_default()
    }

    /// The response body as the filter left it.
    pub fn response_body(&self) -> Vec<u8> {
        self.read(|s| s.response_body.clone()).unwrap_or_default()
    }

    /// A stream property (set by the test or by the filter), dotted path.
    pub fn property(&self, path: &str) -> Option<Vec<u8>> {
        let key = dotted_key(path);
        self.read(|s| s.properties.get(&key).cloned()).flatten()
    }

    /// Log lines written while this context was effective.
    pub fn logs(&self) -> Vec<LogEntry> {
        self.host
            .logs()
            .into_iter()
            .filter(|e| e.context_id == self.id)
            .collect()
    }

    /// Callouts this context dispatched (answered or not).
    pub fn calls(&self) -> Vec<HttpCall> {
        self.host
            .calls()
            .into_iter()
            .filter(|c| c.context_id == self.id)
            .collect()
    }

    /// The host this stream belongs to.
    pub fn host(&self) -> &Host {
        &self.host
    }

    fn with_live<T>(
        &self,
        f: impl FnOnce(&mut Vm, &mut StreamState) -> T,
    ) -> Result<(T, MutexGuard<'_, Vm>), HostError> {
        let mut vm = self.host.vm();
        vm.check_alive()?;
        let mut stream = vm
            .store
            .data_mut()
            .streams
            .remove(&self.id)
            .filter(|s| !s.finished)
            .ok_or(HostError::StreamFinished(self.id))?;
        let value = f(&mut vm, &mut stream);
        vm.store.data_mut().streams.insert(self.id, stream);
        Ok((value, vm))
    }

    fn record(&self, response: bool, action: Option<u32>) -> Action {
        let action = Action::from_abi(action.unwrap_or(0));
        let mut vm = self.host.vm();
        if let Some(stream) = vm.store.data_mut().streams.get_mut(&self.id) {
            let slot = if response {
                &mut stream.response_action
            } else {
                &mut stream.request_action
            };
            *slot = Some(action == Action::Continue);
        }
        action
    }

    /// Sends a request body chunk: `proxy_on_request_body` with the total buffered size.
    ///
    /// # Errors
    /// A trap, or a finished stream.
    pub fn send_body(
        &self,
        chunk: impl AsRef<[u8]>,
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let (size, mut vm) = self.with_live(|_, s| {
            s.request_body.extend_from_slice(chunk.as_ref());
            to_u32(s.request_body.len())
        })?;
        let func = vm.exports.on_request_body.clone();
        let action = vm.invoke(
            "proxy_on_request_body",
            self.id,
            func,
            (self.id, size, u32::from(end_of_stream)),
        )?;
        drop(vm);
        Ok(self.record(false, action))
    }

    /// Sends request trailers: `proxy_on_request_trailers`.
    ///
    /// # Errors
    /// A trap, or a finished stream.
    pub fn send_trailers<K: AsRef<str>, V: AsRef<str>>(
        &self,
        trailers: &[(K, V)],
    ) -> Result<Action, HostError> {
        let pairs = headers_to_pairs(trailers);
        let count = to_u32(pairs.len());
        let ((), mut vm) = self.with_live(|_, s| s.request_trailers = Some(pairs))?;
        let func = vm.exports.on_request_trailers.clone();
        let action = vm.invoke("proxy_on_request_trailers", self.id, func, (self.id, count))?;
        drop(vm);
        Ok(self.record(false, action))
    }

    /// Sends upstream response headers (include `:status`): `proxy_on_response_headers`.
    ///
    /// # Errors
    /// A trap, or a finished stream.
    pub fn send_response_headers<K: AsRef<str>, V: AsRef<str>>(
        &self,
        headers: &[(K, V)],
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let pairs = headers_to_pairs(headers);
        let count = to_u32(pairs.len());
        let ((), mut vm) = self.with_live(|_, s| s.response_headers = Some(pairs))?;
        let func = vm.exports.on_response_headers.clone();
        let action = vm.invoke(
            "proxy_on_response_headers",
            self.id,
            func,
            (self.id, count, u32::from(end_of_stream)),
        )?;
        drop(vm);
        Ok(self.record(true, action))
    }

    /// Sends upstream response trailers: `proxy_on_response_trailers`.
    ///
    /// # Errors
    /// A trap, or a finished stream.
    pub fn send_response_trailers<K: AsRef<str>, V: AsRef<str>>(
        &self,
        trailers: &[(K, V)],
    ) -> Result<Action, HostError> {
        let pairs = headers_to_pairs(trailers);
        let count = to_u32(pairs.len());
        let ((), mut vm) = self.with_live(|_, s| s.response_trailers = Some(pairs))?;
        let func = vm.exports.on_response_trailers.clone();
        let action = vm.invoke(
            "proxy_on_response_trailers",
            self.id,
            func,
            (self.id, count),
        )?;
        drop(vm);
        Ok(self.record(true, action))
    }

    /// Sends a response body chunk: `proxy_on_response_body` with the total buffered size.
    ///
    /// # Errors
    /// A trap, or a finished stream.
    pub fn send_response_body(
        &self,
        chunk: impl AsRef<[u8]>,
        end_of_stream: bool,
    ) -> Result<Action, HostError> {
        let (size, mut vm) = self.with_live(|_, s| {
            s.response_body.extend_from_slice(chunk.as_ref());
            to_u32(s.response_body.len())
        })?;
        let func = vm.exports.on_response_body.clone();
        let action = vm.invoke(
            "proxy_on_response_body",
            self.id,
            func,
            (self.id, size, u32::from(end_of_stream)),
        )?;
        drop(vm);
        Ok(self.record(true, action))
    }

    /// Ends the stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`; its pending callouts
    /// are cancelled (as Envoy does when a context goes away).
    ///
    /// # Errors
    /// A trap, or an already finished stream.
    pub fn finish(self) -> Result<(), HostError> {
        let ((), mut vm) = self.with_live(|_, _| ())?;
        let id = self.id;
        let done = vm.exports.on_done.clone();
        vm.invoke("proxy_on_done", id, done, id)?;
        let log = vm.exports.on_log.clone();
        vm.invoke("proxy_on_log", id, log, id)?;
        let delete = vm.exports.on_delete.clone();
        vm.invoke("proxy_on_delete", id, delete, id)?;
        let state = vm.store.data_mut();
        state.pending_calls.retain(|_, call| call.context_id != id);
        if let Some(stream) = state.streams.get_mut(&id) {
            stream.finished = true;
        }
        Ok(())
    }
}
