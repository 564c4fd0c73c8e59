//! The kubelet's webhook clients, as far as one callout's result decides what happens next: use
//! the answer, resend it after the server's `Retry-After`, retry it after the webhook backoff, or
//! fail. Pure: the drivers tell what came back ([`CalloutResult`]), the session keeps the counts.
//!
//! The kubelet's TokenReview and SubjectAccessReview clients are client-go webhooks: a REST client
//! `POST` inside `webhook.WithExponentialBackoff` (500ms, factor 1.5, jitter 0.2, 5 steps) with
//! `DefaultShouldRetry`. DESIGN.md "Behaviour" has the table this module implements:
//!
//! | result | kubelet |
//! | --- | --- |
//! | 2xx, with or without `Retry-After` | used, never retried |
//! | 429 or 5xx with an integer `Retry-After: N` | the REST client waits N s and resends, up to 10 times inside each attempt (`checkWait`) |
//! | 500, 501, 502, 505 and other 5xx (`InternalError`), 504 (`Timeout`), 429 (`TooManyRequests`) | retried (webhook backoff) |
//! | 503 without `Retry-After` (`ServiceUnavailable`) | not retried |
//! | 503 with `Retry-After` once the REST client gave up (`SuggestsClientDelay`) | retried |
//! | other 4xx, 1xx, 3xx | not retried |
//! | connection refused (any dial or TLS failure), client-side timeout | not retried (a `POST` is not resent on a transport error) |
//! | connection reset, EOF, HTTP/2 connection lost | retried (`IsConnectionReset`, `IsHTTP2ConnectionLost`) |

/// Attempts of one callout (`DefaultAuthWebhookRetryBackoff`: Steps 5).
pub const MAX_ATTEMPTS: u32 = 5;
/// First webhook backoff (500ms), growing by 1.5 per attempt, with up to 20% jitter.
pub const BASE_RETRY_DELAY_MS: u64 = 500;
/// The REST client's resends after a `Retry-After` inside one attempt (`maxRetries`, 10).
pub const MAX_RESENDS: u32 = 10;
/// The longest `Retry-After` the filter waits for one resend. The kubelet would wait any number of
/// seconds; a proxy holding a request must not, so a longer one is waited for this long (a
/// documented bound, DESIGN "every queue is bounded").
pub const MAX_RETRY_AFTER_MS: u64 = 10_000;

/// What came back for one HTTP callout, as the driver saw it. The driver owns the wire: it tells
/// the proxy's own answers (Envoy's local 503 `reset reason: connection failure`, its 504
/// `upstream request timeout`) apart from the API server's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CalloutResult {
    /// The API server answered with `status`; `retry_after` is the raw `Retry-After` value.
    Answered {
        /// The HTTP status.
        status: u16,
        /// The `Retry-After` header as sent, when present.
        retry_after: Option<String>,
    },
    /// No connection: refused, unresolvable, TLS handshake failed, no healthy upstream.
    ConnectFailed,
    /// No answer within the callout timeout (the client's own timeout).
    TimedOut,
    /// The connection was reset or closed before a full answer (EOF, RST, HTTP/2 connection lost).
    Reset,
}

/// What to do with a callout's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Use the answer (success, or an answer whose error is final).
    Use,
    /// The REST client's resend inside the same attempt, after this many milliseconds.
    Resend {
        /// Milliseconds to wait (`Retry-After`, bounded by [`MAX_RETRY_AFTER_MS`]).
        after_ms: u64,
    },
    /// A new attempt after the webhook backoff ([`backoff_ms`]).
    Retry,
    /// Give up: the error is final.
    Fail,
}

/// Go's `strconv.Atoi` on a `Retry-After` value: an optional sign and decimal digits, nothing else
/// (an HTTP date or a space is not a number); `None` when it does not parse.
pub fn retry_after_seconds(value: &str) -> Option<i64> {
    let digits = value
        .strip_prefix('+')
        .or_else(|| value.strip_prefix('-'))
        .unwrap_or(value);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse::<i64>().ok()
}

