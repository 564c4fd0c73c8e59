//! The monitoring bundle's PromQL names what really exists (issue 21, point 6): every series that
//! the PrometheusRule (`envoy/kubernetes/monitoring/prometheusrule.yaml`) and the Grafana dashboard
//! (`grafana-dashboard.json`) select is one that is exported.
//!
//! - `kubelet_authz_*`: the filter's own families (`kubelet_authz_filter::metrics::Family`, and the
//!   latency histogram) and the node agent's series (`kubelet_authz_node::metrics::SERIES`,
//!   scraped as `/metrics/agent`): the family exists, every label matcher names one of its labels (or one the
//!   scrape adds: job, namespace, pod, node, ...), and every value an `=`, `!=`, `=~` or `!~`
//!   matcher lists is one the filter emits (a renamed outcome or result breaks this test, not the
//!   alert silently).
//! - `envoy_*`: a real Envoy 1.40 (`ENVOY_BIN`) with what the DaemonSet's bootstrap has (an
//!   overload manager with the heap and connection monitors and both actions, a listener with its
//!   HTTP filter from ECDS, named `kubelet-authz`) is scraped: every name is in its
//!   `/stats/prometheus`, every `__name__` regex matches a name there, every label matcher names a
//!   label that name carries there (or one the scrape adds).
//! - The kube-state-metrics series (`kube_*`) are not checked here (no kube-state-metrics here);
//!   their names and labels follow kube-state-metrics' documentation.
//!
//! `promtool` checks the syntax and tests the alerts' logic: `scripts/check-deploy.sh`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::{BTreeMap, BTreeSet};

use kubelet_authz::decision::CalloutKind;
use kubelet_authz::labels::labels;
use kubelet_authz_e2e::envoy::Envoy;
use kubelet_authz_e2e::render::workspace;
use kubelet_authz_filter::metrics::{Family, LATENCY, PROMETHEUS_PREFIX};
use serde_json::Value;

/// Labels the scrape (PodMonitor or ServiceMonitor) adds to every series.
const SCRAPE_LABELS: [&str; 7] = [
    "job",
    "namespace",
    "pod",
    "node",
    "container",
    "instance",
    "endpoint",
];

/// One label matcher of a selector.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Matcher {
    label: String,
    op: String,
    value: String,
}

/// One vector selector: the metric name (empty when it is given as `__name__` matchers only)
/// and its matchers.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
}

/// The matchers of the text inside `{...}`: `label op "value"`, comma-separated.
fn matchers(inside: &str) -> Vec<Matcher> {
    let mut out = Vec::new();
    let mut rest = inside.trim();
    while !rest.is_empty() {
        let label: String = rest
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        assert!(!label.is_empty(), "cannot read a matcher in {{{inside}}}");
        rest = rest[label.len()..].trim_start();
        let op = ["=~", "!~", "!=", "="]
            .into_iter()
            .find(|op| rest.starts_with(op))
            .unwrap_or_else(|| panic!("no operator after {label} in {{{inside}}}"));
        rest = rest[op.len()..].trim_start();
        assert!(rest.starts_with('"'), "unquoted value in {{{inside}}}");
        let end = rest[1..].find('"').expect("unterminated value") + 1;
        out.push(Matcher {
            label,
            op: op.to_string(),
            value: rest[1..end].to_string(),
        });
        rest = rest[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    out
}

/// Every vector selector of a PromQL expression that names a series of ours or Envoy's (a name
/// starting with `kubelet_authz_` or `envoy_`, or a `{__name__=~"..."}` selector).
fn selectors(expr: &str) -> Vec<Selector> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i] as char;
        if c == '"' {
            // Skip string literals (label_replace's arguments, matcher values outside braces).
            i += expr[i + 1..].find('"').map_or(expr.len(), |e| e + 2);
            continue;
        }
        let word_start =
            i == 0 || !(bytes[i - 1] as char).is_ascii_alphanumeric() && bytes[i - 1] != b'_';
        if c == '{' {
            let end = i + expr[i..].find('}').expect("unclosed {");
            let ms = matchers(&expr[i + 1..end]);
            if ms.iter().any(|m| m.label == "__name__") {
                out.push(Selector {
                    name: String::new(),
                    matchers: ms,
                });
            }
            i = end + 1;
            continue;
        }
        if word_start && (c.is_ascii_alphabetic() || c == '_') {
            let name: String = expr[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            i += name.len();
            if name.starts_with(PROMETHEUS_PREFIX) || name.starts_with("envoy_") {
                let ms = if expr[i..].starts_with('{') {
                    let end = i + expr[i..].find('}').expect("unclosed {");
                    let ms = matchers(&expr[i + 1..end]);
                    i = end + 1;
                    ms
                } else {
                    Vec::new()
                };
                out.push(Selector { name, matchers: ms });
            }
            continue;
        }
        i += 1;
    }
    out
}

