//! Properties of the engine on arbitrary input: the configuration parser, the canonical-path
//! check and the whole decision state machine never panic, and what they accept is consistent.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::cache::TtlCache;
use kubelet_authz::config::{parse_go_duration, Config};
use kubelet_authz::decision::{run_to_end, CalloutResponse, Engine, Outcome, Request, Session};
use kubelet_authz::path::canonical_path;
use proptest::prelude::*;

fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("authorization".to_string()),
        Just("x-forwarded-client-cert".to_string()),
        Just("sec-websocket-protocol".to_string()),
        Just("connection".to_string()),
        Just("upgrade".to_string()),
        "[a-z-]{1,12}",
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics(text in ".{0,300}") {
        let _ = Config::from_json(text.as_bytes());
    }

    #[test]
    fn config_errors_always_name_a_field(json in prop::collection::btree_map("[a-zA-Z]{1,12}", "[a-z0-9]{0,6}", 0..4)) {
        let v = serde_json::to_value(&json).unwrap();
        if let Err(e) = Config::from_value(&v) {
            prop_assert!(!e.field.is_empty());
            prop_assert!(e.to_string().starts_with(&e.field));
        }
    }

    #[test]
    fn durations_round_trip_in_go_form(h in 0u64..48, m in 0u64..60, s in 0u64..60, ms in 0u64..1000) {
        let text = format!("{h}h{m}m{s}s{ms}ms");
        let d = parse_go_duration(&text).unwrap();
        prop_assert_eq!(d.as_millis() as u64, ((h * 60 + m) * 60 + s) * 1000 + ms);
    }

    #[test]
    fn canonical_paths_are_fixed_points(target in "[ -~]{0,80}") {
        if let Ok(p) = canonical_path(&target) {
            // What is accepted is already canonical: decoding it again changes nothing (once a
            // decoded `?` or `#`, from `%3F` or `%23`, is encoded again: in a target it would
            // start a query or fragment), and it holds none of the refused shapes.
            let again = p.replace('?', "%3F").replace('#', "%23");
            prop_assert_eq!(canonical_path(&again), Ok(p.clone()));
            prop_assert!(!p.contains("//") && !p.contains('\\'));
            prop_assert!(!p.split('/').any(|s| s == "." || s == ".."));
        }
    }

    #[test]
    fn encoded_query_and_fragment_marks_stay_in_the_path(
        before in "/[a-z]{1,8}",
        mark in prop_oneof![Just(("%3F", '?')), Just(("%3f", '?')), Just(("%23", '#'))],
        after in "[a-z]{0,8}",
    ) {
        // Found by `cargo fuzz run path`: `/pods%3Fx` is the path `/pods?x`, not `/pods`.
        let (encoded, decoded) = mark;
        prop_assert_eq!(
            canonical_path(&format!("{before}{encoded}{after}")),
            Ok(format!("{before}{decoded}{after}"))
        );
    }

    #[test]
    fn cache_never_exceeds_capacity(ops in prop::collection::vec((0u16..64, 0u64..1000, 0u64..100), 0..400), cap in 1usize..16) {
        let mut c = TtlCache::new(cap);
        for (k, now, ttl) in ops {
            c.insert(k, k, now, ttl);
            let _ = c.get(&k, now);
            prop_assert!(c.len() <= cap);
        }
    }

    #[test]
    fn decisions_never_panic_and_never_allow_on_failure(
        method in prop_oneof![Just("GET".to_string()), Just("POST".to_string()), Just("HEAD".to_string()), "[A-Za-z]{1,7}"],
        target in "/[ -~]{0,60}",
        headers in prop::collection::vec((header_name(), "[ -~]{0,60}"), 0..6),
        mtls in any::<bool>(),
        status in prop_oneof![Just(200u16), Just(201), Just(403), Just(429), Just(500)],
        body in prop_oneof![Just(String::new()), Just("{}".to_string()), Just(r#"{"status":{"authenticated":true,"user":{"username":"u"},"allowed":true}}"#.to_string()), ".{0,40}"],
        anonymous in any::<bool>(),
    ) {
        let cfg = Config::from_json(format!(r#"{{"nodeName":"n","authentication":{{"anonymous":{{"enabled":{anonymous}}}}}}}"#).as_bytes()).unwrap();
        let mut e = Engine::new(cfg, [1; 32]);
        let mut req = Request::new(&method, &target);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        req.mtls = mtls;
        let mut s = Session::new(1, req);
        let mut failed_call = false;
        let v = run_to_end(&mut e, &mut s, 0, &mut |_c| {
            if status >= 400 { failed_call = true; }
            CalloutResponse::Http { status, retry_after: None, body: body.clone().into_bytes() }
        });
        if v.outcome == Outcome::Allowed {
            // An allow needs a real answer: anonymous with no callout, or a 2xx review that allowed.
            prop_assert!(!failed_call || v.stale);
            prop_assert!(v.user.is_some());
        }
    }
}
