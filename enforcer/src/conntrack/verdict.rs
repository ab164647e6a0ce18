//! Judging one flow against a compiled rule set, as the rendered chains
//! would judge its first packet (TG-FORWARD, the dispatch chains, the pod
//! chains, the policy chains and their sets), without the kernel.

use std::net::IpAddr;

use ipnet::IpNet;
use tierguard::policy::Protocol;

use crate::ruleset::{IpSet, Isolation, LocalPod, Match, PeerMatch, PortSpec, RuleSet, SetEntry};

/// A connection as the filter table sees its first packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    /// protocol
    pub protocol: Protocol,
    /// client address
    pub source: IpAddr,
    /// server address
    pub destination: IpAddr,
    /// server port
    pub port: u16,
}

/// What the rule set does with a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowVerdict {
    /// neither end is a local pod address: not this node's to judge
    NotOurs,
    /// accepted
    Allowed,
    /// dropped
    Denied,
}

/// Whether `ip` is in `set` (hash:ip: equal; hash:net: the most specific
/// network containing it decides, and a `nomatch` one excludes).
fn in_set(set: &IpSet, ip: IpAddr) -> bool {
    let mut best: Option<(u8, bool)> = None;
    for entry in set.entries.iter() {
        let (net, member): (IpNet, bool) = match entry {
            SetEntry::Ip(a) => {
                if *a == ip {
                    return true;
                }
                continue;
            }
            SetEntry::Net(n) => (*n, true),
            SetEntry::NoMatch(n) => (*n, false),
        };
        if net.contains(&ip) && best.is_none_or(|(len, _)| net.prefix_len() > len) {
            best = Some((net.prefix_len(), member));
        }
    }
    best.is_some_and(|(_, member)| member)
}

fn set_has(rules: &RuleSet, name: &str, ip: IpAddr) -> bool {
    rules.sets.get(name).is_some_and(|set| in_set(set, ip))
}

fn port_matches(spec: &PortSpec, protocol: Protocol, port: u16) -> bool {
    match *spec {
        PortSpec::Any => true,
        PortSpec::Protocol(p) => p == protocol,
        PortSpec::Range {
            protocol: p,
            start,
            end,
        } => p == protocol && (start..=end).contains(&port),
    }
}

fn match_allows(rules: &RuleSet, m: &Match, peer: IpAddr, flow: &Flow) -> bool {
    let peer_ok = match &m.peer {
        PeerMatch::Any => true,
        PeerMatch::Set(name) => set_has(rules, name, peer),
    };
    peer_ok
        && port_matches(&m.port, flow.protocol, flow.port)
        && m.local_destinations
            .as_ref()
            .is_none_or(|name| set_has(rules, name, flow.destination))
}

/// One side: the local pod `pod` (None: a local address without a pod, dropped).
fn side_allows(rules: &RuleSet, side: Option<&Isolation>, peer: IpAddr, flow: &Flow) -> bool {
    match side {
        None => false,
        Some(Isolation::Open) => true,
        Some(Isolation::Isolated { policies, .. }) => policies.iter().any(|chain| {
            rules
                .policies
                .get(chain)
                .is_some_and(|c| c.matches.iter().any(|m| match_allows(rules, m, peer, flow)))
        }),
    }
}

fn local_pod(rules: &RuleSet, ip: IpAddr) -> Option<&LocalPod> {
    rules.local_pods.iter().find(|p| p.ips.contains(&ip))
}

fn is_local(rules: &RuleSet, ip: IpAddr) -> bool {
    local_pod(rules, ip).is_some() || rules.local_cidrs.iter().any(|n| n.contains(&ip))
}

