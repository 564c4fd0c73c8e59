//! Envoy's files for one node, from typed data: the bootstrap (`envoy.yaml`), one SDS file per
//! secret (every certificate read from a watched directory, so rotations need no restart) and the
//! ECDS discovery response holding the wasm filter's configuration (rewritten live by `run`).
//!
//! Nothing here is text substitution: [`render`] builds `serde_json` values from a [`NodeParams`]
//! and [`write_all`] writes each file atomically (a temporary file renamed over the old one).

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

/// The wasm filter's `vm_config.vm_id`, the ECDS resource name and the plugin name.
pub const FILTER_NAME: &str = "kubelet-authz";
/// The Envoy cluster of the TokenReview and SubjectAccessReview calls (`apiServer.cluster`).
pub const APISERVER_CLUSTER: &str = "kube-apiserver";
/// The type of the ECDS resource.
pub const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
/// The file name of the ECDS discovery response inside [`NodeParams::ecds_dir`].
pub const ECDS_FILE: &str = "filter.yaml";
/// The cluster of the node agent's metrics socket.
pub const AGENT_CLUSTER: &str = "agent";
/// The route matching the streaming endpoints (4 h idle timeout, like the kubelet's).
pub const STREAMING_ROUTE_REGEX: &str = "/(exec|attach|portForward|containerLogs|logs)(/.*)?";
/// Idle timeout of the streaming routes, seconds (the kubelet's `streamingConnectionIdleTimeout`).
pub const STREAMING_IDLE_TIMEOUT_S: u64 = 14_400;
/// Idle timeout of every other route, seconds: longer than the filter's longest decision, short
/// enough to bound a request the filter holds when its VM dies (docs/SECURITY.md).
pub const ORDINARY_IDLE_TIMEOUT_S: u64 = 180;

/// The credential the proxy presents to the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiServerAuth {
    /// The node's own kubelet client certificate (certificate and key in one PEM).
    NodeCert(PathBuf),
    /// The pod's projected ServiceAccount token, injected by Envoy on every review.
    ServiceAccountToken(PathBuf),
}

impl ApiServerAuth {
    /// `node-cert` or `serviceaccount-token` (the flag's spelling).
    pub fn mode(&self) -> &'static str {
        match self {
            ApiServerAuth::NodeCert(_) => "node-cert",
            ApiServerAuth::ServiceAccountToken(_) => "serviceaccount-token",
        }
    }
}

/// The kubelet's TLS policy as Envoy spells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EnvoyTls {
    /// `TLSv1_2` or `TLSv1_3`.
    pub min_version: String,
    /// BoringSSL cipher names; empty = Envoy's defaults.
    pub cipher_suites: Vec<String>,
}

/// Everything node-specific the bootstrap is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeParams {
    /// The Node object's name.
    pub node_name: String,
    /// The node IP the proxy listens on (IPv4 or IPv6).
    pub listen_address: IpAddr,
    /// The kubelet port on the node IP (10250).
    pub listen_port: u16,
    /// The metrics and health listener's port (9977).
    pub metrics_port: u16,
    /// Envoy's admin unix socket.
    pub admin_socket: PathBuf,
    /// The agent's metrics socket (cluster `agent`, served as `/metrics/agent`).
    pub agent_socket: PathBuf,
    /// Directory of the SDS files.
    pub sds_dir: PathBuf,
    /// Directory of the ECDS file (watched by Envoy; the agent renames a new file in).
    pub ecds_dir: PathBuf,
    /// The wasm module.
    pub filter_wasm: PathBuf,
    /// The kubelet's TLS policy.
    pub tls: EnvoyTls,
    /// Downstream connection cap.
    pub max_connections: u64,
    /// Heap size at which Envoy stops accepting requests (98%).
    pub max_heap_bytes: u64,
    /// The API server's host (name or address) and port.
    pub apiserver_host: String,
    /// The API server's port.
    pub apiserver_port: u16,
    /// The name checked in the API server's certificate and sent as `:authority`.
    pub apiserver_name: String,
    /// The credential towards the API server.
    pub auth: ApiServerAuth,
    /// The kubelet's serving certificate (certificate and key in one PEM).
    pub serving_cert: PathBuf,
    /// The proxy's local client certificate (per-node CA; certificate and key in one PEM).
    pub proxy_cert: PathBuf,
    /// The cluster CA (verifies callers' certificates, the API server and the kubelet).
    pub cluster_ca: PathBuf,
    /// The real kubelet's address (loopback).
    pub kubelet_address: IpAddr,
    /// The real kubelet's port.
    pub kubelet_port: u16,
    /// The name in the kubelet's serving certificate.
    pub kubelet_server_name: String,
    /// Seconds after which an upstream connection takes no new requests (rotated client
    /// certificates are in use everywhere within it).
    pub upstream_max_connection_age_s: u64,
    /// Seconds a downstream connection may take to finish its TLS handshake.
    pub handshake_timeout_s: u64,
    /// Seconds a downstream request may take to send its headers.
    pub request_headers_timeout_s: u64,
}

