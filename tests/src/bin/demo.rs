//! `kubelet-authz-demo`: the stand-in API server and kubelet and a real Envoy with the filter, all
//! on loopback; requests as several identities to several kubelet endpoints; a matrix of what the
//! filter decided (status, and the subresource that decided or the ones that were tried), read
//! from its audit lines and 403 bodies. Everything it starts stops when it ends.
//!
//! Needs `ENVOY_BIN` and `KUBELET_AUTHZ_FILTER_WASM` (or their defaults); `scripts/demo.sh` sets
//! them.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::{SinkExt as _, StreamExt as _};
use kubelet_authz_e2e::envoy::{prometheus_value, Envoy};
use kubelet_authz_e2e::stack::{
    ProxyOptions, Standins, CERT_ADMIN, CERT_ALICE, DEBUGGER_TOKEN, PODLISTER_TOKEN, SCRAPER_TOKEN,
};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

const KUBELET_VERSION: &str = "1.33";

#[derive(Debug, Clone, Copy)]
struct Identity {
    label: &'static str,
    detail: &'static str,
    token: Option<&'static str>,
    cert: Option<&'static str>,
}

const IDENTITIES: &[Identity] = &[
    Identity {
        label: "anonymous",
        detail: "no credentials (anonymous auth off)",
        token: None,
        cert: None,
    },
    Identity {
        label: "metrics-reader",
        detail: "SA token, ClusterRole kubelet-metrics-reader",
        token: Some(SCRAPER_TOKEN),
        cert: None,
    },
    Identity {
        label: "pod-reader",
        detail: "SA token, ClusterRole kubelet-pod-reader",
        token: Some(PODLISTER_TOKEN),
        cert: None,
    },
    Identity {
        label: "alice (x509)",
        detail: "cert CN=alice O=observability: kubelet-observability",
        token: None,
        cert: Some(CERT_ALICE),
    },
    Identity {
        label: "admin (x509)",
        detail: "cert CN=kube-apiserver-kubelet-client: nodes/proxy *",
        token: None,
        cert: Some(CERT_ADMIN),
    },
    Identity {
        label: "debugger",
        detail: "token, only `get nodes/proxy`",
        token: Some(DEBUGGER_TOKEN),
        cert: None,
    },
];

const ENDPOINTS: &[&str] = &[
    "/pods",
    "/healthz",
    "/metrics",
    "/stats/summary",
    "/configz",
    "/exec (ws)",
];

/// The demo's audit policy: every decision at `Metadata`.
const AUDIT_EVERYTHING: &str =
    r#"{ "enabled": true, "policy": { "rules": [ { "level": "Metadata" } ] } }"#;

const EXEC_PATH: &str = "/exec/default/web-0/app?command=id&stdout=1";

