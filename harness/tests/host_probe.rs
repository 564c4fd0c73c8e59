//! Host tests, one family of hostcalls at a time, through the probe module
//! (`harness/testdata/probe-filter`): loading and configuration, header maps, properties, HTTP
//! callouts (reply, failure, timeout, waiters resumed through the effective context), local replies,
//! resets, traps, metrics, shared data and queues, timers and clocks, logging and WASI.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod host_support;

use std::time::{Duration, UNIX_EPOCH};

use host_support::{configured, header, probe, probe_path, probe_with, send};
use kubelet_authz_harness::host::{
    Abi, Action, CallResponse, Host, HostError, HostOptions, LogLevel, LogSource, Outcome,
};

#[test]
fn loads_detects_abi_and_starts_the_vm() {
    let vm = probe_with(HostOptions {
        vm_configuration: b"vm-cfg".to_vec(),
        ..HostOptions::default()
    });
    assert_eq!(vm.abi(), Abi::V0_2_1);
    assert!(vm.logs_contain("vm_start config=vm-cfg"), "{:?}", vm.logs());
    assert!(!vm.is_dead());
}

#[test]
fn vm_start_returning_false_is_an_error() {
    let err = Host::load_with(
        probe_path(),
        HostOptions {
            vm_configuration: b"fail".to_vec(),
            ..HostOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(err, HostError::VmStart { .. }), "{err}");
}

#[test]
fn load_errors_name_the_problem() {
    let err = Host::load("/nonexistent/module.wasm").unwrap_err();
    assert!(matches!(err, HostError::Load { .. }), "{err}");

    let dir = std::env::temp_dir().join(format!("host-probe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let empty = dir.join("empty.wasm");
    std::fs::write(&empty, b"\0asm\x01\0\0\0").unwrap();
    let err = Host::load(&empty).unwrap_err();
    assert!(err.to_string().contains("exports no `memory`"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn configure_false_carries_the_logs() {
    let vm = probe();
    let err = vm.configure("tick_ms=10;bad_field=1").unwrap_err();
    assert!(matches!(err, HostError::Configure { .. }));
    assert!(err.logs_contain("unknown field `bad_field`"), "{err}");
    assert!(err.to_string().contains("unknown field `bad_field`"));
    // The VM is still alive: Envoy would just not start the plugin.
    vm.configure("").unwrap();
}

#[test]
fn configuration_is_readable_only_in_on_configure() {
    let vm = probe();
    vm.configure("tick_ms=500").unwrap();
    assert_eq!(
        vm.shared_data("probe/config").as_deref(),
        Some(&b"tick_ms=500"[..])
    );
    let rq = send(&vm, "config-outside", &[]);
    assert_eq!(header(&rq.forwarded_headers(), "x-config"), "Ok(None)");
}

#[test]
fn header_map_operations() {
    let vm = configured();
    let rq = send(
        &vm,
        "echo",
        &[("X-Remove-Me", "1"), ("x-replace", "a"), ("x-replace", "b")],
    );
    assert_eq!(rq.action(), Action::Continue);
    assert_eq!(rq.outcome(), Outcome::Forwarded);
    let headers = rq.forwarded_headers();
    assert!(rq.request_header("x-remove-me").is_none(), "{headers:?}");
    let replaced: Vec<_> = headers.iter().filter(|(k, _)| k == "x-replace").collect();
    assert_eq!(replaced.len(), 1, "{headers:?}");
    assert_eq!(replaced[0].1, "replaced");
    assert_eq!(header(&headers, "x-added"), "1");
    assert_eq!(header(&headers, "x-case"), "echo");
    // :method :path :authority x-probe x-replace x-added x-case = 7 when counted
    assert_eq!(header(&headers, "x-count"), "7");
    assert_eq!(header(&headers, "x-response-pairs"), "0");
}

#[test]
fn set_header_map_pairs_replaces_everything() {
    let vm = configured();
    let rq = send(&vm, "setmap", &[]);
    let expected: Vec<(String, String)> =
        [(":method", "GET"), (":path", "/replaced"), ("x-only", "1")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
    assert_eq!(rq.forwarded_headers(), expected);
}

#[test]
fn properties_per_stream_derived_and_vm_wide() {
    let vm = configured();
    vm.set_property("plugin_name", "probe");
    let rq = vm
        .request()
        .method("GET")
        .path("/pods?watch=1")
        .authority("node")
        .header("x-probe", "echo")
        .header(
            "x-probe-props",
            "connection.mtls,source.address,request.path,request.url_path,plugin_name,missing.prop",
        )
        .property_bool("connection.mtls", true)
        .property("source.address", "10.0.0.1:1234")
        .send_headers(true)
        .unwrap();
    let headers = rq.forwarded_headers();
    assert_eq!(header(&headers, "x-prop-connection.mtls"), "01");
    assert_eq!(
        header(&headers, "x-prop-source.address"),
        hex(b"10.0.0.1:1234")
    );
    assert_eq!(
        header(&headers, "x-prop-request.path"),
        hex(b"/pods?watch=1")
    );
    assert_eq!(header(&headers, "x-prop-request.url_path"), hex(b"/pods"));
    assert_eq!(header(&headers, "x-prop-plugin_name"), hex(b"probe"));
    assert_eq!(header(&headers, "x-prop-missing.prop"), "absent");

    let rq = send(&vm, "setprop", &[]);
    assert_eq!(
        header(&rq.forwarded_headers(), "x-prop-back"),
        format!("Ok(()) {}", hex(b"v1"))
    );
    assert_eq!(
        rq.property("filter_state.probe").as_deref(),
        Some(&b"v1"[..])
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn http_call_captured_and_answered() {
    let vm = configured();
    let rq = send(&vm, "call", &[]);
    assert_eq!(rq.action(), Action::Pause);
    assert_eq!(rq.outcome(), Outcome::Paused);
    let calls = vm.pending_calls();
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(call.upstream, "authz-cluster");
    assert_eq!(call.method(), Some("POST"));
    assert_eq!(call.path(), Some("/check"));
    assert_eq!(call.authority(), Some("authz.local"));
    assert_eq!(call.header("x-from"), Some(rq.id().to_string().as_str()));
    assert_eq!(call.body_str(), "ping");
    assert_eq!(
        call.trailers,
        vec![("x-trailer".to_string(), "t".to_string())]
    );
    assert_eq!(call.timeout, Duration::from_secs(5));
    assert_eq!(call.context_id, rq.id());

    let mut response = CallResponse::new(200, &[("content-type", "text/plain")], "ok");
    response.trailers = vec![("grpc-status".into(), "0".into())];
    vm.reply_call_with(call.token, response).unwrap();
    assert_eq!(rq.action(), Action::Continue);
    assert_eq!(rq.outcome(), Outcome::Forwarded);
    let headers = rq.forwarded_headers();
    assert_eq!(header(&headers, "x-call-status"), "200");
    assert_eq!(header(&headers, "x-call-body"), "ok");
    assert_eq!(header(&headers, "x-call-trailers"), "1");
    assert!(vm.pending_calls().is_empty());
    assert_eq!(vm.calls().len(), 1);
    assert_eq!(rq.calls().len(), 1);
    assert!(matches!(
        vm.reply_call(call.token, 200, &[("a", "b")], ""),
        Err(HostError::UnknownCall(_))
    ));
}

#[test]
fn http_call_denied_gives_a_local_reply() {
    let vm = configured();
    let rq = send(&vm, "call", &[]);
    let token = vm.pending_calls()[0].token;
    vm.reply_call(token, 401, &[("x-a", "1")], "nope").unwrap();
    let Outcome::Replied(reply) = rq.outcome() else {
        panic!("{:?}", rq.outcome())
    };
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body_str(), "denied: nope");
    assert_eq!(reply.header("x-upstream-status"), Some("401"));
    assert_eq!(rq.action(), Action::Pause);
}

#[test]
fn failed_call_has_no_headers() {
    let vm = configured();
    let rq = send(&vm, "call", &[]);
    vm.fail_call(vm.pending_calls()[0].token).unwrap();
    assert_eq!(rq.local_reply().unwrap().status, 503);
    assert!(
        vm.logs_contain("nh=0 pairs=0 body= nt=0/0 status=None"),
        "{:?}",
        vm.logs()
    );
}

#[test]
fn call_times_out_when_the_clock_passes_its_deadline() {
    let vm = configured();
    let rq = send(&vm, "call", &[("x-timeout-ms", "100")]);
    vm.advance_clock(Duration::from_millis(99)).unwrap();
    assert_eq!(vm.pending_calls().len(), 1);
    vm.advance_clock(Duration::from_millis(1)).unwrap();
    assert!(vm.pending_calls().is_empty());
    // Answered as Envoy 1.40 answers a callout whose timeout fired: its router's local reply.
    assert!(
        vm.logs_contain("nh=2 pairs=2 body=upstream request timeout nt=0/0 status=Some(\"504\")"),
        "{:?}",
        vm.logs()
    );
    assert!(rq.local_reply().is_some());
}

#[test]
fn effective_context_resumes_waiters_from_another_context() {
    let vm = configured();
    let leader = send(&vm, "call", &[]);
    let waiter1 = send(&vm, "wait", &[]);
    let waiter2 = send(&vm, "wait", &[]);
    assert_eq!(waiter1.outcome(), Outcome::Paused);
    vm.reply_call(vm.pending_calls()[0].token, 200, &[("k", "v")], "ok")
        .unwrap();
    for waiter in [&waiter1, &waiter2] {
        assert_eq!(waiter.outcome(), Outcome::Forwarded);
        assert_eq!(
            waiter.request_header("x-woken-by"),
            Some(leader.id().to_string())
        );
        assert!(waiter.request_header("x-call-status").is_none());
    }
    assert_eq!(
        leader.request_header("x-call-status").as_deref(),
        Some("200")
    );
    let rq = send(&vm, "effective-bad", &[]);
    assert_eq!(
        rq.request_header("x-effective").as_deref(),
        Some("Err(BadArgument)")
    );
}

#[test]
fn http_call_without_authority_is_bad_argument() {
    let vm = configured();
    let rq = send(&vm, "badcall", &[]);
    assert_eq!(
        rq.request_header("x-dispatch").as_deref(),
        Some("Err(BadArgument)")
    );
    assert!(vm.pending_calls().is_empty());
    assert!(vm.logs_contain("no `:authority` header"), "{:?}", vm.logs());
}

#[test]
fn local_reply_and_reset() {
    let vm = configured();
    let rq = send(&vm, "deny", &[]);
    let reply = rq.local_reply().unwrap();
    assert_eq!(reply.status, 403);
    assert_eq!(reply.body, b"denied by probe");
    assert_eq!(reply.header("x-denied"), Some("probe"));
    assert_eq!(reply.grpc_status, -1);
    assert_eq!(rq.outcome(), Outcome::Replied(reply));

    let rq = send(&vm, "reset", &[]);
    assert_eq!(rq.outcome(), Outcome::Reset);
}

#[test]
fn guest_panic_is_a_trap_with_the_panic_message_and_kills_the_vm() {
    let vm = configured();
    let err = send_err(&vm, "panic");
    let HostError::Trap { callback, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(callback, "proxy_on_request_headers");
    assert!(err.logs_contain("probe panicked on purpose"), "{err}");
    assert!(vm.is_dead());
    assert!(matches!(send_err(&vm, "echo"), HostError::Dead { .. }));
    assert!(matches!(vm.configure(""), Err(HostError::Dead { .. })));
}

fn send_err(vm: &Host, mode: &str) -> HostError {
    vm.request()
        .path("/")
        .header("x-probe", mode)
        .send_headers(true)
        .unwrap_err()
}

#[test]
fn proc_exit_and_unimplemented_imports_trap_clearly() {
    let vm = configured();
    let err = send_err(&vm, "exit");
    assert!(err.to_string().contains("proc_exit(3)"), "{err}");

    let vm = configured();
    let err = send_err(&vm, "grpc");
    assert!(err.to_string().contains("env.proxy_grpc_call"), "{err}");
}

#[test]
fn metrics() {
    let vm = configured();
    let rq = send(&vm, "metrics", &[]);
    let headers = rq.forwarded_headers();
    assert_eq!(header(&headers, "x-counter"), "3");
    assert_eq!(header(&headers, "x-gauge"), "4");
    assert_eq!(header(&headers, "x-hist-get"), "Err(BadArgument)");
    assert_eq!(header(&headers, "x-negative-counter"), "Err(BadArgument)");
    assert_eq!(header(&headers, "x-redefine-same"), "true");
    send(&vm, "echo", &[]);
    assert_eq!(vm.metric("probe_requests"), Some(4));
    assert_eq!(vm.metric("probe_gauge"), Some(4));
    assert_eq!(vm.metrics()["probe_hist"].samples, vec![42]);
    assert_eq!(vm.metric("nope"), None);
}

#[test]
fn shared_data_with_cas() {
    let vm = configured();
    vm.set_shared_data("probe/shared", "seed");
    let rq = send(&vm, "shared", &[]);
    let headers = rq.forwarded_headers();
    assert_eq!(header(&headers, "x-shared-old"), "seed");
    assert_eq!(header(&headers, "x-stale-write"), "Err(CasMismatch)");
    assert_eq!(header(&headers, "x-fresh-write"), "Ok(())");
    assert_eq!(
        vm.shared_data("probe/shared").as_deref(),
        Some(&b"fresh"[..])
    );
}

#[test]
fn shared_queue_notifies_the_root_context() {
    let vm = configured();
    let rq = send(&vm, "queue", &[]);
    assert_eq!(
        rq.request_header("x-queue").as_deref(),
        Some("1 Ok(Some(1))")
    );
    assert!(vm.logs_contain("queue 1 item item-1"), "{:?}", vm.logs());
}

#[test]
fn ticks_follow_the_virtual_clock() {
    let vm = probe();
    vm.configure("tick_ms=1000").unwrap();
    assert_eq!(vm.tick_period(), Some(Duration::from_secs(1)));
    vm.advance_clock(Duration::from_millis(3500)).unwrap();
    assert_eq!(vm.metric("probe_ticks"), Some(3));
    assert_eq!(vm.shared_data("probe/ticks").as_deref(), Some(&b"3"[..]));
    assert_eq!(vm.elapsed(), Duration::from_millis(3500));
    vm.advance_clock(Duration::from_millis(500)).unwrap();
    assert_eq!(vm.metric("probe_ticks"), Some(4));
    vm.tick().unwrap();
    assert_eq!(vm.metric("probe_ticks"), Some(5));
    assert!(vm.logs_contain("tick 5"));
}

#[test]
fn clocks_are_virtual() {
    let vm = configured();
    vm.advance_clock(Duration::from_secs(2)).unwrap();
    let rq = send(&vm, "time", &[]);
    let expected = vm.now().duration_since(UNIX_EPOCH).unwrap().as_nanos();
    assert_eq!(expected, (1_767_225_600 + 2) * 1_000_000_000);
    let headers = rq.forwarded_headers();
    assert_eq!(header(&headers, "x-time-nanos"), expected.to_string());
    assert_eq!(header(&headers, "x-wasi-nanos"), expected.to_string());
    assert_eq!(header(&headers, "x-instant"), "0ns");
}

#[test]
fn logging_levels_and_stdio() {
    let vm = configured();
    let rq = send(&vm, "stdio", &[]);
    let logs = vm.logs();
    assert!(logs
        .iter()
        .any(|e| e.source == LogSource::Stdout && e.message == "hello stdout"));
    assert!(logs.iter().any(|e| e.source == LogSource::Stderr
        && e.message == "hello stderr"
        && e.level == LogLevel::Error));
    assert!(rq.logs().iter().any(|e| e.message.contains("mode=stdio")));
    let rq = send(&vm, "loglevel", &[]);
    assert_eq!(
        rq.request_header("x-log-level").as_deref(),
        Some("Ok(Trace)")
    );

    let vm = probe_with(HostOptions {
        log_level: LogLevel::Warn,
        ..HostOptions::default()
    });
    vm.configure("").unwrap();
    let rq = send(&vm, "loglevel", &[]);
    assert_eq!(
        rq.request_header("x-log-level").as_deref(),
        Some("Ok(Warn)")
    );
    assert!(!vm.logs_contain("configured"));
    assert!(!vm.take_logs().is_empty() || vm.logs().is_empty());
}

#[test]
fn wasi_random_status_and_foreign_functions() {
    let vm = configured();
    assert_eq!(
        send(&vm, "random", &[])
            .request_header("x-random")
            .as_deref(),
        Some("1")
    );
    assert_eq!(
        send(&vm, "status", &[])
            .request_header("x-grpc-status")
            .as_deref(),
        Some("Ok((0, None))")
    );
    assert_eq!(
        send(&vm, "foreign", &[])
            .request_header("x-foreign")
            .as_deref(),
        Some("Err(NotFound)")
    );
}

#[test]
fn bodies_response_path_and_finish() {
    let vm = configured();
    let rq = vm
        .request()
        .method("POST")
        .path("/run/ns/pod/c")
        .header("x-probe", "body")
        .send_headers(false)
        .unwrap();
    assert_eq!(rq.send_body("abc", false).unwrap(), Action::Pause);
    assert_eq!(rq.send_body("def", true).unwrap(), Action::Continue);
    assert_eq!(rq.request_body(), b"ABCDEF");
    assert!(vm.logs_contain("body size=6 eos=true body=abcdef"));
    assert_eq!(rq.send_trailers(&[("t", "1")]).unwrap(), Action::Continue);

    assert_eq!(
        rq.send_response_headers(&[(":status", "200")], false)
            .unwrap(),
        Action::Continue
    );
    assert_eq!(rq.response_action(), Action::Continue);
    assert_eq!(header(&rq.response_headers(), "x-probe-response"), "200");
    rq.send_response_body("{}", true).unwrap();
    assert_eq!(rq.response_body(), b"{}");

    let again = rq.clone();
    rq.finish().unwrap();
    assert!(vm.logs_contain(&format!("on_done {}", again.id())));
    assert!(vm.logs_contain(&format!("on_log {}", again.id())));
    assert!(matches!(
        again.send_body("x", true),
        Err(HostError::StreamFinished(_))
    ));
}

#[test]
fn finishing_a_stream_cancels_its_calls() {
    let vm = configured();
    let rq = send(&vm, "call", &[]);
    assert_eq!(vm.pending_calls().len(), 1);
    rq.finish().unwrap();
    assert!(vm.pending_calls().is_empty());
    assert_eq!(vm.calls().len(), 1);
}
