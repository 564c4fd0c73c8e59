//! The filter's metrics, the Prometheus way: counters named `kubelet_authz_..._total` with
//! labels, and a histogram of callout latency, as Envoy's `/stats/prometheus` shows them.
//!
//! **Counted in the VM, flushed on the tick.** Every counter series is a slot of a fixed array
//! ([`Counters`]) indexed by the engine's finite enums (outcome, subresource, authentication
//! method, callout kind and result, cache), so counting a request is a few array additions: no
//! hostcall, no `String`, no map. The scheduler ([`crate::schedule`]) hands the deltas to the
//! driver on the tick ([`FLUSH_MS`]), one [`crate::schedule::Action::Count`] per series that
//! changed; the driver defines a series the first time it has something to flush, once per VM.
//! The callout-latency histogram is recorded where a callout's answer arrives, which is never the
//! cached path.
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

use crate::decision::{CalloutKind, Verdict};
use crate::labels::{Cache, CalloutResult, Vocabulary};

mod series;
pub use series::*;

/// The tick period with no retry pending: counters reach the proxy at most this late (ms).
pub const FLUSH_MS: u64 = 1000;

/// The counters of one VM: the deltas not handed to the proxy yet.
#[derive(Debug, Clone)]
pub struct Counters {
    counts: [u64; SERIES],
    dirty: bool,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            counts: [0; SERIES],
            dirty: false,
        }
    }
}

impl Counters {
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

    /// Deltas not handed over yet of slot `index`.
    pub fn unflushed(&self, index: usize) -> u64 {
        self.counts.get(index).copied().unwrap_or(0)
    }

    /// Whether something was counted since the last [`Counters::take`].
    pub fn is_dirty(&self) -> bool {
        self.dirty
    }

    /// Take every delta: `(series index, delta)` for each series that changed, in slot order;
    /// the counters are zero after.
    pub fn take(&mut self) -> Vec<(usize, u64)> {
        if !std::mem::take(&mut self.dirty) {
            return Vec::new();
        }
        self.counts
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| {
                let by = std::mem::take(c);
                (by > 0).then_some((i, by))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests;