/// How the rendered rules of `rules` judge the first packet of `flow` on this node.
pub fn judge(rules: &RuleSet, flow: &Flow) -> FlowVerdict {
    let (source_local, destination_local) = (is_local(rules, flow.source), is_local(rules, flow.destination));
    // To this node's own address the packet is delivered (INPUT), not forwarded.
    if (!source_local && !destination_local) || rules.node_addresses.contains(&flow.destination) {
        return FlowVerdict::NotOurs;
    }
    if rules.node_addresses.contains(&flow.source) {
        return FlowVerdict::Allowed;
    }
    let egress = !source_local
        || side_allows(
            rules,
            local_pod(rules, flow.source).map(|p| &p.egress),
            flow.destination,
            flow,
        );
    let ingress = !destination_local
        || side_allows(
            rules,
            local_pod(rules, flow.destination).map(|p| &p.ingress),
            flow.source,
            flow,
        );
    if egress && ingress {
        FlowVerdict::Allowed
    } else {
        FlowVerdict::Denied
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use tierguard::engine::{AddressFamily, Endpoint};

    use super::*;
    use crate::compile::{NodeView, compile_family};
    use crate::ruleset::Family;

    /// On every fixture and node, for every pair of pods and every port either
    /// serves: the verdict on the compiled rule set is the engine's on the
    /// node's local ends whenever the flow crosses the node's FORWARD chain
    /// (an end is a local pod, the destination is not the node itself).
    #[test]
    fn judges_every_flow_as_the_engine_does() {
        let fixtures = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
        let mut judged = 0;
        for (case, node) in [
            ("basic", "node-a"),
            ("basic", "node-b"),
            ("dualstack", "node-a"),
            ("hostnetwork", "node-a"),
            ("hostnetwork", "node-b"),
            ("agent-view", "node-a"),
        ] {
            let (cluster, addresses) =
                crate::load::load(&[fixtures.join(case)], node).unwrap_or_else(|e| panic!("{e}"));
            let view = NodeView {
                name: node.into(),
                addresses,
                pod_cidrs: Vec::new(),
            };
            for family in Family::BOTH {
                let rules = compile_family(&cluster, &view, family);
                for from in cluster.pods() {
                    for to in cluster.pods() {
                        if from.key() == to.key() {
                            continue;
                        }
                        let mut ports: Vec<(Protocol, u16)> = to.ports.iter().map(|p| (p.protocol, p.port)).collect();
                        ports.extend([(Protocol::Tcp, 80), (Protocol::Udp, 53), (Protocol::Tcp, 9090)]);
                        for (source, destination) in from
                            .ips
                            .iter()
                            .flat_map(|s| to.ips.iter().map(move |d| (*s, *d)))
                            .filter(|(s, d)| family.has_addr(s) && family.has_addr(d))
                        {
                            for &(protocol, port) in &ports {
                                let flow = Flow {
                                    protocol,
                                    source,
                                    destination,
                                    port,
                                };
                                let got = judge(&rules, &flow);
                                let local = |ip: &IpAddr| rules.local_pods.iter().any(|p| p.ips.contains(ip));
                                let ours = (local(&source) || local(&destination))
                                    && !rules.node_addresses.contains(&destination);
                                // This node judges its local ends only: the source's egress, the
                                // destination's ingress.
                                let over = match family {
                                    Family::V4 => AddressFamily::IPv4,
                                    Family::V6 => AddressFamily::IPv6,
                                };
                                let v =
                                    cluster.allowed_over(Endpoint::Pod(from), Endpoint::Pod(to), protocol, port, over);
                                let want = if !ours {
                                    FlowVerdict::NotOurs
                                } else if (!local(&source) || v.egress.is_allowed())
                                    && (!local(&destination) || v.ingress.is_allowed())
                                {
                                    FlowVerdict::Allowed
                                } else {
                                    FlowVerdict::Denied
                                };
                                assert_eq!(
                                    got,
                                    want,
                                    "{case} {node} {family}: {} -> {} {protocol}/{port}",
                                    from.key(),
                                    to.key()
                                );
                                judged += usize::from(ours);
                            }
                        }
                    }
                }
            }
        }
        assert!(judged > 100, "{judged}");
    }

    #[test]
    fn a_local_address_without_a_pod_is_denied_and_nomatch_holes_exclude() {
        let mut rules = RuleSet {
            local_cidrs: vec!["10.0.1.0/24".parse().unwrap_or_else(|e| panic!("{e}"))],
            ..RuleSet::default()
        };
        let flow = Flow {
            protocol: Protocol::Tcp,
            source: "10.0.1.99".parse().unwrap_or_else(|e| panic!("{e}")),
            destination: "10.9.0.1".parse().unwrap_or_else(|e| panic!("{e}")),
            port: 80,
        };
        assert_eq!(judge(&rules, &flow), FlowVerdict::Denied);
        rules.local_cidrs.clear();
        assert_eq!(judge(&rules, &flow), FlowVerdict::NotOurs);
        let net = |s: &str| s.parse::<IpNet>().unwrap_or_else(|e| panic!("{e}"));
        let set = IpSet {
            kind: crate::ruleset::SetKind::HashNet,
            entries: std::sync::Arc::new(
                [
                    SetEntry::Net(net("10.0.0.0/8")),
                    SetEntry::NoMatch(net("10.1.0.0/16")),
                    SetEntry::Net(net("10.1.2.0/24")),
                ]
                .into_iter()
                .collect(),
            ),
            about: String::new(),
        };
        let ip = |s: &str| s.parse::<IpAddr>().unwrap_or_else(|e| panic!("{e}"));
        assert!(in_set(&set, ip("10.2.0.1")));
        assert!(!in_set(&set, ip("10.1.0.1")));
        assert!(in_set(&set, ip("10.1.2.3")));
        assert!(!in_set(&set, ip("11.0.0.1")));
    }
}