impl NodeParams {
    /// A node's parameters with the DaemonSet's defaults (`envoy/kubernetes/node.env`, node
    /// certificate mode, node `worker-1` on 10.0.0.2): documentation and tests of the shape.
    pub fn example() -> NodeParams {
        let ip = |a: [u8; 4]| IpAddr::from(a);
        NodeParams {
            node_name: "worker-1".into(),
            listen_address: ip([10, 0, 0, 2]),
            listen_port: 10250,
            metrics_port: 9977,
            admin_socket: "/run/kubelet-authz/admin.sock".into(),
            agent_socket: "/run/kubelet-authz/agent.sock".into(),
            sds_dir: "/rendered/sds".into(),
            ecds_dir: "/rendered/ecds".into(),
            filter_wasm: "/wasm/plugin.wasm".into(),
            tls: EnvoyTls {
                min_version: "TLSv1_2".into(),
                cipher_suites: Vec::new(),
            },
            max_connections: 4096,
            max_heap_bytes: 335_544_320,
            apiserver_host: "10.0.0.1".into(),
            apiserver_port: 6443,
            apiserver_name: "kubernetes.default.svc".into(),
            auth: ApiServerAuth::NodeCert("/var/lib/kubelet/pki/kubelet-client-current.pem".into()),
            serving_cert: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
            proxy_cert: "/var/lib/kubelet-authz/pki/proxy-current.pem".into(),
            cluster_ca: "/etc/kubernetes/pki/ca.crt".into(),
            kubelet_address: ip([127, 0, 0, 1]),
            kubelet_port: 10250,
            kubelet_server_name: "worker-1".into(),
            upstream_max_connection_age_s: 3600,
            handshake_timeout_s: 10,
            request_headers_timeout_s: 10,
        }
    }
}

/// One file Envoy reads: its name (relative to the output directory) and content.
#[derive(Debug, Clone, PartialEq)]
pub struct File {
    /// Relative path (`envoy.yaml`, `sds/kubelet-serving.yaml`, `ecds/filter.yaml`).
    pub path: PathBuf,
    /// The YAML document.
    pub content: Value,
}

fn secs(s: u64) -> String {
    format!("{s}s")
}

fn sds_ref(p: &NodeParams, name: &str) -> Value {
    json!({
        "name": name,
        "sds_config": {
            "path_config_source": { "path": p.sds_dir.join(format!("{name}.yaml")) },
            "resource_api_version": "V3",
        },
    })
}

fn parent(path: &Path) -> PathBuf {
    path.parent()
        .map_or_else(|| PathBuf::from("/"), Path::to_path_buf)
}

fn tls_secret(name: &str, pem: &Path) -> Value {
    json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "tls_certificate": {
            "certificate_chain": { "filename": pem },
            "private_key": { "filename": pem },
            "watched_directory": { "path": parent(pem) },
        },
    }]})
}

fn ca_secret(name: &str, ca: &Path) -> Value {
    json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "validation_context": {
            "trusted_ca": { "filename": ca },
            "watched_directory": { "path": parent(ca) },
        },
    }]})
}

/// A generic secret has no `watched_directory`: Envoy watches the file's directory for renames,
/// which is where the kubelet swaps a projected volume's `..data`.
fn token_secret(name: &str, token: &Path) -> Value {
    json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
        "name": name,
        "generic_secret": { "secret": { "filename": token } },
    }]})
}

/// Regex-escape a node name for RE2 (node names may hold dots).
fn re2_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn router() -> Value {
    json!({
        "name": "envoy.filters.http.router",
        "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router" },
    })
}

