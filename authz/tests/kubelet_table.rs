//! The kubelet's request attributes, row by row: every path of reference 3.4 for every version
//! column (1.21 to 1.37, each gate state that a version allows), the upstream `auth_test.go`
//! expectations of 3.4(e), `isSubpath` (3.3), the verb mapping (3.2), version parsing and gate
//! resolution, and a coverage test in the spirit of Kubernetes' `TestAuthzCoverage`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use kubelet_authz::kubelet::{
    self, is_subpath, paths, verb_for_method, FeatureGates, GateError, KubeletModel,
    KubeletVersion, Subresource, Subresources, VersionError, ENDPOINTS,
};
use rstest::rstest;

/// One version column of the reference table: a minor version and the gate setting.
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy)]
enum Col {
    V1_21,
    V1_22,
    V1_23,
    V1_24,
    V1_25,
    V1_26,
    V1_27,
    V1_28,
    V1_29,
    V1_30,
    V1_31,
    V1_32_gate_off,
    V1_32_gate_on,
    V1_33_gate_off,
    V1_33_gate_on,
    V1_34_gate_off,
    V1_34_gate_on,
    V1_35_gate_off,
    V1_35_gate_on,
    V1_36,
    V1_37,
}

impl Col {
    fn minor_and_gate(self) -> (u32, Option<bool>) {
        use Col::*;
        match self {
            V1_21 => (21, None),
            V1_22 => (22, None),
            V1_23 => (23, None),
            V1_24 => (24, None),
            V1_25 => (25, None),
            V1_26 => (26, None),
            V1_27 => (27, None),
            V1_28 => (28, None),
            V1_29 => (29, None),
            V1_30 => (30, None),
            V1_31 => (31, None),
            V1_32_gate_off => (32, Some(false)),
            V1_32_gate_on => (32, Some(true)),
            V1_33_gate_off => (33, Some(false)),
            V1_33_gate_on => (33, Some(true)),
            V1_34_gate_off => (34, Some(false)),
            V1_34_gate_on => (34, Some(true)),
            V1_35_gate_off => (35, Some(false)),
            V1_35_gate_on => (35, Some(true)),
            V1_36 => (36, None),
            V1_37 => (37, None),
        }
    }

    fn model(self) -> KubeletModel {
        let (minor, gate) = self.minor_and_gate();
        let version = KubeletVersion::new(minor).unwrap();
        KubeletModel::new(
            version,
            FeatureGates {
                kubelet_fine_grained_authz: gate,
                ..FeatureGates::default()
            },
        )
        .unwrap()
    }

    /// The expected subresources for a row in this column.
    fn expect(self, row: &Row) -> &'static str {
        let (minor, gate) = self.minor_and_gate();
        match (minor, gate) {
            (21..=24, _) if row.legacy == "checkpoint" => "proxy",
            (21..=31, _) => row.legacy,
            // Gate off in 1.32-1.35: the fine-grained switch is skipped, the rest is 1.21-1.31.
            (32..=35, Some(false)) => row.legacy,
            (32, _) => row.on_1_32,
            (33..=35, _) => row.on_1_33,
            _ => row.v1_36,
        }
    }

    const ALL: [Col; 21] = [
        Col::V1_21,
        Col::V1_22,
        Col::V1_23,
        Col::V1_24,
        Col::V1_25,
        Col::V1_26,
        Col::V1_27,
        Col::V1_28,
        Col::V1_29,
        Col::V1_30,
        Col::V1_31,
        Col::V1_32_gate_off,
        Col::V1_32_gate_on,
        Col::V1_33_gate_off,
        Col::V1_33_gate_on,
        Col::V1_34_gate_off,
        Col::V1_34_gate_on,
        Col::V1_35_gate_off,
        Col::V1_35_gate_on,
        Col::V1_36,
        Col::V1_37,
    ];
}

/// One row of the path table: the request path (`r.URL.Path`) and its subresources per column,
/// comma-separated in evaluation order.
struct Row {
    path: &'static str,
    /// 1.21-1.31 (checkpoint from 1.25), and 1.32-1.35 with the gate off.
    legacy: &'static str,
    /// 1.32 with the gate on.
    on_1_32: &'static str,
    /// 1.33-1.35 with the gate on.
    on_1_33: &'static str,
    /// 1.36 and later.
    v1_36: &'static str,
}

const fn row(
    path: &'static str,
    legacy: &'static str,
    on_1_32: &'static str,
    on_1_33: &'static str,
    v1_36: &'static str,
) -> Row {
    Row {
        path,
        legacy,
        on_1_32,
        on_1_33,
        v1_36,
    }
}

