//! `drain` (the agent's preStop hook): `POST /drain_listeners?graceful&inboundonly` on Envoy's
//! admin unix socket, so the kubelet listener stops taking connections after Envoy's drain time
//! (`--drain-time-s`; with `--drain-strategy immediate` every response asks its client to
//! reconnect, and the new pod, on the same `NODE_IP:PORT`, takes the new connections), while the
//! metrics listener keeps answering the probes. Then it waits until the kubelet listener's
//! connections have ended (exec, attach, port-forward and `logs -f` streams finish on the old
//! pod) or the deadline passes. Envoy itself is kept alive by its own preStop `sleep`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::cli::DrainArgs;

/// One HTTP/1.0 request on the admin socket; the status and the body.
pub async fn admin(socket: &Path, method: &str, path: &str) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::net::UnixStream::connect(socket)
        .await
        .with_context(|| format!("Envoy's admin socket {}", socket.display()))?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await.context("admin request")?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .context("admin answer: timed out")?
        .context("admin answer")?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    let chunked = head
        .lines()
        .any(|l| l.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

/// The body of a chunked HTTP/1.1 response.
pub fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let Ok(n) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if n == 0 {
            break;
        }
        let Some(chunk) = after.get(..n) else {
            out.push_str(after);
            break;
        };
        out.push_str(chunk);
        rest = after.get(n + 2..).unwrap_or_default();
    }
    out
}

/// The kubelet listener's open downstream connections (`http.kubelet.downstream_cx_active`).
pub fn active_connections(stats: &str) -> Option<u64> {
    stats.lines().find_map(|l| {
        l.strip_prefix("http.kubelet.downstream_cx_active: ")
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn drain_async(args: &DrainArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let deadline = started + Duration::from(args.deadline);
    let (status, body) = admin(
        &args.admin_socket,
        "POST",
        "/drain_listeners?graceful&inboundonly",
    )
    .await?;
    if status != 200 {
        anyhow::bail!("POST /drain_listeners answered {status}: {}", body.trim());
    }
    eprintln!(
        "kubelet-authz-node: draining the kubelet listener (deadline {})",
        args.deadline
    );
    let mut last = None;
    loop {
        let active = match admin(
            &args.admin_socket,
            "GET",
            "/stats?filter=^http\\.kubelet\\.downstream_cx_active$",
        )
        .await
        {
            Ok((_, body)) => active_connections(&body),
            // Envoy gone: nothing left to wait for.
            Err(_) => Some(0),
        };
        if active == Some(0) {
            eprintln!(
                "kubelet-authz-node: drained after {:?}: no connection left",
                started.elapsed()
            );
            return Ok(());
        }
        if active != last {
            eprintln!(
                "kubelet-authz-node: {} connection(s) still open",
                active.unwrap_or_default()
            );
            last = active;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "kubelet-authz-node: drain deadline reached with {} connection(s) open",
                active.unwrap_or_default()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// `drain`.
pub fn drain(args: &DrainArgs) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?
        .block_on(drain_async(args))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::one("5\r\nhello\r\n0\r\n\r\n", "hello")]
    #[case::two("3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", "abcde")]
    #[case::empty("0\r\n\r\n", "")]
    fn chunked_bodies_are_joined(#[case] body: &str, #[case] want: &str) {
        assert_eq!(dechunk(body), want);
    }

    #[rstest]
    #[case::open("http.kubelet.downstream_cx_active: 3\n", Some(3))]
    #[case::none("http.kubelet.downstream_cx_active: 0\n", Some(0))]
    #[case::other("http.metrics.downstream_cx_active: 2\n", None)]
    fn active_connections_are_read(#[case] stats: &str, #[case] want: Option<u64>) {
        assert_eq!(active_connections(stats), want);
    }
}
