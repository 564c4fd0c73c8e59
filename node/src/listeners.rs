//! Who listens on a TCP port: the listening sockets of `/proc/net/tcp` and `/proc/net/tcp6` (the
//! network namespace of this process: the host's, in the DaemonSet's host-network pods) and the
//! processes holding them (`/proc/PID/fd`, all of the host's with `hostPID`).
//!
//! `configure` checks that the kubelet listens on loopback only; `unconfigure` waits until no
//! Envoy holds the kubelet port on another address (the proxy pod is gone) before it gives the
//! port back to the kubelet.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Why the socket tables could not be read.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {source} (is /proc mounted?)")]
pub struct ListenersError {
    /// The file.
    pub path: PathBuf,
    /// The I/O error.
    #[source]
    pub source: std::io::Error,
}

/// One listening socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listener {
    /// The bound address.
    pub addr: SocketAddr,
    /// The socket's inode.
    pub inode: u64,
    /// The `comm` of every process holding it (empty when none could be seen).
    pub owners: Vec<String>,
}

impl Listener {
    /// Whether the socket accepts only loopback connections.
    pub fn is_loopback(&self) -> bool {
        self.addr.ip().is_loopback()
    }

    /// Whether an Envoy process holds it.
    pub fn is_envoy(&self) -> bool {
        self.owners.iter().any(|c| c == "envoy")
    }
}

/// The listening TCP sockets on `port`, with their owners, read from `proc_root` (`/proc`).
pub fn listeners(proc_root: &Path, port: u16) -> Result<Vec<Listener>, ListenersError> {
    let mut out = Vec::new();
    for (file, v6) in [("net/tcp", false), ("net/tcp6", true)] {
        let path = proc_root.join(file);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            // No IPv6 in this kernel.
            Err(e) if v6 && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ListenersError { path, source }),
        };
        // One parser of the socket tables for the whole agent (`portwait`).
        out.extend(
            crate::portwait::parse_proc_net_tcp(&text)
                .into_iter()
                .filter(|l| l.port == port)
                .map(|l| Listener {
                    addr: SocketAddr::new(l.address, l.port),
                    inode: l.inode,
                    owners: Vec::new(),
                }),
        );
    }
    if !out.is_empty() {
        let owners = socket_owners(proc_root);
        for l in &mut out {
            l.owners = owners.get(&l.inode).cloned().unwrap_or_default();
        }
    }
    Ok(out)
}

/// Socket inode to the `comm` of the processes holding it. Processes that vanish or cannot be
/// read are skipped.
fn socket_owners(proc_root: &Path) -> HashMap<u64, Vec<String>> {
    let mut map: HashMap<u64, Vec<String>> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return map;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let dir = proc_root.join(pid);
        let Ok(fds) = std::fs::read_dir(dir.join("fd")) else {
            continue;
        };
        let mut comm: Option<String> = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let target = target.to_string_lossy();
            let Some(inode) = target
                .strip_prefix("socket:[")
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let comm = comm.get_or_insert_with(|| {
                std::fs::read_to_string(dir.join("comm"))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default()
            });
            let owners = map.entry(inode).or_default();
            if !owners.contains(comm) {
                owners.push(comm.clone());
            }
        }
    }
    map
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rstest::rstest;

    #[rstest]
    #[case::loopback_v4(
        "   0: 0100007F:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0",
        false,
        Some(("127.0.0.1:10250", 12345))
    )]
    #[case::wildcard_v4(
        "   1: 00000000:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0000000000000000 100 0 0 10 0",
        false,
        Some(("0.0.0.0:10250", 777))
    )]
    #[case::node_ip_v4(
        "   2: 020200C0:280A 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 9 1 0000000000000000 100 0 0 10 0",
        false,
        Some(("192.0.2.2:10250", 9))
    )]
    #[case::established_is_not_listening(
        "   3: 0100007F:280A 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 10 1 0000000000000000 100 0 0 10 0",
        false,
        None
    )]
    #[case::loopback_v6(
        "   0: 00000000000000000000000001000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0",
        true,
        Some(("[::1]:10250", 4242))
    )]
    #[case::wildcard_v6(
        "   0: 00000000000000000000000000000000:280A 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 5 1 0000000000000000 100 0 0 10 0",
        true,
        Some(("[::]:10250", 5))
    )]
    #[case::header("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode", false, None)]
    fn proc_net_tcp_lines(
        #[case] line: &str,
        #[case] _v6: bool,
        #[case] want: Option<(&str, u64)>,
    ) {
        // Through the agent's one parser, as `listeners` reads the tables (`_v6` names the table
        // the row comes from; the parser tells them apart by the address's length).
        let text = format!("  sl  local_address header\n{line}\n");
        let got = crate::portwait::parse_proc_net_tcp(&text)
            .into_iter()
            .map(|l| (SocketAddr::new(l.address, l.port), l.inode))
            .next();
        let want = want.map(|(a, i)| (a.parse::<SocketAddr>().unwrap(), i));
        assert_eq!(got, want);
    }

    #[test]
    fn finds_this_process_listening() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let found = listeners(Path::new("/proc"), port).unwrap();
        assert_eq!(found.len(), 1, "{found:?}");
        let first = found.first().unwrap();
        assert!(first.is_loopback());
        assert!(!first.is_envoy());
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(first.owners, vec![me.trim_end().to_string()]);
        drop(l);
        assert!(listeners(Path::new("/proc"), port).unwrap().is_empty());
    }
}
