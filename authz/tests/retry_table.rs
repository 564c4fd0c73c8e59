//! The retry table of DESIGN.md "Behaviour" (the kubelet's client-go webhook clients), one case per
//! row and status: what a callout's result leads to in `kubelet_authz::webhook::next`.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use kubelet_authz::webhook::{
    backoff_ms, next, retry_after_seconds, CalloutResult, Next, MAX_ATTEMPTS, MAX_RESENDS,
    MAX_RETRY_AFTER_MS,
};
use rstest::rstest;

fn answered(status: u16, retry_after: Option<&str>) -> CalloutResult {
    CalloutResult::Answered {
        status,
        retry_after: retry_after.map(str::to_string),
    }
}

/// First attempt, no resend yet.
#[rstest]
// 2xx, with or without Retry-After: used, never retried.
#[case::created(answered(201, None), Next::Use)]
#[case::ok(answered(200, None), Next::Use)]
#[case::created_with_retry_after(answered(201, Some("1")), Next::Use)]
#[case::ok_with_retry_after(answered(200, Some("5")), Next::Use)]
// InternalError (500 and every other 5xx but 503): retried.
#[case::internal_error(answered(500, None), Next::Retry)]
#[case::not_implemented(answered(501, None), Next::Retry)]
#[case::bad_gateway(answered(502, None), Next::Retry)]
#[case::http_version(answered(505, None), Next::Retry)]
#[case::insufficient_storage(answered(507, None), Next::Retry)]
#[case::status_599(answered(599, None), Next::Retry)]
// Timeout (504) and TooManyRequests (429): retried.
#[case::gateway_timeout(answered(504, None), Next::Retry)]
#[case::too_many_requests(answered(429, None), Next::Retry)]
// 503 without Retry-After (ServiceUnavailable): not retried.
#[case::unavailable(answered(503, None), Next::Fail)]
#[case::unavailable_date_retry_after(
    answered(503, Some("Wed, 21 Oct 2015 07:28:00 GMT")),
    Next::Fail
)]
// 429 or 5xx with an integer Retry-After: the REST client waits N s and resends.
#[case::too_many_retry_after_1(answered(429, Some("1")), Next::Resend { after_ms: 1000 })]
#[case::unavailable_retry_after_2(answered(503, Some("2")), Next::Resend { after_ms: 2000 })]
#[case::internal_retry_after_1(answered(500, Some("1")), Next::Resend { after_ms: 1000 })]
#[case::bad_gateway_retry_after_0(answered(502, Some("0")), Next::Resend { after_ms: 0 })]
#[case::retry_after_plus(answered(429, Some("+3")), Next::Resend { after_ms: 3000 })]
#[case::retry_after_negative(answered(429, Some("-3")), Next::Resend { after_ms: 0 })]
#[case::retry_after_capped(answered(429, Some("3600")), Next::Resend { after_ms: MAX_RETRY_AFTER_MS })]
// Retry-After on other statuses is not read (checkWait: only 429 and 5xx).
#[case::bad_request_retry_after(answered(400, Some("1")), Next::Fail)]
// Other 4xx (and 1xx, 3xx): not retried.
#[case::bad_request(answered(400, None), Next::Fail)]
#[case::unauthorized(answered(401, None), Next::Fail)]
#[case::forbidden(answered(403, None), Next::Fail)]
#[case::not_found(answered(404, None), Next::Fail)]
#[case::conflict(answered(409, None), Next::Fail)]
#[case::redirect(answered(302, None), Next::Fail)]
// Connection refused (any dial or TLS failure) and the client's own timeout: not retried.
#[case::connection_refused(CalloutResult::ConnectFailed, Next::Fail)]
#[case::client_timeout(CalloutResult::TimedOut, Next::Fail)]
// Connection reset, EOF, HTTP/2 connection lost: retried.
#[case::connection_reset(CalloutResult::Reset, Next::Retry)]
fn first_attempt(#[case] result: CalloutResult, #[case] want: Next) {
    assert_eq!(next(&result, 0, 1), want);
}

