//! Conntrack entries as `conntrack -L -o extended` prints them.

use std::net::IpAddr;

use tierguard::policy::Protocol;

use super::verdict::Flow;

/// One tracked connection: its original tuple (as the client opened it) and
/// the source and port of its reply tuple (where a DNAT sent it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// tcp, udp or sctp
    pub protocol: Protocol,
    /// original source
    pub source: IpAddr,
    /// original destination (a Service address before DNAT)
    pub destination: IpAddr,
    /// original source port
    pub source_port: u16,
    /// original destination port
    pub destination_port: u16,
    /// reply source: the server that answers (the destination after DNAT)
    pub reply_source: IpAddr,
    /// reply source port: the server's port after DNAT
    pub reply_source_port: u16,
}

impl Entry {
    /// The flow as the filter table sees it: FORWARD comes after DNAT
    /// (PREROUTING) and before SNAT (POSTROUTING), so the original source
    /// and the reply's source as destination.
    pub fn flow(&self) -> Flow {
        Flow {
            protocol: self.protocol,
            source: self.source,
            destination: self.reply_source,
            port: self.reply_source_port,
        }
    }
}

fn protocol(name: &str) -> Option<Protocol> {
    match name {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "sctp" => Some(Protocol::Sctp),
        _ => None,
    }
}

/// Reads one line of `conntrack -L -o extended`, e.g.
/// `ipv4 2 tcp 6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40000 dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40000 [ASSURED] mark=0 use=1`.
/// `None` for other protocols (icmp, ...) and lines it cannot read.
pub fn parse_entry(line: &str) -> Option<Entry> {
    let mut words = line.split_whitespace();
    let _family = words.next()?;
    let _family_number = words.next()?;
    let protocol = protocol(words.next()?)?;
    let mut addresses: Vec<IpAddr> = Vec::new();
    let mut ports: Vec<u16> = Vec::new();
    for word in words {
        match word.split_once('=') {
            Some(("src" | "dst", value)) => addresses.push(value.parse().ok()?),
            Some(("sport" | "dport", value)) => ports.push(value.parse().ok()?),
            _ => {}
        }
    }
    // Original src, dst, then reply src, dst; ports likewise.
    let [source, destination, reply_source, _] = <[IpAddr; 4]>::try_from(addresses).ok()?;
    let [source_port, destination_port, reply_source_port, _] = <[u16; 4]>::try_from(ports).ok()?;
    Some(Entry {
        protocol,
        source,
        destination,
        source_port,
        destination_port,
        reply_source,
        reply_source_port,
    })
}

/// Every TCP, UDP and SCTP entry of a `conntrack -L -o extended` listing.
pub fn parse_entries(listing: &str) -> Vec<Entry> {
    listing.lines().filter_map(parse_entry).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn reads_tcp_udp_and_ipv6_entries_and_skips_the_rest() {
        let listing = "\
ipv4     2 tcp      6 431999 ESTABLISHED src=10.0.1.2 dst=10.0.1.3 sport=40000 dport=80 src=10.0.1.3 dst=10.0.1.2 sport=80 dport=40000 [ASSURED] mark=0 use=1
ipv4     2 udp      17 28 src=10.0.1.2 dst=10.96.0.10 sport=5353 dport=53 [UNREPLIED] src=10.0.2.53 dst=10.0.1.2 sport=53 dport=5353 mark=0 use=1
ipv4     2 icmp     1 29 src=10.0.1.2 dst=10.0.1.3 type=8 code=0 id=7 src=10.0.1.3 dst=10.0.1.2 type=0 code=0 id=7 mark=0 use=1
ipv6     10 tcp      6 60 SYN_SENT src=fd00:1::2 dst=fd00:1::3 sport=40001 dport=81 [UNREPLIED] src=fd00:1::3 dst=fd00:1::2 sport=81 dport=40001 mark=0 use=1
not a conntrack line
";
        let entries = parse_entries(listing);
        assert_eq!(entries.len(), 3, "{entries:?}");
        assert_eq!(
            entries[0],
            Entry {
                protocol: Protocol::Tcp,
                source: ip("10.0.1.2"),
                destination: ip("10.0.1.3"),
                source_port: 40000,
                destination_port: 80,
                reply_source: ip("10.0.1.3"),
                reply_source_port: 80,
            }
        );
        // A Service address: the filter table sees the pod it was DNATed to.
        let dns = entries[1].flow();
        assert_eq!((dns.destination, dns.port), (ip("10.0.2.53"), 53));
        assert_eq!(entries[1].destination, ip("10.96.0.10"));
        assert_eq!(entries[2].protocol, Protocol::Tcp);
        assert_eq!(entries[2].source, ip("fd00:1::2"));
    }
}
