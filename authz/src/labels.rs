//! The label values a driver counts decisions and callouts under: each a finite vocabulary of
//! the engine ([`Outcome`], the deciding [`Subresource`] or none, [`AuthnMethod`],
//! [`CalloutKind`], [`Cache`], [`CalloutResult`]), with every value in a fixed order and its
//! label text. A driver sizes its counters by [`Vocabulary::ALL`] and indexes them with
//! [`Vocabulary::index`]; it never spells a value itself.

use crate::decision::{AuthnMethod, CalloutKind, CalloutResponse, Outcome};
use crate::kubelet::Subresource;

/// A finite set of label values.
pub trait Vocabulary: Copy + Eq + 'static {
    /// Every value, in slot order.
    const ALL: &'static [Self];

    /// The label value (lower case, no spaces).
    fn label(self) -> &'static str;

    /// The value's position in [`Vocabulary::ALL`].
    fn index(self) -> usize {
        Self::ALL.iter().position(|v| *v == self).unwrap_or(0)
    }
}

/// The label of the value at `index` of `V` (`None` past the end).
pub fn label_at<V: Vocabulary>(index: usize) -> Option<&'static str> {
    V::ALL.get(index).map(|v| v.label())
}

/// Every label (Envoy tag) name of the filter's series, sorted. Each needs its `stats_tags` entry in
/// every bootstrap that loads the filter.
pub const LABELS: [&str; 6] = [
    "cache",
    "kind",
    "method",
    "outcome",
    "result",
    "subresource",
];

/// The Envoy `stats_config.stats_tags` regex that extracts `label` from a series name that carries
/// its labels as `<label>=.=<value>;.;` (Istio's form for a name in `extraStatTags`).
pub fn tag_regex(label: &str) -> String {
    format!(r"({label}=\.=(.*?);\.;)")
}

/// `(tag_name, regex)` for every label: what every bootstrap's `stats_config.stats_tags` holds.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    LABELS.iter().map(|l| (*l, tag_regex(l))).collect()
}

/// Every label of `V`, in slot order.
pub fn labels<V: Vocabulary>() -> Vec<&'static str> {
    V::ALL.iter().map(|v| v.label()).collect()
}

impl Vocabulary for Outcome {
    const ALL: &'static [Self] = &[
        Outcome::Allowed,
        Outcome::BadRequest,
        Outcome::Unauthenticated,
        Outcome::Forbidden,
        Outcome::AuthorizerError,
        Outcome::InternalError,
    ];
    fn label(self) -> &'static str {
        self.as_str()
    }
}

/// The deciding subresource ([`crate::decision::Verdict::deciding_subresource`]); `none` when no
/// subresource check was made (401, 400).
impl Vocabulary for Option<Subresource> {
    const ALL: &'static [Self] = &[
        Some(Subresource::Proxy),
        Some(Subresource::Stats),
        Some(Subresource::Metrics),
        Some(Subresource::Log),
        Some(Subresource::Checkpoint),
        Some(Subresource::Pods),
        Some(Subresource::Healthz),
        Some(Subresource::Configz),
        Some(Subresource::Statusz),
        None,
    ];
    fn label(self) -> &'static str {
        self.map_or("none", Subresource::as_str)
    }
}

impl Vocabulary for AuthnMethod {
    const ALL: &'static [Self] = &[
        AuthnMethod::X509,
        AuthnMethod::Bearer,
        AuthnMethod::WebSocket,
        AuthnMethod::Anonymous,
        AuthnMethod::None,
    ];
    fn label(self) -> &'static str {
        self.as_str()
    }
}

impl Vocabulary for CalloutKind {
    const ALL: &'static [Self] = &[CalloutKind::TokenReview, CalloutKind::SubjectAccessReview];
    fn label(self) -> &'static str {
        match self {
            CalloutKind::TokenReview => "tokenreview",
            CalloutKind::SubjectAccessReview => "subjectaccessreview",
        }
    }
}

/// The engine's two caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cache {
    /// The token (TokenReview) cache.
    Token,
    /// The SubjectAccessReview cache.
    Sar,
}

impl Vocabulary for Cache {
    const ALL: &'static [Self] = &[Cache::Token, Cache::Sar];
    fn label(self) -> &'static str {
        match self {
            Cache::Token => "token",
            Cache::Sar => "sar",
        }
    }
}

/// How a callout ended (a bounded set, aligned with [`CalloutResponse`], plus what only a driver
/// sees: the proxy refused to send it, or its request went away first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalloutResult {
    /// A 2xx answer.
    Ok,
    /// A 4xx answer other than 429.
    Status4xx,
    /// 429 Too Many Requests.
    Status429,
    /// A 5xx answer from the API server.
    Status5xx,
    /// Any other status (1xx, 3xx).
    StatusOther,
    /// No connection ([`CalloutResponse::ConnectFailed`]).
    ConnectFailed,
    /// The callout's own timeout ([`CalloutResponse::TimedOut`]).
    TimedOut,
    /// Reset, or an answer that could not be read ([`CalloutResponse::Failed`]).
    Reset,
    /// The proxy refused to send it.
    SendFailed,
    /// Its request went away before the answer: the proxy cancels it.
    Cancelled,
}

