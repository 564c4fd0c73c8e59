#!/usr/bin/env python3
"""Load benchmark of the kubelet-authz filter in Envoy, run by `envoy/bench/run.sh` (which builds
the artefacts and passes their paths). One run on loopback: starts the stand-in API server and
kubelet, an upstream Envoy that answers every request itself (`direct_response`, so the upstream
is not what is measured), then one proxy Envoy per configuration in turn, and drives each with
`wrk` (one thread):

  a   the stand-in kubelet directly (HTTPS; the stand-in is measured, not comparable in absolute)
  b   Envoy, no filter
  c   Envoy with the native envoy.filters.http.rbac filter allowing the request by header
  g   Envoy with the no-op wasm filter (the floor of any wasm filter)
  d   Envoy with kubelet-authz, every decision cached (warmed up first), audit on with the
      built-in audit policy (allowed scrapes of metrics/stats/healthz not written)
  d0  as d with audit off (what the audit costs)
  da  as d with every decision written (`audit.policy.rules: [{level: Metadata}]`)
  e   kubelet-authz with every cache off, the N tokens cycling (each request: its own TokenReview
      + SubjectAccessReview; with one token concurrent requests would share callouts)
  e1  as e with one token for every request: concurrent identical requests wait for one callout
      (not in the default set)
  f   kubelet-authz, N distinct tokens cycling (caches sized above N): a cold pass that sees every
      token once, then the same tokens cycling again; Envoy RSS before/after
  fs  as f with the default cache sizes (4096 tokens, 8192 reviews), below N (not in the default
      set: pass --configs)

Two workloads (`--workloads`, default both):

  minimal    `GET /metrics/cadvisor` with a 19-byte bearer token and a User-Agent, for every
             configuration above
  realistic  a node's clients (`--realistic-configs`, default b,g,d,d0,da): each with its own ~1.2 KB
             RS256-JWT-shaped bound ServiceAccount token; three scrapers (Prometheus' scrape
             headers) on /metrics/cadvisor, /metrics/resource and /stats/summary, two controllers
             listing /pods, and the API server's occasional container logs and exec (a plain GET
             of /exec/..., authorized and answered by the upstream's direct_response: no stream)

Two single-path workloads with a 1.2 KB token (issue 24's, `--jwt-configs`, default b,g,d,d0):

  jwt-pods    `GET /pods` by kube-state-metrics' ~1.2 KB ServiceAccount token with Prometheus'
              scrape headers (a request the built-in audit policy writes)
  jwt-scrape  `GET /metrics/cadvisor` by Prometheus' ~1.2 KB token with its scrape headers (not
              audited)

Node footprint (`--footprint-configs`, default b,g,d; `--footprint-runs`, default 3): each of these
Envoys is started alone, the runs interleaved, and the benchmark records the time from process start
to the first answer through its listener (a 200 to the minimal workload's request, polled every 2 ms
from just before the exec) and Envoy's VmRSS/VmHWM once that answer and 100 more requests are done
and 0.5 s have passed; the medians of d over b (plain Envoy) and over g (the no-op wasm filter) are
what a node pays for the filter.

Each of a-e: a warm-up, a throughput phase (`--connections`, default 16) and a latency phase
(one connection, closed loop: service time without queueing). Per configuration it records
requests/s, p50/p99/p99.9, the proxy's CPU time per request (robust against a busy machine),
the machine load, and for the filter the callouts per decision from Envoy's counters and the
stand-in API server's request count. Everything it starts is stopped on exit.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ALLOWED_TOKEN = "bench-allowed-token"
PROXY_TOKEN = "bench-proxy-token"
TOKEN_PREFIX = "bench-tok-"
PATH = "/metrics/cadvisor"
ALL_CONFIGS = ["a", "b", "c", "g", "d", "d0", "da", "e", "e1", "f", "fs"]
DEFAULT_CONFIGS = ["a", "b", "c", "g", "d", "d0", "da", "e", "f"]
STATIC = ["a", "b", "c", "g", "d", "d0", "da"]
WORKLOADS = ["minimal", "realistic", "jwt-pods", "jwt-scrape"]
# The single-path workloads of issue 24: (client of realistic_clients(), path, description).
JWT_WORKLOADS = {
    "jwt-pods": ("kube-state-metrics-0", "/pods",
                 "GET /pods, a 1.2 KB ServiceAccount token, Prometheus' scrape headers (audited by the built-in policy)"),
    "jwt-scrape": ("prometheus-k8s-0", "/metrics/cadvisor",
                   "GET /metrics/cadvisor, Prometheus' 1.2 KB ServiceAccount token and scrape headers (not audited)"),
}
DEFAULT_JWT_CONFIGS = ["b", "g", "d", "d0"]
REALISTIC_CONFIGS = ["b", "c", "g", "d", "d0", "da"]
DEFAULT_REALISTIC_CONFIGS = ["b", "g", "d", "d0", "da"]
MAX_LOAD_SECONDS = 150.0
FOOTPRINT_CONFIGS = ["b", "c", "g", "d", "d0", "da"]
DEFAULT_FOOTPRINT_CONFIGS = ["b", "g", "d"]
FOOTPRINT_REQUESTS = 100
FOOTPRINT_SETTLE_S = 0.5
FOOTPRINT_POLL_S = 0.002
FOOTPRINT_METHOD = (
    "each configuration's Envoy started alone (same flags as the load phases: --concurrency 1, "
    "its own --base-id, log level warn), runs interleaved in rotating order; start = time from just "
    "before the exec (Python monotonic clock; the priority prefix, e.g. chrt, included) until the "
    f"first 200 answer to GET {PATH} with the minimal workload's bearer token through the proxy's "
    f"listener on a port fixed in its bootstrap, polled every {FOOTPRINT_POLL_S * 1000:.0f} ms "
    "(refused connections retried); for the filter this answer includes its first, uncached "
    "decision (a TokenReview and a SubjectAccessReview to the stand-in API server); RSS = VmRSS "
    f"(and VmHWM) of the Envoy process from /proc/<pid>/status after that answer, {FOOTPRINT_REQUESTS} "
    f"more sequential requests and {FOOTPRINT_SETTLE_S} s; medians over the runs; 'over b' is the "
    "median of the configuration minus the median of plain Envoy (b)")
CLK_TCK = os.sysconf("SC_CLK_TCK")

DESCRIPTIONS = {
    "a": "stand-in kubelet directly (HTTPS)",
    "b": "Envoy, no filter",
    "c": "Envoy + native RBAC filter",
    "g": "Envoy + no-op wasm filter",
    "d": "kubelet-authz, cached (built-in audit policy)",
    "d0": "kubelet-authz, cached, audit off",
    "da": "kubelet-authz, cached, every decision audited",
    "e": "kubelet-authz, caches off, distinct tokens",
    "e1": "kubelet-authz, caches off, one token",
    "f": "kubelet-authz, distinct tokens cycling",
    "fs": "kubelet-authz, distinct tokens, default cache sizes",
}


# ---------------------------------------------------------------- the realistic workload

# What Prometheus 2.53 sends with every scrape (besides Authorization).
SCRAPE_HEADERS = [
    ("User-Agent", "Prometheus/2.53.0"),
    ("Accept", "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
               "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"),
    ("Accept-Encoding", "gzip"),
    ("X-Prometheus-Scrape-Timeout-Seconds", "10"),
]


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def sa_jwt(namespace: str, sa: str, pod: str, node: str = "bench-node", n: int = 0) -> str:
    """A bound ServiceAccount token's shape: an RS256 header with a key id, the kube-apiserver's
    claims (audience, expiry, issuer, jti, namespace, node, pod and service account with their
    uids, warnafter) and the 256 bytes of a 2048-bit RSA signature (pseudo-random: nothing
    verifies it, the stand-in API server looks the whole string up in its token file). About
    1.2 KB, deterministic for its arguments. `envoy/bench/token-1k.txt` (the criterion benches'
    token) is `sa_jwt("monitoring", "prometheus", "prometheus-k8s-0")`."""
    seed = f"{namespace}/{sa}/{pod}/{n}".encode()

    def uid(tag: bytes) -> str:
        h = hashlib.sha256(seed + tag).hexdigest()
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"

    header = {"alg": "RS256", "kid": b64u(hashlib.sha256(b"bench-signing-key").digest())}
    iat = 1795000000 + n
    payload = {
        "aud": ["https://kubernetes.default.svc.cluster.local"],
        "exp": iat + 3607, "iat": iat,
        "iss": "https://kubernetes.default.svc.cluster.local",
        "jti": uid(b"jti"),
        "kubernetes.io": {
            "namespace": namespace,
            "node": {"name": node, "uid": uid(b"node")},
            "pod": {"name": pod, "uid": uid(b"pod")},
            "serviceaccount": {"name": sa, "uid": uid(b"sa")},
            "warnafter": iat + 3600,
        },
        "nbf": iat,
        "sub": f"system:serviceaccount:{namespace}:{sa}",
    }
    sig = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(8))
    return ".".join([b64u(json.dumps(header, separators=(",", ":")).encode()),
                     b64u(json.dumps(payload, separators=(",", ":")).encode()), b64u(sig)])


def sa_groups(namespace: str, extra: str = "") -> str:
    g = f"system:serviceaccounts,system:serviceaccounts:{namespace},system:authenticated"
    return g + ("," + extra if extra else "")


# The node's clients: (name, user, groups, token, headers, [(path, requests per 100)]). RBAC from
# authz/tests/fixtures/rbac/seed-roles.yaml: the prometheus service account reads metrics, stats
# and pods; the observability group also; kube-apiserver-kubelet-client everything (logs, exec).
EXEC_PATH = "/exec/kube-system/coredns-7db6d8ff4d-x2v4q/coredns?command=date&output=1"
LOGS_PATH = "/containerLogs/kube-system/coredns-7db6d8ff4d-x2v4q/coredns?tailLines=100&timestamps=true"


def realistic_clients() -> list[dict]:
    def sa(ns: str, name: str, pod: str, groups_extra: str, headers: list, mix: list) -> dict:
        return {"name": pod, "user": f"system:serviceaccount:{ns}:{name}", "groups": sa_groups(ns, groups_extra),
                "token": sa_jwt(ns, name, pod), "headers": headers, "mix": mix}

    controller = [("User-Agent", "descheduler/v0.31.0 (linux/amd64) kubernetes/$Format"),
                  ("Accept", "application/json, */*")]
    apiserver = [("User-Agent", "kube-apiserver/v1.36.0 (linux/amd64) kubernetes/4c2a1b9"),
                 ("Accept", "*/*"), ("X-Forwarded-For", "10.96.0.1")]
    return [
        sa("monitoring", "prometheus", "prometheus-k8s-0", "", SCRAPE_HEADERS,
           [("/metrics/cadvisor", 12), ("/metrics/resource", 10)]),
        sa("monitoring", "prometheus", "prometheus-k8s-1", "", SCRAPE_HEADERS,
           [("/metrics/cadvisor", 12), ("/metrics/resource", 10)]),
        sa("kube-system", "metrics-server", "metrics-server-5d8c7b9f4-qkz8w", "observability", SCRAPE_HEADERS,
           [("/metrics/resource", 10), ("/stats/summary", 15)]),
        sa("observability", "otel-collector", "otel-collector-node-7xk2p", "observability", SCRAPE_HEADERS,
           [("/metrics/cadvisor", 6), ("/stats/summary", 10)]),
        sa("kube-system", "descheduler", "descheduler-6c9f8d7b5-m4hnt", "observability", controller,
           [("/pods", 6)]),
        sa("monitoring", "kube-state-metrics", "kube-state-metrics-0", "observability", controller,
           [("/pods", 6)]),
        {"name": "kube-apiserver", "user": "kube-apiserver-kubelet-client", "groups": "system:authenticated",
         "token": sa_jwt("kube-system", "kube-apiserver-kubelet-client", "kube-apiserver-bench-node"),
         "headers": apiserver, "mix": [(LOGS_PATH, 2), (EXEC_PATH, 1)]},
    ]


def realistic_schedule(clients: list[dict]) -> list[tuple[str, list]]:
    """One cycle of 100 requests, each client's requests spread evenly over it (deterministic)."""
    slots = []
    for c in clients:
        for path, n in c["mix"]:
            headers = list(c["headers"]) + [("Authorization", f"Bearer {c['token']}")]
            for i in range(n):
                slots.append(((i + 0.5) / n, len(slots), path, headers))
    slots.sort()
    return [(path, headers) for _, _, path, headers in slots]