/// The next step after `result`, when `resends` REST-client resends have been made in the current
/// attempt and `attempt` (1-based) is the current webhook attempt.
pub fn next(result: &CalloutResult, resends: u32, attempt: u32) -> Next {
    let (status, retry_after) = match result {
        CalloutResult::Answered {
            status,
            retry_after,
        } => (*status, retry_after.as_deref()),
        CalloutResult::ConnectFailed | CalloutResult::TimedOut => return Next::Fail,
        CalloutResult::Reset => return retry_or_fail(attempt),
    };
    if (200..300).contains(&status) {
        return Next::Use;
    }
    // Go maps every status from 500 up to a server error (`NewGenericServerResponse`).
    let server_error = status >= 500;
    // `checkWait`: 429 and every 5xx can ask for a delay, honoured by the REST client.
    let seconds = retry_after.and_then(retry_after_seconds);
    if status == 429 || server_error {
        if let Some(s) = seconds {
            if resends < MAX_RESENDS {
                let ms = u64::try_from(s)
                    .unwrap_or(0)
                    .saturating_mul(1000)
                    .min(MAX_RETRY_AFTER_MS);
                return Next::Resend { after_ms: ms };
            }
        }
    }
    // `DefaultShouldRetry`: InternalError (500 and every other 5xx but 503), Timeout (504),
    // TooManyRequests (429), or an error that suggests a delay (503 with `Retry-After` seconds).
    let retried = match status {
        429 => true,
        503 => seconds.is_some(),
        _ => server_error,
    };
    if retried {
        retry_or_fail(attempt)
    } else {
        Next::Fail
    }
}

fn retry_or_fail(attempt: u32) -> Next {
    if attempt < MAX_ATTEMPTS {
        Next::Retry
    } else {
        Next::Fail
    }
}

/// The webhook backoff before attempt `attempt + 1`: 500ms × 1.5^(attempt-1), plus up to 20%
/// jitter scaled by `rand` (any `u32`).
pub fn backoff_ms(attempt: u32, rand: u32) -> u64 {
    let mut d = BASE_RETRY_DELAY_MS as f64;
    for _ in 1..attempt {
        d *= 1.5;
    }
    let jitter = 0.2 * f64::from(rand) / f64::from(u32::MAX);
    (d * (1.0 + jitter)) as u64
}

/// The most reviews one request can send: two TokenReviews (the bearer token, then the WebSocket
/// protocol token when the first one errored) and two SubjectAccessReviews (the fine-grained
/// subresource, then `proxy`).
pub const MAX_CALLOUTS_PER_REQUEST: u32 = 4;

/// The worst case of one callout against an API server that keeps asking to be asked again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorstCase {
    /// Requests sent for the one callout (every attempt's first send and every resend).
    pub sends: u32,
    /// How long the callout holds the request, in milliseconds: every send answered just before
    /// the callout timeout, every `Retry-After` at its bound, every backoff at its full jitter.
    pub hold_ms: u64,
}

impl WorstCase {
    /// The same for a whole request ([`MAX_CALLOUTS_PER_REQUEST`] callouts, one after the other).
    pub fn per_request(self) -> WorstCase {
        WorstCase {
            sends: self.sends.saturating_mul(MAX_CALLOUTS_PER_REQUEST),
            hold_ms: self
                .hold_ms
                .saturating_mul(u64::from(MAX_CALLOUTS_PER_REQUEST)),
        }
    }
}

/// The worst case of one callout with the callout timeout `timeout_ms`, computed by running the
/// retry table itself ([`next`], [`backoff_ms`]) against an answer that is resent as long as the
/// table allows (`429` with a `Retry-After` above [`MAX_RETRY_AFTER_MS`]), so the documented bound
/// cannot drift from the rules.
pub fn worst_case(timeout_ms: u64) -> WorstCase {
    let answer = CalloutResult::Answered {
        status: 429,
        retry_after: Some((MAX_RETRY_AFTER_MS / 1000 + 1).to_string()),
    };
    let (mut attempt, mut resends, mut sends, mut hold_ms) = (1u32, 0u32, 0u32, 0u64);
    // Bounded by the table (MAX_ATTEMPTS × (MAX_RESENDS + 1) sends); the guard only makes the loop
    // visibly finite.
    while sends <= MAX_ATTEMPTS.saturating_mul(MAX_RESENDS.saturating_add(1)) {
        sends = sends.saturating_add(1);
        hold_ms = hold_ms.saturating_add(timeout_ms);
        match next(&answer, resends, attempt) {
            Next::Resend { after_ms } => {
                resends = resends.saturating_add(1);
                hold_ms = hold_ms.saturating_add(after_ms);
            }
            Next::Retry => {
                hold_ms = hold_ms.saturating_add(backoff_ms(attempt, u32::MAX));
                attempt = attempt.saturating_add(1);
                resends = 0;
            }
            Next::Use | Next::Fail => break,
        }
    }
    WorstCase { sends, hold_ms }
}
