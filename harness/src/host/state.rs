//! The VM's state, kept in the wasmtime `Store`: contexts, maps, properties, callouts, logs,
//! metrics, shared data, the virtual clock and the deterministic random source. Hostcalls read and
//! write it through `Caller::data_mut`; the test API reads it through the store.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Duration;

use wasmtime::{Memory, TypedFunc};

use super::types::{
    HttpCall, LocalReply, LogEntry, LogLevel, LogSource, Metric, MetricKind, Pairs,
};

/// The root context id the host uses (as Envoy, the first context created).
pub(crate) const ROOT_CONTEXT_ID: u32 = 1;

/// One HTTP stream context.
#[derive(Debug, Default)]
pub(crate) struct StreamState {
    pub request_headers: Pairs,
    pub request_body: Vec<u8>,
    pub request_trailers: Option<Pairs>,
    pub response_headers: Option<Pairs>,
    pub response_body: Vec<u8>,
    pub response_trailers: Option<Pairs>,
    /// Properties set by the test for this stream, or by the filter with `proxy_set_property`.
    pub properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Request path: last callback answer, or `Continue` after `proxy_continue_stream(0)`.
    pub request_action: Option<bool>,
    /// Response path, likewise.
    pub response_action: Option<bool>,
    pub local_reply: Option<LocalReply>,
    pub reset: bool,
    pub finished: bool,
}

/// The callout response visible while `proxy_on_http_call_response` runs.
#[derive(Debug, Default)]
pub(crate) struct CallResponseState {
    pub headers: Pairs,
    pub body: Vec<u8>,
    pub trailers: Pairs,
}

/// A shared-data entry with its compare-and-swap value.
#[derive(Debug)]
pub(crate) struct SharedEntry {
    pub value: Vec<u8>,
    pub cas: u32,
}

/// A shared queue.
#[derive(Debug)]
pub(crate) struct Queue {
    pub vm_id: Vec<u8>,
    pub name: Vec<u8>,
    pub owner_context: u32,
    pub items: VecDeque<Vec<u8>>,
}

/// splitmix64: small, deterministic, good enough for `random_get`.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let bytes = self.next_u64().to_le_bytes();
            for (dst, src) in chunk.iter_mut().zip(bytes) {
                *dst = src;
            }
        }
    }
}

/// Which configuration buffer is readable right now (Envoy only exposes them during the callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ConfigWindow {
    None,
    Vm,
    Plugin,
}

/// Everything the store holds.
pub(crate) struct HostState {
    /// The guest's exported memory (set right after instantiation).
    pub memory: Option<Memory>,
    /// The guest allocator (`proxy_on_memory_allocate` or `malloc`).
    pub alloc: Option<TypedFunc<u32, u32>>,
    /// The context hostcalls apply to (set before each callback, and by
    /// `proxy_set_effective_context`).
    pub current_context: u32,
    /// The guest callback running now (`""` between callbacks).
    pub callback: &'static str,
    /// Metric hostcalls made, by `(callback, hostcall)`.
    pub metric_calls: BTreeMap<(&'static str, &'static str), u64>,
    /// `proxy_get_current_time_nanoseconds` calls by callback (issue 24: one per request).
    pub clock_reads: BTreeMap<&'static str, u64>,
    pub streams: HashMap<u32, StreamState>,
    pub next_context_id: u32,
    pub log_level: LogLevel,
    pub logs: Vec<LogEntry>,
    pub stdout_partial: Vec<u8>,
    pub stderr_partial: Vec<u8>,
    pub vm_configuration: Vec<u8>,
    pub plugin_configuration: Vec<u8>,
    pub config_window: ConfigWindow,
    /// VM-wide properties (any context), keyed by the NUL-joined path.
    pub vm_properties: HashMap<Vec<u8>, Vec<u8>>,
    /// Unix time of the virtual clock's zero, in nanoseconds.
    pub start_unix_nanos: u64,
    /// Virtual time elapsed since start.
    pub elapsed: Duration,
    pub tick_period: Option<Duration>,
    pub next_tick: Option<Duration>,
    pub rng: Rng,
    pub metrics: Vec<(String, Metric)>,
    pub shared: BTreeMap<Vec<u8>, SharedEntry>,
    pub next_cas: u32,
    pub queues: Vec<Queue>,
    /// `(context, queue id)` to notify with `proxy_on_queue_ready` after the current callback.
    pub queue_notifications: Vec<(u32, u32)>,
    pub next_token: u32,
    pub pending_calls: BTreeMap<u32, HttpCall>,
    pub call_history: Vec<HttpCall>,
    pub call_response: Option<CallResponseState>,
    pub done_calls: u32,
}