def write_mix(path: Path, schedule: list[tuple[str, list]]) -> None:
    """The file wrk.lua's BENCH_MIX reads: `path<TAB>name: value...` per request."""
    with open(path, "w") as f:
        for p, headers in schedule:
            f.write("\t".join([p] + [f"{k}: {v}" for k, v in headers]) + "\n")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


class Procs:
    """Every process this benchmark starts, stopped (by pid) in reverse order on exit."""

    def __init__(self, prefix: list[str] | None = None) -> None:
        self.procs: list[tuple[str, subprocess.Popen]] = []
        self.prefix = prefix or []

    def start(self, name: str, argv: list[str], out: Path, env: dict | None = None) -> subprocess.Popen:
        argv = self.prefix + argv
        f = open(out, "wb")
        p = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env)
        f.close()
        self.procs.append((name, p))
        return p

    def stop(self, p: subprocess.Popen) -> None:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)
        self.procs = [(n, q) for (n, q) in self.procs if q is not p]

    def stop_all(self) -> None:
        for _, p in reversed(list(self.procs)):
            try:
                self.stop(p)
            except Exception as e:  # keep stopping the others
                log(f"could not stop pid {p.pid}: {e}")


def wait_json_line(path: Path, p: subprocess.Popen, what: str, timeout: float = 60) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if p.poll() is not None:
            raise SystemExit(f"{what} exited ({p.returncode}):\n{path.read_text(errors='replace')}")
        for line in path.read_text(errors="replace").splitlines():
            line = line.strip()
            if line.startswith("{"):
                try:
                    return json.loads(line)
                except json.JSONDecodeError:
                    pass
        time.sleep(0.05)
    raise SystemExit(f"{what} did not report ready within {timeout}s:\n{path.read_text(errors='replace')}")


def http_get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 5) -> str:
    with urllib.request.urlopen(url, timeout=timeout, context=ctx) as r:
        return r.read().decode("utf-8", "replace")


def http_get_status(url: str, headers: dict, timeout: float = 10) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", "replace")


def proc_cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the command: state is field 3; utime, stime are fields 14, 15 (1-based)
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_mem_kb(pid: int) -> dict:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0])
    return out


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loadavg() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def busy_compilers() -> int:
    n = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().strip() in ("rustc", "cc1", "cc1plus", "ld", "rust-lld"):
                    n += 1
            except OSError:
                pass
    return n


def git_info() -> dict:
    root = Path(__file__).resolve().parents[2]
    def git(*args: str) -> str:
        r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)
        return r.stdout.strip()
    dirty = [line[3:] for line in git("status", "--porcelain", "--", "authz", "filter").splitlines()]
    return {"head": git("rev-parse", "HEAD"), "uncommitted_in_authz_or_filter": dirty}


def machine() -> dict:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "mem_total_mb": mem_kb // 1024,
        "kernel": platform.release(),
        "loadavg_start": Path("/proc/loadavg").read_text().split()[:3],
    }


# ---------------------------------------------------------------- Envoy configuration


def sock(port: int) -> dict:
    return {"socket_address": {"address": "127.0.0.1", "port_value": port}}


def static_cluster(name: str, port: int, tls_ca: str | None = None) -> dict:
    c = {
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": sock(port)}}]}],
        },
    }
    if tls_ca:
        c["transport_socket"] = {
            "name": "envoy.transport_sockets.tls",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
                "sni": "localhost",
                "common_tls_context": {"validation_context": {"trusted_ca": {"filename": tls_ca}}},
            },
        }
    return c


def hcm(routes: list, http_filters: list) -> dict:
    return {
        "name": "envoy.filters.network.http_connection_manager",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
            "stat_prefix": "bench",
            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": routes}]},
            "http_filters": http_filters
            + [
                {
                    "name": "envoy.filters.http.router",
                    "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"},
                }
            ],
        },
    }


# The filter's labels as Prometheus labels (as in envoy/kubelet-front-proxy.yaml; filter/src/metrics.rs).
STATS_TAGS = [{"tag_name": t, "regex": rf"({t}=\.=(.*?);\.;)"}
              for t in ("cache", "kind", "method", "outcome", "result", "subresource")]


def bootstrap(listener_filters: dict, clusters: list) -> dict:
    return {
        "admin": {"address": sock(0)},
        "stats_config": {"stats_tags": STATS_TAGS},
        "static_resources": {
            "listeners": [
                {
                    "name": "main",
                    "address": sock(0),
                    "filter_chains": [{"filters": [listener_filters]}],
                }
            ],
            "clusters": clusters,
        },
    }


