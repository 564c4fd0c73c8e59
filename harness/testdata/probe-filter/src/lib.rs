//! Test-only proxy-wasm module for the harness host's tests. Behaviour per request is chosen by the
//! `x-probe` request header; each mode exercises one hostcall family and reports what it saw in
//! request headers (which the test reads back as the forwarded headers) or logs.
#![forbid(unsafe_code)]

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, UNIX_EPOCH};

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Trace);
    proxy_wasm::set_root_context(|_| Box::new(Root { ticks: 0 }));
}}

thread_local! {
    static WAITERS: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
    static METRICS: RefCell<Option<(u32, u32, u32)>> = const { RefCell::new(None) };
}

fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn add_header(name: &str, value: &str) {
    let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, name, value);
}

struct Root {
    ticks: u64,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::VmConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&config).into_owned();
        log(LogLevel::Info, &format!("vm_start config={text}"));
        text != "fail"
    }

    fn on_configure(&mut self, size: usize) -> bool {
        let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let text = String::from_utf8_lossy(&config).into_owned();
        for item in text.split(';').filter(|s| !s.is_empty()) {
            let (key, value) = item.split_once('=').unwrap_or((item, ""));
            match key {
                "tick_ms" => {
                    let ms = value.parse().unwrap_or(1000);
                    let _ = hostcalls::set_tick_period(Duration::from_millis(ms));
                }
                "panic" => panic!("configure panic requested"),
                _ => {
                    log(
                        LogLevel::Error,
                        &format!("invalid configuration: unknown field `{key}`"),
                    );
                    return false;
                }
            }
        }
        let ids = (
            hostcalls::define_metric(MetricType::Counter, "probe_requests").unwrap_or(0),
            hostcalls::define_metric(MetricType::Gauge, "probe_gauge").unwrap_or(0),
            hostcalls::define_metric(MetricType::Histogram, "probe_hist").unwrap_or(0),
        );
        METRICS.with(|m| *m.borrow_mut() = Some(ids));
        let _ = hostcalls::set_shared_data("probe/config", Some(&config), None);
        log(LogLevel::Info, "configured");
        true
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        if let Ok(id) = hostcalls::define_metric(MetricType::Counter, "probe_ticks") {
            let _ = hostcalls::increment_metric(id, 1);
        }
        let _ = hostcalls::set_shared_data(
            "probe/ticks",
            Some(self.ticks.to_string().as_bytes()),
            None,
        );
        log(LogLevel::Debug, &format!("tick {}", self.ticks));
    }

    fn on_queue_ready(&mut self, queue_id: u32) {
        while let Ok(Some(item)) = hostcalls::dequeue_shared_queue(queue_id) {
            log(
                LogLevel::Info,
                &format!("queue {queue_id} item {}", String::from_utf8_lossy(&item)),
            );
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Probe {
            id: context_id,
            mode: String::new(),
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Probe {
    id: u32,
    mode: String,
}

impl Probe {
    fn dispatch(&self, with_authority: bool) -> Result<u32, proxy_wasm::types::Status> {
        let timeout_ms = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-timeout-ms")
            .ok()
            .flatten()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5000);
        let id = self.id.to_string();
        let mut headers = vec![
            (":method", "POST"),
            (":path", "/check"),
            ("x-from", id.as_str()),
        ];
        if with_authority {
            headers.push((":authority", "authz.local"));
        }
        hostcalls::dispatch_http_call(
            "authz-cluster",
            headers,
            Some(b"ping"),
            vec![("x-trailer", "t")],
            Duration::from_millis(timeout_ms),
        )
    }
}

impl Context for Probe {
    fn on_http_call_response(&mut self, token: u32, nh: usize, body_size: usize, nt: usize) {
        let headers = hostcalls::get_map(MapType::HttpCallResponseHeaders).unwrap_or_default();
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten();
        let body = hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        let trailers = hostcalls::get_map(MapType::HttpCallResponseTrailers).unwrap_or_default();
        let body = String::from_utf8_lossy(&body).into_owned();
        log(
            LogLevel::Info,
            &format!(
                "call response token={token} nh={nh} pairs={} body={body} nt={nt}/{} status={status:?}",
                headers.len(),
                trailers.len()
            ),
        );
        match status.as_deref() {
            None => {
                let _ = hostcalls::send_http_response(503, vec![], Some(b"callout failed"));
            }
            Some("200") => {
                add_header("x-call-status", "200");
                add_header("x-call-body", &body);
                add_header("x-call-trailers", &trailers.len().to_string());
                let _ = hostcalls::resume_http_request();
                for waiter in WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut())) {
                    if hostcalls::set_effective_context(waiter).is_ok() {
                        add_header("x-woken-by", &self.id.to_string());
                        let _ = hostcalls::resume_http_request();
                    }
                }
                let _ = hostcalls::set_effective_context(self.id);
            }
            Some(other) => {
                let _ = hostcalls::send_http_response(
                    403,
                    vec![("x-upstream-status", other)],
                    Some(format!("denied: {body}").as_bytes()),
                );
            }
        }
    }

    fn on_done(&mut self) -> bool {
        log(LogLevel::Debug, &format!("on_done {}", self.id));
        true
    }
}