impl HostState {
    pub fn new(
        log_level: LogLevel,
        start_unix_nanos: u64,
        seed: u64,
        vm_configuration: Vec<u8>,
    ) -> Self {
        Self {
            memory: None,
            alloc: None,
            current_context: ROOT_CONTEXT_ID,
            callback: "",
            metric_calls: BTreeMap::new(),
            clock_reads: BTreeMap::new(),
            streams: HashMap::new(),
            next_context_id: ROOT_CONTEXT_ID.saturating_add(1),
            log_level,
            logs: Vec::new(),
            stdout_partial: Vec::new(),
            stderr_partial: Vec::new(),
            vm_configuration,
            plugin_configuration: Vec::new(),
            config_window: ConfigWindow::None,
            vm_properties: HashMap::new(),
            start_unix_nanos,
            elapsed: Duration::ZERO,
            tick_period: None,
            next_tick: None,
            rng: Rng::new(seed),
            metrics: Vec::new(),
            shared: BTreeMap::new(),
            next_cas: 1,
            queues: Vec::new(),
            queue_notifications: Vec::new(),
            next_token: 1,
            pending_calls: BTreeMap::new(),
            call_history: Vec::new(),
            call_response: None,
            done_calls: 0,
        }
    }

    /// Appends a log line attributed to the current context.
    pub fn log(&mut self, level: LogLevel, source: LogSource, message: String) {
        let context_id = self.current_context;
        self.logs.push(LogEntry {
            level,
            context_id,
            source,
            message,
        });
    }

    /// Logs why the host answered a hostcall with an error status (visible in `vm.logs()`).
    pub fn host_note(&mut self, message: String) {
        self.log(LogLevel::Debug, LogSource::Host, message);
    }

    /// The stream the current context designates, if it is a live stream.
    pub fn current_stream(&mut self) -> Option<&mut StreamState> {
        let id = self.current_context;
        self.streams.get_mut(&id).filter(|stream| !stream.finished)
    }

    /// Virtual wall-clock time in Unix nanoseconds.
    pub fn now_unix_nanos(&self) -> u64 {
        let elapsed = u64::try_from(self.elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.start_unix_nanos.saturating_add(elapsed)
    }

    /// Moves partial stdout/stderr lines into the logs (before handing logs out).
    pub fn flush_stdio(&mut self) {
        for source in [LogSource::Stdout, LogSource::Stderr] {
            let partial = match source {
                LogSource::Stdout => std::mem::take(&mut self.stdout_partial),
                _ => std::mem::take(&mut self.stderr_partial),
            };
            if !partial.is_empty() {
                let level = if source == LogSource::Stdout {
                    LogLevel::Info
                } else {
                    LogLevel::Error
                };
                self.log(
                    level,
                    source,
                    String::from_utf8_lossy(&partial).into_owned(),
                );
            }
        }
    }

    /// Counts a clock read against the callback running now.
    pub fn count_clock_read(&mut self) {
        let n = self.clock_reads.entry(self.callback).or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Counts a metric hostcall against the callback running now.
    pub fn count_metric_call(&mut self, hostcall: &'static str) {
        let n = self
            .metric_calls
            .entry((self.callback, hostcall))
            .or_insert(0);
        *n = n.saturating_add(1);
    }

    /// Looks a metric up by id (ids are index + 1).
    pub fn metric_mut(&mut self, id: u32) -> Option<&mut Metric> {
        let index = usize::try_from(id).ok()?.checked_sub(1)?;
        self.metrics.get_mut(index).map(|(_, metric)| metric)
    }

    /// Defines (or finds) a metric, returning its id; `None` when the name exists with another kind.
    pub fn define_metric(&mut self, kind: MetricKind, name: String) -> Option<u32> {
        if let Some(index) = self.metrics.iter().position(|(n, _)| *n == name) {
            let (_, metric) = self.metrics.get(index)?;
            if metric.kind != kind {
                return None;
            }
            return u32::try_from(index).ok()?.checked_add(1);
        }
        self.metrics.push((
            name,
            Metric {
                kind,
                value: 0,
                samples: Vec::new(),
            },
        ));
        u32::try_from(self.metrics.len()).ok()
    }
}
