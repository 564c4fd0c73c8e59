//! The counter set and its names: every series, the label tables against the engine's enums,
//! callout results, and what a flush asks of the proxy.

use std::collections::BTreeSet;
use std::time::Duration;

use kubelet_authz::decision::CalloutKind;
use kubelet_authz::labels::CalloutResult;
use rstest::rstest;

use super::*;
use crate::host::{Host, HostError, Level, MetricKind};

/// Records the metric hostcalls.
#[derive(Default)]
struct Recorder {
    defined: Vec<(MetricKind, String)>,
    increments: Vec<(u32, u64)>,
    records: Vec<(u32, u64)>,
    logs: Vec<String>,
}

impl Host for Recorder {
    fn log(&mut self, _level: Level, message: &str) {
        self.logs.push(message.to_string());
    }
    fn set_effective_context(&mut self, _: u32) -> Result<(), HostError> {
        Ok(())
    }
    fn dispatch(
        &mut self,
        _: &str,
        _: &[(String, String)],
        _: &[u8],
        _: Duration,
    ) -> Result<u32, HostError> {
        Ok(1)
    }
    fn resume_request(&mut self) -> Result<(), HostError> {
        Ok(())
    }
    fn send_response(&mut self, _: u16, _: &[u8]) -> Result<(), HostError> {
        Ok(())
    }
    fn remove_request_header(&mut self, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn set_request_header(&mut self, _: &str, _: &str) -> Result<(), HostError> {
        Ok(())
    }
    fn define_metric(&mut self, kind: MetricKind, name: &str) -> Result<u32, HostError> {
        if let Some(i) = self.defined.iter().position(|(_, n)| n == name) {
            return Ok(u32::try_from(i).unwrap_or(u32::MAX));
        }
        self.defined.push((kind, name.to_string()));
        Ok(u32::try_from(self.defined.len() - 1).unwrap_or(u32::MAX))
    }
    fn increment(&mut self, id: u32, by: u64) -> Result<(), HostError> {
        self.increments.push((id, by));
        Ok(())
    }
    fn record(&mut self, id: u32, value: u64) -> Result<(), HostError> {
        self.records.push((id, value));
        Ok(())
    }
    fn source_address(&mut self) -> Result<Option<Vec<u8>>, HostError> {
        Ok(None)
    }
    fn set_tick_period_ms(&mut self, _: u64) -> Result<(), HostError> {
        Ok(())
    }
}

/// The one series that `count` changed, as flushed: its Prometheus series, wasm name, delta.
fn counted(count: impl Fn(&mut Metrics)) -> (String, String, u64) {
    let mut m = Metrics::default();
    count(&mut m);
    let mut h = Recorder::default();
    m.flush(&mut h);
    assert_eq!(h.defined.len(), 1, "{:?}", h.defined);
    assert_eq!(h.increments.len(), 1);
    let (kind, name) = h.defined.remove(0);
    assert_eq!(kind, MetricKind::Counter);
    let prometheus = prometheus_of(&name).unwrap_or_default();
    (prometheus, name, h.increments[0].1)
}

#[rstest]
#[case::retries(
    |m: &mut Metrics| m.retry(CalloutKind::SubjectAccessReview),
    r#"kubelet_authz_callout_retries_total{kind="subjectaccessreview"}"#,
    "kubelet_authz.kind=.=subjectaccessreview;.;callout_retries_total"
)]
#[case::callouts(
    |m: &mut Metrics| m.callout(CalloutKind::TokenReview, CalloutResult::TimedOut),
    r#"kubelet_authz_callouts_total{kind="tokenreview",result="timed_out"}"#,
    "kubelet_authz.kind=.=tokenreview;.;result=.=timed_out;.;callouts_total"
)]
#[case::callouts_429(
    |m: &mut Metrics| m.callout(CalloutKind::SubjectAccessReview, CalloutResult::Status429),
    r#"kubelet_authz_callouts_total{kind="subjectaccessreview",result="status_429"}"#,
    "kubelet_authz.kind=.=subjectaccessreview;.;result=.=status_429;.;callouts_total"
)]
#[case::internal_errors(
    |m: &mut Metrics| m.internal_error(),
    "kubelet_authz_internal_errors_total",
    "kubelet_authz.internal_errors_total"
)]
fn each_count_lands_in_its_series(
    #[case] count: fn(&mut Metrics),
    #[case] prometheus: &str,
    #[case] wasm: &str,
) {
    let (p, w, by) = counted(|m| {
        count(m);
        count(m);
    });
    assert_eq!((p.as_str(), w.as_str(), by), (prometheus, wasm, 2));
}

