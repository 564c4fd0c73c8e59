//! Every deployment file in `envoy/`: Envoy bootstraps are rendered with the template step and
//! pass `envoy --mode validate` (which instantiates the wasm VM and runs the filter's
//! `on_configure`); the node agent's DaemonSet bootstrap keeps the front proxy's routes and stat
//! tags (the DaemonSet itself: tests/tests/daemonset.rs); the Istio WasmPlugin's `pluginConfig` is
//! a valid filter configuration and its listener patch matches the front proxy's settings.
//!
//! Needs Envoy (`ENVOY_BIN`) and the release filter (`KUBELET_AUTHZ_FILTER_WASM`); fails without.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use kubelet_authz::config::Config;
use kubelet_authz_e2e::envoy::validate;
use kubelet_authz_e2e::render::{placeholders, workspace};
use kubelet_authz_e2e::stack::{ProxyOptions, Standins, NODE_NAME};
use serde::Deserialize as _;
use serde_json::Value;

fn yaml_docs(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            let y = serde_yaml_ng::Value::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            serde_json::to_value(y).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

fn kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind}"))
}

/// The HTTP connection manager and the wasm filter of a rendered bootstrap.
fn hcm(bootstrap: &Value) -> &Value {
    &bootstrap["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
}

/// The wasm filter's `config` (wherever it is in the filter chain).
fn wasm_config(bootstrap: &Value) -> &Value {
    let filters = hcm(bootstrap)["http_filters"].as_array().unwrap();
    let wasm = filters
        .iter()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .expect("no wasm filter");
    &wasm["typed_config"]["config"]
}

fn plugin_config(bootstrap: &Value) -> Config {
    let wasm = wasm_config(bootstrap);
    let json = wasm["configuration"]["value"].as_str().unwrap();
    Config::from_json(json.as_bytes()).unwrap()
}

fn validate_ok(file: &Path) {
    let (ok, out) = validate(file).unwrap();
    assert!(
        ok,
        "envoy --mode validate {} failed:\n{out}",
        file.display()
    );
    assert!(
        out.contains(&format!(
            "kubelet-authz: configured for node \"{NODE_NAME}\""
        )),
        "the filter did not configure:\n{out}"
    );
}

/// Every YAML file under `envoy/` is covered by a test here: Envoy bootstraps generically, the
/// rest by name.
#[tokio::test]
async fn every_envoy_bootstrap_in_envoy_dir_renders_and_validates() {
    let s = Standins::start().await.unwrap();
    let mut files = Vec::new();
    yaml_files(&workspace().join("envoy"), &mut files);
    files.sort();
    // Checked by name below: Kubernetes and Istio objects, the DaemonSet's bootstrap template (it
    // has placeholders of its own and is rendered by its own script) and the ConfigMap holding it.
    let known_other: BTreeSet<&str> = [
        "istio/wasmplugin.yaml",
        "istio/shared.yaml",
        "istio/gateway-deployment.yaml",
        "kubernetes/daemonset.yaml",
        "kubernetes/namespace.yaml",
        "kubernetes/rbac.yaml",
        // Loaded into the stand-in API server by daemonset_serviceaccount_token_mode.
        "kubernetes/serviceaccount-token/rbac-serviceaccount-token.yaml",
        // The filter ConfigMap's content and the kustomize base: tests/tests/daemonset.rs.
        "kubernetes/filter.yaml",
        "kubernetes/kustomization.yaml",
        // The privileged mode's DaemonSet: node/tests/deploy_configure.rs and check-deploy.sh.
        "kubernetes/configure/unconfigure-daemonset.yaml",
        // Node pools built fresh: node/tests/node_pools.rs.
        "node/cloud-init.yaml",
        "node/kubeletconfiguration+strategic.yaml",
        "node/nodeconfig.yaml",
    ]
    .into();
    // Kustomize files, the overlays and the monitoring bundle (PodMonitor, PrometheusRule and its
    // promtool tests): built, validated and tested by scripts/check-deploy.sh.
    let by_check_deploy = |rel: &Path| {
        rel.ends_with("kustomization.yaml")
            || rel.starts_with("overlays")
            || rel.starts_with("kubernetes/monitoring")
    };
    let mut bootstraps = 0;
    for f in &files {
        let rel = f.strip_prefix(workspace().join("envoy")).unwrap();
        if by_check_deploy(rel) {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        if !text.contains("static_resources:") || known_other.contains(rel.to_str().unwrap()) {
            assert!(
                known_other.contains(rel.to_str().unwrap()),
                "{}: not an Envoy bootstrap and not checked by any test here",
                f.display()
            );
            continue;
        }
        bootstraps += 1;
        // Render with the stand-ins' values for every placeholder it uses.
        let all = s.params(&ProxyOptions::version("1.36")).unwrap().vars();
        let used = placeholders(&text);
        let vars = all.into_iter().filter(|(k, _)| used.contains(k)).collect();
        let rendered = kubelet_authz_e2e::render::render(&text, &vars)
            .unwrap_or_else(|e| panic!("{}: {e:#}", f.display()));
        let out = s.dir().join(format!(
            "{}.rendered.yaml",
            rel.display().to_string().replace('/', "_")
        ));
        std::fs::write(&out, rendered).unwrap();
        validate_ok(&out);
    }
    assert!(bootstraps >= 1, "no Envoy bootstrap found under envoy/");
}

/// The front proxy for each supported shape (versions, anonymous, shadow, strict off) validates,
/// and carries the settings the filter's guarantees rest on.
#[tokio::test]
async fn front_proxy_variants_validate_and_keep_the_security_settings() {
    let s = Standins::start().await.unwrap();
    let mut variants = vec![
        ProxyOptions::version("1.31"),
        ProxyOptions::version("1.33").anonymous(true),
        ProxyOptions::version("1.36").strict(false),
    ];
    let mut shadow = ProxyOptions::version("1.36");
    shadow.enforcement = "Shadow".into();
    variants.push(shadow);
    for (i, opts) in variants.iter().enumerate() {
        let yaml = s.params(opts).unwrap().render().unwrap();
        assert!(
            placeholders(&yaml).is_empty(),
            "placeholders left: {:?}",
            placeholders(&yaml)
        );
        let file = s.dir().join(format!("variant-{i}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        validate_ok(&file);

        let b: Value =
            serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
                .unwrap();
        let listener = &b["static_resources"]["listeners"][0];
        let tls = &listener["filter_chains"][0]["transport_socket"]["typed_config"];
        assert_eq!(tls["require_client_certificate"], false);
        assert!(
            tls["common_tls_context"]["validation_context"]["trusted_ca"]["filename"].is_string()
        );
        let h = hcm(&b);
        assert_eq!(h["normalize_path"], true);
        assert_eq!(h["merge_slashes"], true);
        assert_eq!(h["path_with_escaped_slashes_action"], "REJECT_REQUEST");
        assert_eq!(h["forward_client_cert_details"], "SANITIZE_SET");
        for k in ["subject", "cert", "uri", "dns"] {
            assert_eq!(h["set_current_client_cert_details"][k], true, "{k}");
        }
        let upgrades: Vec<&str> = h["upgrade_configs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["upgrade_type"].as_str().unwrap())
            .collect();
        assert_eq!(upgrades, ["websocket", "spdy/3.1"]);
        let wasm = &h["http_filters"][0];
        assert_eq!(wasm["name"], "envoy.filters.http.wasm");
        let cfg = &wasm["typed_config"]["config"];
        assert_eq!(cfg["fail_open"], false);
        assert_eq!(cfg["failure_policy"], "FAIL_RELOAD");
        assert_eq!(cfg["reload_config"]["backoff"]["base_interval"], "1s");
        assert_eq!(cfg["vm_config"]["runtime"], "envoy.wasm.runtime.v8");
        assert_eq!(h["http_filters"][1]["name"], "envoy.filters.http.router");

        let c = plugin_config(&b);
        assert_eq!(c.node_name, NODE_NAME);
        assert_eq!(c.anonymous_enabled, opts.anonymous);
        assert_eq!(c.strict_upgrade_verb, opts.strict_upgrade_verb);
        assert_eq!(c.api_server().cluster, "kube-apiserver");

        let clusters = b["static_resources"]["clusters"].as_array().unwrap();
        let names: Vec<&str> = clusters
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["kube-apiserver", "kubelet"]);
        for c in clusters {
            let up = &c["transport_socket"]["typed_config"];
            assert!(
                up["@type"]
                    .as_str()
                    .unwrap()
                    .ends_with("UpstreamTlsContext"),
                "{}: not TLS",
                c["name"]
            );
            let ctx = &up["common_tls_context"];
            assert!(ctx["tls_certificates"][0]["certificate_chain"]["filename"].is_string());
            assert!(ctx["validation_context"]["trusted_ca"]["filename"].is_string());
            assert!(ctx["validation_context"]["match_typed_subject_alt_names"][0].is_object());
        }
    }
}

/// The route idle timeouts bound how long a request held by the filter waits when the filter's VM
/// dies under it (issue 16), and when the API server keeps asking to be asked again: the streaming
/// endpoints keep the kubelet's 4h, every other endpoint gets a bound that is short, yet longer than
/// the filter's longest decision against an API server that fails without `Retry-After` (a
/// TokenReview and two SubjectAccessReviews, each `MAX_ATTEMPTS` attempts of `apiServer.timeout`
/// plus the full backoff with 20% jitter). Against one that answers every review with `Retry-After`
/// the kubelet's rules allow far more (`webhook::worst_case`: 4 callouts of 55 sends); the route
/// bound is then what ends the hold, failing closed, and SECURITY.md states both numbers.
/// `hardening_panic.rs` proves the bound through Envoy.
#[tokio::test]
async fn route_idle_timeouts_bound_a_held_request() {
    use kubelet_authz::decision::{BASE_RETRY_DELAY_MS, MAX_ATTEMPTS};
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
            .unwrap();
    let routes = hcm(&b)["route_config"]["virtual_hosts"][0]["routes"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(routes.len(), 2, "{routes:#?}");
    assert_eq!(
        routes[0]["match"]["safe_regex"]["regex"],
        "/(exec|attach|portForward|containerLogs|logs)(/.*)?"
    );
    assert_eq!(routes[0]["route"]["idle_timeout"], "14400s");
    assert_eq!(routes[1]["match"]["prefix"], "/");
    let idle = routes[1]["route"]["idle_timeout"].as_str().unwrap();
    let idle_s: f64 = idle.trim_end_matches('s').parse().unwrap();

    let timeout = plugin_config(&b).api_server().timeout.as_secs_f64();
    let mut backoff = 0.0;
    let mut d = BASE_RETRY_DELAY_MS as f64 / 1000.0;
    for _ in 1..MAX_ATTEMPTS {
        backoff += d * 1.2;
        d *= 1.5;
    }
    let per_review = f64::from(MAX_ATTEMPTS) * timeout + backoff;
    let longest_decision = 3.0 * per_review;
    assert!(
        idle_s > longest_decision,
        "idle timeout {idle} cuts decisions of up to {longest_decision:.1}s"
    );
    assert!(idle_s <= 300.0, "idle timeout {idle} is not a short bound");
    // With `Retry-After` on every answer, the kubelet's rules hold a request far longer: the
    // ordinary route's bound cuts it (fail closed), the streaming routes' 4h still exceeds it.
    let timeout_ms = u64::try_from(plugin_config(&b).api_server().timeout.as_millis()).unwrap();
    let worst = kubelet_authz::webhook::worst_case(timeout_ms).per_request();
    assert_eq!(worst.sends, 220);
    let worst_s = worst.hold_ms as f64 / 1000.0;
    assert!(
        idle_s < worst_s && worst_s < 14400.0,
        "SECURITY.md: the worst-case hold {worst_s}s is cut by {idle} and bounded by 14400s"
    );
    for r in &routes {
        assert_eq!(r["route"]["cluster"], "kubelet");
        assert_eq!(r["route"]["timeout"], "0s");
    }

    // The DaemonSet's bootstrap (the node agent's) has the same two routes.
    let node = kubelet_authz_node::bootstrap::bootstrap(
        &kubelet_authz_node::bootstrap::NodeParams::example(),
    );
    let node_routes = hcm(&node)["route_config"]["virtual_hosts"][0]["routes"].clone();
    assert_eq!(
        node_routes,
        Value::Array(routes.clone()),
        "the node agent's routes"
    );

    // The Istio form: two named VirtualService routes, and an EnvoyFilter route patch for each.
    let docs = yaml_docs(&workspace().join("envoy/istio/wasmplugin.yaml"));
    let vs = kind(&docs, "VirtualService");
    let http = vs["spec"]["http"].as_array().unwrap();
    assert_eq!(http.len(), 2);
    assert_eq!(http[0]["name"], "kubelet-streaming");
    assert_eq!(
        http[0]["match"][0]["uri"]["regex"],
        routes[0]["match"]["safe_regex"]["regex"]
    );
    assert_eq!(http[1]["name"], "kubelet");
    assert!(http[1].get("match").is_none());
    let shared = yaml_docs(&workspace().join("envoy/istio/shared.yaml"));
    let patches = kind(&shared, "EnvoyFilter")["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .clone();
    for (name, want) in [("kubelet-streaming", "14400s"), ("kubelet", idle)] {
        let p = patches
            .iter()
            .find(|p| {
                p["applyTo"] == "HTTP_ROUTE"
                    && p["match"]["routeConfiguration"]["vhost"]["route"]["name"] == name
            })
            .unwrap_or_else(|| panic!("no route patch for {name}"));
        assert_eq!(p["match"]["context"], "GATEWAY");
        assert_eq!(p["patch"]["operation"], "MERGE");
        assert_eq!(p["patch"]["value"]["route"]["idle_timeout"], want, "{name}");
    }
}

/// The Istio form: per-node gateway, WasmPlugin, routing and TLS; the objects refer to each other
/// consistently, the plugin's configuration is one the filter accepts, and the listener patch
/// neither uses `mode: SERVER` (never attached on a gateway) nor adds a second `websocket`.
#[tokio::test]
async fn istio_objects_are_complete_and_consistent() {
    let mut docs = yaml_docs(&workspace().join("envoy/istio/wasmplugin.yaml"));
    docs.extend(yaml_docs(&workspace().join("envoy/istio/shared.yaml")));
    let deploy = yaml_docs(&workspace().join("envoy/istio/gateway-deployment.yaml"));
    let named = |k: &str, n: &str| -> Value {
        docs.iter()
            .find(|d| d["kind"] == k && d["metadata"]["name"] == n)
            .unwrap_or_else(|| panic!("no {k}/{n}"))
            .clone()
    };
    let wp = kind(&docs, "WasmPlugin");
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["spec"]["phase"], "AUTHN");
    assert_eq!(wp["spec"]["failStrategy"], "FAIL_RELOAD");
    for m in wp["spec"]["match"].as_array().unwrap() {
        assert!(
            m.get("mode").is_none() || m["mode"] == "CLIENT",
            "gateway listeners are CLIENT to Istio: {m}"
        );
    }
    let cfg = Config::from_value(&wp["spec"]["pluginConfig"]).unwrap();
    assert_eq!(cfg.node_name, "worker-1");
    // The plugin calls the API-server ServiceEntry's outbound cluster.
    let api = named("ServiceEntry", "kube-apiserver");
    let api_host = api["spec"]["hosts"][0].as_str().unwrap();
    let api_port = api["spec"]["ports"][0]["number"].as_u64().unwrap();
    assert_eq!(
        cfg.api_server().cluster,
        format!("outbound|{api_port}||{api_host}")
    );
    let api_dr = named("DestinationRule", "kube-apiserver");
    assert_eq!(api_dr["spec"]["host"], api_host);
    assert_eq!(api_dr["spec"]["trafficPolicy"]["tls"]["mode"], "MUTUAL");
    assert_eq!(
        api_dr["spec"]["trafficPolicy"]["tls"]["clientCertificate"],
        "/var/lib/kubelet/pki/kubelet-client-current.pem",
        "the node's own credential"
    );
    // Gateway on the node IP, optional client certificate, selecting this node's gateway pod.
    let gw = kind(&docs, "Gateway");
    let server = &gw["spec"]["servers"][0];
    assert_eq!(server["port"]["number"], 10250);
    assert_eq!(server["tls"]["mode"], "OPTIONAL_MUTUAL");
    assert!(server["bind"].is_string());
    let pod_labels = &deploy[0]["spec"]["template"]["metadata"]["labels"];
    for (k, v) in gw["spec"]["selector"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "Gateway selector {k}");
    }
    for (k, v) in wp["spec"]["selector"]["matchLabels"].as_object().unwrap() {
        assert_eq!(&pod_labels[k], v, "WasmPlugin selector {k}");
    }
    assert_eq!(deploy[0]["spec"]["template"]["spec"]["hostNetwork"], true);
    // Routing to the kubelet on 127.0.0.1:10250 with TLS.
    let vs = kind(&docs, "VirtualService");
    assert_eq!(vs["spec"]["gateways"][0], gw["metadata"]["name"]);
    let dest = &vs["spec"]["http"][0]["route"][0]["destination"];
    let kubelet = named("ServiceEntry", "kubelet");
    assert_eq!(dest["host"], kubelet["spec"]["hosts"][0]);
    assert_eq!(kubelet["spec"]["endpoints"][0]["address"], "127.0.0.1");
    assert_eq!(kubelet["spec"]["ports"][0]["number"], 10250);
    // PILOT_FILTER_GATEWAY_CLUSTER_CONFIG=true keeps only the clusters routed to by the gateway's
    // VirtualServices: one names the API-server ServiceEntry, in a route that never matches (its
    // only match is a port the gateway does not listen on, which Istio drops from the listener's
    // routes), so no request is ever forwarded to the API server with the node's credential.
    let keep = named("VirtualService", "kube-apiserver-worker-1");
    assert_eq!(
        keep["spec"]["gateways"],
        serde_json::json!([gw["metadata"]["name"]])
    );
    let keep_http = keep["spec"]["http"].as_array().unwrap();
    assert_eq!(keep_http.len(), 1);
    assert_eq!(keep_http[0]["route"][0]["destination"]["host"], api_host);
    assert_eq!(
        keep_http[0]["route"][0]["destination"]["port"]["number"],
        api_port
    );
    let matches = keep_http[0]["match"].as_array().unwrap();
    assert!(
        !matches.is_empty(),
        "an empty match would route every request to the API server"
    );
    for m in matches {
        let port = m["port"].as_u64().expect("every match names a port");
        assert!(
            gw["spec"]["servers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|s| s["port"]["number"] != port),
            "port {port} is a gateway listener port: the route would forward to the API server"
        );
    }
    let kubelet_dr = docs
        .iter()
        .find(|d| d["kind"] == "DestinationRule" && d["spec"]["host"] == dest["host"])
        .unwrap();
    assert_eq!(kubelet_dr["spec"]["trafficPolicy"]["tls"]["mode"], "MUTUAL");
    // The listener patch: the front proxy's settings, SPDY added, no second `websocket`.
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
            .unwrap();
    let front = hcm(&b);
    let ef = kind(&docs, "EnvoyFilter");
    let patch = &ef["spec"]["configPatches"][0]["patch"]["value"]["typed_config"];
    assert_eq!(
        ef["spec"]["configPatches"][0]["patch"]["operation"],
        "MERGE"
    );
    for k in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "forward_client_cert_details",
        "set_current_client_cert_details",
    ] {
        assert_eq!(patch[k], front[k], "EnvoyFilter {k}");
    }
    assert_eq!(
        patch["upgrade_configs"],
        serde_json::json!([{ "upgrade_type": "spdy/3.1" }]),
        "MERGE appends to Istio's list, which already has websocket"
    );
}

/// The Istio form has the DaemonSet's limits (issue 22): the EnvoyFilter's connection cap,
/// handshake timeout, request-headers timeout and connection idle timeout are the DaemonSet
/// bootstrap's values, and a listener patched as Istio applies them (MERGE into the HCM and the
/// filter chain, INSERT_FIRST of the network filter) passes `envoy --mode validate`.
#[tokio::test]
async fn istio_listener_patches_carry_the_daemonsets_limits_and_validate() {
    use kubelet_authz_node::bootstrap::{bootstrap, NodeParams};
    let shared = yaml_docs(&workspace().join("envoy/istio/shared.yaml"));
    let patches = kind(&shared, "EnvoyFilter")["spec"]["configPatches"]
        .as_array()
        .unwrap()
        .clone();
    let on_kubelet_port = |p: &&Value| {
        p["match"]["context"] == "GATEWAY" && p["match"]["listener"]["portNumber"] == 10250
    };
    let hcm_patch = patches
        .iter()
        .filter(on_kubelet_port)
        .find(|p| p["applyTo"] == "NETWORK_FILTER" && p["patch"]["operation"] == "MERGE")
        .unwrap()["patch"]["value"]["typed_config"]
        .clone();
    let chain_patch = patches
        .iter()
        .filter(on_kubelet_port)
        .find(|p| p["applyTo"] == "FILTER_CHAIN" && p["patch"]["operation"] == "MERGE")
        .expect("a FILTER_CHAIN MERGE on 10250 (the handshake timeout)")["patch"]["value"]
        .clone();
    let limit = patches
        .iter()
        .filter(on_kubelet_port)
        .find(|p| p["applyTo"] == "NETWORK_FILTER" && p["patch"]["operation"] == "INSERT_FIRST")
        .expect("an INSERT_FIRST network filter on 10250 (the connection cap)")["patch"]["value"]
        .clone();
    assert_eq!(limit["name"], "envoy.filters.network.connection_limit");

    // The DaemonSet's values.
    let params = NodeParams::example();
    let ds = bootstrap(&params);
    let ds_listener = ds["static_resources"]["listeners"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["name"] == "kubelet")
        .unwrap();
    let ds_chain = &ds_listener["filter_chains"][0];
    let ds_hcm = &ds_chain["filters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "envoy.filters.network.http_connection_manager")
        .unwrap()["typed_config"];
    assert_eq!(
        chain_patch["transport_socket_connect_timeout"],
        ds_chain["transport_socket_connect_timeout"]
    );
    for k in [
        "request_headers_timeout",
        "common_http_protocol_options",
        "stream_idle_timeout",
    ] {
        assert_eq!(hcm_patch[k], ds_hcm[k], "EnvoyFilter HCM {k}");
    }
    assert_eq!(
        limit["typed_config"]["max_connections"].as_u64(),
        Some(params.max_connections)
    );

    // Applied as Istio applies them, to the front proxy's (valid) listener: Envoy accepts them.
    let s = Standins::start().await.unwrap();
    let yaml = s
        .params(&ProxyOptions::version("1.36"))
        .unwrap()
        .render()
        .unwrap();
    let mut b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&yaml).unwrap())
            .unwrap();
    let chain = &mut b["static_resources"]["listeners"][0]["filter_chains"][0];
    for (k, v) in chain_patch.as_object().unwrap() {
        chain[k] = v.clone();
    }
    let h = &mut chain["filters"][0]["typed_config"];
    for k in ["request_headers_timeout", "common_http_protocol_options"] {
        h[k] = hcm_patch[k].clone();
    }
    chain["filters"].as_array_mut().unwrap().insert(0, limit);
    let file = s.dir().join("istio-patched.yaml");
    std::fs::write(&file, serde_json::to_string(&b).unwrap()).unwrap();
    validate_ok(&file);
}

/// The `stats_config.stats_tags` of a bootstrap: `(tag_name, regex)`.
fn stats_tags(bootstrap: &Value) -> Vec<(String, String)> {
    bootstrap["stats_config"]["stats_tags"]
        .as_array()
        .unwrap_or_else(|| panic!("no stats_config.stats_tags"))
        .iter()
        .map(|t| {
            (
                t["tag_name"].as_str().unwrap().to_string(),
                t["regex"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// Every shipped form makes the filter's labels Prometheus labels (issue 13): each Envoy bootstrap
/// has one `stats_tags` entry per label of `filter/src/metrics.rs`, and the Istio gateway asks
/// Istio for the same ones (`extraStatTags`, which Istio turns into the same regexes) and keeps
/// the filter's stats.
#[test]
fn every_shipped_form_extracts_the_filter_labels() {
    let want: Vec<(String, String)> = kubelet_authz_filter::metrics::stats_tags()
        .into_iter()
        .map(|(t, r)| (t.to_string(), r))
        .collect();
    // Rendered with a dummy value for every placeholder: only stats_config is read.
    let rel = "envoy/kubelet-front-proxy.yaml";
    let text = std::fs::read_to_string(workspace().join(rel)).unwrap();
    let vars = placeholders(&text)
        .into_iter()
        .map(|p| (p, String::from("0")))
        .collect();
    let rendered = kubelet_authz_e2e::render::render(&text, &vars).unwrap();
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&rendered).unwrap())
            .unwrap();
    assert_eq!(stats_tags(&b), want, "{rel}");
    // The DaemonSet's bootstrap, as the node agent renders it.
    let node = kubelet_authz_node::bootstrap::bootstrap(
        &kubelet_authz_node::bootstrap::NodeParams::example(),
    );
    assert_eq!(stats_tags(&node), want, "the node agent's bootstrap");

    let gw = yaml_docs(&workspace().join("envoy/istio/gateway-deployment.yaml"));
    let annotation = gw[0]["spec"]["template"]["metadata"]["annotations"]["proxy.istio.io/config"]
        .as_str()
        .unwrap();
    let proxy_config: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(annotation).unwrap())
            .unwrap();
    let extra: Vec<&str> = proxy_config["extraStatTags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(extra, kubelet_authz_filter::metrics::LABELS);
    assert_eq!(
        proxy_config["proxyStatsMatcher"]["inclusionPrefixes"],
        serde_json::json!([format!(
            "wasmcustom.{}",
            kubelet_authz_filter::metrics::PREFIX
        )])
    );
    // What Istio generates for an `extraStatTags` name (tools/packaging/common/envoy_bootstrap.json).
    for (tag, regex) in &want {
        assert_eq!(*regex, format!(r"({tag}=\.=(.*?);\.;)"));
    }
}

/// `envoy/kubernetes`.
fn k8s_dir() -> PathBuf {
    workspace().join("envoy/kubernetes")
}

/// The proxy's kubelet drop-in (`node/90-kubelet-authz.conf`, the kubelet's `--config-dir`) is the
/// engine's constant byte for byte, passes `check-config --behind-proxy` alone and merged over a
/// kubeadm base, and passes the CIS items 4.2.1-4.2.4 on every supported version.
#[test]
fn prescribed_kubelet_config_passes_check_config() {
    use kubelet_authz::kubeletconfig::{
        behind_proxy, check, effective_config, CheckStatus, Source, PROXY_DROPIN,
    };
    let file = k8s_dir().join("node/90-kubelet-authz.conf");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        text, PROXY_DROPIN,
        "the shipped drop-in is the engine's constant"
    );
    let dropin = Source::new(file.display().to_string(), text.clone());
    let kubeadm_base = Source::new(
        "/var/lib/kubelet/config.yaml",
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n\
         authentication:\n  webhook:\n    enabled: true\n  x509:\n    clientCAFile: /etc/kubernetes/pki/ca.crt\n\
         authorization:\n  mode: Webhook\ncgroupDriver: systemd\nstaticPodPath: /etc/kubernetes/manifests\n",
    );
    for (what, cfg) in [
        ("drop-in alone", effective_config(&dropin, &[]).unwrap()),
        (
            "kubeadm base + drop-in",
            effective_config(&kubeadm_base, std::slice::from_ref(&dropin)).unwrap(),
        ),
    ] {
        let failed: Vec<_> = behind_proxy(&cfg)
            .into_iter()
            .filter(|r| r.status == CheckStatus::Fail)
            .map(|r| format!("{} {}: {}", r.id, r.title, r.actual))
            .collect();
        assert!(failed.is_empty(), "{what}: {failed:?}");
        for v in ["1.31", "1.32", "1.33", "1.34", "1.35", "1.36"] {
            for r in check(&cfg.settings, v.parse().unwrap()) {
                if r.cis.is_some() {
                    assert_eq!(
                        r.status,
                        CheckStatus::Pass,
                        "{what} {v}: {} {}",
                        r.id,
                        r.actual
                    );
                }
            }
        }
    }
    // Nothing but what the proxy needs: no feature gates (a 1.31 kubelet exits on an unknown one),
    // no protectKernelDefaults (stops the kubelet at the next reboot), no unrelated settings.
    let y: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&text).unwrap())
            .unwrap();
    let keys: BTreeSet<&str> = y.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "apiVersion",
            "kind",
            "address",
            "authentication",
            "authorization"
        ]
        .into()
    );
    assert_eq!(y["address"], "127.0.0.1");
    // That it trusts exactly the DaemonSet's per-node CA: daemonset.rs,
    // kubelet_dropin_trusts_the_agents_ca.
}
