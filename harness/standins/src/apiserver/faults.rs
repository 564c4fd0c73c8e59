//! Records of the reviews the stand-in API server answered, and the fault switches tests use to
//! make it misbehave.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One review request the server received, and what it answered.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReviewRecord {
    /// `TokenReview`, `SubjectAccessReview`, `SelfSubjectAccessReview` or `SelfSubjectReview`.
    pub kind: String,
    /// The request body as JSON (a JSON string holding the raw text when it was not JSON).
    pub request: Value,
    /// The response body as JSON; `None` when a fault answered instead.
    pub response: Option<Value>,
    /// The HTTP status answered (0 when the connection was closed or left hanging).
    pub status: u16,
    /// The fault that answered, if any (its `kind` in the fault JSON).
    pub fault: Option<String>,
    /// The authenticated caller's user name.
    pub caller: String,
    /// The credential that authenticated the caller: `X509SHA256=<hex of the certificate's DER>`
    /// or `TokenSHA256=<hex of the bearer token>`.
    #[serde(default)]
    pub caller_credential: String,
    /// When the request was received, RFC 3339 in UTC with milliseconds.
    pub timestamp: String,
    /// The same instant in milliseconds since the Unix epoch.
    pub unix_millis: u64,
}

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FaultKind {
    /// Answer 500 with a `Status` body.
    Error500,
    /// Answer 429 with `Retry-After: 1` and a `Status` body.
    TooManyRequests,
    /// Never answer (the connection stays open until the client gives up or the server stops).
    Hang,
    /// Close the connection without answering.
    Close,
    /// Answer 200 with a truncated JSON body.
    MalformedJson,
    /// Answer a SubjectAccessReview with `allowed: true` and `denied: true` (SAR kinds only).
    AllowedAndDenied,
    /// Answer 200 with the normal response padded to `hugeBytes` (default 16 MiB).
    HugeBody,
    /// Answer 502 Bad Gateway with a `Status` body (an InternalError to client-go: retried).
    BadGateway,
    /// Answer 503 without `Retry-After` (ServiceUnavailable: the kubelet does not retry it).
    Unavailable,
    /// Answer 503 with `Retry-After: 1` (the REST client waits and resends).
    UnavailableRetryAfter,
    /// The normal answer (201), with a `Retry-After: 1` header (a success is never retried).
    CreatedRetryAfter,
}

impl FaultKind {
    /// The name used in JSON and in records.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Error500 => "error500",
            FaultKind::TooManyRequests => "tooManyRequests",
            FaultKind::Hang => "hang",
            FaultKind::Close => "close",
            FaultKind::MalformedJson => "malformedJson",
            FaultKind::AllowedAndDenied => "allowedAndDenied",
            FaultKind::HugeBody => "hugeBody",
            FaultKind::BadGateway => "badGateway",
            FaultKind::Unavailable => "unavailable",
            FaultKind::UnavailableRetryAfter => "unavailableRetryAfter",
            FaultKind::CreatedRetryAfter => "createdRetryAfter",
        }
    }
}

/// A fault switch: what to do, to how many of the next matching review requests, and to which
/// review kinds. `POST /_standin/fault` takes it as JSON, e.g.
/// `{"kind": "error500", "count": 2, "reviews": ["SubjectAccessReview"]}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Fault {
    /// What to do.
    pub kind: FaultKind,
    /// How many matching requests it applies to; `None` until cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// Review kinds it applies to (`TokenReview`, `SubjectAccessReview`,
    /// `SelfSubjectAccessReview`); empty means all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reviews: Vec<String>,
    /// Body size for [`FaultKind::HugeBody`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub huge_bytes: Option<usize>,
}

impl Fault {
    /// A fault for every matching request until cleared.
    pub fn always(kind: FaultKind) -> Self {
        Fault {
            kind,
            count: None,
            reviews: Vec::new(),
            huge_bytes: None,
        }
    }

    /// A fault for the next `n` matching requests.
    pub fn times(kind: FaultKind, n: u32) -> Self {
        Fault {
            count: Some(n),
            ..Fault::always(kind)
        }
    }

    /// Restrict the fault to these review kinds.
    pub fn for_reviews(mut self, kinds: &[&str]) -> Self {
        self.reviews = kinds.iter().map(|k| k.to_string()).collect();
        self
    }

    /// Whether this fault applies to a review of `kind`.
    pub fn matches(&self, kind: &str) -> bool {
        let kind_ok = self.reviews.is_empty() || self.reviews.iter().any(|k| k == kind);
        let sar = kind.ends_with("SubjectAccessReview");
        kind_ok && (self.kind != FaultKind::AllowedAndDenied || sar)
    }
}

/// Take the fault for a review of `kind`, if one applies, counting it down.
pub fn take(slot: &mut Option<Fault>, kind: &str) -> Option<Fault> {
    let fault = slot.as_mut()?;
    if !fault.matches(kind) {
        return None;
    }
    let taken = fault.clone();
    if let Some(n) = fault.count.as_mut() {
        *n = n.saturating_sub(1);
        if *n == 0 {
            *slot = None;
        }
    }
    Some(taken)
}

/// Now as (RFC 3339 UTC with milliseconds, Unix milliseconds).
pub fn now_stamp() -> (String, u64) {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let millis = u64::try_from(since.as_millis()).unwrap_or(u64::MAX);
    (rfc3339(millis), millis)
}

/// Format Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn rfc3339(unix_millis: u64) -> String {
    let secs = unix_millis / 1000;
    let ms = unix_millis % 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm description.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339(1_795_000_000_000), "2026-11-18T11:06:40.000Z");
    }

    #[test]
    fn counted_fault_runs_out() {
        let mut slot = Some(Fault::times(FaultKind::Error500, 2).for_reviews(&["TokenReview"]));
        assert!(take(&mut slot, "SubjectAccessReview").is_none());
        assert!(take(&mut slot, "TokenReview").is_some());
        assert!(take(&mut slot, "TokenReview").is_some());
        assert!(take(&mut slot, "TokenReview").is_none());
        let mut slot = Some(Fault::always(FaultKind::AllowedAndDenied));
        assert!(take(&mut slot, "TokenReview").is_none());
        assert!(take(&mut slot, "SubjectAccessReview").is_some());
        assert!(slot.is_some());
    }
}
