//! The counter set and its names: every series, the label tables against the engine's enums,
//! and what a take hands over.
#![allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]

use std::collections::BTreeSet;

use rstest::rstest;

use super::*;
use crate::decision::CalloutKind;
use crate::labels::CalloutResult;

/// The one series that `count` changed, as taken: its Prometheus series, wasm name, delta.
fn counted(count: impl Fn(&mut Counters)) -> (String, String, u64) {
    let mut m = Counters::default();
    count(&mut m);
    let taken = m.take();
    assert_eq!(taken.len(), 1, "{taken:?}");
    let (index, by) = taken[0];
    let name = Series::of(index).unwrap().wasm_name();
    let prometheus = prometheus_of(&name).unwrap_or_default();
    (prometheus, name, by)
}

#[rstest]
#[case::retries(
    |m: &mut Counters| m.retry(CalloutKind::SubjectAccessReview),
    r#"kubelet_authz_callout_retries_total{kind="subjectaccessreview"}"#,
    "kubelet_authz.kind=.=subjectaccessreview;.;callout_retries_total"
)]
#[case::callouts(
    |m: &mut Counters| m.callout(CalloutKind::TokenReview, CalloutResult::TimedOut),
    r#"kubelet_authz_callouts_total{kind="tokenreview",result="timed_out"}"#,
    "kubelet_authz.kind=.=tokenreview;.;result=.=timed_out;.;callouts_total"
)]
#[case::callouts_429(
    |m: &mut Counters| m.callout(CalloutKind::SubjectAccessReview, CalloutResult::Status429),
    r#"kubelet_authz_callouts_total{kind="subjectaccessreview",result="status_429"}"#,
    "kubelet_authz.kind=.=subjectaccessreview;.;result=.=status_429;.;callouts_total"
)]
#[case::internal_errors(
    |m: &mut Counters| m.internal_error(),
    "kubelet_authz_internal_errors_total",
    "kubelet_authz.internal_errors_total"
)]
fn each_count_lands_in_its_series(
    #[case] count: fn(&mut Counters),
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
#[case(Family::Decisions, "kubelet_authz_decisions_total", &["outcome", "subresource"], 60)]
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
    assert_eq!(SERIES, 104);
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
fn a_take_hands_over_only_deltas_once() {
    let mut m = Counters::default();
    assert!(m.take().is_empty(), "nothing counted");
    for _ in 0..3 {
        m.internal_error();
    }
    m.retry(CalloutKind::TokenReview);
    assert!(m.is_dirty());
    let retries = OFF_RETRIES + CalloutKind::TokenReview.index();
    assert_eq!(m.unflushed(OFF_INTERNAL), 3);
    assert_eq!(m.take(), [(retries, 1), (OFF_INTERNAL, 3)]);
    assert!(!m.is_dirty());
    assert!(m.take().is_empty(), "no delta twice");
    m.internal_error();
    assert_eq!(m.take(), [(OFF_INTERNAL, 1)]);
}

#[test]
fn latency_names_one_histogram_per_kind() {
    assert_eq!(
        latency_name(CalloutKind::TokenReview),
        "kubelet_authz.kind=.=tokenreview;.;callout_duration_milliseconds"
    );
    assert_eq!(
        prometheus_of(&latency_name(CalloutKind::SubjectAccessReview)).as_deref(),
        Some(r#"kubelet_authz_callout_duration_milliseconds{kind="subjectaccessreview"}"#)
    );
}
