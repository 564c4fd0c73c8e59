//! Waiting for the kubelet port: only what really conflicts with this proxy binding
//! `NODE_IP:PORT` keeps it waiting. A wildcard listener (`0.0.0.0` or `::`) on the port is the
//! kubelet not yet moved to loopback; a kubelet configured on a non-loopback address is the same.
//! Another socket on `NODE_IP:PORT` is not a conflict: it is the old pod's Envoy during a surge,
//! sharing the port with SO_REUSEPORT.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// One listening socket read from `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    /// Local address.
    pub address: IpAddr,
    /// Local port.
    pub port: u16,
    /// The socket's inode (which process holds it: `listeners`).
    pub inode: u64,
}

/// The `TCP_LISTEN` state in `/proc/net/tcp`.
const LISTEN: &str = "0A";

fn hex_u32(s: &str) -> Option<u32> {
    u32::from_str_radix(s, 16).ok()
}

/// `/proc/net/tcp` prints each address as 32-bit words in host byte order: `0100007F` is
/// 127.0.0.1 on the little-endian machines we ship.
fn parse_address(hex: &str) -> Option<IpAddr> {
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(hex_u32(hex)?.to_ne_bytes()))),
        32 => {
            let mut bytes = [0u8; 16];
            for (i, chunk) in bytes.chunks_mut(4).enumerate() {
                let word = hex_u32(hex.get(i * 8..i * 8 + 8)?)?;
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// The listening sockets of a `/proc/net/tcp` or `/proc/net/tcp6` text (header and malformed
/// rows skipped).
pub fn parse_proc_net_tcp(text: &str) -> Vec<Listener> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut cols = line.split_whitespace();
            let _slot = cols.next()?;
            let local = cols.next()?;
            let _remote = cols.next()?;
            let state = cols.next()?;
            if state != LISTEN {
                return None;
            }
            // tx_queue:rx_queue tr:tm->when retrnsmt uid timeout inode
            let inode = cols.nth(5)?.parse().ok()?;
            let (addr, port) = local.split_once(':')?;
            Some(Listener {
                address: parse_address(addr)?,
                port: u16::from_str_radix(port, 16).ok()?,
                inode,
            })
        })
        .collect()
}

/// The listeners on `port` that conflict with the proxy: wildcard ones. A socket on a specific
/// address (loopback: the moved kubelet; the node IP: the old pod's Envoy) does not.
pub fn conflicts(listeners: &[Listener], port: u16) -> Vec<Listener> {
    listeners
        .iter()
        .filter(|l| l.port == port && l.address.is_unspecified())
        .copied()
        .collect()
}

/// Read `/proc/net/tcp` and `/proc/net/tcp6` (a missing one, e.g. IPv6 off, is empty).
pub fn read_listeners(proc_net: &std::path::Path) -> Vec<Listener> {
    ["tcp", "tcp6"]
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(proc_net.join(f))
                .map(|t| parse_proc_net_tcp(&t))
                .unwrap_or_default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rstest::rstest;

    const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

    fn row(local: &str, state: &str) -> String {
        format!("   0: {local} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000     0        0 12345 1 0000000000000000 100 0 0 10 0")
    }

    #[rstest]
    #[case::loopback_kubelet("0100007F:280A", "0A", Some(("127.0.0.1", 10250)))]
    #[case::wildcard("00000000:280A", "0A", Some(("0.0.0.0", 10250)))]
    #[case::node_ip("0A01A8C0:280A", "0A", Some(("192.168.1.10", 10250)))]
    #[case::established("0100007F:280A", "01", None)]
    #[case::v6_wildcard("00000000000000000000000000000000:280A", "0A", Some(("::", 10250)))]
    #[case::v6_loopback("00000000000000000000000001000000:280A", "0A", Some(("::1", 10250)))]
    #[case::v6_node("B80D0120000000000000000001000000:26F9", "0A", Some(("2001:db8::1", 9977)))]
    #[case::garbage("zz:280A", "0A", None)]
    fn rows_are_parsed(
        #[case] local: &str,
        #[case] state: &str,
        #[case] want: Option<(&str, u16)>,
    ) {
        let text = format!("{HEADER}\n{}\n", row(local, state));
        let got = parse_proc_net_tcp(&text);
        let want: Vec<Listener> = want
            .into_iter()
            .map(|(a, p)| Listener {
                address: a.parse().unwrap(),
                port: p,
                inode: 12345,
            })
            .collect();
        assert_eq!(got, want);
    }

    #[rstest]
    // The kubelet on 0.0.0.0: not moved yet.
    #[case::kubelet_on_wildcard(&["00000000:280A"], true)]
    #[case::kubelet_on_v6_wildcard(&["0100007F:280A", "00000000000000000000000000000000:280A"], true)]
    // Moved to loopback: go.
    #[case::moved(&["0100007F:280A"], false)]
    // The surge: the old pod's Envoy on NODE_IP:10250 and the kubelet on loopback.
    #[case::surge(&["0100007F:280A", "0A01A8C0:280A", "0A01A8C0:280A"], false)]
    // A wildcard listener on another port does not matter.
    #[case::other_port(&["0100007F:280A", "00000000:26F9"], false)]
    #[case::nothing(&[], false)]
    fn only_a_wildcard_listener_on_the_port_conflicts(
        #[case] locals: &[&str],
        #[case] conflict: bool,
    ) {
        let mut text = String::from(HEADER);
        for l in locals {
            text.push('\n');
            text.push_str(&row(l, "0A"));
        }
        let listeners = parse_proc_net_tcp(&text);
        assert_eq!(
            !conflicts(&listeners, 10250).is_empty(),
            conflict,
            "{listeners:?}"
        );
    }
}