/// Every PromQL expression of the PrometheusRule and the dashboard, with where it comes from.
fn expressions() -> Vec<(String, String)> {
    let dir = workspace().join("envoy/kubernetes/monitoring");
    let rule: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join("prometheusrule.yaml")).unwrap())
            .unwrap();
    let mut out = Vec::new();
    for g in rule["spec"]["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            let name = r["alert"].as_str().or(r["record"].as_str()).unwrap();
            out.push((
                format!("rule {name}"),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    let dash: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("grafana-dashboard.json")).unwrap())
            .unwrap();
    fn panels(ps: &Value, out: &mut Vec<(String, String)>) {
        for p in ps.as_array().into_iter().flatten() {
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        format!("panel {}", p["title"]),
                        e.replace("$__rate_interval", "5m"),
                    ));
                }
            }
            panels(&p["panels"], out);
        }
    }
    panels(&dash["panels"], &mut out);
    for v in dash["templating"]["list"].as_array().unwrap() {
        if let Some(q) = v["query"]["query"].as_str() {
            out.push((format!("variable {}", v["name"]), q.to_string()));
        }
    }
    out
}

/// The filter's families: Prometheus name -> label -> values.
fn filter_families() -> BTreeMap<String, BTreeMap<&'static str, BTreeSet<&'static str>>> {
    let mut out = BTreeMap::new();
    for f in Family::ALL {
        let labels = f
            .labels()
            .iter()
            .map(|(l, n, at)| (*l, (0..*n).filter_map(at).collect()))
            .collect();
        out.insert(format!("{PROMETHEUS_PREFIX}{}", f.short_name()), labels);
    }
    for suffix in ["_bucket", "_count", "_sum"] {
        let mut labels = BTreeMap::from([("kind", labels::<CalloutKind>().into_iter().collect())]);
        if suffix == "_bucket" {
            labels.insert("le", BTreeSet::new());
        }
        out.insert(format!("{PROMETHEUS_PREFIX}{LATENCY}{suffix}"), labels);
    }
    // The node agent's own series (`/metrics/agent`); its label values are free (the version).
    for (name, labels) in kubelet_authz_node::metrics::SERIES {
        let labels = labels.iter().map(|l| (*l, BTreeSet::new())).collect();
        assert!(
            out.insert(name.to_string(), labels).is_none(),
            "{name}: both a filter and an agent series"
        );
    }
    out
}

/// The values a matcher lists: one for `=`/`!=`; for `=~`/`!~` the alternatives of a plain
/// `a|b|c` (None when the regex is more than that: not checked).
fn listed_values(m: &Matcher) -> Option<Vec<String>> {
    let plain = |s: &str| s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    match m.op.as_str() {
        "=" | "!=" => Some(vec![m.value.clone()]),
        _ if m.value.split('|').all(plain) => {
            Some(m.value.split('|').map(str::to_string).collect())
        }
        _ => None,
    }
}