fn kubelet_listener(p: &NodeParams) -> Value {
    let node_cn = re2_escape(&format!("system:node:{}", p.node_name));
    json!({
        "name": "kubelet",
        "address": { "socket_address": { "address": p.listen_address.to_string(), "port_value": p.listen_port } },
        // Drained by `kubelet-authz-node drain` (`/drain_listeners?inboundonly`); the metrics
        // listener is not inbound and keeps answering the probes.
        "traffic_direction": "INBOUND",
        // Two pods share NODE_IP:10250 during a hand-off (Envoy's default on Linux, kept explicit).
        "enable_reuse_port": true,
        "filter_chains": [{
            // A connection that never finishes its handshake is closed (silent connections must
            // not hold the connection cap).
            "transport_socket_connect_timeout": secs(p.handshake_timeout_s),
            "transport_socket": {
                "name": "envoy.transport_sockets.tls",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext",
                    // Like the kubelet: a client certificate is optional (bearer tokens are the
                    // other way in), but one that is sent must chain to the cluster CA.
                    "require_client_certificate": false,
                    "common_tls_context": {
                        "alpn_protocols": ["h2", "http/1.1"],
                        "tls_params": {
                            "tls_minimum_protocol_version": p.tls.min_version,
                            "cipher_suites": p.tls.cipher_suites,
                        },
                        "tls_certificate_sds_secret_configs": [sds_ref(p, "kubelet-serving")],
                        "validation_context_sds_secret_config": sds_ref(p, "cluster-ca"),
                    },
                },
            },
            "filters": [{
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "kubelet",
                    "codec_type": "AUTO",
                    "use_remote_address": true,
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "forward_client_cert_details": "SANITIZE_SET",
                    "set_current_client_cert_details": { "subject": true, "cert": true, "uri": true, "dns": true },
                    "upgrade_configs": [{ "upgrade_type": "websocket" }, { "upgrade_type": "spdy/3.1" }],
                    "http2_protocol_options": { "allow_connect": true, "max_concurrent_streams": 1024 },
                    "stream_idle_timeout": secs(STREAMING_IDLE_TIMEOUT_S),
                    // Slow clients: the request headers within this bound, and a connection
                    // without any stream closed after the ordinary idle timeout.
                    "request_headers_timeout": secs(p.request_headers_timeout_s),
                    "common_http_protocol_options": { "idle_timeout": secs(ORDINARY_IDLE_TIMEOUT_S) },
                    "route_config": {
                        "name": "kubelet",
                        "virtual_hosts": [{
                            "name": "kubelet",
                            "domains": ["*"],
                            "routes": [
                                {
                                    "match": { "safe_regex": { "regex": STREAMING_ROUTE_REGEX } },
                                    "route": { "cluster": "kubelet", "timeout": "0s", "idle_timeout": secs(STREAMING_IDLE_TIMEOUT_S) },
                                },
                                {
                                    "match": { "prefix": "/" },
                                    "route": { "cluster": "kubelet", "timeout": "0s", "idle_timeout": secs(ORDINARY_IDLE_TIMEOUT_S) },
                                },
                            ],
                        }],
                    },
                    "http_filters": [
                        // The node's own client certificate is the proxy's credential towards the
                        // API server: whoever presents it downstream is refused before the filter.
                        {
                            "name": "envoy.filters.http.rbac",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
                                "rules": {
                                    "action": "DENY",
                                    "policies": { "node-credential": {
                                        "permissions": [{ "any": true }],
                                        "principals": [{ "authenticated": { "principal_name": {
                                            "safe_regex": { "regex": format!("(^|.*,)CN={node_cn}(,.*|$)") },
                                        } } }],
                                    } },
                                },
                            },
                        },
                        // The wasm filter's configuration comes from the ECDS file the agent
                        // writes (and rewrites when the filter ConfigMap changes): no restart.
                        {
                            "name": "envoy.filters.http.wasm",
                            "config_discovery": {
                                "config_source": {
                                    "path_config_source": {
                                        "path": p.ecds_dir.join(ECDS_FILE),
                                        "watched_directory": { "path": p.ecds_dir },
                                    },
                                    "resource_api_version": "V3",
                                },
                                "type_urls": [WASM_TYPE],
                            },
                        },
                        router(),
                    ],
                },
            }],
        }],
    })
}