impl HttpContext for Probe {
    fn on_http_request_headers(&mut self, num_headers: usize, end_of_stream: bool) -> Action {
        self.mode = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-probe")
            .ok()
            .flatten()
            .unwrap_or_default();
        if let Some((counter, _, _)) = METRICS.with(|m| *m.borrow()) {
            let _ = hostcalls::increment_metric(counter, 1);
        }
        log(
            LogLevel::Info,
            &format!(
                "request headers n={num_headers} eos={end_of_stream} mode={}",
                self.mode
            ),
        );
        match self.mode.as_str() {
            "echo" => {
                let props = hostcalls::get_map_value(MapType::HttpRequestHeaders, "x-probe-props")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                for path in props.split(',').filter(|p| !p.is_empty()) {
                    let value = match hostcalls::get_property(path.split('.').collect()) {
                        Ok(Some(v)) => hex(&v),
                        Ok(None) => String::from("absent"),
                        Err(status) => format!("error {status:?}"),
                    };
                    add_header(&format!("x-prop-{path}"), &value);
                }
                let _ = hostcalls::remove_map_value(MapType::HttpRequestHeaders, "x-remove-me");
                let _ = hostcalls::set_map_value(
                    MapType::HttpRequestHeaders,
                    "x-replace",
                    Some("replaced"),
                );
                let _ = hostcalls::add_map_value(MapType::HttpRequestHeaders, "X-Added", "1");
                let case = hostcalls::get_map_value(MapType::HttpRequestHeaders, "X-PROBE")
                    .ok()
                    .flatten()
                    .unwrap_or_default();
                add_header("x-case", &case);
                let count = hostcalls::get_map(MapType::HttpRequestHeaders)
                    .map(|m| m.len())
                    .unwrap_or(0);
                add_header("x-count", &count.to_string());
                let response = hostcalls::get_map(MapType::HttpResponseHeaders)
                    .map(|m| m.len())
                    .unwrap_or(99);
                add_header("x-response-pairs", &response.to_string());
                Action::Continue
            }
            "setmap" => {
                let _ = hostcalls::set_map(
                    MapType::HttpRequestHeaders,
                    vec![(":method", "GET"), (":path", "/replaced"), ("X-Only", "1")],
                );
                Action::Continue
            }
            "call" => match self.dispatch(true) {
                Ok(token) => {
                    log(LogLevel::Debug, &format!("dispatched token={token}"));
                    Action::Pause
                }
                Err(status) => {
                    let _ = hostcalls::send_http_response(
                        500,
                        vec![],
                        Some(format!("dispatch failed: {status:?}").as_bytes()),
                    );
                    Action::Pause
                }
            },
            "badcall" => {
                let result = self.dispatch(false);
                add_header("x-dispatch", &format!("{result:?}"));
                Action::Continue
            }
            "wait" => {
                WAITERS.with(|w| w.borrow_mut().push(self.id));
                Action::Pause
            }
            "deny" => {
                let _ = hostcalls::send_http_response(
                    403,
                    vec![("x-denied", "probe")],
                    Some(b"denied by probe"),
                );
                Action::Pause
            }
            "panic" => panic!("probe panicked on purpose"),
            "exit" => std::process::exit(3),
            "reset" => {
                let _ = hostcalls::reset_http_request();
                Action::Pause
            }
            "metrics" => {
                if let Some((counter, gauge, hist)) = METRICS.with(|m| *m.borrow()) {
                    let _ = hostcalls::increment_metric(counter, 2);
                    let _ = hostcalls::record_metric(gauge, 7);
                    let _ = hostcalls::increment_metric(gauge, -3);
                    let _ = hostcalls::record_metric(hist, 42);
                    let read = hostcalls::get_metric(counter).map_or(-1, |v| v as i64);
                    add_header("x-counter", &read.to_string());
                    let gauge = hostcalls::get_metric(gauge).map_or(-1, |v| v as i64);
                    add_header("x-gauge", &gauge.to_string());
                    add_header("x-hist-get", &format!("{:?}", hostcalls::get_metric(hist)));
                    add_header(
                        "x-negative-counter",
                        &format!("{:?}", hostcalls::increment_metric(counter, -1)),
                    );
                    let again = hostcalls::define_metric(MetricType::Counter, "probe_requests");
                    add_header("x-redefine-same", &(again == Ok(counter)).to_string());
                }
                Action::Continue
            }
            "shared" => {
                let (value, cas) =
                    hostcalls::get_shared_data("probe/shared").unwrap_or((None, None));
                add_header(
                    "x-shared-old",
                    &value.map_or(String::from("none"), |v| {
                        String::from_utf8_lossy(&v).into_owned()
                    }),
                );
                let stale = cas.map_or(12345, |c| c.wrapping_add(100));
                let mismatch =
                    hostcalls::set_shared_data("probe/shared", Some(b"stale"), Some(stale));
                add_header("x-stale-write", &format!("{mismatch:?}"));
                let fresh = hostcalls::set_shared_data("probe/shared", Some(b"fresh"), cas);
                add_header("x-fresh-write", &format!("{fresh:?}"));
                Action::Continue
            }
            "setprop" => {
                let set = hostcalls::set_property(vec!["filter_state", "probe"], Some(b"v1"));
                let back = hostcalls::get_property(vec!["filter_state", "probe"]);
                add_header(
                    "x-prop-back",
                    &format!(
                        "{set:?} {}",
                        back.ok().flatten().map(|v| hex(&v)).unwrap_or_default()
                    ),
                );
                Action::Continue
            }
            "foreign" => {
                let result = hostcalls::call_foreign_function("nope", None);
                add_header("x-foreign", &format!("{result:?}"));
                Action::Continue
            }
            "time" => {
                let host = hostcalls::get_current_time()
                    .ok()
                    .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                let wasi = std::time::SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos());
                let started = std::time::Instant::now();
                add_header("x-time-nanos", &host.to_string());
                add_header("x-wasi-nanos", &wasi.to_string());
                add_header("x-instant", &format!("{:?}", started.elapsed()));
                Action::Continue
            }
            "stdio" => {
                println!("hello stdout");
                eprint!("hello ");
                eprintln!("stderr");
                Action::Continue
            }
            "loglevel" => {
                add_header("x-log-level", &format!("{:?}", hostcalls::get_log_level()));
                Action::Continue
            }
            "queue" => {
                if let Ok(id) = hostcalls::register_shared_queue("probe_q") {
                    let resolved = hostcalls::resolve_shared_queue("", "probe_q");
                    add_header("x-queue", &format!("{id} {resolved:?}"));
                    let _ = hostcalls::enqueue_shared_queue(id, Some(b"item-1"));
                }
                Action::Continue
            }
            "random" => {
                let mut map = HashMap::new();
                map.insert(1u8, 2u8);
                add_header("x-random", &map.len().to_string());
                Action::Continue
            }
            "status" => {
                add_header(
                    "x-grpc-status",
                    &format!("{:?}", hostcalls::get_grpc_status()),
                );
                Action::Continue
            }
            "grpc" => {
                let result = hostcalls::dispatch_grpc_call(
                    "cluster",
                    "svc",
                    "method",
                    vec![],
                    None,
                    Duration::from_secs(1),
                );
                add_header("x-grpc", &format!("{result:?}"));
                Action::Continue
            }
            "effective-bad" => {
                add_header(
                    "x-effective",
                    &format!("{:?}", hostcalls::set_effective_context(9999)),
                );
                Action::Continue
            }
            "config-outside" => {
                let config = hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX);
                add_header("x-config", &format!("{config:?}"));
                Action::Continue
            }
            _ => Action::Continue,
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.mode != "body" {
            return Action::Continue;
        }
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        log(
            LogLevel::Info,
            &format!(
                "body size={body_size} eos={end_of_stream} body={}",
                String::from_utf8_lossy(&body)
            ),
        );
        if !end_of_stream {
            return Action::Pause;
        }
        let upper = body.to_ascii_uppercase();
        let _ = hostcalls::set_buffer(BufferType::HttpRequestBody, 0, body_size, &upper);
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let status = hostcalls::get_map_value(MapType::HttpResponseHeaders, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let _ = hostcalls::add_map_value(MapType::HttpResponseHeaders, "x-probe-response", &status);
        Action::Continue
    }

    fn on_log(&mut self) {
        log(LogLevel::Info, &format!("on_log {}", self.id));
    }
}
