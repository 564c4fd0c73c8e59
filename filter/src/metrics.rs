//! Counters, defined lazily by name and kept by id. Every name is built from the engine's finite
//! enums (outcome, subresource, authentication method, callout kind), so the set is bounded; a
//! cap guards against mistakes all the same.
//!
//! Names are `kubelet_authz.<family>[.<label>...]`, lower case `[a-z0-9_.]` only; Envoy shows them
//! as `wasmcustom.kubelet_authz...` in `/stats` and `envoy_wasmcustom_kubelet_authz_...` in
//! `/stats/prometheus`.

use std::collections::HashMap;

use kubelet_authz::decision::{CalloutKind, Verdict};

use crate::host::{Host, Level};

/// At most this many distinct counters.
pub const MAX_COUNTERS: usize = 256;

/// Common prefix of every counter.
pub const PREFIX: &str = "kubelet_authz";
/// Callouts sent, by kind: `kubelet_authz.callouts.<kind>`.
pub const CALLOUTS: &str = "callouts";
/// Callouts that failed (no response, or a non-2xx status), by kind.
pub const CALLOUT_FAILURES: &str = "callout_failures";
/// Retries scheduled after a retryable failure, by kind.
pub const CALLOUT_RETRIES: &str = "callout_retries";
/// Decisions: `kubelet_authz.decisions.<outcome>.<subresource|none>`.
pub const DECISIONS: &str = "decisions";
/// Authentication method of each decision: `kubelet_authz.authn.<method>`.
pub const AUTHN: &str = "authn";
/// Cache hits / misses (token and SubjectAccessReview caches together).
pub const CACHE_HITS: &str = "cache_hits";
/// See [`CACHE_HITS`].
pub const CACHE_MISSES: &str = "cache_misses";
/// A client-sent or mismatching `x-forwarded-client-cert` ignored.
pub const XFCC_SPOOFED: &str = "xfcc_spoofed";
/// Shadow enforcement forwarded a request that Enforce would refuse.
pub const SHADOW_DENIALS: &str = "shadow_denials";
/// An expired cache entry answered for a failed callout (stale-if-error).
pub const STALE_ANSWERS: &str = "stale_answers";
/// A hostcall failed while deciding, or the filter had to fail closed on its own.
pub const INTERNAL_ERRORS: &str = "internal_errors";

/// The full name of a counter.
pub fn name(parts: &[&str]) -> String {
    let mut n = String::from(PREFIX);
    for p in parts {
        n.push('.');
        n.extend(p.chars().map(|c| match c {
            'a'..='z' | '0'..='9' | '_' => c,
            'A'..='Z' => c.to_ascii_lowercase(),
            _ => '_',
        }));
    }
    n
}

/// `tokenreview` or `subjectaccessreview`.
pub fn kind_label(kind: CalloutKind) -> &'static str {
    match kind {
        CalloutKind::TokenReview => "tokenreview",
        CalloutKind::SubjectAccessReview => "subjectaccessreview",
    }
}

/// The counters of one VM.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Counter ids by their name parts (at most three; unused ones empty): no name is built on
    /// the per-request path once a counter is defined.
    ids: HashMap<[&'static str; 3], u32>,
    failed: bool,
}

impl Metrics {
    /// Add `by` to the counter `kubelet_authz.<parts...>`, defining it on first use.
    pub fn add(&mut self, host: &mut dyn Host, parts: &[&'static str], by: u64) {
        if by == 0 {
            return;
        }
        let mut key = [""; 3];
        for (slot, p) in key.iter_mut().zip(parts) {
            *slot = p;
        }
        let id = match self.ids.get(&key) {
            Some(id) => *id,
            None => {
                if self.ids.len() >= MAX_COUNTERS || parts.len() > key.len() {
                    return;
                }
                match host.define_counter(&name(parts)) {
                    Ok(id) => {
                        self.ids.insert(key, id);
                        id
                    }
                    Err(e) => {
                        self.warn_once(host, &e.to_string());
                        return;
                    }
                }
            }
        };
        if let Err(e) = host.increment(id, by) {
            self.warn_once(host, &e.to_string());
        }
    }

    /// Add one.
    pub fn inc(&mut self, host: &mut dyn Host, parts: &[&'static str]) {
        self.add(host, parts, 1);
    }

    /// Count a finished decision.
    pub fn decision(&mut self, host: &mut dyn Host, v: &Verdict) {
        let sub = v.deciding_subresource().map_or("none", |s| s.as_str());
        self.inc(host, &[DECISIONS, v.outcome.as_str(), sub]);
        self.inc(host, &[AUTHN, v.authn.as_str()]);
        self.add(host, &[CACHE_HITS], u64::from(v.cache_hits));
        self.add(host, &[CACHE_MISSES], u64::from(v.cache_misses));
        if v.spoofed_xfcc.is_some() {
            self.inc(host, &[XFCC_SPOOFED]);
        }
        if v.shadowed {
            // The total, and per deciding subresource (`shadow_denials.<subresource>`).
            self.inc(host, &[SHADOW_DENIALS]);
            self.inc(host, &[SHADOW_DENIALS, sub]);
        }
        if v.stale {
            self.inc(host, &[STALE_ANSWERS]);
        }
    }

    /// Counters defined so far.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether none is defined yet.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    fn warn_once(&mut self, host: &mut dyn Host, why: &str) {
        if !self.failed {
            self.failed = true;
            host.log(Level::Warn, &format!("kubelet-authz: metrics: {why}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_prometheus_safe() {
        assert_eq!(
            name(&[DECISIONS, "allowed", "proxy"]),
            "kubelet_authz.decisions.allowed.proxy"
        );
        assert_eq!(name(&[AUTHN, "x509"]), "kubelet_authz.authn.x509");
        assert_eq!(name(&["a-b", "C/d"]), "kubelet_authz.a_b.c_d");
    }
}