fn metrics_listener(p: &NodeParams) -> Value {
    let get = |path: &str| json!({ "path": path, "headers": [{ "name": ":method", "string_match": { "exact": "GET" } }] });
    json!({
        "name": "metrics",
        "address": { "socket_address": { "address": p.listen_address.to_string(), "port_value": p.metrics_port } },
        // Outside the global connection cap and the overload manager: probes and scrapes answer
        // exactly when the kubelet listener is refusing work. Its own small cap instead.
        "ignore_global_conn_limit": true,
        "bypass_overload_manager": true,
        "filter_chains": [{ "filters": [
            {
                "name": "envoy.filters.network.connection_limit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit",
                    "stat_prefix": "metrics",
                    "max_connections": 64,
                },
            },
            {
                "name": "envoy.filters.network.http_connection_manager",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                    "stat_prefix": "metrics",
                    "codec_type": "HTTP1",
                    "normalize_path": true,
                    "merge_slashes": true,
                    "path_with_escaped_slashes_action": "REJECT_REQUEST",
                    "request_headers_timeout": secs(p.request_headers_timeout_s),
                    "route_config": {
                        "name": "metrics",
                        "virtual_hosts": [{
                            "name": "metrics",
                            "domains": ["*"],
                            "routes": [
                                // Readiness end to end: the kubelet's /healthz through this proxy's
                                // kubelet cluster, with the proxy's own certificate.
                                { "match": get("/ready"), "route": { "cluster": "kubelet", "prefix_rewrite": "/healthz", "timeout": "5s" } },
                                // Liveness: Envoy's own answer (the process takes requests).
                                { "match": get("/live"), "direct_response": { "status": 200, "body": { "inline_string": "ok\n" } } },
                                { "match": get("/stats/prometheus"), "route": { "cluster": "admin", "timeout": "10s" } },
                                // The node agent's own series (configuration refusals, renewals).
                                { "match": get(crate::metrics::ENVOY_PATH), "route": { "cluster": AGENT_CLUSTER, "prefix_rewrite": crate::metrics::PATH, "timeout": "10s" } },
                                { "match": { "prefix": "/" }, "direct_response": { "status": 404, "body": { "inline_string": "not found\n" } } },
                            ],
                        }],
                    },
                    "http_filters": [router()],
                },
            },
        ] }],
    })
}

fn protocol_options(p: &NodeParams, http_filters: Option<Value>) -> Value {
    let mut o = json!({
        "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": { "http_protocol_options": {} },
        "common_http_protocol_options": { "max_connection_duration": secs(p.upstream_max_connection_age_s) },
    });
    if let (Some(f), Some(obj)) = (http_filters, o.as_object_mut()) {
        obj.insert("http_filters".into(), f);
    }
    json!({ "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": o })
}

fn upstream_tls(p: &NodeParams, sni: &str, client_cert: Option<&str>) -> Value {
    let mut ctx = json!({
        "combined_validation_context": {
            "default_validation_context": {
                "match_typed_subject_alt_names": [{ "san_type": "DNS", "matcher": { "exact": sni } }],
            },
            "validation_context_sds_secret_config": sds_ref(p, "cluster-ca"),
        },
    });
    if let (Some(name), Some(obj)) = (client_cert, ctx.as_object_mut()) {
        obj.insert(
            "tls_certificate_sds_secret_configs".into(),
            json!([sds_ref(p, name)]),
        );
    }
    json!({
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": ctx,
        },
    })
}

fn endpoint(name: &str, address: Value) -> Value {
    json!({ "cluster_name": name, "endpoints": [{ "lb_endpoints": [{ "endpoint": { "address": address } }] }] })
}