/// Every family: its Prometheus name, labels and size.
#[rstest]
#[case(Family::Decisions, "kubelet_authz_decisions_total", &["outcome", "subresource"], 50)]
#[case(Family::Authentications, "kubelet_authz_authentications_total", &["method"], 5)]
#[case(Family::Callouts, "kubelet_authz_callouts_total", &["kind", "result"], 20)]
#[case(Family::CalloutRetries, "kubelet_authz_callout_retries_total", &["kind"], 2)]
#[case(Family::CacheHits, "kubelet_authz_cache_hits_total", &["cache"], 2)]
#[case(Family::CacheMisses, "kubelet_authz_cache_misses_total", &["cache"], 2)]
#[case(Family::XfccSpoofed, "kubelet_authz_xfcc_spoofed_total", &[], 1)]
#[case(Family::ShadowDenials, "kubelet_authz_shadow_denials_total", &["subresource"], 10)]
#[case(Family::StaleAnswers, "kubelet_authz_stale_answers_total", &[], 1)]
#[case(Family::InternalErrors, "kubelet_authz_internal_errors_total", &[], 1)]
fn families(
    #[case] family: Family,
    #[case] name: &str,
    #[case] labels: &[&str],
    #[case] len: usize,
) {
    assert_eq!(format!("{PROMETHEUS_PREFIX}{}", family.short_name()), name);
    let got: Vec<&str> = family.labels().iter().map(|(l, _, _)| *l).collect();
    assert_eq!(got, labels);
    assert_eq!(family.series(), len);
    assert!(
        name.ends_with("_total"),
        "Prometheus counters end in _total"
    );
}

#[test]
fn every_slot_is_one_distinct_well_formed_series() {
    assert_eq!(
        Family::ALL.iter().map(|f| f.series()).sum::<usize>(),
        SERIES
    );
    assert_eq!(SERIES, 94);
    assert!(Series::of(SERIES).is_none());
    let mut wasm = BTreeSet::new();
    let mut prom = BTreeSet::new();
    for i in 0..SERIES {
        let s = Series::of(i).unwrap_or_else(|| panic!("slot {i}"));
        let name = s.wasm_name();
        assert!(name.starts_with(PREFIX), "{name}");
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.=;".contains(c)),
            "{name}"
        );
        // Labels sorted by name, every one with its stats_tags entry.
        let labels: Vec<&str> = s.labels.iter().map(|(l, _)| *l).collect();
        let mut sorted = labels.clone();
        sorted.sort_unstable();
        assert_eq!(labels, sorted);
        assert!(labels.iter().all(|l| LABELS.contains(l)), "{labels:?}");
        assert_eq!(prometheus_of(&name), Some(s.prometheus()));
        assert!(wasm.insert(name));
        assert!(prom.insert(s.prometheus()));
    }
}

#[test]
fn stats_tags_are_istios_extra_stat_tags_form() {
    let tags = stats_tags();
    assert_eq!(tags.len(), LABELS.len());
    assert_eq!(tags[0], ("cache", String::from(r"(cache=\.=(.*?);\.;)")));
    assert_eq!(tag_regex("kind"), r"(kind=\.=(.*?);\.;)");
}

#[test]
fn a_flush_defines_once_and_sends_only_deltas() {
    let mut m = Metrics::default();
    let mut h = Recorder::default();
    m.flush(&mut h);
    assert!(
        h.defined.is_empty() && h.increments.is_empty(),
        "nothing counted"
    );
    for _ in 0..3 {
        m.internal_error();
    }
    m.retry(CalloutKind::TokenReview);
    m.flush(&mut h);
    assert_eq!(h.defined.len(), 2);
    assert_eq!(h.increments, [(0, 1), (1, 3)]);
    m.flush(&mut h);
    assert_eq!(h.increments.len(), 2, "no delta, no hostcall");
    m.internal_error();
    m.flush(&mut h);
    assert_eq!(h.defined.len(), 2, "defined once");
    assert_eq!(h.increments.last(), Some(&(1, 1)));
}

#[test]
fn latency_is_one_histogram_per_kind() {
    let mut m = Metrics::default();
    let mut h = Recorder::default();
    m.latency(&mut h, CalloutKind::TokenReview, 3);
    m.latency(&mut h, CalloutKind::TokenReview, 40);
    m.latency(&mut h, CalloutKind::SubjectAccessReview, 7);
    assert_eq!(
        h.defined,
        [
            (
                MetricKind::Histogram,
                String::from("kubelet_authz.kind=.=tokenreview;.;callout_duration_milliseconds")
            ),
            (
                MetricKind::Histogram,
                String::from(
                    "kubelet_authz.kind=.=subjectaccessreview;.;callout_duration_milliseconds"
                )
            ),
        ]
    );
    assert_eq!(h.records, [(0, 3), (0, 40), (1, 7)]);
    assert_eq!(
        prometheus_of(&latency_name(CalloutKind::TokenReview)).as_deref(),
        Some(r#"kubelet_authz_callout_duration_milliseconds{kind="tokenreview"}"#)
    );
}