#[test]
fn selector_reader_reads_names_matchers_and_skips_strings() {
    let s = selectors(
        r#"sum by (a) (rate(kubelet_authz_callouts_total{job="x", result!~"ok|cancelled"}[5m])) / label_replace({__name__=~"envoy_a_.+", job="x"}, "b", "$1", "__name__", "envoy_(.+)") > envoy_c"#,
    );
    assert_eq!(s.len(), 3, "{s:?}");
    assert_eq!(s[0].name, "kubelet_authz_callouts_total");
    assert_eq!(
        s[0].matchers[1],
        Matcher {
            label: "result".into(),
            op: "!~".into(),
            value: "ok|cancelled".into()
        }
    );
    assert_eq!(s[1].name, "");
    assert_eq!(s[1].matchers[0].value, "envoy_a_.+");
    assert_eq!(s[2].name, "envoy_c");
    assert!(s[2].matchers.is_empty());
}

#[test]
fn every_kubelet_authz_selector_names_a_family_label_and_value_of_the_filter() {
    let families = filter_families();
    let mut checked = 0;
    for (where_, expr) in expressions() {
        for s in selectors(&expr) {
            if !s.name.starts_with(PROMETHEUS_PREFIX) {
                continue;
            }
            let labels = families
                .get(&s.name)
                .unwrap_or_else(|| panic!("{where_}: {} is no series of the filter", s.name));
            for m in &s.matchers {
                if SCRAPE_LABELS.contains(&m.label.as_str()) {
                    continue;
                }
                let values = labels.get(m.label.as_str()).unwrap_or_else(|| {
                    panic!(
                        "{where_}: {} has no label {} (it has {labels:?})",
                        s.name, m.label
                    )
                });
                if values.is_empty() {
                    continue; // le
                }
                for v in listed_values(m).unwrap_or_default() {
                    assert!(
                        values.contains(v.as_str()),
                        "{where_}: {}{{{}{}\"{}\"}}: the filter never emits {}={v:?} (it emits {values:?})",
                        s.name, m.label, m.op, m.value, m.label
                    );
                }
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 15,
        "only {checked} filter selectors found: the reader is broken"
    );
}

/// An Envoy with what the DaemonSet's bootstrap has for these series: the overload manager's
/// monitors and actions, a listener, an HTTP filter from ECDS named `kubelet-authz`.
const BOOTSTRAP: &str = r#"
node: { id: node-a, cluster: kubelet-authz }
admin: { address: { socket_address: { address: 127.0.0.1, port_value: 0 } } }
overload_manager:
  refresh_interval: 0.25s
  resource_monitors:
  - name: envoy.resource_monitors.global_downstream_max_connections
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig
      max_active_downstream_connections: 64
  - name: envoy.resource_monitors.fixed_heap
    typed_config:
      "@type": type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig
      max_heap_size_bytes: 335544320
  actions:
  - name: envoy.overload_actions.shrink_heap
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.90 } }]
  - name: envoy.overload_actions.stop_accepting_requests
    triggers: [{ name: envoy.resource_monitors.fixed_heap, threshold: { value: 0.98 } }]
static_resources:
  listeners:
  - name: kubelet
    address: { socket_address: { address: 127.0.0.1, port_value: 0 } }
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: kubelet
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes: [{ match: { prefix: "/" }, direct_response: { status: 200 } }]
          http_filters:
          - name: kubelet-authz
            config_discovery:
              config_source:
                path_config_source:
                  path: "ECDS_DIR/filter.yaml"
                  watched_directory: { path: "ECDS_DIR" }
              type_urls: [type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer]
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#;

const ECDS: &str = r#"resources:
- "@type": type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig
  name: kubelet-authz
  typed_config:
    "@type": type.googleapis.com/envoy.extensions.filters.http.buffer.v3.Buffer
    max_request_bytes: 1024
"#;

/// `/stats/prometheus` of a real Envoy: metric name -> the label names it carries.
fn scrape_names(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == ':')
            .collect();
        let labels = out.entry(name.clone()).or_default();
        if let Some(inside) = line[name.len()..].strip_prefix('{') {
            let inside = &inside[..inside.rfind('}').unwrap()];
            for m in matchers(inside) {
                labels.insert(m.label);
            }
        }
    }
    out
}

