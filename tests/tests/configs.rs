//! Every deployment file in `envoy/`: Envoy bootstraps are rendered with the template step and
//! pass `envoy --mode validate` (which instantiates the wasm VM and runs the filter's
//! `on_configure`); the Kubernetes DaemonSet's own render script is run against the template and
//! its output validated too; the Istio WasmPlugin's `pluginConfig` is a valid filter configuration
//! and its listener patch matches the front proxy's settings.
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

fn plugin_config(bootstrap: &Value) -> Config {
    let wasm = &hcm(bootstrap)["http_filters"][0]["typed_config"]["config"];
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
    let known_other: BTreeSet<&str> = ["istio/wasmplugin.yaml", "kubernetes/daemonset.yaml"].into();
    let mut bootstraps = 0;
    for f in &files {
        let rel = f.strip_prefix(workspace().join("envoy")).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        if !text.contains("static_resources:") {
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
        assert_eq!(c.api_server.cluster, "kube-apiserver");

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
/// dies under it (issue 16): the streaming endpoints keep the kubelet's 4h, every other endpoint
/// gets a bound that is short, yet longer than the filter's longest decision with the template's
/// callout timeout (a TokenReview and two SubjectAccessReviews, each `MAX_ATTEMPTS` attempts of
/// `apiServer.timeout` plus the full backoff with 20% jitter), so that it never cuts a decision
/// short. `hardening_panic.rs` proves the bound through Envoy.
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

    let timeout = plugin_config(&b).api_server.timeout.as_secs_f64();
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
    for r in &routes {
        assert_eq!(r["route"]["cluster"], "kubelet");
        assert_eq!(r["route"]["timeout"], "0s");
    }
}

/// The DaemonSet's render init container, run as written against the template (with this
/// machine's paths), produces a bootstrap that validates; it fills exactly the template's
/// placeholders, with the node name from the downward API.
#[tokio::test]
async fn daemonset_render_script_produces_a_valid_bootstrap() {
    let docs = yaml_docs(&workspace().join("envoy/kubernetes/daemonset.yaml"));
    let ds = kind(&docs, "DaemonSet");
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    let render = pod["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "render")
        .expect("init container `render`");
    let env = render["env"].as_array().unwrap();
    let node = env.iter().find(|e| e["name"] == "NODE_NAME").unwrap();
    assert_eq!(node["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
    let host_ip = env.iter().find(|e| e["name"] == "LISTEN_ADDRESS").unwrap();
    assert_eq!(
        host_ip["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    let kubelet = env.iter().find(|e| e["name"] == "KUBELET_ADDRESS").unwrap();
    assert_eq!(
        kubelet["value"], "127.0.0.1",
        "the kubelet must be bound to loopback"
    );
    let template_volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "template")
        .unwrap();
    assert_eq!(template_volume["configMap"]["name"], "kubelet-authz-envoy");

    // The names the manifest provides, plus the two the script defaults from the service env.
    let template_path = workspace().join("envoy/kubelet-front-proxy.yaml");
    let template = std::fs::read_to_string(&template_path).unwrap();
    let wanted = placeholders(&template);
    let mut given: BTreeSet<String> = env
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .filter(|n| wanted.contains(n))
        .collect();
    given.insert("APISERVER_ADDRESS".into());
    given.insert("APISERVER_PORT".into());
    assert_eq!(
        given, wanted,
        "the DaemonSet does not provide every placeholder"
    );

    // Run the script with this machine's values.
    let s = Standins::start().await.unwrap();
    let script = render["args"][0].as_str().unwrap();
    let out = s.dir().join("daemonset-rendered.yaml");
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(script).env_clear();
    cmd.env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in s.params(&ProxyOptions::version("1.33")).unwrap().vars() {
        match k.as_str() {
            "APISERVER_ADDRESS" => cmd.env("KUBERNETES_SERVICE_HOST", v),
            "APISERVER_PORT" => cmd.env("KUBERNETES_SERVICE_PORT", v),
            _ => cmd.env(k, v),
        };
    }
    cmd.env("TEMPLATE", &template_path).env("OUTPUT", &out);
    let result = cmd.output().unwrap();
    assert!(
        result.status.success(),
        "render script failed: {}",
        String::from_utf8_lossy(&result.stderr)
    );
    let rendered = std::fs::read_to_string(&out).unwrap();
    assert!(placeholders(&rendered).is_empty());
    validate_ok(&out);
    let b: Value =
        serde_json::to_value(serde_yaml_ng::from_str::<serde_yaml_ng::Value>(&rendered).unwrap())
            .unwrap();
    assert_eq!(plugin_config(&b).node_name, NODE_NAME);

    // And the script refuses a template with an unknown placeholder.
    let bad = s.dir().join("bad.tmpl");
    std::fs::write(&bad, format!("{template}\n# ${{SOMETHING_ELSE}}\n")).unwrap();
    cmd.env("TEMPLATE", &bad)
        .env("OUTPUT", s.dir().join("bad.yaml"));
    assert!(!cmd.output().unwrap().status.success());
}

/// The WasmPlugin: phase AUTHN, fail closed, a `pluginConfig` the filter accepts, and a listener
/// patch with the front proxy's settings.
#[tokio::test]
async fn istio_wasmplugin_is_a_valid_filter_configuration() {
    let docs = yaml_docs(&workspace().join("envoy/istio/wasmplugin.yaml"));
    let wp = kind(&docs, "WasmPlugin");
    assert_eq!(wp["apiVersion"], "extensions.istio.io/v1alpha1");
    assert_eq!(wp["spec"]["phase"], "AUTHN");
    assert_eq!(wp["spec"]["failStrategy"], "FAIL_RELOAD");
    let cfg = Config::from_value(&wp["spec"]["pluginConfig"]).unwrap();
    assert_eq!(cfg.node_name, "worker-1");
    assert_eq!(
        cfg.api_server.cluster,
        "outbound|443||kubernetes.default.svc.cluster.local"
    );
    assert!(cfg.strict_upgrade_verb);
    assert!(!cfg.anonymous_enabled);

    // The EnvoyFilter's HCM settings equal the front proxy's.
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
    for k in [
        "normalize_path",
        "merge_slashes",
        "path_with_escaped_slashes_action",
        "forward_client_cert_details",
        "set_current_client_cert_details",
        "upgrade_configs",
    ] {
        assert_eq!(patch[k], front[k], "EnvoyFilter {k}");
    }
    let dr = kind(&docs, "DestinationRule");
    assert_eq!(dr["spec"]["host"], "kubernetes.default.svc.cluster.local");
    assert_eq!(
        dr["spec"]["trafficPolicy"]["portLevelSettings"][0]["tls"]["mode"],
        "MUTUAL"
    );
}
