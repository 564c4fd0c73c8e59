//! The filter's metrics, the Prometheus way: counters named `kubelet_authz_..._total` with
//! labels, and a histogram of callout latency, as Envoy's `/stats/prometheus` shows them.
//!
//! **Counted in the VM, flushed on the tick.** Every counter series is a slot of a fixed array
//! indexed by the engine's finite enums (outcome, subresource, authentication method, callout
//! kind and result, cache), so counting a request is a few array additions: no hostcall, no
//! `String`, no map. The root's tick ([`FLUSH_MS`]) hands the deltas to the proxy, one
//! `increment_metric` per series that changed; a series is defined (`define_metric`) the first
//! time it has something to flush, once per VM. The callout-latency histogram is recorded where a
//! callout's answer arrives, which is never the cached path: that callback already reads the
//! answer through several hostcalls after a round trip to the API server, and recording there
//! keeps every sample without a buffer (a bounded buffer would drop samples under the uncached
//! flood, where the histogram matters most).
//!
//! **Labels through Envoy's tag extraction.** The name a series is defined with carries its labels
//! in Istio's encoding, `<label>=.=<value>;.;`, between the prefix `kubelet_authz.` and the metric's
//! own name: `kubelet_authz.outcome=.=allowed;.;subresource=.=metrics;.;decisions_total`. Envoy adds
//! `wasmcustom.` in front; one `stats_config.stats_tags` entry per label ([`stats_tags`], the
//! regex `(<label>=\.=(.*?);\.;)`, which is what Istio generates for a name in `extraStatTags`)
//! removes the encoding from the name and makes it a tag. Envoy 1.40 prints custom (`wasmcustom`)
//! stats in `/stats/prometheus` without the namespace and without an `envoy_` prefix, dots as
//! underscores, so the series is exactly
//! `kubelet_authz_decisions_total{outcome="allowed",subresource="metrics"}` (checked through a
//! real Envoy by `tests/tests/e2e.rs`). Label names are sorted within each name, so the labels come
//! out in the same order whatever order the tags are configured in.
//!
//! The histogram `kubelet_authz_callout_duration_milliseconds{kind}` is in milliseconds because
//! Envoy's default buckets (0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000,
//! 60000, ...) are made for milliseconds and a sample is an integer.

use kubelet_authz::decision::{AuthnMethod, CalloutKind, Outcome, Verdict};
use kubelet_authz::kubelet::Subresource;
use kubelet_authz::labels::{label_at, Cache, CalloutResult, Vocabulary};

use crate::host::{Host, Level, MetricKind};

/// The tick period with no retry pending: counters reach Envoy at most this late (ms).
pub const FLUSH_MS: u64 = 1000;

/// Prefix of every name the filter defines (Envoy shows `wasmcustom.kubelet_authz.` in `/stats`).
pub const PREFIX: &str = "kubelet_authz.";

/// The prefix of every Prometheus series of the filter.
pub const PROMETHEUS_PREFIX: &str = "kubelet_authz_";

/// Every label (Envoy tag) name, sorted. Each needs its `stats_tags` entry in the bootstrap.
pub const LABELS: [&str; 6] = [
    "cache",
    "kind",
    "method",
    "outcome",
    "result",
    "subresource",
];

/// The callout-latency histogram's own name (after [`PREFIX`]).
pub const LATENCY: &str = "callout_duration_milliseconds";

/// The Envoy `stats_config.stats_tags` regex that extracts `label`: Istio's form for a name in
/// `extraStatTags`.
pub fn tag_regex(label: &str) -> String {
    format!(r"({label}=\.=(.*?);\.;)")
}

/// `(tag_name, regex)` for every label: what every bootstrap's `stats_config.stats_tags` holds.
pub fn stats_tags() -> Vec<(&'static str, String)> {
    LABELS.iter().map(|l| (*l, tag_regex(l))).collect()
}

/// The `subresource` label: the deciding subresource, or none.
type DecidingSubresource = Option<Subresource>;

const OUTCOMES: usize = <Outcome as Vocabulary>::ALL.len();
const SUBRESOURCES: usize = <DecidingSubresource as Vocabulary>::ALL.len();
const METHODS: usize = <AuthnMethod as Vocabulary>::ALL.len();
const KINDS: usize = <CalloutKind as Vocabulary>::ALL.len();
const CACHES: usize = <Cache as Vocabulary>::ALL.len();
const RESULTS: usize = <CalloutResult as Vocabulary>::ALL.len();

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

const OFF_DECISIONS: usize = 0;
const OFF_AUTHENTICATIONS: usize = OFF_DECISIONS + OUTCOMES * SUBRESOURCES;
const OFF_CALLOUTS: usize = OFF_AUTHENTICATIONS + METHODS;
const OFF_RETRIES: usize = OFF_CALLOUTS + KINDS * RESULTS;
const OFF_CACHE_HITS: usize = OFF_RETRIES + KINDS;
const OFF_CACHE_MISSES: usize = OFF_CACHE_HITS + CACHES;
const OFF_XFCC: usize = OFF_CACHE_MISSES + CACHES;
const OFF_SHADOW: usize = OFF_XFCC + 1;
const OFF_STALE: usize = OFF_SHADOW + SUBRESOURCES;
const OFF_INTERNAL: usize = OFF_STALE + 1;

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Undefined,
    Id(u32),
    /// Defining it failed: never tried again (the warning is logged once).
    Failed,
}

