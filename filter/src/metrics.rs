//! The proxy's side of the filter's metrics: the ids `define_metric` gave each series and
//! histogram, defined the first time each has something to hand over, once per VM. What is
//! counted, the series and their names are the engine's ([`kubelet_authz::metrics`], re-exported
//! here); the scheduler hands the deltas over on the tick as [`Action::Count`] and the latency
//! samples as [`Action::Record`](kubelet_authz::schedule::Action::Record).
//!
//! [`Action::Count`]: kubelet_authz::schedule::Action::Count

use kubelet_authz::decision::CalloutKind;
use kubelet_authz::labels::Vocabulary;

use crate::host::{Host, Level, MetricKind};

pub use kubelet_authz::metrics::*;

const KINDS: usize = <CalloutKind as Vocabulary>::ALL.len();

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Undefined,
    Id(u32),
    /// Defining it failed: never tried again (the warning is logged once).
    Failed,
}

/// The proxy's metric ids of one VM.
#[derive(Debug)]
pub struct Ids {
    counters: [Slot; SERIES],
    latency: [Slot; KINDS],
    warned: bool,
}

impl Default for Ids {
    fn default() -> Self {
        Ids {
            counters: [Slot::Undefined; SERIES],
            latency: [Slot::Undefined; KINDS],
            warned: false,
        }
    }
}

impl Ids {
    /// Add `by` to counter series `series`, defining it first the first time.
    pub fn count(&mut self, host: &mut dyn Host, series: usize, by: u64) {
        let name = || Series::of(series).map(|s| s.wasm_name());
        let Some(id) = self.id(host, MetricKind::Counter, series, name) else {
            return;
        };
        if let Err(e) = host.increment(id, by) {
            self.warn_once(host, &e.to_string());
        }
    }

    /// Record a latency sample (ms) of a callout of `kind`; the first defines its histogram.
    pub fn record(&mut self, host: &mut dyn Host, kind: CalloutKind, ms: u64) {
        let name = || Some(latency_name(kind));
        let Some(id) = self.id(host, MetricKind::Histogram, kind.index(), name) else {
            return;
        };
        if let Err(e) = host.record(id, ms) {
            self.warn_once(host, &e.to_string());
        }
    }

    fn id(
        &mut self,
        host: &mut dyn Host,
        kind: MetricKind,
        index: usize,
        name: impl FnOnce() -> Option<String>,
    ) -> Option<u32> {
        let slots: &mut [Slot] = match kind {
            MetricKind::Counter => &mut self.counters,
            MetricKind::Histogram => &mut self.latency,
        };
        let slot = slots.get_mut(index)?;
        match *slot {
            Slot::Id(id) => Some(id),
            Slot::Failed => None,
            Slot::Undefined => match host.define_metric(kind, &name()?) {
                Ok(id) => {
                    *slot = Slot::Id(id);
                    Some(id)
                }
                Err(e) => {
                    *slot = Slot::Failed;
                    self.warn_once(host, &e.to_string());
                    None
                }
            },
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
