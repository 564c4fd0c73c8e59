//! The names of the counter series: the families and their labels (the engine's vocabularies,
//! [`crate::labels`]), the slot layout of the counter array, the Istio-encoded names a driver
//! defines, and the Prometheus series Envoy prints for them.

use crate::decision::{AuthnMethod, CalloutKind, Outcome};
use crate::kubelet::Subresource;
use crate::labels::{label_at, Cache, CalloutResult, Vocabulary};

/// Prefix of every name the filter defines (Envoy shows `wasmcustom.kubelet_authz.` in `/stats`).
pub const PREFIX: &str = "kubelet_authz.";

/// The prefix of every Prometheus series of the filter.
pub const PROMETHEUS_PREFIX: &str = "kubelet_authz_";

pub use crate::labels::{stats_tags, tag_regex, LABELS};

/// The callout-latency histogram's own name (after [`PREFIX`]).
pub const LATENCY: &str = "callout_duration_milliseconds";

/// The `subresource` label: the deciding subresource, or none.
type DecidingSubresource = Option<Subresource>;

pub(super) const OUTCOMES: usize = <Outcome as Vocabulary>::ALL.len();
pub(super) const SUBRESOURCES: usize = <DecidingSubresource as Vocabulary>::ALL.len();
pub(super) const METHODS: usize = <AuthnMethod as Vocabulary>::ALL.len();
pub(super) const KINDS: usize = <CalloutKind as Vocabulary>::ALL.len();
pub(super) const CACHES: usize = <Cache as Vocabulary>::ALL.len();
pub(super) const RESULTS: usize = <CalloutResult as Vocabulary>::ALL.len();

/// A family of counter series: one Prometheus metric name, its labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// `kubelet_authz_decisions_total{outcome,subresource}`: every finished decision.
    Decisions,
    /// `kubelet_authz_authentications_total{method}`: how the user of each decision was
    /// identified (`none`: nobody, a 401).
    Authentications,
    /// `kubelet_authz_callouts_total{kind,result}`: every TokenReview/SubjectAccessReview attempt,
    /// counted when it ends.
    Callouts,
    /// `kubelet_authz_callout_retries_total{kind}`: retries scheduled after a retryable failure.
    CalloutRetries,
    /// `kubelet_authz_cache_hits_total{cache}`: lookups answered by a cache.
    CacheHits,
    /// `kubelet_authz_cache_misses_total{cache}`: lookups that needed (or joined) a callout.
    CacheMisses,
    /// `kubelet_authz_xfcc_spoofed_total`: a client-sent or mismatching
    /// `x-forwarded-client-cert` ignored.
    XfccSpoofed,
    /// `kubelet_authz_shadow_denials_total{subresource}`: Shadow enforcement forwarded a request
    /// that Enforce would refuse.
    ShadowDenials,
    /// `kubelet_authz_stale_answers_total`: an expired cache entry answered for a failed callout
    /// (stale-if-error).
    StaleAnswers,
    /// `kubelet_authz_internal_errors_total`: a hostcall failed while deciding, or the filter
    /// failed closed on its own.
    InternalErrors,
}

pub(super) const OFF_DECISIONS: usize = 0;
pub(super) const OFF_AUTHENTICATIONS: usize = OFF_DECISIONS + OUTCOMES * SUBRESOURCES;
pub(super) const OFF_CALLOUTS: usize = OFF_AUTHENTICATIONS + METHODS;
pub(super) const OFF_RETRIES: usize = OFF_CALLOUTS + KINDS * RESULTS;
pub(super) const OFF_CACHE_HITS: usize = OFF_RETRIES + KINDS;
pub(super) const OFF_CACHE_MISSES: usize = OFF_CACHE_HITS + CACHES;
pub(super) const OFF_XFCC: usize = OFF_CACHE_MISSES + CACHES;
pub(super) const OFF_SHADOW: usize = OFF_XFCC + 1;
pub(super) const OFF_STALE: usize = OFF_SHADOW + SUBRESOURCES;
pub(super) const OFF_INTERNAL: usize = OFF_STALE + 1;

/// How many counter series there are (the size of the VM's counter array).
pub const SERIES: usize = OFF_INTERNAL + 1;

/// A label of a family: its name, how many values it has, and the value at an index (one of the
/// engine's vocabularies, [`label_at`]).
type Label = (&'static str, usize, fn(usize) -> Option<&'static str>);

const OUTCOME: Label = ("outcome", OUTCOMES, label_at::<Outcome>);
const SUBRESOURCE: Label = ("subresource", SUBRESOURCES, label_at::<DecidingSubresource>);
const METHOD: Label = ("method", METHODS, label_at::<AuthnMethod>);
const KIND: Label = ("kind", KINDS, label_at::<CalloutKind>);
const RESULT: Label = ("result", RESULTS, label_at::<CalloutResult>);
const CACHE: Label = ("cache", CACHES, label_at::<Cache>);

impl Family {
    /// Every family, in slot order.
    pub const ALL: [Family; 10] = [
        Family::Decisions,
        Family::Authentications,
        Family::Callouts,
        Family::CalloutRetries,
        Family::CacheHits,
        Family::CacheMisses,
        Family::XfccSpoofed,
        Family::ShadowDenials,
        Family::StaleAnswers,
        Family::InternalErrors,
    ];