const fn same(path: &'static str, subs: &'static str) -> Row {
    row(path, subs, subs, subs, subs)
}

const PODS: &str = "pods,proxy";
const HEALTHZ: &str = "healthz,proxy";
const CONFIGZ: &str = "configz,proxy";

/// Reference 3.4, path -> subresources, with representative paths for each row.
const TABLE: &[Row] = &[
    // `/stats`, `/stats/...` -> stats
    same("/stats", "stats"),
    same("/stats/", "stats"),
    same("/stats/summary", "stats"),
    same("/stats/container", "stats"),
    same("/statsx", "proxy"),
    same("/Stats/summary", "proxy"),
    // `/metrics`, `/metrics/...` -> metrics
    same("/metrics", "metrics"),
    same("/metrics/", "metrics"),
    same("/metrics/cadvisor", "metrics"),
    same("/metrics/resource", "metrics"),
    same("/metrics/probes", "metrics"),
    same("/metrics/slis", "metrics"),
    same("/metrics/anything", "metrics"),
    same("/metricsx", "proxy"),
    same("/METRICS", "proxy"),
    // `/logs`, `/logs/...` -> log
    same("/logs", "log"),
    same("/logs/", "log"),
    same("/logs/kubelet.log", "log"),
    same("/logs/pods/ns_pod/ctr/0.log", "log"),
    same("/logsx", "proxy"),
    // `/checkpoint`, `/checkpoint/...` -> checkpoint (1.25+; proxy in 1.21-1.24)
    same("/checkpoint", "checkpoint"),
    same("/checkpoint/", "checkpoint"),
    same("/checkpoint/ns/pod/ctr", "checkpoint"),
    same("/checkpointx", "proxy"),
    // `/pods`, `/pods/...` -> pods, proxy (fine-grained)
    row("/pods", "proxy", PODS, PODS, PODS),
    row("/pods/", "proxy", PODS, PODS, PODS),
    row("/pods/x", "proxy", PODS, PODS, PODS),
    same("/podsfoo", "proxy"),
    // `/runningpods`, `/runningpods/...` -> pods, proxy (fine-grained)
    row("/runningpods", "proxy", PODS, PODS, PODS),
    row("/runningpods/", "proxy", PODS, PODS, PODS),
    row("/runningpods/x", "proxy", PODS, PODS, PODS),
    same("/runningpodsx", "proxy"),
    // `/runningPods/...` (capital P) -> proxy everywhere
    same("/runningPods", "proxy"),
    same("/runningPods/", "proxy"),
    same("/runningPods/x", "proxy"),
    // `/healthz`, `/healthz/...` -> healthz, proxy (fine-grained)
    row("/healthz", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    row("/healthz/", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    row("/healthz/ping", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    row("/healthz/log", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    row("/healthz/syncloop", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    row("/healthz/foo", "proxy", HEALTHZ, HEALTHZ, HEALTHZ),
    same("/healthzx", "proxy"),
    same("/Healthz", "proxy"),
    // `/configz`, `/configz/...` -> configz, proxy (fine-grained)
    row("/configz", "proxy", CONFIGZ, CONFIGZ, CONFIGZ),
    row("/configz/", "proxy", CONFIGZ, CONFIGZ, CONFIGZ),
    row("/configz/x", "proxy", CONFIGZ, CONFIGZ, CONFIGZ),
    same("/configzx", "proxy"),
    // `/statusz`: proxy; gated statusz, proxy in 1.33-1.35; ungated statusz alone in 1.36
    row("/statusz", "proxy", "proxy", "statusz,proxy", "statusz"),
    row("/statusz/", "proxy", "proxy", "statusz,proxy", "statusz"),
    row("/statusz/x", "proxy", "proxy", "statusz,proxy", "statusz"),
    same("/statuszx", "proxy"),
    // `/flagz`: proxy until 1.36, then configz alone
    row("/flagz", "proxy", "proxy", "proxy", "configz"),
    row("/flagz/", "proxy", "proxy", "proxy", "configz"),
    row("/flagz/x", "proxy", "proxy", "proxy", "configz"),
    same("/flagzx", "proxy"),
    // `/spec/...`: removed in 1.21, proxy
    same("/spec", "proxy"),
    same("/spec/", "proxy"),
    same("/spec/x", "proxy"),
    // everything else -> proxy
    same("/exec/ns/pod/ctr", "proxy"),
    same("/exec/ns/pod/uid/ctr", "proxy"),
    same("/exec", "proxy"),
    same("/attach/ns/pod/ctr", "proxy"),
    same("/run/ns/pod/ctr", "proxy"),
    same("/portForward/ns/pod", "proxy"),
    same("/portForward/ns/pod/uid", "proxy"),
    same("/containerLogs/ns/pod/ctr", "proxy"),
    same("/debug/flags/v", "proxy"),
    same("/debug/pprof/", "proxy"),
    same("/debug/pprof/profile", "proxy"),
    same("/debug/pprof/heap", "proxy"),
    same("/cri/x", "proxy"),
    same("/", "proxy"),
    same("", "proxy"),
    same("/foo", "proxy"),
    // isSubpath on the decoded path only: no trimming, no case folding
    same("/metrics%2Fcadvisor", "proxy"),
    same("//metrics", "proxy"),
];

fn lookup(path: &str) -> &'static Row {
    TABLE
        .iter()
        .find(|r| r.path == path)
        .unwrap_or_else(|| panic!("no table row for {path:?}"))
}

fn render(s: Subresources) -> String {
    s.iter()
        .map(Subresource::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

#[rstest]
#[case::stats("/stats")]
#[case::stats_slash("/stats/")]
#[case::stats_summary("/stats/summary")]
#[case::stats_container("/stats/container")]
#[case::statsx("/statsx")]
#[case::stats_capital("/Stats/summary")]
#[case::metrics("/metrics")]
#[case::metrics_slash("/metrics/")]
#[case::metrics_cadvisor("/metrics/cadvisor")]
#[case::metrics_resource("/metrics/resource")]
#[case::metrics_probes("/metrics/probes")]
#[case::metrics_slis("/metrics/slis")]
#[case::metrics_anything("/metrics/anything")]
#[case::metricsx("/metricsx")]
#[case::metrics_upper("/METRICS")]
#[case::logs("/logs")]
#[case::logs_slash("/logs/")]
#[case::logs_file("/logs/kubelet.log")]
#[case::logs_deep("/logs/pods/ns_pod/ctr/0.log")]
#[case::logsx("/logsx")]
#[case::checkpoint("/checkpoint")]
#[case::checkpoint_slash("/checkpoint/")]
#[case::checkpoint_ctr("/checkpoint/ns/pod/ctr")]
#[case::checkpointx("/checkpointx")]
#[case::pods("/pods")]
#[case::pods_slash("/pods/")]
#[case::pods_x("/pods/x")]
#[case::podsfoo("/podsfoo")]
#[case::runningpods("/runningpods")]
#[case::runningpods_slash("/runningpods/")]
#[case::runningpods_x("/runningpods/x")]
#[case::runningpodsx("/runningpodsx")]
#[case::running_pods_capital("/runningPods")]
#[case::running_pods_capital_slash("/runningPods/")]
#[case::running_pods_capital_x("/runningPods/x")]
#[case::healthz("/healthz")]
#[case::healthz_slash("/healthz/")]
#[case::healthz_ping("/healthz/ping")]
#[case::healthz_log("/healthz/log")]
#[case::healthz_syncloop("/healthz/syncloop")]
#[case::healthz_foo("/healthz/foo")]
#[case::healthzx("/healthzx")]
#[case::healthz_capital("/Healthz")]
#[case::configz("/configz")]
#[case::configz_slash("/configz/")]
#[case::configz_x("/configz/x")]
#[case::configzx("/configzx")]
#[case::statusz("/statusz")]
#[case::statusz_slash("/statusz/")]
#[case::statusz_x("/statusz/x")]
#[case::statuszx("/statuszx")]
#[case::flagz("/flagz")]
#[case::flagz_slash("/flagz/")]
#[case::flagz_x("/flagz/x")]
#[case::flagzx("/flagzx")]
#[case::spec("/spec")]
#[case::spec_slash("/spec/")]
#[case::spec_x("/spec/x")]
#[case::exec("/exec/ns/pod/ctr")]
#[case::exec_uid("/exec/ns/pod/uid/ctr")]
#[case::exec_root("/exec")]
#[case::attach("/attach/ns/pod/ctr")]
#[case::run("/run/ns/pod/ctr")]
#[case::port_forward("/portForward/ns/pod")]
#[case::port_forward_uid("/portForward/ns/pod/uid")]
#[case::container_logs("/containerLogs/ns/pod/ctr")]
#[case::debug_flags_v("/debug/flags/v")]
#[case::debug_pprof("/debug/pprof/")]
#[case::debug_pprof_profile("/debug/pprof/profile")]
#[case::debug_pprof_heap("/debug/pprof/heap")]
#[case::cri("/cri/x")]
#[case::root("/")]
#[case::empty("")]
#[case::foo("/foo")]
#[case::encoded_slash("/metrics%2Fcadvisor")]
#[case::double_slash("//metrics")]
fn path_table(
    #[case] path: &str,
    #[values(
        Col::V1_21,
        Col::V1_22,
        Col::V1_23,
        Col::V1_24,
        Col::V1_25,
        Col::V1_26,
        Col::V1_27,
        Col::V1_28,
        Col::V1_29,
        Col::V1_30,
        Col::V1_31,
        Col::V1_32_gate_off,
        Col::V1_32_gate_on,
        Col::V1_33_gate_off,
        Col::V1_33_gate_on,
        Col::V1_34_gate_off,
        Col::V1_34_gate_on,
        Col::V1_35_gate_off,
        Col::V1_35_gate_on,
        Col::V1_36,
        Col::V1_37
    )]
    col: Col,
) {
    let row = lookup(path);
    let model = col.model();
    let got = render(model.subresources(path));
    assert_eq!(got, col.expect(row), "path {path:?} in column {col:?}");
    // The free function and the method agree.
    assert_eq!(kubelet::subresources(model, path), model.subresources(path));
}

/// Every row of `TABLE` in every column, in one place (the named cases above cover the same rows).
#[test]
fn every_table_row_in_every_column() {
    for row in TABLE {
        for col in Col::ALL {
            let got = render(col.model().subresources(row.path));
            assert_eq!(
                got,
                col.expect(row),
                "path {:?} in column {col:?}",
                row.path
            );
        }
    }
}

/// `Subresources` is one or two entries; the second, when present, is never fine-grained.
#[test]
fn subresources_shape() {
    for row in TABLE {
        for col in Col::ALL {
            let subs = col.model().subresources(row.path);
            let v = subs.to_vec();
            assert_eq!(v.len(), subs.len());
            assert!(!subs.is_empty());
            assert!(subs.len() == 1 || subs.len() == 2);
            assert_eq!(subs.get(0), v.first().copied());
            assert_eq!(subs.get(1), v.get(1).copied());
            assert_eq!(subs.get(2), None);
            if subs.len() == 2 {
                assert_eq!(subs.get(1), Some(Subresource::Proxy));
            }
        }
    }
}

/// Kubernetes' `TestAuthzCoverage`: every endpoint the model lists has a row in the table.
#[test]
fn every_endpoint_has_a_row() {
    for e in ENDPOINTS {
        assert!(
            TABLE.iter().any(|r| r.path == e.path),
            "endpoint {} ({}) has no row in the path table",
            e.name,
            e.path
        );
    }
}

/// Endpoint names are unique and every listed method maps to a non-empty verb.
#[test]
fn endpoints_are_well_formed() {
    let mut names: Vec<_> = ENDPOINTS.iter().map(|e| e.name).collect();
    names.sort_unstable();
    let before = names.len();
    names.dedup();
    assert_eq!(before, names.len(), "duplicate endpoint names");
    for e in ENDPOINTS {
        assert!(e.path.starts_with('/'), "{}", e.name);
        assert!(e.since_minor >= kubelet::OLDEST_MINOR, "{}", e.name);
        assert!(!e.methods.is_empty(), "{}", e.name);
        for m in e.methods {
            assert_ne!(verb_for_method(m), "", "{} {m}", e.name);
        }
        assert_eq!(
            e.streaming(),
            kubelet::is_streaming_path(e.path),
            "{}",
            e.name
        );
    }
    let streaming: Vec<&str> = kubelet::ENDPOINTS
        .iter()
        .filter(|e| e.streaming())
        .map(|e| e.name)
        .collect();
    assert_eq!(streaming, ["exec", "attach", "run", "portForward"]);
}

#[rstest]
#[case::v1_21(21, false, false)]
#[case::v1_25(25, true, false)]
#[case::v1_35(35, true, false)]
#[case::v1_36(36, true, true)]
fn endpoints_for_version(#[case] minor: u32, #[case] checkpoint: bool, #[case] flagz: bool) {
    let v = KubeletVersion::new(minor).unwrap();
    let names: Vec<_> = kubelet::endpoints_for(v).map(|e| e.name).collect();
    assert_eq!(names.contains(&"checkpoint"), checkpoint);
    assert_eq!(names.contains(&"flagz"), flagz);
    assert_eq!(names.contains(&"statusz"), flagz);
    assert!(names.contains(&"exec"));
}

/// Reference 3.4(e): the expectations of upstream `auth_test.go` [1], on 1.36.
#[rstest]
#[case::flagz("/flagz", "configz")]
#[case::statusz("/statusz", "statusz")]
#[case::checkpoint("/checkpoint/ns/pod/ctr", "checkpoint")]
#[case::metrics("/metrics", "metrics")]
#[case::metrics_slis("/metrics/slis", "metrics")]
#[case::metrics_cadvisor("/metrics/cadvisor", "metrics")]
#[case::metrics_probes("/metrics/probes", "metrics")]
#[case::metrics_resource("/metrics/resource", "metrics")]
#[case::logs("/logs/", "log")]
#[case::logs_logpath("/logs/some/log/path", "log")]
#[case::stats("/stats/", "stats")]
#[case::stats_summary("/stats/summary", "stats")]
#[case::attach("/attach/ns/pod/ctr", "proxy")]
#[case::exec("/exec/ns/pod/ctr", "proxy")]
#[case::run("/run/ns/pod/ctr", "proxy")]
#[case::port_forward("/portForward/ns/pod", "proxy")]
#[case::container_logs("/containerLogs/ns/pod/ctr", "proxy")]
#[case::debug_flags_v("/debug/flags/v", "proxy")]
#[case::debug_pprof("/debug/pprof/goroutine", "proxy")]
#[case::healthz("/healthz", "healthz,proxy")]
#[case::healthz_log("/healthz/log", "healthz,proxy")]
#[case::healthz_ping("/healthz/ping", "healthz,proxy")]
#[case::healthz_syncloop("/healthz/syncloop", "healthz,proxy")]
#[case::pods("/pods/", "pods,proxy")]
#[case::runningpods("/runningpods/", "pods,proxy")]
#[case::configz("/configz", "configz,proxy")]
fn upstream_auth_test_on_1_36(#[case] path: &str, #[case] want: &str) {
    let model = KubeletModel::for_version(KubeletVersion::LATEST);
    assert!(model.fine_grained());
    assert_eq!(render(model.subresources(path)), want);
}

/// Reference 3.4(e) with fine-grained disabled (our 1.35, gate off): the fine-grained rows lose
/// their leading entry; the others are unchanged. (`/statusz` and `/flagz` differ: we model 1.35
/// like 1.33/1.34, see `kubelet::subresources`.)
#[rstest]
#[case::checkpoint("/checkpoint/ns/pod/ctr", "checkpoint")]
#[case::metrics("/metrics", "metrics")]
#[case::metrics_slis("/metrics/slis", "metrics")]
#[case::logs("/logs/", "log")]
#[case::stats_summary("/stats/summary", "stats")]
#[case::exec("/exec/ns/pod/ctr", "proxy")]
#[case::debug_flags_v("/debug/flags/v", "proxy")]
#[case::healthz("/healthz", "proxy")]
#[case::healthz_log("/healthz/log", "proxy")]
#[case::healthz_ping("/healthz/ping", "proxy")]
#[case::healthz_syncloop("/healthz/syncloop", "proxy")]
#[case::pods("/pods/", "proxy")]
#[case::runningpods("/runningpods/", "proxy")]
#[case::configz("/configz", "proxy")]
#[case::statusz("/statusz", "proxy")]
#[case::flagz("/flagz", "proxy")]
fn upstream_auth_test_fine_grained_disabled(#[case] path: &str, #[case] want: &str) {
    let model = Col::V1_35_gate_off.model();
    assert!(!model.fine_grained());
    assert_eq!(render(model.subresources(path)), want);
}

/// Reference 3.3: upstream `TestIsSubPath`.
#[rstest]
#[case::empty_empty("", "", true)]
#[case::foo_foo("/foo", "/foo", true)]
#[case::foo_slash_foo_slash("/foo/", "/foo/", true)]
#[case::foo_bar_foo_bar("/foo/bar", "/foo/bar", true)]
#[case::foo_root("/foo", "/", true)]
#[case::foo_slash_root("/foo/", "/", true)]
#[case::foo_bar_root("/foo/bar", "/", true)]
#[case::foo_slash_foo("/foo/", "/foo", true)]
#[case::foo_bar_foo("/foo/bar", "/foo", true)]
#[case::foo_bar("/foo", "/bar", false)]
#[case::foo_foobar("/foo", "/foobar", false)]
#[case::foobar_foo("/foobar", "/foo", false)]
fn upstream_is_subpath(#[case] subpath: &str, #[case] path: &str, #[case] want: bool) {
    assert_eq!(is_subpath(subpath, path), want);
}

/// Reference 3.3 with the kubelet's constants, plus edge cases of the one-slash trim.
#[rstest]
#[case::stats_bare("/stats", paths::STATS, true)]
#[case::stats_slash("/stats/", paths::STATS, true)]
#[case::stats_x("/stats/x", paths::STATS, true)]
#[case::statsx("/statsx", paths::STATS, false)]
#[case::metrics("/metrics", paths::METRICS, true)]
#[case::metrics_cadvisor("/metrics/cadvisor", paths::METRICS, true)]
#[case::metrics_anything("/metrics/anything", paths::METRICS, true)]
#[case::metricsx("/metricsx", paths::METRICS, false)]
#[case::logs_bare("/logs", paths::LOGS, true)]
#[case::logs_x("/logs/x", paths::LOGS, true)]
#[case::logsx("/logsx", paths::LOGS, false)]
#[case::checkpoint_bare("/checkpoint", paths::CHECKPOINT, true)]
#[case::checkpoint_x("/checkpoint/a/b/c", paths::CHECKPOINT, true)]
#[case::checkpointx("/checkpointx", paths::CHECKPOINT, false)]
#[case::pods("/pods", paths::PODS, true)]
#[case::pods_slash("/pods/", paths::PODS, true)]
#[case::podsx("/podsx", paths::PODS, false)]
#[case::runningpods_bare("/runningpods", paths::RUNNING_PODS, true)]
#[case::runningpods_x("/runningpods/x", paths::RUNNING_PODS, true)]
#[case::running_pods_capital("/runningPods/", paths::RUNNING_PODS, false)]
#[case::healthz("/healthz", paths::HEALTHZ, true)]
#[case::healthz_ping("/healthz/ping", paths::HEALTHZ, true)]
#[case::healthzx("/healthzx", paths::HEALTHZ, false)]
#[case::configz("/configz", paths::CONFIGZ, true)]
#[case::configzx("/configzx", paths::CONFIGZ, false)]
#[case::statusz("/statusz", paths::STATUSZ, true)]
#[case::statusz_x("/statusz/x", paths::STATUSZ, true)]
#[case::flagz("/flagz", paths::FLAGZ, true)]
#[case::flagzx("/flagzx", paths::FLAGZ, false)]
#[case::only_one_slash_trimmed("/stats", "/stats//", false)]
#[case::double_slash_constant("/stats//", "/stats//", true)]
#[case::trailing_slash_only_on_subpath("/metrics/", paths::METRICS, true)]
#[case::shorter_subpath("/me", paths::METRICS, false)]
#[case::case_sensitive("/Metrics", paths::METRICS, false)]
fn kubelet_constants_is_subpath(#[case] subpath: &str, #[case] path: &str, #[case] want: bool) {
    assert_eq!(is_subpath(subpath, path), want);
}

#[test]
fn path_constants_are_the_kubelets() {
    assert_eq!(paths::STATS, "/stats/");
    assert_eq!(paths::METRICS, "/metrics");
    assert_eq!(paths::LOGS, "/logs/");
    assert_eq!(paths::CHECKPOINT, "/checkpoint/");
    assert_eq!(paths::PODS, "/pods");
    assert_eq!(paths::RUNNING_PODS, "/runningpods/");
    assert_eq!(paths::HEALTHZ, "/healthz");
    assert_eq!(paths::CONFIGZ, "/configz");
    assert_eq!(paths::STATUSZ, "/statusz");
    assert_eq!(paths::FLAGZ, "/flagz");
}

/// Reference 3.2: exact, case-sensitive method to verb.
#[rstest]
#[case::post("POST", "create")]
#[case::get("GET", "get")]
#[case::put("PUT", "update")]
#[case::patch("PATCH", "patch")]
#[case::delete("DELETE", "delete")]
#[case::head("HEAD", "")]
#[case::options("OPTIONS", "")]
#[case::connect("CONNECT", "")]
#[case::trace("TRACE", "")]
#[case::lower_get("get", "")]
#[case::lower_post("post", "")]
#[case::mixed_get("Get", "")]
#[case::padded_get(" GET", "")]
#[case::get_padded("GET ", "")]
#[case::empty("", "")]
#[case::list("LIST", "")]
#[case::watch("WATCH", "")]
#[case::verb_name("create", "")]
fn verb_mapping(#[case] method: &str, #[case] verb: &str) {
    assert_eq!(verb_for_method(method), verb);
}

#[rstest]
#[case::plain("1.36", 36)]
#[case::v_patch("v1.33.2", 33)]
#[case::vendor_suffix("v1.30.1-eks-abc", 30)]
#[case::build_suffix("v1.29.0+k3s1", 29)]
#[case::oldest("1.21", 21)]
#[case::oldest_v("v1.21.0", 21)]
#[case::newer("1.40", 40)]
#[case::no_v_patch("1.32.10", 32)]
#[case::padded(" 1.34 ", 34)]
#[case::rc("v1.35.0-rc.1", 35)]
fn version_parses(#[case] s: &str, #[case] minor: u32) {
    let v: KubeletVersion = s.parse().unwrap();
    assert_eq!(v.minor(), minor);
    assert_eq!(v.to_string(), format!("1.{minor}"));
}

#[rstest]
#[case::empty("")]
#[case::major_only("1")]
#[case::major_dot("1.")]
#[case::major_two("2.30")]
#[case::major_zero("0.30")]
#[case::letters("one.thirty")]
#[case::minor_letters("1.3x")]
#[case::minor_negative("1.-3")]
#[case::patch_empty("1.30.")]
#[case::patch_letters("1.30.x")]
#[case::patch_bad_suffix("1.30.1_eks")]
#[case::double_v("vv1.30")]
#[case::upper_v("V1.30")]
#[case::spaces_inside("1. 30")]
#[case::huge_minor("1.99999999999999999999")]
#[case::word("latest")]
fn version_malformed(#[case] s: &str) {
    let err = s.parse::<KubeletVersion>().unwrap_err();
    assert!(matches!(err, VersionError::Malformed(_)), "{s:?}: {err:?}");
    assert!(err.to_string().contains(s.trim()) || s.trim().is_empty());
}

#[rstest]
#[case::v1_20("1.20")]
#[case::v1_0("1.0")]
#[case::v1_19_patch("v1.19.3")]
fn version_too_old(#[case] s: &str) {
    let err = s.parse::<KubeletVersion>().unwrap_err();
    assert!(matches!(err, VersionError::TooOld(_)), "{s:?}: {err:?}");
    assert!(matches!(
        KubeletVersion::new(20),
        Err(VersionError::TooOld(_))
    ));
}

#[test]
fn version_serde_round_trip() {
    let v: KubeletVersion = serde_json::from_str("\"v1.33.2\"").unwrap();
    assert_eq!(serde_json::to_string(&v).unwrap(), "\"1.33\"");
    assert!(serde_json::from_str::<KubeletVersion>("\"1.20\"").is_err());
    assert!(serde_json::from_str::<KubeletVersion>("33").is_err());
    assert_eq!(KubeletVersion::LATEST.minor(), kubelet::GA_MINOR);
}

/// Gate resolution per version: `Ok(effective)` or the error kind.
#[rstest]
#[case::v1_31_default(31, None, Ok(false))]
#[case::v1_31_false(31, Some(false), Ok(false))]
#[case::v1_31_true(31, Some(true), Err("not-in-version"))]
#[case::v1_21_true(21, Some(true), Err("not-in-version"))]
#[case::v1_32_default(32, None, Ok(false))]
#[case::v1_32_false(32, Some(false), Ok(false))]
#[case::v1_32_true(32, Some(true), Ok(true))]
#[case::v1_33_default(33, None, Ok(true))]
#[case::v1_33_false(33, Some(false), Ok(false))]
#[case::v1_34_default(34, None, Ok(true))]
#[case::v1_35_default(35, None, Ok(true))]
#[case::v1_35_false(35, Some(false), Ok(false))]
#[case::v1_35_true(35, Some(true), Ok(true))]
#[case::v1_36_default(36, None, Ok(true))]
#[case::v1_36_true(36, Some(true), Ok(true))]
#[case::v1_36_false(36, Some(false), Err("locked"))]
#[case::v1_37_false(37, Some(false), Err("locked"))]
fn gate_resolution(
    #[case] minor: u32,
    #[case] gate: Option<bool>,
    #[case] want: Result<bool, &str>,
) {
    let version = KubeletVersion::new(minor).unwrap();
    let got = KubeletModel::new(
        version,
        FeatureGates {
            kubelet_fine_grained_authz: gate,
            ..FeatureGates::default()
        },
    );
    match (got, want) {
        (Ok(m), Ok(fine)) => {
            assert_eq!(m.fine_grained(), fine);
            assert_eq!(m.version(), version);
        }
        (Err(GateError::NotInVersion(v)), Err("not-in-version")) => {
            assert_eq!(v, version);
            assert!(GateError::NotInVersion(v)
                .to_string()
                .starts_with("featureGates.KubeletFineGrainedAuthz:"));
        }
        (Err(GateError::Locked(v)), Err("locked")) => assert_eq!(v, version),
        (got, want) => panic!("1.{minor} gate {gate:?}: got {got:?}, want {want:?}"),
    }
}

/// `for_version` equals `new` with no gate setting.
#[test]
fn for_version_is_the_default_gate() {
    for minor in 21..=40 {
        let v = KubeletVersion::new(minor).unwrap();
        assert_eq!(
            KubeletModel::for_version(v),
            KubeletModel::new(v, FeatureGates::default()).unwrap()
        );
        assert_eq!(v.has_multi_attribute_authz(), minor >= 32);
        assert_eq!(v.has_checkpoint(), minor >= 25);
        assert_eq!(v.fine_grained_locked(), minor >= 36);
    }
}

#[test]
fn feature_gates_serde() {
    let g: FeatureGates = serde_json::from_str(r#"{"KubeletFineGrainedAuthz":false}"#).unwrap();
    assert_eq!(g.kubelet_fine_grained_authz, Some(false));
    assert!(serde_json::from_str::<FeatureGates>(r#"{"Other":true}"#).is_err());
    assert_eq!(
        serde_json::to_string(&FeatureGates::default()).unwrap(),
        "{}"
    );
}

#[test]
fn subresource_names_round_trip() {
    for s in Subresource::ALL {
        assert_eq!(Subresource::parse(s.as_str()), Some(s));
        assert_eq!(s.to_string(), s.as_str());
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            format!("\"{}\"", s.as_str())
        );
    }
    assert_eq!(Subresource::parse("Proxy"), None);
    assert_eq!(Subresource::parse("spec"), None);
}

#[rstest]
#[case::exec("/exec/ns/pod/ctr", true)]
#[case::exec_root("/exec", true)]
#[case::attach("/attach/ns/pod/ctr", true)]
#[case::run("/run/ns/pod/ctr", true)]
#[case::port_forward("/portForward/ns/pod", true)]
#[case::port_forward_lower("/portforward/ns/pod", false)]
#[case::execx("/execx", false)]
#[case::container_logs("/containerLogs/ns/pod/ctr", false)]
#[case::running("/runningpods/", false)]
fn streaming_paths(#[case] path: &str, #[case] want: bool) {
    assert_eq!(kubelet::is_streaming_path(path), want);
}

/// `AllowParsingUserUIDFromCertAuth`: added in 1.33 (beta, on by default), settable either way
/// from then on; any setting before 1.33 is refused, as the kubelet refuses a gate it does not
/// know. It never changes the subresources.
#[rstest]
#[case::v1_21_absent(21, None, Ok(false))]
#[case::v1_32_absent(32, None, Ok(false))]
#[case::v1_32_true(32, Some(true), Err(()))]
#[case::v1_32_false(32, Some(false), Err(()))]
#[case::v1_31_false(31, Some(false), Err(()))]
#[case::v1_33_default(33, None, Ok(true))]
#[case::v1_33_false(33, Some(false), Ok(false))]
#[case::v1_34_true(34, Some(true), Ok(true))]
#[case::v1_35_false(35, Some(false), Ok(false))]
#[case::v1_36_default(36, None, Ok(true))]
#[case::v1_36_false(36, Some(false), Ok(false))]
#[case::v1_37_false(37, Some(false), Ok(false))]
fn cert_uid_gate_resolution(
    #[case] minor: u32,
    #[case] gate: Option<bool>,
    #[case] want: Result<bool, ()>,
) {
    let version = KubeletVersion::new(minor).unwrap();
    let got = KubeletModel::new(
        version,
        FeatureGates {
            allow_parsing_user_uid_from_cert_auth: gate,
            ..FeatureGates::default()
        },
    );
    match (got, want) {
        (Ok(m), Ok(reads)) => {
            assert_eq!(m.reads_cert_uid(), reads);
            assert_eq!(
                m.fine_grained(),
                KubeletModel::for_version(version).fine_grained()
            );
        }
        (Err(e), Err(())) => {
            assert_eq!(e, GateError::CertUidNotInVersion(version));
            assert_eq!(e.field(), "featureGates.AllowParsingUserUIDFromCertAuth");
            assert_eq!(
                e.to_string(),
                format!("featureGates.AllowParsingUserUIDFromCertAuth: the gate does not exist in kubelet 1.{minor} (it was added in 1.33)")
            );
        }
        (got, want) => panic!("1.{minor} {gate:?}: got {got:?}, want {want:?}"),
    }
}
