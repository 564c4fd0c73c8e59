//! The proxy's metric ids: each series and histogram defined once, on first use; failures
//! warned once and never retried.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use std::time::Duration;

use kubelet_authz::decision::CalloutKind;
use kubelet_authz::metrics::Counters;

use super::*;
use crate::host::{Host, HostError, Level, MetricKind};

/// Records the metric hostcalls.
#[derive(Default)]
struct Recorder {
    fail: bool,
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
        if self.fail {
            return Err(HostError {
                call: "define_metric",
                status: 2,
            });
        }
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

#[test]
fn a_series_is_defined_once_and_gets_every_delta() {
    let mut c = Counters::default();
    let mut ids = Ids::default();
    let mut h = Recorder::default();
    for _ in 0..3 {
        c.internal_error();
    }
    c.retry(CalloutKind::TokenReview);
    for (series, by) in c.take() {
        ids.count(&mut h, series, by);
    }
    assert_eq!(h.defined.len(), 2);
    assert_eq!(
        h.defined[1],
        (
            MetricKind::Counter,
            "kubelet_authz.internal_errors_total".to_string()
        )
    );
    assert_eq!(h.increments, [(0, 1), (1, 3)]);
    c.internal_error();
    for (series, by) in c.take() {
        ids.count(&mut h, series, by);
    }
    assert_eq!(h.defined.len(), 2, "defined once");
    assert_eq!(h.increments.last(), Some(&(1, 1)));
}

#[test]
fn latency_is_one_histogram_per_kind() {
    let mut ids = Ids::default();
    let mut h = Recorder::default();
    ids.record(&mut h, CalloutKind::TokenReview, 3);
    ids.record(&mut h, CalloutKind::TokenReview, 40);
    ids.record(&mut h, CalloutKind::SubjectAccessReview, 7);
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
}

#[test]
fn a_failed_definition_is_warned_once_and_never_retried() {
    let mut ids = Ids::default();
    let mut h = Recorder {
        fail: true,
        ..Recorder::default()
    };
    ids.count(&mut h, 0, 1);
    ids.count(&mut h, 0, 1);
    ids.record(&mut h, CalloutKind::TokenReview, 1);
    assert_eq!(h.logs.len(), 1, "{:?}", h.logs);
    assert!(h.logs[0].contains("define_metric"), "{:?}", h.logs);
    h.fail = false;
    ids.count(&mut h, 0, 1);
    assert!(h.defined.is_empty(), "a failed series is not defined again");
    ids.count(&mut h, 1, 1);
    assert_eq!(h.defined.len(), 1, "another series still is");
}