impl CalloutResult {
    /// The result of an answer.
    pub fn of(response: &CalloutResponse) -> Self {
        match response {
            CalloutResponse::Http { status, .. } => match status {
                200..=299 => CalloutResult::Ok,
                429 => CalloutResult::Status429,
                400..=499 => CalloutResult::Status4xx,
                500..=599 => CalloutResult::Status5xx,
                _ => CalloutResult::StatusOther,
            },
            CalloutResponse::ConnectFailed(_) => CalloutResult::ConnectFailed,
            CalloutResponse::TimedOut(_) => CalloutResult::TimedOut,
            CalloutResponse::Failed(_) => CalloutResult::Reset,
        }
    }
}

impl Vocabulary for CalloutResult {
    const ALL: &'static [Self] = &[
        CalloutResult::Ok,
        CalloutResult::Status4xx,
        CalloutResult::Status429,
        CalloutResult::Status5xx,
        CalloutResult::StatusOther,
        CalloutResult::ConnectFailed,
        CalloutResult::TimedOut,
        CalloutResult::Reset,
        CalloutResult::SendFailed,
        CalloutResult::Cancelled,
    ];
    fn label(self) -> &'static str {
        match self {
            CalloutResult::Ok => "ok",
            CalloutResult::Status4xx => "status_4xx",
            CalloutResult::Status429 => "status_429",
            CalloutResult::Status5xx => "status_5xx",
            CalloutResult::StatusOther => "status_other",
            CalloutResult::ConnectFailed => "connect_failed",
            CalloutResult::TimedOut => "timed_out",
            CalloutResult::Reset => "reset",
            CalloutResult::SendFailed => "send_failed",
            CalloutResult::Cancelled => "cancelled",
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use std::collections::BTreeSet;

    use rstest::rstest;

    use super::*;

    /// Every value once, at its index, with a distinct label of the metric-label alphabet.
    fn check<V: Vocabulary + std::fmt::Debug>(want: &[&str]) {
        assert_eq!(labels::<V>(), want);
        for (i, v) in V::ALL.iter().enumerate() {
            assert_eq!(v.index(), i, "{v:?}");
            assert_eq!(label_at::<V>(i), Some(v.label()));
        }
        assert_eq!(label_at::<V>(V::ALL.len()), None);
        let distinct: BTreeSet<_> = want.iter().collect();
        assert_eq!(distinct.len(), want.len());
        assert!(want.iter().all(|l| l
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')));
    }

    #[test]
    fn vocabularies() {
        check::<Outcome>(&[
            "allowed",
            "bad_request",
            "unauthenticated",
            "forbidden",
            "authorizer_error",
            "internal_error",
        ]);
        check::<Option<Subresource>>(&[
            "proxy",
            "stats",
            "metrics",
            "log",
            "checkpoint",
            "pods",
            "healthz",
            "configz",
            "statusz",
            "none",
        ]);
        check::<AuthnMethod>(&["x509", "bearer", "websocket", "anonymous", "none"]);
        check::<CalloutKind>(&["tokenreview", "subjectaccessreview"]);
        check::<Cache>(&["token", "sar"]);
        check::<CalloutResult>(&[
            "ok",
            "status_4xx",
            "status_429",
            "status_5xx",
            "status_other",
            "connect_failed",
            "timed_out",
            "reset",
            "send_failed",
            "cancelled",
        ]);
    }

    #[test]
    fn every_subresource_has_its_label() {
        assert_eq!(
            <Option<Subresource> as Vocabulary>::ALL.len(),
            Subresource::ALL.len() + 1
        );
        for s in Subresource::ALL {
            assert_eq!(Some(s).label(), s.as_str());
        }
    }

    fn http(status: u16) -> CalloutResponse {
        CalloutResponse::Http {
            status,
            retry_after: None,
            body: Vec::new(),
        }
    }

    #[rstest]
    #[case(http(200), "ok")]
    #[case(http(201), "ok")]
    #[case(http(302), "status_other")]
    #[case(http(401), "status_4xx")]
    #[case(http(429), "status_429")]
    #[case(http(500), "status_5xx")]
    #[case(http(503), "status_5xx")]
    #[case(CalloutResponse::ConnectFailed("x".into()), "connect_failed")]
    #[case(CalloutResponse::TimedOut("x".into()), "timed_out")]
    #[case(CalloutResponse::Failed("x".into()), "reset")]
    fn callout_results(#[case] response: CalloutResponse, #[case] result: &str) {
        assert_eq!(CalloutResult::of(&response).label(), result);
    }
}