    /// The metric's name after [`PREFIX`] / [`PROMETHEUS_PREFIX`].
    pub fn short_name(self) -> &'static str {
        match self {
            Family::Decisions => "decisions_total",
            Family::Authentications => "authentications_total",
            Family::Callouts => "callouts_total",
            Family::CalloutRetries => "callout_retries_total",
            Family::CacheHits => "cache_hits_total",
            Family::CacheMisses => "cache_misses_total",
            Family::XfccSpoofed => "xfcc_spoofed_total",
            Family::ShadowDenials => "shadow_denials_total",
            Family::StaleAnswers => "stale_answers_total",
            Family::InternalErrors => "internal_errors_total",
        }
    }

    /// Its labels, sorted by name; the last one varies fastest in the slot order.
    pub fn labels(self) -> &'static [Label] {
        match self {
            Family::Decisions => &[OUTCOME, SUBRESOURCE],
            Family::Authentications => &[METHOD],
            Family::Callouts => &[KIND, RESULT],
            Family::CalloutRetries => &[KIND],
            Family::CacheHits | Family::CacheMisses => &[CACHE],
            Family::ShadowDenials => &[SUBRESOURCE],
            Family::XfccSpoofed | Family::StaleAnswers | Family::InternalErrors => &[],
        }
    }

    fn offset(self) -> usize {
        match self {
            Family::Decisions => OFF_DECISIONS,
            Family::Authentications => OFF_AUTHENTICATIONS,
            Family::Callouts => OFF_CALLOUTS,
            Family::CalloutRetries => OFF_RETRIES,
            Family::CacheHits => OFF_CACHE_HITS,
            Family::CacheMisses => OFF_CACHE_MISSES,
            Family::XfccSpoofed => OFF_XFCC,
            Family::ShadowDenials => OFF_SHADOW,
            Family::StaleAnswers => OFF_STALE,
            Family::InternalErrors => OFF_INTERNAL,
        }
    }

    /// How many series the family has.
    pub fn series(self) -> usize {
        self.labels().iter().map(|(_, n, _)| *n).product()
    }
}

/// One series: its family and label values (in the family's label order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Series {
    /// The family.
    pub family: Family,
    /// `(label, value)`, sorted by label.
    pub labels: Vec<(&'static str, &'static str)>,
}

impl Series {
    /// The series of slot `index` (`None` past [`SERIES`]).
    pub fn of(index: usize) -> Option<Series> {
        let family = Family::ALL
            .into_iter()
            .find(|f| (f.offset()..f.offset() + f.series()).contains(&index))?;
        let mut rest = index - family.offset();
        let mut labels = Vec::with_capacity(2);
        for (name, n, value) in family.labels().iter().rev() {
            let n = (*n).max(1);
            labels.push((*name, value(rest % n)?));
            rest /= n;
        }
        labels.reverse();
        Some(Series { family, labels })
    }

    /// The name the filter defines it with (Istio's tag encoding, see the module doc).
    pub fn wasm_name(&self) -> String {
        encoded_name(&self.labels, self.family.short_name())
    }

    /// The series as Envoy's `/stats/prometheus` prints it (without the `{}` Envoy prints after an
    /// unlabelled name).
    pub fn prometheus(&self) -> String {
        prometheus_series(self.family.short_name(), &self.labels)
    }
}

/// `kubelet_authz.<label>=.=<value>;.;...<short>`.
pub fn encoded_name(labels: &[(&str, &str)], short: &str) -> String {
    let mut n = String::from(PREFIX);
    for (l, v) in labels {
        n.push_str(l);
        n.push_str("=.=");
        n.push_str(v);
        n.push_str(";.;");
    }
    n.push_str(short);
    n
}

/// `kubelet_authz_<short>{<label>="<value>",...}` (no braces without labels).
pub fn prometheus_series(short: &str, labels: &[(&str, &str)]) -> String {
    let mut n = format!("{PROMETHEUS_PREFIX}{short}");
    if !labels.is_empty() {
        let inner: Vec<String> = labels.iter().map(|(l, v)| format!("{l}=\"{v}\"")).collect();
        n.push('{');
        n.push_str(&inner.join(","));
        n.push('}');
    }
    n
}

/// The Prometheus series of a name the filter defines, as Envoy prints it with the shipped
/// `stats_tags` (labels in the name's order; `None` for a name that is not the filter's).
pub fn prometheus_of(wasm_name: &str) -> Option<String> {
    let rest = wasm_name.strip_prefix(PREFIX)?;
    let mut labels = Vec::new();
    let mut parts = rest.split(";.;").peekable();
    let mut short = "";
    while let Some(part) = parts.next() {
        if parts.peek().is_none() {
            short = part;
        } else {
            labels.push(part.split_once("=.=")?);
        }
    }
    Some(prometheus_series(short, &labels))
}

/// The wasm name of the latency histogram of `kind`.
pub fn latency_name(kind: CalloutKind) -> String {
    encoded_name(&[("kind", kind.label())], LATENCY)
}