UPSTREAM_BODY = json.dumps({"kind": "bench", "path": PATH, "note": "direct_response from the upstream Envoy"})


def upstream_bootstrap() -> dict:
    route = {"match": {"prefix": "/"}, "direct_response": {"status": 200, "body": {"inline_string": UPSTREAM_BODY}}}
    return bootstrap(hcm([route], []), [])


def wasm_filter(name: str, wasm: str, configuration: str) -> dict:
    return {
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": name,
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": configuration},
                "vm_config": {"runtime": "envoy.wasm.runtime.v8", "code": {"local": {"filename": wasm}}},
            },
        },
    }


def rbac_filter(tokens: list[str], prefix: str) -> dict:
    return {
        "name": "envoy.filters.http.rbac",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC",
            "rules": {
                "action": "ALLOW",
                "policies": {
                    "metrics-reader": {
                        "permissions": [
                            {
                                "and_rules": {
                                    "rules": [
                                        {"header": {"name": ":method", "string_match": {"exact": "GET"}}},
                                        {"url_path": {"path": {"prefix": prefix}}},
                                    ]
                                }
                            }
                        ],
                        "principals": [
                            {"header": {"name": "authorization", "string_match": {"exact": f"Bearer {t}"}}}
                            for t in tokens
                        ],
                    }
                },
            },
        },
    }


