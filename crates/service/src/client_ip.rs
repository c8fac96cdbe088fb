//! Which IP a request comes from. Behind proxies the peer address is the proxy's;
//! `X-Forwarded-For` is believed only for the configured number of trusted hops (each appends
//! the address it received from), counted from the right, because anything further left was
//! written by the client itself.

use std::net::IpAddr;

/// The client address of a request, from the peer and every `X-Forwarded-For` line in order
/// (a proxy may append its own line rather than extend the last one: the lines are one list).
pub fn client_ip<'a>(
    peer: IpAddr,
    forwarded_for: impl IntoIterator<Item = &'a str>,
    trusted_hops: usize,
) -> IpAddr {
    if trusted_hops == 0 {
        return peer;
    }
    let entries: Vec<&str> = forwarded_for
        .into_iter()
        .flat_map(|line| line.split(','))
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return peer;
    }
    // With n trusted hops, the n-th entry from the right was written by the outermost one.
    let index = entries.len().saturating_sub(trusted_hops);
    entries.get(index).and_then(|entry| forwarded_address(entry)).unwrap_or(peer)
}

/// An address as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `2001:db8::1`,
/// `[2001:db8::1]:4711`, possibly quoted.
fn forwarded_address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim_matches('"');
    if let Ok(ip) = entry.parse() {
        return Some(ip);
    }
    if let Ok(socket) = entry.parse::<std::net::SocketAddr>() {
        return Some(socket.ip());
    }
    // `[v6]` without a port.
    entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_believed_only_for_trusted_hops() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let header = ["1.1.1.1, 2.2.2.2, 3.3.3.3"];
        assert_eq!(client_ip(peer, header, 0), peer);
        assert_eq!(client_ip(peer, header, 1), "3.3.3.3".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, header, 2), "2.2.2.2".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, header, 5), "1.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, ["garbage"], 1), peer);
        assert_eq!(client_ip(peer, [], 1), peer);
    }

    #[test]
    fn forwarded_for_lines_are_one_list() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        // The client's own line first, then the line its proxy appended.
        let lines = ["6.6.6.6", "1.1.1.1, 3.3.3.3"];
        assert_eq!(client_ip(peer, lines, 1), "3.3.3.3".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, lines, 2), "1.1.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(peer, ["6.6.6.6", "3.3.3.3"], 1), "3.3.3.3".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn forwarded_entries_may_carry_ports_and_brackets() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        for (entry, ip) in [
            ("192.0.2.7:4711", "192.0.2.7"),
            ("[2001:db8::7]:4711", "2001:db8::7"),
            ("2001:db8::7", "2001:db8::7"),
            ("[2001:db8::7]", "2001:db8::7"),
            ("\"[2001:db8::7]:80\"", "2001:db8::7"),
        ] {
            assert_eq!(client_ip(peer, [entry], 1), ip.parse::<IpAddr>().unwrap(), "{entry}");
        }
        assert_eq!(client_ip(peer, ["192.0.2.7:port"], 1), peer);
    }
}