/// The counters of one VM: deltas not flushed yet, and the proxy's ids.
#[derive(Debug)]
pub struct Metrics {
    counts: [u64; SERIES],
    ids: [Slot; SERIES],
    latency: [Slot; KINDS],
    dirty: bool,
    warned: bool,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            counts: [0; SERIES],
            ids: [Slot::Undefined; SERIES],
            latency: [Slot::Undefined; KINDS],
            dirty: false,
            warned: false,
        }
    }
}

impl Metrics {
    fn add(&mut self, slot: usize, by: u64) {
        if by == 0 {
            return;
        }
        if let Some(c) = self.counts.get_mut(slot) {
            *c = c.saturating_add(by);
            self.dirty = true;
        }
    }

    /// Count a finished decision: outcome and deciding subresource, authentication method, cache
    /// use, spoofed XFCC, shadow would-denial, stale answer.
    pub fn decision(&mut self, v: &Verdict) {
        let sub = v.deciding_subresource().index();
        self.add(OFF_DECISIONS + v.outcome.index() * SUBRESOURCES + sub, 1);
        self.add(OFF_AUTHENTICATIONS + v.authn.index(), 1);
        let token_hits = v.cache_hits.saturating_sub(v.sar_cache_hits);
        let token_misses = v.cache_misses.saturating_sub(v.sar_cache_misses);
        let (token, sar) = (Cache::Token.index(), Cache::Sar.index());
        self.add(OFF_CACHE_HITS + token, u64::from(token_hits));
        self.add(OFF_CACHE_HITS + sar, u64::from(v.sar_cache_hits));
        self.add(OFF_CACHE_MISSES + token, u64::from(token_misses));
        self.add(OFF_CACHE_MISSES + sar, u64::from(v.sar_cache_misses));
        if v.spoofed_xfcc.is_some() {
            self.add(OFF_XFCC, 1);
        }
        if v.shadowed {
            self.add(OFF_SHADOW + sub, 1);
        }
        if v.stale {
            self.add(OFF_STALE, 1);
        }
    }

    /// Count a callout that ended with `result`.
    pub fn callout(&mut self, kind: CalloutKind, result: CalloutResult) {
        self.add(OFF_CALLOUTS + kind.index() * RESULTS + result.index(), 1);
    }

    /// Count a retry scheduled for a callout of `kind`.
    pub fn retry(&mut self, kind: CalloutKind) {
        self.add(OFF_RETRIES + kind.index(), 1);
    }

    /// Count an internal error.
    pub fn internal_error(&mut self) {
        self.add(OFF_INTERNAL, 1);
    }

    /// Deltas not flushed yet of slot `index` (tests).
    pub fn unflushed(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// Whether something was counted since the last flush.
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Record the latency of a callout of `kind` that was answered (ms). One hostcall; the first
    /// sample of a kind defines its histogram.
    pub fn latency(&mut self, host: &mut dyn Host, kind: CalloutKind, ms: u64) {
        let Some(slot) = self.latency.get_mut(kind.index()) else {
            return;
        };
        let id = match *slot {
            Slot::Id(id) => id,
            Slot::Failed => return,
            Slot::Undefined => match host.define_metric(MetricKind::Histogram, &latency_name(kind))
            {
                Ok(id) => {
                    *slot = Slot::Id(id);
                    id
                }
                Err(e) => {
                    *slot = Slot::Failed;
                    self.warn_once(host, &e.to_string());
                    return;
                }
            },
        };
        if let Err(e) = host.record(id, ms) {
            self.warn_once(host, &e.to_string());
        }
    }

    /// Hand every delta to the proxy (the root's tick): one `increment_metric` per series that
    /// changed, defining it first the first time.
    pub fn flush(&mut self, host: &mut dyn Host) {
        if !self.dirty {
            return;
        }
        self.dirty = false;
        let mut failure = None;
        for (index, (count, slot)) in self.counts.iter_mut().zip(self.ids.iter_mut()).enumerate() {
            let by = std::mem::take(count);
            if by == 0 {
                continue;
            }
            let id = match *slot {
                Slot::Id(id) => id,
                Slot::Failed => continue,
                Slot::Undefined => {
                    let Some(series) = Series::of(index) else {
                        continue;
                    };
                    match host.define_metric(MetricKind::Counter, &series.wasm_name()) {
                        Ok(id) => {
                            *slot = Slot::Id(id);
                            id
                        }
                        Err(e) => {
                            *slot = Slot::Failed;
                            failure = Some(e.to_string());
                            continue;
                        }
                    }
                }
            };
            if let Err(e) = host.increment(id, by) {
                failure = Some(e.to_string());
            }
        }
        if let Some(why) = failure {
            self.warn_once(host, &why);
        }
    }

    fn warn_once(&mut self, host: &mut dyn Host, why: &str) {
        if !self.warned {
            self.warned = true;
            host.log(Level::Warn, &format!("kubelet-authz: metrics: {why}"));
        }
    }
}

#[cfg(test)]
mod tests;