/// After the last attempt nothing is retried; a Retry-After resend still happens inside it.
#[rstest]
#[case::internal_error(answered(500, None), Next::Fail)]
#[case::too_many_requests(answered(429, None), Next::Fail)]
#[case::reset(CalloutResult::Reset, Next::Fail)]
#[case::created(answered(201, None), Next::Use)]
#[case::too_many_retry_after(answered(429, Some("1")), Next::Resend { after_ms: 1000 })]
fn last_attempt(#[case] result: CalloutResult, #[case] want: Next) {
    assert_eq!(next(&result, 0, MAX_ATTEMPTS), want);
}

/// Once the REST client has resent 10 times, its error goes to the webhook's `DefaultShouldRetry`:
/// 429 (TooManyRequests) and 5xx with a Retry-After (InternalError, or SuggestsClientDelay for 503)
/// are retried with the backoff.
#[rstest]
#[case::too_many_requests(answered(429, Some("1")), Next::Retry)]
#[case::unavailable(answered(503, Some("1")), Next::Retry)]
#[case::internal_error(answered(500, Some("1")), Next::Retry)]
fn after_ten_resends(#[case] result: CalloutResult, #[case] want: Next) {
    assert_eq!(next(&result, MAX_RESENDS, 1), want);
    assert_eq!(
        next(&result, MAX_RESENDS - 1, 1),
        Next::Resend { after_ms: 1000 }
    );
    assert_eq!(next(&result, MAX_RESENDS, MAX_ATTEMPTS), Next::Fail);
}

#[rstest]
#[case("1", Some(1))]
#[case("0", Some(0))]
#[case("+7", Some(7))]
#[case("-2", Some(-2))]
#[case("120", Some(120))]
#[case(" 1", None)]
#[case("1 ", None)]
#[case("1.5", None)]
#[case("", None)]
#[case("+", None)]
#[case("Wed, 21 Oct 2015 07:28:00 GMT", None)]
#[case("99999999999999999999", None)]
fn retry_after_is_go_atoi(#[case] value: &str, #[case] want: Option<i64>) {
    assert_eq!(retry_after_seconds(value), want);
}

#[test]
fn webhook_backoff_is_500ms_times_1_5_with_20_percent_jitter() {
    assert_eq!(
        (1..MAX_ATTEMPTS)
            .map(|a| backoff_ms(a, 0))
            .collect::<Vec<_>>(),
        vec![500, 750, 1125, 1687]
    );
    assert_eq!(backoff_ms(1, u32::MAX), 600);
    assert_eq!(backoff_ms(4, u32::MAX), 2025);
}

/// The worst case DESIGN.md and SECURITY.md state, computed from the table: 5 attempts of 11 sends
/// (10 resends each) per callout, 4 callouts per request; with the default 10 s callout timeout
/// every send may take 10 s and every resend waits the 10 s `Retry-After` bound, plus four
/// backoffs at full jitter (600 + 900 + 1350 + 2025 ms).
#[rstest]
#[case::default_timeout(10_000, 55, 5 * (11 * 10_000 + 10 * 10_000) + 600 + 900 + 1350 + 2025)]
#[case::one_second_timeout(1_000, 55, 5 * (11 * 1_000 + 10 * 10_000) + 600 + 900 + 1350 + 2025)]
#[case::instant_answers(0, 55, 5 * (10 * 10_000) + 600 + 900 + 1350 + 2025)]
fn worst_case_of_one_callout(#[case] timeout_ms: u64, #[case] sends: u32, #[case] hold_ms: u64) {
    use kubelet_authz::webhook::{worst_case, WorstCase};
    let w = worst_case(timeout_ms);
    assert_eq!(w, WorstCase { sends, hold_ms });
    assert_eq!(sends, MAX_ATTEMPTS * (MAX_RESENDS + 1));
}

/// A request: four callouts, 220 reviews (what was measured through Envoy against an API server
/// answering 429 to everything), and with the default timeout over an hour of hold, which only the
/// route's timeout (180 s; 4 h on streaming routes) cuts.
#[test]
fn worst_case_of_one_request() {
    use kubelet_authz::webhook::{worst_case, MAX_CALLOUTS_PER_REQUEST};
    let r = worst_case(10_000).per_request();
    assert_eq!(MAX_CALLOUTS_PER_REQUEST, 4);
    assert_eq!(r.sends, 220);
    assert_eq!(r.hold_ms, 4 * 1_054_875);
    assert!(
        r.hold_ms > 180_000,
        "the ordinary route timeout is what ends it"
    );
}