def plugin_config(kind: str, ntokens: int) -> str:
    c: dict = {
        "nodeName": "bench-node",
        "kubeletVersion": "1.36",
        "apiServer": {"cluster": "kube-apiserver", "bearerToken": PROXY_TOKEN, "timeout": "5s"},
        "enforcement": "Enforce",
        "audit": {"enabled": kind != "d0"},
    }
    if kind == "da":
        c["audit"]["policy"] = {"rules": [{"level": "Metadata"}]}
    if kind in ("e", "e1"):
        c["authentication"] = {"webhook": {"enabled": True, "cacheTTL": "0s"}}
        c["authorization"] = {
            "mode": "Webhook",
            "webhook": {"cacheAuthorizedTTL": "0s", "cacheUnauthorizedTTL": "0s"},
        }
    if kind == "f":
        size = max(8192, 1 << (ntokens + ntokens // 4).bit_length())
        c["limits"] = {"tokenCacheSize": size, "sarCacheSize": size}
    return json.dumps(c)


def proxy_bootstrap(kind: str, art: dict, upstream_port: int, api_port: int, ca: str, ntokens: int,
                    rbac_tokens: list[str] | None = None) -> dict:
    filters: list = []
    if kind == "c":
        filters = [rbac_filter(rbac_tokens, "/") if rbac_tokens else rbac_filter([ALLOWED_TOKEN], "/metrics/")]
    elif kind == "g":
        filters = [wasm_filter("noop", art["noop_wasm"], art.get("noop_config", ""))]
    elif kind in ("d", "d0", "da", "e", "e1", "f", "fs"):
        filters = [wasm_filter("kubelet-authz", art["filter_wasm"], plugin_config(kind, ntokens))]
    route = {"match": {"prefix": "/"}, "route": {"cluster": "kubelet"}}
    clusters = [static_cluster("kubelet", upstream_port), static_cluster("kube-apiserver", api_port, ca)]
    return bootstrap(hcm([route], filters), clusters)


def envoy_argv(envoy_bin: str, cfg_path: Path, base_id: int, admin_path: Path, log_path: Path) -> list[str]:
    return [
        envoy_bin, "-c", str(cfg_path), "--concurrency", "1", "--base-id", str(base_id),
        "--admin-address-path", str(admin_path), "--log-level", "warn",
        "--component-log-level", "wasm:info", "--log-path", str(log_path),
        "--disable-hot-restart",
    ]


class Envoy:
    """One Envoy process (`--concurrency 1`, its own base id), with its admin and listener ports."""

    def __init__(self, procs: Procs, envoy_bin: str, work: Path, name: str, cfg: dict, base_id: int) -> None:
        self.procs = procs
        self.name = name
        cfg_path = work / f"envoy-{name}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        admin_path = work / f"envoy-{name}.admin"
        self.log_path = work / f"envoy-{name}.log"
        argv = envoy_argv(envoy_bin, cfg_path, base_id, admin_path, self.log_path)
        self.p = procs.start(f"envoy-{name}", argv, work / f"envoy-{name}.out")
        self.pid = self.p.pid
        deadline = time.time() + 60
        self.admin = ""
        while time.time() < deadline:
            if self.p.poll() is not None:
                raise SystemExit(f"envoy {name} exited ({self.p.returncode}):\n"
                                 + (work / f"envoy-{name}.out").read_text(errors="replace")
                                 + (self.log_path.read_text(errors="replace") if self.log_path.exists() else ""))
            if admin_path.exists() and admin_path.read_text().strip():
                self.admin = "http://" + admin_path.read_text().strip()
                try:
                    if http_get(self.admin + "/ready").strip() == "LIVE":
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            raise SystemExit(f"envoy {name} not ready in 60s")
        listeners = json.loads(http_get(self.admin + "/listeners?format=json"))
        self.port = listeners["listener_statuses"][0]["local_address"]["socket_address"]["port_value"]
        self.url = f"http://127.0.0.1:{self.port}"

    def stats(self, contains: str = "kubelet_authz_") -> dict:
        # Prometheus series (`kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}`);
        # the filter flushes its counters to Envoy on a 1 s tick, so they lag by up to a second.
        out = {}
        for line in http_get(self.admin + "/stats/prometheus").splitlines():
            k, _, v = line.rpartition(" ")
            if k.startswith(contains) and v.strip().isdigit():
                out[k.strip()] = int(v)
        return out

    def settled_stats(self) -> dict:
        """`stats()` once the filter's last tick has flushed everything counted so far (its
        counters reach Envoy at most 1 s late): the snapshot a delta is taken between."""
        time.sleep(1.1)
        return self.stats()

    def stop(self) -> None:
        self.procs.stop(self.p)


# ---------------------------------------------------------------- load


PRIORITY: list[str] = []


def wrk_argv(url: str, lua: str, conns: int, secs: int, timeout_s: int) -> list[str]:
    return PRIORITY + ["wrk", "-t1", f"-c{conns}", f"-d{secs}s", f"--timeout={timeout_s}s", "-s", lua, url + PATH]


def wrk_env(env_extra: dict) -> dict:
    env = dict(os.environ)
    env.update({"BENCH_PATH": PATH, "BENCH_TOKEN_PREFIX": TOKEN_PREFIX})
    env.update({k: str(v) for k, v in env_extra.items()})
    return env


def wrk_result(stdout: str, stderr: str, code) -> dict:
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise SystemExit(f"wrk gave no result (exit {code}):\n{stdout}\n{stderr}")


def run_wrk(url: str, lua: str, conns: int, seconds: float, env_extra: dict, timeout_s: int = 2) -> dict:
    secs = max(1, int(round(seconds)))
    r = subprocess.run(wrk_argv(url, lua, conns, secs, timeout_s), env=wrk_env(env_extra),
                       capture_output=True, text=True, timeout=secs + 30)
    res = wrk_result(r.stdout, r.stderr, r.returncode)
    res["connections"] = conns
    return res


def run_wrk_until(url: str, lua: str, conns: int, max_seconds: float, env_extra: dict, done) -> dict:
    """wrk until `done()` (polled every 100 ms) or `max_seconds`; SIGINT makes wrk stop and report
    (its main thread otherwise sleeps the whole -d even when the Lua script stopped its thread)."""
    secs = max(1, int(round(max_seconds)))
    p = subprocess.Popen(wrk_argv(url, lua, conns, secs, 2), env=wrk_env(env_extra),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + secs + 5
        while p.poll() is None and time.time() < deadline:
            time.sleep(0.1)
            if done():
                p.send_signal(signal.SIGINT)
                break
        out, err = p.communicate(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=10)
    res = wrk_result(out, err, p.returncode)
    res["connections"] = conns
    return res


def median(xs: list):
    v = sorted(x for x in xs if x is not None)
    if not v:
        return None
    m = len(v) // 2
    return v[m] if len(v) % 2 else (v[m - 1] + v[m]) / 2


def aggregate(slices: list[dict]) -> dict:
    """1-second slices of one configuration: totals for counts and CPU, the median of the
    slices for each percentile (wrk cannot merge histograms)."""
    reqs = sum(r["requests"] for r in slices)
    dur = sum(r["duration_s"] for r in slices)
    cpu = sum(r["proxy_cpu_s"] for r in slices)
    out = {
        "requests": reqs,
        "duration_s": round(dur, 3),
        "rps": round(reqs / dur, 1) if dur else 0.0,
        "slices": len(slices),
        "slice_rps": [r["rps"] for r in slices],
    }
    for k in ("p50_us", "p90_us", "p99_us", "p999_us", "mean_us"):
        out[k] = median([r[k] for r in slices])
    out["max_us"] = max(r["max_us"] for r in slices)
    out["errors"] = {k: sum(r["errors"][k] for r in slices) for k in slices[0]["errors"]}
    out["connections"] = slices[0]["connections"]
    out["proxy_cpu_s"] = round(cpu, 3)
    out["proxy_cpu_us_per_req"] = round(cpu * 1e6 / reqs, 2) if reqs else None
    out["proxy_cpu_util"] = round(cpu / dur, 3) if dur else None
    out["loadavg"] = [min(r["loadavg"][0] for r in slices), max(r["loadavg"][1] for r in slices)]
    out["compilers_running"] = max(r["compilers_running"] for r in slices)
    return out


def sum_prefix(stats: dict, prefix: str) -> int:
    return sum(v for k, v in stats.items() if k.startswith(prefix))


def callouts(before: dict, after: dict) -> dict:
    def d(prefix: str) -> int:
        return sum_prefix(after, prefix) - sum_prefix(before, prefix)

    tr = d('kubelet_authz_callouts_total{kind="tokenreview"')
    sar = d('kubelet_authz_callouts_total{kind="subjectaccessreview"')
    ok = d('kubelet_authz_callouts_total{kind="tokenreview",result="ok"}') + d(
        'kubelet_authz_callouts_total{kind="subjectaccessreview",result="ok"}')
    decisions = d("kubelet_authz_decisions_total{")
    allowed = d('kubelet_authz_decisions_total{outcome="allowed"')
    return {
        "decisions": decisions,
        "allowed": allowed,
        "tokenreviews": tr,
        "subjectaccessreviews": sar,
        "callout_failures": tr + sar - ok,
        "cache_hits": d("kubelet_authz_cache_hits_total{"),
        "cache_misses": d("kubelet_authz_cache_misses_total{"),
        "callouts_per_request": round((tr + sar) / decisions, 4) if decisions else None,
    }


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.procs = Procs(PRIORITY)
        self.work = Path(tempfile.mkdtemp(prefix="kubelet-authz-bench-"))
        self.lua = str(Path(__file__).with_name("wrk.lua"))
        self.base_id = 40000 + (os.getpid() % 1000) * 16
        self.results: dict = {}
        self.realistic: dict = {}
        self.load_seconds = 0.0
        self.clients = realistic_clients()
        self.schedule = realistic_schedule(self.clients)
        self.mix_path = self.work / "realistic-mix.tsv"
        write_mix(self.mix_path, self.schedule)
        # The single-path workloads: results, schedule and mix file of each.
        self.jwt: dict = {w: {} for w in JWT_WORKLOADS}
        self.jwt_schedules: dict = {}
        self.jwt_mix_paths: dict = {}
        for w, (client, path, _) in JWT_WORKLOADS.items():
            c = next(c for c in self.clients if c["name"] == client)
            headers = list(SCRAPE_HEADERS) + [("Authorization", f"Bearer {c['token']}")]
            self.jwt_schedules[w] = [(path, headers)]
            self.jwt_mix_paths[w] = self.work / f"{w}-mix.tsv"
            write_mix(self.jwt_mix_paths[w], self.jwt_schedules[w])

    # ---- stand-ins
    def start_standins(self) -> None:
        art = self.args
        pki = self.work / "pki"
        tokens = self.work / "tokens.csv"
        with open(tokens, "w") as f:
            f.write(f'{ALLOWED_TOKEN},bench-user,uid-bench,"observability"\n')
            f.write(f'{PROXY_TOKEN},kubelet-authz-proxy,uid-proxy,"system:kubelet-authz"\n')
            for i in range(art.tokens):
                f.write(f'{TOKEN_PREFIX}{i:05d},bench-user-{i:05d},uid-{i:05d},"observability"\n')
            for c in self.clients:
                f.write(f'{c["token"]},{c["user"]},uid-{c["name"]},"{c["groups"]}"\n')
        out = self.work / "apiserver.out"
        p = self.procs.start(
            "apiserver",
            [art.apiserver_bin, "--pki-dir", str(pki), "--tokens", str(tokens), "--rbac", art.rbac],
            out,
        )
        self.api = wait_json_line(out, p, "stand-in API server")
        self.api_pid = p.pid
        out = self.work / "kubelet.out"
        p = self.procs.start("kubelet", [art.kubelet_bin, "--pki-dir", str(pki)], out)
        self.kubelet = wait_json_line(out, p, "stand-in kubelet")
        self.kubelet_pid = p.pid
        self.api_ctx = ssl.create_default_context(cafile=self.api["ca"])
        self.api_ctx.check_hostname = False
        log(f"stand-in API server {self.api['url']}, stand-in kubelet {self.kubelet['url']}")

    def api_requests(self) -> int:
        s = json.loads(http_get(self.api["url"].rstrip("/") + "/_standin/stats", self.api_ctx))
        return int(s.get("requests", 0))

    def next_base_id(self) -> int:
        self.base_id += 1
        return self.base_id

    # ---- one measurement
    def phase(self, url: str, pid: int, conns: int, seconds: float, env: dict, done=None) -> dict:
        l0, c0, t0 = loadavg(), proc_cpu_s(pid), time.time()
        comp = busy_compilers()
        if done is None:
            r = run_wrk(url, self.lua, conns, seconds, env)
        else:
            r = run_wrk_until(url, self.lua, conns, seconds, env, done)
        c1, l1 = proc_cpu_s(pid), loadavg()
        self.load_seconds += round(r["duration_s"], 1)
        r["proxy_cpu_s"] = round(c1 - c0, 3)
        r["proxy_cpu_us_per_req"] = round((c1 - c0) * 1e6 / r["requests"], 2) if r["requests"] else None
        r["proxy_cpu_util"] = round((c1 - c0) / max(1e-9, time.time() - t0), 3)
        r["loadavg"] = [l0, l1]
        r["compilers_running"] = comp
        return r

    def measure(self, name: str, url: str, pid: int, env: dict) -> dict:
        """Warm-up, throughput phase and latency phase of one configuration on its own."""
        a = self.args
        if a.warmup > 0:
            run_wrk(url, self.lua, a.connections, a.warmup, env)
            self.load_seconds += a.warmup
        res = {"config": name, "description": DESCRIPTIONS[name]}
        res["throughput"] = self.phase(url, pid, a.connections, a.duration, env)
        if a.latency_duration > 0:
            res["latency"] = self.phase(url, pid, 1, a.latency_duration, env)
        self.report(name, res)
        return res

    def report(self, name: str, res: dict) -> None:
        t = res["throughput"]
        log(f"{name}: {t['rps']:.0f} req/s, p50 {t['p50_us']} us, p99 {t['p99_us']} us, "
            f"proxy CPU {t['proxy_cpu_us_per_req']} us/req, load {t['loadavg']}")
        errs = sum(t["errors"].values())
        if errs:
            log(f"{name}: WARNING {errs} errors {t['errors']}")

    def start_proxy(self, name: str, upstream_port: int, workload: str = "minimal") -> Envoy:
        a = self.args
        realistic = workload != "minimal"
        cfg = proxy_bootstrap(name, vars(a), upstream_port, int(self.api["port"]), self.api["ca"], a.tokens,
                              [c["token"] for c in self.clients] if realistic else None)
        label = {"minimal": name, "realistic": f"{name}-r"}.get(workload, f"{name}-{workload}")
        schedule = self.jwt_schedules.get(workload, self.schedule)
        envoy = Envoy(self.procs, a.envoy_bin, self.work, label, cfg, self.next_base_id())
        # one request first (each distinct request of the realistic mix): it must be allowed
        # (200), else the comparison is meaningless
        probes = ([(PATH, {"Authorization": f"Bearer {ALLOWED_TOKEN}"})] if not realistic else
                  list({(p, tuple(h)): (p, dict(h)) for p, h in schedule}.values()))
        for path, headers in probes:
            st, body = http_get_status(envoy.url + path, headers)
            if st != 200:
                raise SystemExit(f"{label}: probe of {path} answered {st}: {body[:300]}")
        return envoy

    def run_static(self, names: list[str], upstream_port: int, workload: str = "minimal") -> None:
        """a, b, c, g, d, d0 side by side: every Envoy up at once (idle ones cost nothing), and the
        load applied in 1-second slices, round-robin with a rotating order, so that a change in the
        machine's load falls on every configuration alike. `workload` is `minimal` (results in
        `self.results`), `realistic` (the mix of BENCH_MIX, results in `self.realistic`) or one of
        JWT_WORKLOADS (its one-line mix, results in `self.jwt[workload]`)."""
        a = self.args
        realistic = workload == "realistic"
        if workload in JWT_WORKLOADS:
            env = {"BENCH_MIX": str(self.jwt_mix_paths[workload])}
            results = self.jwt[workload]
        else:
            env = {"BENCH_MIX": str(self.mix_path)} if realistic else {"BENCH_TOKEN": ALLOWED_TOKEN}
            results = self.realistic if realistic else self.results
        envoys: dict[str, Envoy] = {}
        targets: dict[str, tuple[str, int]] = {}
        try:
            for n in names:
                if n == "a":
                    targets[n] = (self.kubelet["url"].rstrip("/"), self.kubelet_pid)
                else:
                    envoys[n] = self.start_proxy(n, upstream_port, workload)
                    targets[n] = (envoys[n].url, envoys[n].pid)
            for n in names:
                if a.warmup > 0:
                    run_wrk(targets[n][0], self.lua, a.connections, a.warmup, env)
                    self.load_seconds += a.warmup
            before = {n: e.settled_stats() for n, e in envoys.items()}
            api0 = self.api_requests()
            perf = {n: self.start_perf(n, envoys[n].pid) for n in envoys if n in a.perf.split(",")}
            phases = [("throughput", a.connections, int(round(a.duration))),
                      ("latency", 1, int(round(a.latency_duration)))]
            for phase, conns, rounds in phases:
                slices: dict[str, list] = {n: [] for n in names}
                for i in range(rounds):
                    k = i % len(names)
                    for n in names[k:] + names[:k]:
                        if phase == "latency" and n in ("d0", "da"):
                            continue
                        url, pid = targets[n]
                        slices[n].append(self.phase(url, pid, conns, 1, env))
                for n in names:
                    if slices[n]:
                        results.setdefault(n, {"config": n, "description": DESCRIPTIONS[n]})[phase] = \
                            aggregate(slices[n])
            for n, p in perf.items():
                if p:
                    label = {"minimal": n, "realistic": f"{n}-r"}.get(workload, f"{n}-{workload}")
                    results[n]["perf_report"] = self.finish_perf(label, p)
            api1 = self.api_requests()
            for n, e in envoys.items():
                res = results[n]
                res["envoy_mem_kb"] = proc_mem_kb(e.pid)
                if n in ("d", "d0", "da"):
                    res["callouts"] = callouts(before[n], e.settled_stats())
            for n in names:
                results[n]["apiserver_requests_during_static_group"] = api1 - api0
                self.report(f"{n} ({workload})", results[n])
            if "a" in results:
                results["a"]["note"] = ("HTTPS to the stand-in (Rust hyper + rustls): measures the stand-in, "
                                             "not a proxy")
        finally:
            for e in envoys.values():
                e.stop()

    def run_config(self, name: str, upstream_port: int) -> None:
        envoy = self.start_proxy(name, upstream_port)
        try:
            if name in ("f", "fs"):
                self.results[name] = self.run_tokens(name, envoy)
                return
            s0, api0 = envoy.settled_stats(), self.api_requests()
            perf = self.start_perf(name, envoy.pid) if name in self.args.perf.split(",") else None
            env = {"BENCH_TOKENS": self.args.tokens} if name == "e" else {"BENCH_TOKEN": ALLOWED_TOKEN}
            res = self.measure(name, envoy.url, envoy.pid, env)
            if perf:
                res["perf_report"] = self.finish_perf(name, perf)
            s1, api1 = envoy.settled_stats(), self.api_requests()
            res["callouts"] = callouts(s0, s1)
            res["callouts"]["apiserver_requests"] = api1 - api0
            c = res["callouts"]
            log(f"{name}: {c['decisions']} decisions, {c['tokenreviews']} TokenReviews, "
                f"{c['subjectaccessreviews']} SARs, {c['callouts_per_request']} callouts/request")
            res["envoy_mem_kb"] = proc_mem_kb(envoy.pid)
            self.results[name] = res
        finally:
            envoy.stop()

    def run_tokens(self, name: str, envoy: Envoy) -> dict:
        a = self.args
        n = a.tokens
        res: dict = {"config": name, "description": DESCRIPTIONS[name], "distinct_tokens": n,
                     "plugin_configuration": json.loads(plugin_config(name, n))}
        mem0 = proc_mem_kb(envoy.pid)
        s0, api0 = envoy.settled_stats(), self.api_requests()
        # cold pass: every token once (bounded by --cold-max seconds)
        d0 = sum_prefix(s0, "kubelet_authz_decisions_total{")

        def cold_done() -> bool:
            return sum_prefix(envoy.stats(), "kubelet_authz_decisions_total{") - d0 >= n

        cold = self.phase(envoy.url, envoy.pid, a.connections, a.cold_max,
                          {"BENCH_TOKENS": n, "BENCH_STOP_AFTER": n}, done=cold_done)
        s1, api1 = envoy.settled_stats(), self.api_requests()
        mem1 = proc_mem_kb(envoy.pid)
        cold["callouts"] = callouts(s0, s1)
        cold["callouts"]["apiserver_requests"] = api1 - api0
        log(f"{name} cold: {cold['requests']} requests at {cold['rps']:.0f}/s, "
            f"{cold['callouts']['tokenreviews']} TokenReviews, {cold['callouts']['subjectaccessreviews']} SARs")
        # the same tokens cycling again (within every TTL)
        warm = self.phase(envoy.url, envoy.pid, a.connections, a.duration, {"BENCH_TOKENS": n})
        s2, api2 = envoy.settled_stats(), self.api_requests()
        mem2 = proc_mem_kb(envoy.pid)
        warm["callouts"] = callouts(s1, s2)
        warm["callouts"]["apiserver_requests"] = api2 - api1
        total = callouts(s0, s2)
        seen = min(n, cold["callouts"]["decisions"] + warm["callouts"]["decisions"])
        total["distinct_tokens_seen"] = seen
        total["tokenreviews_per_distinct_token"] = round(total["tokenreviews"] / seen, 4) if seen else None
        total["sars_per_distinct_token"] = round(total["subjectaccessreviews"] / seen, 4) if seen else None
        res.update({
            "cold": cold,
            "throughput": warm,
            "callouts": total,
            "envoy_mem_kb": {"before": mem0, "after_cold": mem1, "after": mem2},
        })
        log(f"{name} warm: {warm['rps']:.0f} req/s, {warm['callouts']['callouts_per_request']} callouts/request; "
            f"RSS {mem0.get('VmRSS')} -> {mem1.get('VmRSS')} -> {mem2.get('VmRSS')} kB")
        return res

    # ---- node footprint
    def start_once(self, name: str, upstream_port: int, run: int) -> dict:
        """Start configuration `name` alone: the time to its first answer, then its memory."""
        a = self.args
        port = free_port()
        cfg = proxy_bootstrap(name, vars(a), upstream_port, int(self.api["port"]), self.api["ca"], a.tokens)
        cfg["static_resources"]["listeners"][0]["address"] = sock(port)
        label = f"{name}-start{run}"
        cfg_path = self.work / f"envoy-{label}.json"
        cfg_path.write_text(json.dumps(cfg, indent=1))
        argv = envoy_argv(a.envoy_bin, cfg_path, self.next_base_id(), self.work / f"envoy-{label}.admin",
                          self.work / f"envoy-{label}.log")
        url = f"http://127.0.0.1:{port}{PATH}"
        headers = {"Authorization": f"Bearer {ALLOWED_TOKEN}"}
        t0 = time.monotonic()
        p = self.procs.start(f"envoy-{label}", argv, self.work / f"envoy-{label}.out")
        try:
            while True:
                if p.poll() is not None:
                    raise SystemExit(f"envoy {label} exited ({p.returncode}):\n"
                                     + (self.work / f"envoy-{label}.out").read_text(errors="replace"))
                if time.monotonic() - t0 > 60:
                    raise SystemExit(f"envoy {label}: no answer within 60 s")
                try:
                    status, body = http_get_status(url, headers)
                except OSError:
                    time.sleep(FOOTPRINT_POLL_S)
                    continue
                break
            first = time.monotonic() - t0
            if status != 200:
                raise SystemExit(f"envoy {label}: first answer {status}: {body[:300]}")
            for _ in range(FOOTPRINT_REQUESTS):
                status, body = http_get_status(url, headers)
                if status != 200:
                    raise SystemExit(f"envoy {label}: answer {status}: {body[:300]}")
            time.sleep(FOOTPRINT_SETTLE_S)
            mem = proc_mem_kb(p.pid)
        finally:
            self.procs.stop(p)
        return {"first_answer_s": round(first, 4), "rss_kb": mem.get("VmRSS"), "hwm_kb": mem.get("VmHWM")}

    def footprint(self, upstream_port: int) -> dict:
        a = self.args
        names = a.footprint_configs
        runs: dict[str, list] = {n: [] for n in names}
        for i in range(a.footprint_runs):
            k = i % len(names)
            for n in names[k:] + names[:k]:
                runs[n].append(self.start_once(n, upstream_port, i))
        out: dict = {"method": FOOTPRINT_METHOD, "runs": a.footprint_runs, "configs": {}}
        for n in names:
            rs = runs[n]
            c = {
                "description": DESCRIPTIONS[n],
                "first_answer_s": median([r["first_answer_s"] for r in rs]),
                "first_answer_s_min_max": [min(r["first_answer_s"] for r in rs),
                                           max(r["first_answer_s"] for r in rs)],
                "rss_kb": median([r["rss_kb"] for r in rs]),
                "hwm_kb": median([r["hwm_kb"] for r in rs]),
                "runs": rs,
            }
            out["configs"][n] = c
            log(f"footprint {n}: first answer {c['first_answer_s']} s ({c['first_answer_s_min_max']}), "
                f"RSS {c['rss_kb']} kB, HWM {c['hwm_kb']} kB")
        return out

    # ---- perf (optional)
    def start_perf(self, name: str, pid: int):
        if not shutil.which("perf"):
            log("perf not found; no profile")
            return None
        data = self.work / f"perf-{name}.data"
        p = self.procs.start("perf", ["perf", "record", "-F", "499", "-g", "-p", str(pid), "-o", str(data)],
                             self.work / f"perf-{name}.out")
        time.sleep(0.3)
        return (p, data)

    def finish_perf(self, name: str, perf) -> str | None:
        p, data = perf
        p.send_signal(signal.SIGINT)
        try:
            p.wait(timeout=30)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        self.procs.procs = [(n, q) for (n, q) in self.procs.procs if q is not p]
        text = ""
        for sort, limit in (("dso", "0.5"), ("dso,symbol", "0.7")):
            r = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--no-children", "--sort", sort,
                                "--percent-limit", limit, "-g", "none"], capture_output=True, text=True, timeout=120)
            text += "\n".join(line for line in r.stdout.splitlines() if line and not line.startswith("#")) + "\n\n"
        out = Path(self.args.out).with_name(f"perf-{name}.txt")
        out.write_text(text)
        log(f"perf profile of {name}: {out}")
        return str(out)

    # ---- the run
    def planned_seconds(self) -> float:
        a = self.args
        total = 0.0
        for c in a.configs + a.realistic_configs + a.jwt_configs * len(JWT_WORKLOADS):
            if c in ("f", "fs"):
                total += a.cold_max + a.duration
            elif c in ("d0", "da"):
                total += a.warmup + a.duration
            else:
                total += a.warmup + a.duration + a.latency_duration
        return total

    def run(self) -> dict:
        a = self.args
        plan = self.planned_seconds()
        if plan > MAX_LOAD_SECONDS:
            raise SystemExit(f"planned load {plan:.0f}s exceeds {MAX_LOAD_SECONDS:.0f}s: "
                             "lower --duration/--latency-duration/--cold-max or pass fewer --configs")
        started = time.time()
        info = machine()
        info["compilers_running_start"] = busy_compilers()
        log(f"machine: {info['nproc']} x {info['cpu_model']}, load {info['loadavg_start']}, "
            f"{info['compilers_running_start']} compiler processes running; planned load {plan:.0f}s")
        self.start_standins()
        up = Envoy(self.procs, a.envoy_bin, self.work, "upstream", upstream_bootstrap(), self.next_base_id())
        footprint: dict = {}
        try:
            if a.footprint_runs > 0 and a.footprint_configs:
                log(f"node footprint: {','.join(a.footprint_configs)} each started alone, {a.footprint_runs} runs")
                footprint = self.footprint(up.port)
            static = [c for c in a.configs if c in STATIC]
            if static:
                log(f"minimal workload: configurations {','.join(static)} interleaved in 1 s slices")
                self.run_static(static, up.port)
            if a.realistic_configs:
                log(f"realistic workload: configurations {','.join(a.realistic_configs)} interleaved in 1 s slices")
                self.run_static(a.realistic_configs, up.port, "realistic")
            if a.jwt_configs:
                for w in JWT_WORKLOADS:
                    log(f"{w} workload: configurations {','.join(a.jwt_configs)} interleaved in 1 s slices")
                    self.run_static(a.jwt_configs, up.port, w)
            for c in a.configs:
                if c not in STATIC:
                    log(f"configuration {c}: {DESCRIPTIONS[c]}")
                    self.run_config(c, up.port)
        finally:
            up.stop()
        info["loadavg_end"] = Path("/proc/loadavg").read_text().split()[:3]
        info["compilers_running_end"] = busy_compilers()
        out = {
            "schema": 1,
            "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "wall_seconds": round(time.time() - started, 1),
            "load_seconds": self.load_seconds,
            "machine": info,
            "git": git_info(),
            "settings": {
                "path": PATH, "connections": a.connections, "duration_s": a.duration,
                "latency_duration_s": a.latency_duration, "warmup_s": a.warmup, "cold_max_s": a.cold_max,
                "distinct_tokens": a.tokens, "wrk_threads": 1, "envoy_concurrency": 1,
                "envoy_version": a.envoy_version, "priority": " ".join(PRIORITY) or "normal",
                "static_configs_interleaved": [c for c in a.configs if c in STATIC], "slice_s": 1,
                "realistic_configs_interleaved": a.realistic_configs,
                "jwt_configs_interleaved": a.jwt_configs,
            },
            "artefacts": {
                "filter_wasm": a.filter_wasm, "filter_wasm_bytes": os.path.getsize(a.filter_wasm),
                "noop_wasm": a.noop_wasm, "noop_wasm_bytes": os.path.getsize(a.noop_wasm),
                "noop_config": a.noop_config,
            },
            "results": self.results,
            "realistic": {
                "description": "a node's clients: 1.2 KB bound ServiceAccount tokens, Prometheus scrape headers",
                "token_bytes": sorted({len(c["token"]) for c in self.clients}),
                "requests_per_100": {p: sum(1 for q, _ in self.schedule if q == p)
                                     for p in dict.fromkeys(q for q, _ in self.schedule)},
                "clients": [{"name": c["name"], "user": c["user"], "mix": c["mix"]} for c in self.clients],
                "results": self.realistic,
            },
            "jwt": {w: {"description": JWT_WORKLOADS[w][2], "path": JWT_WORKLOADS[w][1],
                        "client": JWT_WORKLOADS[w][0], "results": self.jwt[w]} for w in JWT_WORKLOADS},
        }
        wasm = out["artefacts"]["filter_wasm_bytes"]
        if footprint:
            out["footprint"] = summarize_footprint(footprint, wasm)
        out["summary"] = summarize(out["results"], wasm)
        out["realistic"]["summary"] = summarize(self.realistic, wasm)
        for w in JWT_WORKLOADS:
            out["jwt"][w]["summary"] = summarize(self.jwt[w], wasm)
        return out

    def cleanup(self) -> None:
        self.procs.stop_all()
        if self.args.keep:
            log(f"kept {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ---------------------------------------------------------------- report


def get(res: dict, cfg: str, phase: str, key: str):
    return res.get(cfg, {}).get(phase, {}).get(key)


def ratio(x, y):
    return round(x / y, 4) if x is not None and y else None


def summarize(r: dict, wasm: int) -> dict:
    """Ratios, per-request costs and the targets of one workload's results."""
    rps = lambda c: get(r, c, "throughput", "rps")  # noqa: E731
    cpu = lambda c: get(r, c, "throughput", "proxy_cpu_us_per_req")  # noqa: E731
    lat = lambda c, k: get(r, c, "latency", k)  # noqa: E731
    s: dict = {
        "d_over_g": ratio(rps("d"), rps("g")),
        "d_over_b": ratio(rps("d"), rps("b")),
        "d_over_c": ratio(rps("d"), rps("c")),
        "g_over_b": ratio(rps("g"), rps("b")),
        "c_over_b": ratio(rps("c"), rps("b")),
        "d0_over_g": ratio(rps("d0"), rps("g")),
        "da_over_g": ratio(rps("da"), rps("g")),
    }
    for k in ("p50_us", "p99_us", "p999_us"):
        if lat("d", k) is not None and lat("g", k) is not None:
            s[f"d_minus_g_{k}_1conn"] = lat("d", k) - lat("g", k)
        td, tg = get(r, "d", "throughput", k), get(r, "g", "throughput", k)
        if td is not None and tg is not None:
            s[f"d_minus_g_{k}_loaded"] = td - tg
    if cpu("d") is not None and cpu("g") is not None:
        s["filter_cpu_us_per_req_over_g"] = round(cpu("d") - cpu("g"), 2)
        s["cpu_g_over_d"] = ratio(cpu("g"), cpu("d"))
    if cpu("d0") is not None and cpu("d") is not None:
        s["audit_cpu_us_per_req"] = round(cpu("d") - cpu("d0"), 2)
    if cpu("da") is not None and cpu("d0") is not None:
        s["audit_all_cpu_us_per_req"] = round(cpu("da") - cpu("d0"), 2)
    if cpu("da") is not None and cpu("g") is not None:
        s["audit_all_filter_cpu_us_per_req_over_g"] = round(cpu("da") - cpu("g"), 2)
    if cpu("g") is not None and cpu("b") is not None:
        s["wasm_floor_cpu_us_per_req"] = round(cpu("g") - cpu("b"), 2)
    for e in ("e", "e1"):
        if e in r:
            s[f"{e}_callouts_per_request"] = r[e].get("callouts", {}).get("callouts_per_request")
    for f in ("f", "fs"):
        if f in r:
            t = r[f]
            s[f"{f}_callouts_per_request_warm"] = t["throughput"]["callouts"]["callouts_per_request"]
            s[f"{f}_tokenreviews_per_distinct_token"] = t["callouts"]["tokenreviews_per_distinct_token"]
            s[f"{f}_sars_per_distinct_token"] = t["callouts"]["sars_per_distinct_token"]
            m = t["envoy_mem_kb"]
            s[f"{f}_rss_kb"] = [m["before"].get("VmRSS"), m["after_cold"].get("VmRSS"), m["after"].get("VmRSS")]
    targets = {}
    if s["d_over_g"] is not None:
        targets["d_throughput_ge_95pct_of_g"] = {"value": s["d_over_g"], "met": s["d_over_g"] >= 0.95}
    if "d_minus_g_p99_us_1conn" in s:
        targets["d_added_p99_le_50us_over_g"] = {"value_us": s["d_minus_g_p99_us_1conn"],
                                                "added_p50_us": s.get("d_minus_g_p50_us_1conn"),
                                                "loaded_value_us": s.get("d_minus_g_p99_us_loaded"),
                                                "note": "1 connection; check added_p50 too: p99 of "
                                                        "short runs on a busy machine is noisy",
                                                "met": s["d_minus_g_p99_us_1conn"] <= 50}
    if "filter_cpu_us_per_req_over_g" in s:
        targets["d_cpu_over_g_le_2us"] = {"value_us": s["filter_cpu_us_per_req_over_g"],
                                          "audit_default_policy_us": s.get("audit_cpu_us_per_req"),
                                          "with_every_decision_audited_us": s.get(
                                              "audit_all_filter_cpu_us_per_req_over_g"),
                                          "met": s["filter_cpu_us_per_req_over_g"] <= 2.0}
    if "f" in r:
        c = r["f"]["callouts"]
        ok = (c["tokenreviews_per_distinct_token"] or 0) <= 1.0 and (c["sars_per_distinct_token"] or 0) <= 1.0
        targets["f_callouts_le_one_per_distinct_token_per_ttl"] = {
            "tokenreviews_per_token": c["tokenreviews_per_distinct_token"],
            "sars_per_token": c["sars_per_distinct_token"], "met": ok}
        m = r["f"]["envoy_mem_kb"]
        targets["f_memory_bounded"] = {
            "rss_kb_before_cold_warm": s["f_rss_kb"],
            "growth_kb": (m["after"].get("VmRSS", 0) - m["before"].get("VmRSS", 0)),
            "note": "bounded by the cache limits; compare growth over cold (new tokens) and warm (none)"}
    if r:
        targets["wasm_le_1MiB"] = {"bytes": wasm, "met": wasm <= 1 << 20}
    s["targets"] = targets
    return s


WASM_TARGET_BYTES = 400_000
RSS_TARGET_MIB = 25
START_TARGET_S = 0.3


def summarize_footprint(fp: dict, wasm: int) -> dict:
    """Differences of the medians against plain Envoy (b) and the no-op wasm filter (g), and the
    footprint targets of issue 24 (RSS and start of d over b, the module's size)."""
    c = fp["configs"]
    over: dict = {}
    for base in ("b", "g"):
        if base not in c:
            continue
        for n in c:
            if n == base:
                continue
            over[f"{n}_over_{base}"] = {
                "rss_mib": round((c[n]["rss_kb"] - c[base]["rss_kb"]) / 1024, 1),
                "hwm_mib": round((c[n]["hwm_kb"] - c[base]["hwm_kb"]) / 1024, 1),
                "first_answer_s": round(c[n]["first_answer_s"] - c[base]["first_answer_s"], 4),
            }
    fp["over"] = over
    targets: dict = {}
    if "d_over_b" in over:
        targets["rss_over_plain_envoy_le_25MiB"] = {"value_mib": over["d_over_b"]["rss_mib"],
                                                    "met": over["d_over_b"]["rss_mib"] <= RSS_TARGET_MIB}
        targets["start_over_plain_envoy_le_0.3s"] = {"value_s": over["d_over_b"]["first_answer_s"],
                                                     "met": over["d_over_b"]["first_answer_s"] <= START_TARGET_S}
    targets["wasm_le_400KB"] = {"bytes": wasm, "met": wasm <= WASM_TARGET_BYTES}
    fp["targets"] = targets
    return fp


def footprint_lines(fp: dict) -> list[str]:
    lines = ["", f"== node footprint: each Envoy started alone, {fp['runs']} runs, medians "
                 "(method in the JSON: footprint.method)"]
    hdr = f"{'cfg':<4} {'description':<44} {'first answer s':>14} {'(min-max)':>15} {'RSS MiB':>8} {'HWM MiB':>8}"
    lines += [hdr, "-" * len(hdr)]
    for n, c in fp["configs"].items():
        lo, hi = c["first_answer_s_min_max"]
        lines.append(f"{n:<4} {c['description'][:44]:<44} {c['first_answer_s']:>14.3f} {f'{lo:.3f}-{hi:.3f}':>15} "
                     f"{c['rss_kb'] / 1024:>8.1f} {c['hwm_kb'] / 1024:>8.1f}")
    lines.append("over: " + "  ".join(f"{k}: RSS {v['rss_mib']} MiB, start {v['first_answer_s']} s"
                                      for k, v in fp["over"].items()))
    lines.append("targets:")
    for k, v in fp["targets"].items():
        lines.append(f"  {k}: {'MET' if v.get('met') else 'NOT MET'} {json.dumps(v)}")
    return lines


def fmt(v, w=9):
    if v is None:
        return "-".rjust(w)
    if isinstance(v, float):
        return f"{v:,.0f}".rjust(w) if abs(v) >= 100 else f"{v:.2f}".rjust(w)
    return str(v).rjust(w)


def rows(r: dict) -> list[str]:
    lines = []
    hdr = (f"{'cfg':<4} {'description':<44} {'req/s':>9} {'p50 us':>9} {'p99 us':>9} {'p99.9 us':>9} "
           f"{'cpu us/req':>10} | {'1c p50':>7} {'1c p99':>7} {'1c p99.9':>8} | {'callouts/req':>12}")
    lines.append(hdr)
    lines.append("-" * len(hdr))
    for c in ALL_CONFIGS:
        if c not in r:
            continue
        rows = [(c, r[c]["description"], r[c]["throughput"], r[c].get("latency"), r[c].get("callouts"))]
        if c in ("f", "fs"):
            rows = [
                (c + "/1", r[c]["description"] + " (cold pass)", r[c]["cold"], None, r[c]["cold"]["callouts"]),
                (c + "/2", r[c]["description"] + " (again)", r[c]["throughput"], None, r[c]["throughput"]["callouts"]),
            ]
        for name, desc, t, l, co in rows:
            l = l or {}
            lines.append(
                f"{name:<4} {desc[:44]:<44} {fmt(t['rps'])} {fmt(t['p50_us'])} {fmt(t['p99_us'])} {fmt(t['p999_us'])} "
                f"{fmt(t['proxy_cpu_us_per_req'], 10)} | {fmt(l.get('p50_us'), 7)} {fmt(l.get('p99_us'), 7)} "
                f"{fmt(l.get('p999_us'), 8)} | {fmt(co.get('callouts_per_request') if co else None, 12)}")
    return lines


def summary_lines(r: dict, s: dict) -> list[str]:
    lines = [""]
    lines.append(f"ratios (throughput): d/g {s['d_over_g']}  d/b {s['d_over_b']}  d/c {s['d_over_c']}  "
                 f"g/b {s['g_over_b']}  c/b {s['c_over_b']}  d0/g {s['d0_over_g']}  da/g {s['da_over_g']}")
    lines.append(f"added latency d-g (1 connection): p50 {s.get('d_minus_g_p50_us_1conn')} us, "
                 f"p99 {s.get('d_minus_g_p99_us_1conn')} us, p99.9 {s.get('d_minus_g_p999_us_1conn')} us; "
                 f"loaded p99 {s.get('d_minus_g_p99_us_loaded')} us")
    lines.append(f"proxy CPU per request: filter over no-op wasm {s.get('filter_cpu_us_per_req_over_g')} us, "
                 f"audit (built-in policy) {s.get('audit_cpu_us_per_req')} us, every decision audited "
                 f"{s.get('audit_all_cpu_us_per_req')} us, wasm floor over no filter "
                 f"{s.get('wasm_floor_cpu_us_per_req')} us")
    for f in ("f", "fs"):
        if f in r:
            c = r[f]["callouts"]
            lines.append(f"{f}: {c['distinct_tokens_seen']} distinct tokens: {c['tokenreviews']} TokenReviews, "
                         f"{c['subjectaccessreviews']} SARs ({c['tokenreviews_per_distinct_token']} / "
                         f"{c['sars_per_distinct_token']} per token), Envoy RSS kB before/after cold/after: "
                         f"{s[f + '_rss_kb']}")
    lines.append("targets:")
    for k, v in s["targets"].items():
        lines.append(f"  {k}: {'MET' if v.get('met') else ('NOT MET' if 'met' in v else 'see values')} {json.dumps(v)}")
    return lines


def table(out: dict) -> str:
    r = out["results"]
    lines = []
    m = out["machine"]
    lines.append(f"kubelet-authz load benchmark, {out['started_utc']}: {m['nproc']} x {m['cpu_model']}, "
                 f"load {' '.join(m['loadavg_start'])} -> {' '.join(m['loadavg_end'])}, "
                 f"compilers running {m['compilers_running_start']} -> {m['compilers_running_end']}")
    st = out["settings"]
    lines.append(f"wrk 1 thread, {st['connections']} connections x {st['duration_s']}s "
                 f"(latency: 1 connection x {st['latency_duration_s']}s), Envoy {st['envoy_version']} --concurrency 1")
    if r:
        lines.append("")
        lines.append(f"== minimal workload: GET {st['path']}, a 19-byte bearer token, a User-Agent")
        lines += rows(r)
        lines += summary_lines(r, out["summary"])
    if out.get("footprint"):
        lines += footprint_lines(out["footprint"])
    rw = out["realistic"]
    if rw["results"]:
        lines.append("")
        mix = ", ".join(f"{p.split('?')[0]} {n}" for p, n in rw["requests_per_100"].items())
        lines.append(f"== realistic workload: {len(rw['clients'])} clients, bearer tokens of {rw['token_bytes']} bytes, "
                     f"Prometheus scrape headers; per 100 requests: {mix}")
        lines += rows(rw["results"])
        lines += summary_lines(rw["results"], rw["summary"])
    for w, jw in out.get("jwt", {}).items():
        if jw["results"]:
            lines.append("")
            lines.append(f"== {w} workload: {jw['description']}")
            lines += rows(jw["results"])
            lines += summary_lines(jw["results"], jw["summary"])
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=3, help="throughput phase per configuration, seconds")
    ap.add_argument("--latency-duration", type=float, default=2, help="1-connection latency phase, seconds (0: none)")
    ap.add_argument("--warmup", type=float, default=1, help="warm-up per configuration, seconds")
    ap.add_argument("--cold-max", type=float, default=10, help="bound of the cold pass of f, seconds")
    ap.add_argument("--connections", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=10000, help="distinct tokens for f")
    ap.add_argument("--configs", default=",".join(DEFAULT_CONFIGS),
                    help=f"minimal workload: subset of {','.join(ALL_CONFIGS)} (empty: none)")
    ap.add_argument("--realistic-configs", default=",".join(DEFAULT_REALISTIC_CONFIGS),
                    help=f"realistic workload: subset of {','.join(REALISTIC_CONFIGS)} (empty: none)")
    ap.add_argument("--jwt-configs", default=",".join(DEFAULT_JWT_CONFIGS),
                    help=f"the single-path 1.2 KB-token workloads ({', '.join(JWT_WORKLOADS)}): subset of "
                         f"{','.join(REALISTIC_CONFIGS)} (empty: none)")
    ap.add_argument("--footprint-configs", default=",".join(DEFAULT_FOOTPRINT_CONFIGS),
                    help=f"node footprint (start to first answer, RSS): subset of {','.join(FOOTPRINT_CONFIGS)}")
    ap.add_argument("--footprint-runs", type=int, default=3, help="starts per footprint configuration (0: none)")
    ap.add_argument("--out", default=str(Path(__file__).with_name("results.json")))
    ap.add_argument("--perf", default="", help="configurations to profile with perf, e.g. d,g")
    ap.add_argument("--sched", choices=["fifo", "nice", "normal"], default="fifo",
                    help="priority of Envoy, wrk and the stand-ins: SCHED_FIFO 1 (default; via chrt, when "
                         "root, else normal priority: other work waits during the run, so a busy machine "
                         "does not decide the numbers), nice -10 (root), or unchanged")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (configs, logs)")
    ap.add_argument("--envoy-bin", required=True)
    ap.add_argument("--envoy-version", default="")
    ap.add_argument("--filter-wasm", required=True)
    ap.add_argument("--noop-wasm", required=True)
    ap.add_argument("--noop-config", default="",
                    help="plugin configuration of g's module (with --noop-wasm set to the harness's bench "
                         "module: none, pairs, clock:N, remove:N; docs/PERFORMANCE.md \"The hostcalls of the "
                         "cached path, in Envoy\")")
    ap.add_argument("--apiserver-bin", required=True)
    ap.add_argument("--kubelet-bin", required=True)
    ap.add_argument("--rbac", required=True)
    a = ap.parse_args()
    a.configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    bad = [c for c in a.configs if c not in ALL_CONFIGS]
    if bad:
        ap.error(f"unknown configurations {bad}; known: {ALL_CONFIGS}")
    a.realistic_configs = [c.strip() for c in a.realistic_configs.split(",") if c.strip()]
    bad = [c for c in a.realistic_configs if c not in REALISTIC_CONFIGS]
    if bad:
        ap.error(f"unknown realistic configurations {bad}; known: {REALISTIC_CONFIGS}")
    a.jwt_configs = [c.strip() for c in a.jwt_configs.split(",") if c.strip()]
    bad = [c for c in a.jwt_configs if c not in REALISTIC_CONFIGS]
    if bad:
        ap.error(f"unknown jwt configurations {bad}; known: {REALISTIC_CONFIGS}")
    a.footprint_configs = [c.strip() for c in a.footprint_configs.split(",") if c.strip()]
    bad = [c for c in a.footprint_configs if c not in FOOTPRINT_CONFIGS]
    if bad:
        ap.error(f"unknown footprint configurations {bad}; known: {FOOTPRINT_CONFIGS}")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (Debian package wrk; scripts/setup.sh installs it)")
    global PRIORITY
    if a.sched == "nice" and os.geteuid() == 0:
        PRIORITY = ["nice", "-n", "-10"]
    elif a.sched == "fifo":
        if os.geteuid() == 0 and shutil.which("chrt"):
            PRIORITY = ["chrt", "-f", "1"]
        else:
            log("not root (or no chrt): running at normal priority")
    b = Bench(a)

    def on_signal(signum, _frame):
        raise SystemExit(f"signal {signum}")

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        out = b.run()
    finally:
        b.cleanup()
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(table(out))
    print(f"\nJSON: {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