fn apiserver_cluster(p: &NodeParams) -> Value {
    let (filters, client_cert) = match &p.auth {
        ApiServerAuth::NodeCert(_) => (None, Some("node-client")),
        // The filter's reviews are async-client requests: only the cluster's upstream filters
        // see them. Any Authorization they carry is replaced; no token file, no request.
        ApiServerAuth::ServiceAccountToken(_) => (
            Some(json!([
                {
                    "name": "envoy.filters.http.credential_injector",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.http.credential_injector.v3.CredentialInjector",
                        "overwrite": true,
                        "allow_request_without_credential": false,
                        "credential": {
                            "name": "envoy.http.injected_credentials.generic",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.http.injected_credentials.generic.v3.Generic",
                                "header": "Authorization",
                                "header_value_prefix": "Bearer ",
                                "credential": sds_ref(p, "apiserver-token"),
                            },
                        },
                    },
                },
                {
                    "name": "envoy.filters.http.upstream_codec",
                    "typed_config": { "@type": "type.googleapis.com/envoy.extensions.filters.http.upstream_codec.v3.UpstreamCodec" },
                },
            ])),
            None,
        ),
    };
    let ip = p.apiserver_host.parse::<IpAddr>().is_ok();
    json!({
        "name": APISERVER_CLUSTER,
        "type": if ip { "STATIC" } else { "STRICT_DNS" },
        "dns_lookup_family": "V4_PREFERRED",
        "connect_timeout": "5s",
        "circuit_breakers": { "thresholds": [{ "max_connections": 1024, "max_pending_requests": 1024, "max_requests": 1024, "max_retries": 3 }] },
        "load_assignment": endpoint(APISERVER_CLUSTER, json!({ "socket_address": { "address": p.apiserver_host, "port_value": p.apiserver_port } })),
        "typed_extension_protocol_options": protocol_options(p, filters),
        "transport_socket": upstream_tls(p, &p.apiserver_name, client_cert),
    })
}

fn kubelet_cluster(p: &NodeParams) -> Value {
    json!({
        "name": "kubelet",
        "type": "STATIC",
        "connect_timeout": "2s",
        // A draining connection keeps its streams (exec, logs -f) until they end.
        "typed_extension_protocol_options": protocol_options(p, None),
        // One upstream connection per exec/attach/port-forward/logs -f stream: the breakers are
        // the connection cap, not Envoy's default 1024.
        "circuit_breakers": { "thresholds": [{
            "max_connections": p.max_connections,
            "max_pending_requests": p.max_connections,
            "max_requests": p.max_connections,
            "max_retries": 3,
        }] },
        "load_assignment": endpoint("kubelet", json!({ "socket_address": { "address": p.kubelet_address.to_string(), "port_value": p.kubelet_port } })),
        "transport_socket": upstream_tls(p, &p.kubelet_server_name, Some("proxy-local")),
    })
}

/// The bootstrap (`envoy.yaml`).
pub fn bootstrap(p: &NodeParams) -> Value {
    // The filter's counters carry their labels in their names (Istio's encoding); one tag per
    // label turns them into Prometheus labels in /stats/prometheus.
    let tags: Vec<Value> = kubelet_authz::labels::stats_tags()
        .into_iter()
        .map(|(t, regex)| json!({ "tag_name": t, "regex": regex }))
        .collect();
    json!({
        // SDS and ECDS from files need both.
        "node": { "id": p.node_name, "cluster": "kubelet-authz" },
        // Admin on a unix socket only: no host-network pod can POST /quitquitquit.
        "admin": { "address": { "pipe": { "path": p.admin_socket, "mode": 0o600 } } },
        "stats_config": { "stats_tags": tags },
        "overload_manager": {
            "refresh_interval": "0.25s",
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": p.max_connections,
                    },
                },
                {
                    "name": "envoy.resource_monitors.fixed_heap",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig",
                        "max_heap_size_bytes": p.max_heap_bytes,
                    },
                },
            ],
            "actions": [
                { "name": "envoy.overload_actions.shrink_heap", "triggers": [{ "name": "envoy.resource_monitors.fixed_heap", "threshold": { "value": 0.90 } }] },
                { "name": "envoy.overload_actions.stop_accepting_requests", "triggers": [{ "name": "envoy.resource_monitors.fixed_heap", "threshold": { "value": 0.98 } }] },
            ],
        },
        "static_resources": {
            "listeners": [kubelet_listener(p), metrics_listener(p)],
            "clusters": [
                apiserver_cluster(p),
                kubelet_cluster(p),
                {
                    "name": "admin",
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": endpoint("admin", json!({ "pipe": { "path": p.admin_socket } })),
                },
                {
                    "name": AGENT_CLUSTER,
                    "type": "STATIC",
                    "connect_timeout": "1s",
                    "load_assignment": endpoint(AGENT_CLUSTER, json!({ "pipe": { "path": p.agent_socket } })),
                },
            ],
        },
    })
}