/// One cell: what the client saw, and what the audit line says decided.
fn cell(status: u16, event: Option<&Value>, body: &str) -> String {
    let annotation = |k: &str| {
        event
            .and_then(|e| e.get("annotations"))
            .and_then(|a| a.get(k))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let deciding = event
        .and_then(|e| e.pointer("/objectRef/subresource"))
        .and_then(Value::as_str);
    let verb = event
        .and_then(|e| e.get("verb"))
        .and_then(Value::as_str)
        .unwrap_or("");
    match status {
        200 | 101 => match deciding {
            Some(s) if verb == "get" => format!("{status} {s}"),
            Some(s) => format!("{status} {verb} {s}"),
            None => format!("{status}"),
        },
        403 => {
            // The kubelet's own text: subresource(s)=[a b].
            let tried = body
                .split_once("subresource(s)=[")
                .and_then(|(_, r)| r.split_once(']'))
                .map(|(t, _)| t.replace(' ', ","))
                .unwrap_or_else(|| annotation("kubelet-authz.io/subresources"));
            if verb == "get" || verb.is_empty() {
                format!("403 [{tried}]")
            } else {
                format!("403 {verb} [{tried}]")
            }
        }
        other => format!("{other}"),
    }
}

async fn one(
    s: &Standins,
    envoy: &Envoy,
    who: &Identity,
    endpoint: &str,
) -> anyhow::Result<String> {
    let client = s.client(who.cert)?;
    let bearer = who.token.map(|t| format!("Bearer {t}"));
    let mut headers: Vec<(&str, &str)> = Vec::new();
    if let Some(b) = bearer.as_deref() {
        headers.push(("authorization", b));
    }
    let mark = envoy.log_len();
    let (status, body) = if endpoint == "/exec (ws)" {
        let url = format!("{}{EXEC_PATH}", envoy.url());
        headers.push(("sec-websocket-protocol", "v5.channel.k8s.io"));
        match client.websocket(&url, &headers).await {
            Ok((mut ws, resp)) => {
                ws.send(Message::Text("id".into())).await?;
                let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
                let _ = ws.close(None).await;
                match echoed {
                    Ok(Some(Ok(_))) => (resp.status, String::new()),
                    _ => (0, "no echo".to_string()),
                }
            }
            // The handshake was refused: the status is in the error, the rest in the audit line.
            Err(e) => {
                let text = e.to_string();
                let status = text
                    .split(|c: char| !c.is_ascii_digit())
                    .find(|t| t.len() == 3)
                    .and_then(|t| t.parse::<u16>().ok())
                    .unwrap_or(0);
                (status, String::new())
            }
        }
    } else {
        let r = client
            .request("GET", &format!("{}{endpoint}", envoy.url()), &headers, "")
            .await?;
        (r.status, String::from_utf8_lossy(&r.body).into_owned())
    };
    let events = envoy
        .wait_audit_since(mark, 1, Duration::from_secs(2))
        .await?;
    Ok(cell(status, events.last(), &body))
}

async fn run() -> anyhow::Result<()> {
    println!("starting the stand-in API server and kubelet (loopback, TLS) ...");
    let s = Standins::start().await?;
    println!(
        "  API server {}  (tokens: tests/fixtures/tokens.csv; RBAC: seed roles + tests/fixtures/rbac-e2e.yaml)",
        s.apiserver.url()
    );
    println!(
        "  kubelet    {}  (echo; requires the proxy's client certificate)",
        s.kubelet.url()
    );
    println!("starting Envoy with the filter (envoy/kubelet-front-proxy.yaml, kubelet {KUBELET_VERSION}, strict upgrade verb) ...");
    // Every decision written, so that each cell can show what decided; the built-in audit policy
    // would leave out the allowed scrapes (get of metrics, stats, healthz).
    let envoy = s
        .front_proxy(
            "demo",
            &ProxyOptions::version(KUBELET_VERSION).audit(AUDIT_EVERYTHING),
        )
        .await
        .context("starting Envoy")?;
    println!(
        "  Envoy      {}  (admin http://{})\n",
        envoy.url(),
        envoy.admin()
    );

    let mut rows: Vec<Vec<String>> = Vec::new();
    for who in IDENTITIES {
        let mut row = vec![who.label.to_string()];
        for e in ENDPOINTS {
            let c = one(&s, &envoy, who, e)
                .await
                .with_context(|| format!("{} {e}", who.label))?;
            row.push(c);
        }
        rows.push(row);
    }
    let mut header = vec!["identity".to_string()];
    header.extend(ENDPOINTS.iter().map(|e| e.to_string()));
    let widths: Vec<usize> = (0..header.len())
        .map(|i| {
            std::iter::once(&header)
                .chain(rows.iter())
                .filter_map(|r| r.get(i))
                .map(String::len)
                .max()
                .unwrap_or(0)
                + 2
        })
        .collect();
    let line = |r: &[String]| {
        r.iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<String>()
            .trim_end()
            .to_string()
    };
    println!("{}", line(&header));
    println!("{}", "-".repeat(widths.iter().sum::<usize>()));
    for r in &rows {
        println!("{}", line(r));
    }
    println!();
    for who in IDENTITIES {
        println!("  {:<16}{}", who.label, who.detail);
    }
    println!(
        "\nCells: `200 pods` = allowed, `pods` decided (the first allowed subresource); \
         `403 [pods,proxy]` = forbidden after those checks;\n\
         `101 create proxy` = WebSocket exec accepted with verb create; 401 = not authenticated.\n\
         On a kubelet {KUBELET_VERSION} without the filter, /pods, /healthz and /configz need nodes/proxy, \
         and `get nodes/proxy` runs exec over WebSocket."
    );

    let records = s.apiserver.records();
    let tr = records.iter().filter(|r| r.kind == "TokenReview").count();
    let sar = records
        .iter()
        .filter(|r| r.kind == "SubjectAccessReview")
        .count();
    println!("\nThe API server answered {tr} TokenReviews and {sar} SubjectAccessReviews (the rest came from the filter's caches).");
    // The filter counts in the VM and hands its counters to Envoy on a 1 s tick.
    tokio::time::sleep(kubelet_authz_e2e::envoy::METRICS_FLUSH).await;
    let prom = envoy.prometheus().await?;
    let mut counters: Vec<String> = prom
        .lines()
        .filter(|l| l.starts_with("kubelet_authz_") && l.contains("_total{"))
        .map(str::to_string)
        .collect();
    counters.sort();
    println!(
        "Envoy /stats/prometheus (the filter's labelled counters; the callout-latency histogram"
    );
    println!("kubelet_authz_callout_duration_milliseconds follows at Envoy's 5 s stats flush):");
    for c in &counters {
        println!("  {c}");
    }
    if let Some(v) = prometheus_value(&prom, "kubelet_authz_xfcc_spoofed_total") {
        println!("  (spoofed XFCC seen by the filter: {v})");
    }
    let events = envoy.audit_events()?;
    let written = events
        .iter()
        .filter(|e| written_by_builtin_policy(e))
        .count();
    println!(
        "\nAudit: {} decisions written here (policy: every decision); the built-in policy would \
         write {written} of them (all but the allowed get of metrics, stats and healthz).",
        events.len()
    );
    if let Some(ev) = events
        .iter()
        .find(|e| e.pointer("/responseStatus/code").and_then(Value::as_u64) == Some(403))
    {
        println!("An audit line (audit.k8s.io/v1 Event, from Envoy's log):");
        println!("  {ev}");
    }
    println!("\nstopping Envoy and the stand-ins ...");
    envoy.stop().await;
    s.shutdown().await;
    println!("done.");
    Ok(())
}

/// Whether the built-in audit policy (the engine's own) writes the decision of `event`.
fn written_by_builtin_policy(event: &Value) -> bool {
    use kubelet_authz::audit::policy::{parse_subresource, AuditOutcome, Facts, Level, Policy};
    let text = |p: &str| event.pointer(p).and_then(Value::as_str).unwrap_or("");
    let user = event
        .pointer("/user/username")
        .and_then(Value::as_str)
        .map(|name| {
            let groups: Vec<&str> = event
                .pointer("/user/groups")
                .and_then(Value::as_array)
                .map(|g| g.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            kubelet_authz::UserInfo::new(name, &groups)
        });
    let outcome = match text("/annotations/kubelet-authz.io~1outcome") {
        "allowed" => AuditOutcome::Allowed,
        "forbidden" => AuditOutcome::Forbidden,
        "unauthenticated" => AuditOutcome::Unauthenticated,
        "bad_request" => AuditOutcome::Refused,
        _ => AuditOutcome::Error,
    };
    let facts = Facts {
        user: user.as_ref(),
        verb: text("/verb"),
        subresource: parse_subresource(text("/objectRef/subresource")).ok(),
        outcome,
    };
    Policy::builtin().level(&facts) == Level::Metadata
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(170), run()) => {
            r.context("the demo took longer than its time limit")?
        }
        _ = tokio::signal::ctrl_c() => {
            anyhow::bail!("interrupted");
        }
    }
}
