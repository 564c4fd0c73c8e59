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

use kubelet_authz::decision::{CalloutKind, Verdict};
use kubelet_authz::labels::{Cache, CalloutResult, Vocabulary};

use crate::host::{Host, Level, MetricKind};

mod series;
pub use series::*;

/// The tick period with no retry pending: counters reach Envoy at most this late (ms).
pub const FLUSH_MS: u64 = 1000;

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