/// The SDS files (`sds/<name>.yaml`): the serving certificate, the API-server credential, the
/// proxy's local certificate and the cluster CA.
pub fn sds_files(p: &NodeParams) -> Vec<File> {
    let f = |name: &str, content: Value| File {
        path: PathBuf::from("sds").join(format!("{name}.yaml")),
        content,
    };
    let credential = match &p.auth {
        ApiServerAuth::NodeCert(pem) => f("node-client", tls_secret("node-client", pem)),
        ApiServerAuth::ServiceAccountToken(t) => {
            f("apiserver-token", token_secret("apiserver-token", t))
        }
    };
    vec![
        f(
            "kubelet-serving",
            tls_secret("kubelet-serving", &p.serving_cert),
        ),
        credential,
        f("proxy-local", tls_secret("proxy-local", &p.proxy_cert)),
        f("cluster-ca", ca_secret("cluster-ca", &p.cluster_ca)),
    ]
}

/// The wasm filter (`envoy.extensions.filters.http.wasm.v3.Wasm`) with a plugin configuration
/// (the JSON text the filter parses).
pub fn wasm_filter(filter_wasm: &Path, configuration_json: &str) -> Value {
    json!({
        "@type": WASM_TYPE,
        "config": {
            "name": FILTER_NAME,
            "fail_open": false,
            "failure_policy": "FAIL_RELOAD",
            "reload_config": { "backoff": { "base_interval": "1s", "max_interval": "10s" } },
            "vm_config": {
                "vm_id": FILTER_NAME,
                "runtime": "envoy.wasm.runtime.v8",
                "code": { "local": { "filename": filter_wasm } },
            },
            "configuration": {
                "@type": "type.googleapis.com/google.protobuf.StringValue",
                "value": configuration_json,
            },
        },
    })
}

/// The ECDS discovery response: one `TypedExtensionConfig` named `envoy.filters.http.wasm`
/// (the name the listener's `config_discovery` asks for).
pub fn ecds_response(filter_wasm: &Path, configuration_json: &str) -> Value {
    json!({ "resources": [{
        "@type": "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig",
        "name": "envoy.filters.http.wasm",
        "typed_config": wasm_filter(filter_wasm, configuration_json),
    }]})
}

/// The bootstrap and the SDS files (the ECDS file is written by [`crate::filterconfig`]).
pub fn render(p: &NodeParams) -> Vec<File> {
    let mut files = vec![File {
        path: PathBuf::from("envoy.yaml"),
        content: bootstrap(p),
    }];
    files.extend(sds_files(p));
    files
}

/// A failure to write a rendered file.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The file could not be written or renamed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The value could not be turned into YAML.
    #[error("{path}: cannot write YAML: {source}")]
    Yaml {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: serde_yaml_ng::Error,
    },
}