/// A `__name__` regex, anchored as PromQL anchors it, matched against a name. Supports what the
/// rules use: literals, `.+`, `.*`, `(a|b)` groups with an optional `?`.
fn name_matches(re: &str, name: &str) -> bool {
    fn go(re: &[u8], s: &[u8]) -> bool {
        match re {
            [] => s.is_empty(),
            [b'.', q @ (b'+' | b'*'), rest @ ..] => {
                let min = usize::from(*q == b'+');
                (min..=s.len()).any(|n| go(rest, &s[n..]))
            }
            [b'(', ..] => {
                let close = re.iter().position(|c| *c == b')').expect("unclosed (");
                let (optional, rest) = match re.get(close + 1) {
                    Some(b'?') => (true, &re[close + 2..]),
                    _ => (false, &re[close + 1..]),
                };
                (optional && go(rest, s))
                    || re[1..close]
                        .split(|c| *c == b'|')
                        .any(|alt| s.starts_with(alt) && go(rest, &s[alt.len()..]))
            }
            [c, rest @ ..] => s.first() == Some(c) && go(rest, &s[1..]),
        }
    }
    go(re.as_bytes(), name.as_bytes())
}

#[test]
fn name_regexes_match_as_promql_anchors_them() {
    assert!(name_matches("envoy_a_.+_active", "envoy_a_stop_active"));
    assert!(!name_matches("envoy_a_.+_active", "envoy_a__active"));
    assert!(!name_matches("envoy_a_.+_active", "envoy_a_stop_active_x"));
    assert!(name_matches("envoy_(global_)?cx", "envoy_cx"));
    assert!(name_matches("envoy_(global_)?cx", "envoy_global_cx"));
}

#[tokio::test]
async fn every_envoy_series_the_alerts_and_the_dashboard_use_is_exported_by_envoy() {
    let dir = tempfile::tempdir().unwrap();
    let ecds = dir.path().join("ecds");
    std::fs::create_dir(&ecds).unwrap();
    std::fs::write(ecds.join("filter.yaml"), ECDS).unwrap();
    let config = BOOTSTRAP.replace("ECDS_DIR", ecds.to_str().unwrap());
    let envoy = Envoy::start(&config, dir.path(), "monitoring")
        .await
        .unwrap();
    let scraped = scrape_names(&envoy.prometheus().await.unwrap());
    envoy.stop().await;
    assert!(scraped.len() > 100, "a short scrape: {scraped:?}");

    let mut checked = BTreeSet::new();
    for (where_, expr) in expressions() {
        for s in selectors(&expr) {
            let names: Vec<&String> = if s.name.is_empty() {
                let m = s.matchers.iter().find(|m| m.label == "__name__").unwrap();
                assert_eq!(m.op, "=~", "{where_}: __name__{}", m.op);
                let found: Vec<&String> = scraped
                    .keys()
                    .filter(|n| name_matches(&m.value, n))
                    .collect();
                assert!(
                    !found.is_empty(),
                    "{where_}: no series of Envoy 1.40 matches __name__=~{:?}",
                    m.value
                );
                found
            } else if s.name.starts_with("envoy_") {
                assert!(
                    scraped.contains_key(&s.name),
                    "{where_}: Envoy 1.40 exports no {}",
                    s.name
                );
                vec![&s.name]
            } else {
                continue;
            };
            for n in names {
                for m in &s.matchers {
                    if m.label == "__name__" || SCRAPE_LABELS.contains(&m.label.as_str()) {
                        continue;
                    }
                    assert!(
                        scraped[n].contains(&m.label),
                        "{where_}: Envoy's {n} has no label {} (it has {:?})",
                        m.label,
                        scraped[n]
                    );
                }
                checked.insert(n.clone());
            }
        }
    }
    // Both overload actions and both overflow counters are among them.
    for n in [
        "envoy_overload_envoy_overload_actions_stop_accepting_requests_active",
        "envoy_overload_envoy_overload_actions_shrink_heap_active",
        "envoy_listener_downstream_global_cx_overflow",
        "envoy_listener_downstream_cx_overflow",
        "envoy_server_days_until_first_cert_expiring",
        "envoy_extension_config_discovery_http_filter_kubelet_authz_config_fail",
    ] {
        assert!(
            checked.contains(n),
            "{n} is selected by no rule or panel: {checked:?}"
        );
    }
}