/// Write `content` as YAML to `path` atomically: a temporary file in the same directory, renamed
/// over the old one (Envoy's watched directories see one `MovedTo`).
pub fn write_atomic(path: &Path, content: &Value) -> Result<(), WriteError> {
    let io = |source| WriteError::Io {
        path: path.to_path_buf(),
        source,
    };
    let text = serde_yaml_ng::to_string(content).map_err(|source| WriteError::Yaml {
        path: path.to_path_buf(),
        source,
    })?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// Write every file under `out_dir`, and remove the SDS file of the credential mode not in use.
pub fn write_all(out_dir: &Path, p: &NodeParams, files: &[File]) -> Result<(), WriteError> {
    for f in files {
        write_atomic(&out_dir.join(&f.path), &f.content)?;
    }
    let other = match p.auth {
        ApiServerAuth::NodeCert(_) => "apiserver-token",
        ApiServerAuth::ServiceAccountToken(_) => "node-client",
    };
    let stale = out_dir.join("sds").join(format!("{other}.yaml"));
    match std::fs::remove_file(&stale) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(WriteError::Io {
            path: stale,
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;
    use rstest::rstest;

    pub(crate) fn params(auth: ApiServerAuth, listen: &str, tls: EnvoyTls) -> NodeParams {
        NodeParams {
            node_name: "worker-1.example".into(),
            listen_address: listen.parse().unwrap(),
            listen_port: 10250,
            metrics_port: 9977,
            admin_socket: "/run/kubelet-authz/admin.sock".into(),
            agent_socket: "/run/kubelet-authz/agent.sock".into(),
            sds_dir: "/rendered/sds".into(),
            ecds_dir: "/rendered/ecds".into(),
            filter_wasm: "/wasm/plugin.wasm".into(),
            tls,
            max_connections: 4096,
            max_heap_bytes: 335_544_320,
            apiserver_host: "10.0.0.1".into(),
            apiserver_port: 6443,
            apiserver_name: "kubernetes.default.svc".into(),
            auth,
            serving_cert: "/var/lib/kubelet/pki/kubelet-server-current.pem".into(),
            proxy_cert: "/var/lib/kubelet-authz/pki/proxy-current.pem".into(),
            cluster_ca: "/etc/kubernetes/pki/ca.crt".into(),
            kubelet_address: "127.0.0.1".parse().unwrap(),
            kubelet_port: 10250,
            kubelet_server_name: "worker-1.example".into(),
            upstream_max_connection_age_s: 3600,
            handshake_timeout_s: 10,
            request_headers_timeout_s: 10,
        }
    }

    fn cluster<'a>(b: &'a Value, name: &str) -> &'a Value {
        b["static_resources"]["clusters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
    }

    #[rstest]
    #[case::node_cert_v4(ApiServerAuth::NodeCert("/pki/kubelet-client-current.pem".into()), "10.1.2.3", "TLSv1_2", &["ECDHE-RSA-AES128-GCM-SHA256"])]
    #[case::token_v4(ApiServerAuth::ServiceAccountToken("/var/run/secrets/kubelet-authz/token".into()), "10.1.2.3", "TLSv1_3", &[])]
    #[case::node_cert_v6(ApiServerAuth::NodeCert("/pki/kubelet-client-current.pem".into()), "fd00::17", "TLSv1_3", &[])]
    #[case::token_v6(ApiServerAuth::ServiceAccountToken("/t/token".into()), "2001:db8::1", "TLSv1_2", &["ECDHE-ECDSA-AES256-GCM-SHA384", "AES128-GCM-SHA256"])]
    fn bootstrap_carries_the_mode_the_tls_policy_and_the_address(
        #[case] auth: ApiServerAuth,
        #[case] listen: &str,
        #[case] min: &str,
        #[case] suites: &[&str],
    ) {
        let tls = EnvoyTls {
            min_version: min.into(),
            cipher_suites: suites.iter().map(|s| s.to_string()).collect(),
        };
        let p = params(auth.clone(), listen, tls);
        let b = bootstrap(&p);
        let kubelet = &b["static_resources"]["listeners"][0];
        assert_eq!(kubelet["name"], "kubelet");
        // The address is written as parsed (IPv6 without brackets).
        assert_eq!(kubelet["address"]["socket_address"]["address"], listen);
        assert_eq!(kubelet["enable_reuse_port"], true);
        assert_eq!(kubelet["traffic_direction"], "INBOUND");
        let params = &kubelet["filter_chains"][0]["transport_socket"]["typed_config"]
            ["common_tls_context"]["tls_params"];
        assert_eq!(params["tls_minimum_protocol_version"], min);
        assert_eq!(params["cipher_suites"], json!(suites));
        let metrics = &b["static_resources"]["listeners"][1];
        assert_eq!(metrics["address"]["socket_address"]["address"], listen);
        assert_eq!(metrics["bypass_overload_manager"], true);
        let api = cluster(&b, APISERVER_CLUSTER);
        let ctx = &api["transport_socket"]["typed_config"]["common_tls_context"];
        let opts = &api["typed_extension_protocol_options"]
            ["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"];
        let sds: Vec<String> = sds_files(&p)
            .iter()
            .map(|f| f.path.display().to_string())
            .collect();
        match auth {
            ApiServerAuth::NodeCert(_) => {
                assert_eq!(
                    ctx["tls_certificate_sds_secret_configs"][0]["name"],
                    "node-client"
                );
                assert!(opts.get("http_filters").is_none());
                assert!(sds.contains(&"sds/node-client.yaml".to_string()));
                assert!(!sds.contains(&"sds/apiserver-token.yaml".to_string()));
            }
            ApiServerAuth::ServiceAccountToken(_) => {
                assert!(ctx.get("tls_certificate_sds_secret_configs").is_none());
                assert_eq!(
                    opts["http_filters"][0]["name"],
                    "envoy.filters.http.credential_injector"
                );
                assert!(sds.contains(&"sds/apiserver-token.yaml".to_string()));
                assert!(!sds.contains(&"sds/node-client.yaml".to_string()));
            }
        }
        // The node's name is regex-escaped in the DENY rule.
        let rbac = &kubelet["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"][0];
        let regex = rbac["typed_config"]["rules"]["policies"]["node-credential"]["principals"][0]
            ["authenticated"]["principal_name"]["safe_regex"]["regex"]
            .as_str()
            .unwrap();
        assert_eq!(regex, r"(^|.*,)CN=system:node:worker-1\.example(,.*|$)");
    }

    #[rstest]
    #[case::address("10.0.0.1", "STATIC")]
    #[case::v6_address("fd00::1", "STATIC")]
    #[case::name("api.example.com", "STRICT_DNS")]
    fn apiserver_cluster_type_follows_the_host(#[case] host: &str, #[case] kind: &str) {
        let mut p = params(
            ApiServerAuth::NodeCert("/c.pem".into()),
            "10.1.2.3",
            EnvoyTls::default(),
        );
        p.apiserver_host = host.into();
        assert_eq!(cluster(&bootstrap(&p), APISERVER_CLUSTER)["type"], kind);
    }

    /// The metrics listener's routes, in order: path, method, and where it goes.
    #[test]
    fn the_metrics_listener_routes_exactly_get_metrics_agent_to_the_agent() {
        let mut p = params(
            ApiServerAuth::NodeCert("/c.pem".into()),
            "10.1.2.3",
            EnvoyTls::default(),
        );
        p.agent_socket = "/run/x/agent.sock".into();
        let b = bootstrap(&p);
        let metrics = &b["static_resources"]["listeners"][1];
        let hcm = &metrics["filter_chains"][0]["filters"][1]["typed_config"];
        let routes = hcm["route_config"]["virtual_hosts"][0]["routes"]
            .as_array()
            .unwrap();
        let shape: Vec<(String, String, String)> = routes
            .iter()
            .map(|r| {
                let m = &r["match"];
                let path = m["path"]
                    .as_str()
                    .map(|p| format!("={p}"))
                    .or(m["prefix"].as_str().map(|p| format!("{p}*")))
                    .unwrap();
                let method = m["headers"][0]["string_match"]["exact"]
                    .as_str()
                    .unwrap_or("*")
                    .to_string();
                let to = match (
                    r["route"]["cluster"].as_str(),
                    r["direct_response"]["status"].as_u64(),
                ) {
                    (Some(c), _) => format!(
                        "{c}{}",
                        r["route"]["prefix_rewrite"]
                            .as_str()
                            .map(|w| format!(" {w}"))
                            .unwrap_or_default()
                    ),
                    (None, Some(s)) => s.to_string(),
                    _ => panic!("{r}"),
                };
                (path, method, to)
            })
            .collect();
        let row = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(
            shape,
            [
                row("=/ready", "GET", "kubelet /healthz"),
                row("=/live", "GET", "200"),
                row("=/stats/prometheus", "GET", "admin"),
                row("=/metrics/agent", "GET", "agent /metrics"),
                row("/*", "*", "404"),
            ]
        );
        let agent = cluster(&b, AGENT_CLUSTER);
        assert_eq!(
            agent["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
                ["pipe"]["path"],
            "/run/x/agent.sock"
        );
    }

    #[test]
    fn every_secret_is_read_from_a_watched_directory() {
        let p = params(
            ApiServerAuth::NodeCert("/var/lib/kubelet/pki/kubelet-client-current.pem".into()),
            "10.1.2.3",
            EnvoyTls::default(),
        );
        for f in sds_files(&p) {
            let r = &f.content["resources"][0];
            let watched = r["tls_certificate"]["watched_directory"]["path"]
                .as_str()
                .or(r["validation_context"]["watched_directory"]["path"].as_str())
                .unwrap();
            let file = r["tls_certificate"]["certificate_chain"]["filename"]
                .as_str()
                .or(r["validation_context"]["trusted_ca"]["filename"].as_str())
                .unwrap();
            assert_eq!(Path::new(file).parent().unwrap(), Path::new(watched));
        }
        let text = serde_yaml_ng::to_string(&bootstrap(&p)).unwrap();
        for inline in ["certificate_chain", "private_key", "trusted_ca"] {
            assert!(!text.contains(inline), "{inline} inline in the bootstrap");
        }
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ecds").join("filter.yaml");
        write_atomic(&f, &json!({"a": 1})).unwrap();
        write_atomic(&f, &json!({"a": 2})).unwrap();
        let v: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        assert_eq!(v["a"], 2);
        let names: Vec<_> = std::fs::read_dir(f.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }
}
