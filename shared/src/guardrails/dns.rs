//! What "reaches DNS" means (docs/guardrails.md:
//! "R2 DNS", "Named DNS ports", and the DNS exemption of R3).

use std::collections::BTreeMap;

use ipnet::IpNet;

use crate::labels::Labels;
use crate::policy::{IpBlock, NamespaceScope, Peer, PolicyPort, PortMatch, Protocol, Rule};
use crate::selector::Selector;
use crate::template::TierTemplate;

use super::state::{PolicyState, effective_labels};

/// The number a `dns.portNames` name resolves to on the DNS pods. CoreDNS
/// names its port 53 `dns` (UDP) and `dns-tcp` (TCP); a port the template
/// adds beyond 53 has no name there and is reached by number only.
const NAMED_DNS_PORT: u16 = 53;

/// The DNS service as the template describes it, prepared for matching.
pub(crate) struct DnsTarget {
    /// namespace of the DNS pods
    pub namespace: String,
    /// that namespace's labels (from the state, else the name label only)
    namespace_labels: Labels,
    /// `dns.podLabels` as a selector: a peer reaches every DNS pod when this implies its pod side
    pods: Selector,
    /// the ports DNS must be reachable on
    pub ports: Vec<(Protocol, u16)>,
    /// named ports that mean a DNS port on the DNS pods
    names: BTreeMap<Protocol, String>,
    /// addresses serving DNS outside the DNS pods
    cidrs: Vec<IpNet>,
    /// `kube-system/k8s-app=kube-dns`, for messages
    pub description: String,
}

impl DnsTarget {
    /// Reads the template's `dns` section against the state.
    pub fn new(template: &TierTemplate, state: &PolicyState) -> Self {
        let dns = &template.dns;
        let pod_labels = dns
            .pod_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",");
        let mut description = format!(
            "{}/{}",
            dns.namespace,
            if pod_labels.is_empty() { "*" } else { &pod_labels }
        );
        for cidr in &dns.cidrs {
            description.push_str(&format!(" or {cidr}"));
        }
        DnsTarget {
            namespace: dns.namespace.clone(),
            namespace_labels: effective_labels(state, &dns.namespace),
            pods: Selector::from_labels(&dns.pod_labels),
            ports: dns.ports.clone(),
            names: dns.port_names.clone(),
            cidrs: dns.cidrs.clone(),
            description,
        }
    }

    /// The port `name` resolves to on the DNS pods for `protocol`: 53 when it
    /// is the template's DNS name for that protocol, nothing otherwise (a DNS
    /// name used with another protocol names no port there).
    fn resolve_name(&self, protocol: Protocol, name: &str) -> Option<u16> {
        (self.names.get(&protocol).is_some_and(|n| n == name)).then_some(NAMED_DNS_PORT)
    }

    /// For a message about `protocol`/`port`: when the template names a DNS
    /// port of that protocol but `port` is not 53, why the name does not help.
    pub fn by_number_hint(&self, protocol: Protocol, port: u16) -> String {
        match self.names.get(&protocol) {
            Some(name) if port != NAMED_DNS_PORT => format!(
                " (the named port {name} means {NAMED_DNS_PORT} on the DNS pods: allow {protocol}/{port} by number)"
            ),
            _ => String::new(),
        }
    }

    /// Whether `protocol`/`port` is one of the configured DNS ports.
    fn is_configured(&self, protocol: Protocol, port: u16) -> bool {
        self.ports.iter().any(|&(p, n)| p == protocol && n == port)
    }

    /// Whether a port entry allows `protocol`/`port` on a DNS pod.
    fn port_allows(&self, entry: &PolicyPort, protocol: Protocol, port: u16) -> bool {
        entry.protocol == protocol
            && match &entry.port {
                PortMatch::All => true,
                PortMatch::Range { start, end } => (*start..=*end).contains(&port),
                PortMatch::Named(name) => self.resolve_name(protocol, name) == Some(port),
            }
    }

    /// Whether a port entry allows nothing but configured DNS ports (the R3
    /// exemption): an endPort range only when every port in it is one, a
    /// named port only when the port it resolves to on the DNS pods is one.
    pub fn is_dns_port(&self, entry: &PolicyPort) -> bool {
        match &entry.port {
            PortMatch::All => false,
            PortMatch::Range { start, end } => (*start..=*end).all(|p| self.is_configured(entry.protocol, p)),
            PortMatch::Named(name) => self
                .resolve_name(entry.protocol, name)
                .is_some_and(|p| self.is_configured(entry.protocol, p)),
        }
    }

    /// Whether an egress rule is DNS traffic only; a rule without ports is not.
    pub fn is_dns_rule(&self, rule: &Rule) -> bool {
        !rule.ports.is_empty() && rule.ports.iter().all(|p| self.is_dns_port(p))
    }

    /// Whether an ipBlock reaches a `dns.cidrs` entry: contains it whole, with
    /// no except overlapping it.
    fn block_reaches(&self, block: &IpBlock) -> bool {
        self.cidrs
            .iter()
            .any(|c| block.cidr.contains(c) && !block.except.iter().any(|e| e.contains(c) || c.contains(e)))
    }

    /// Whether a peer reaches DNS: every DNS pod, or a DNS address.
    fn peer_reaches(&self, policy_namespace: &str, peer: &Peer) -> bool {
        match peer {
            Peer::Block(block) => self.block_reaches(block),
            Peer::Pods { namespaces, pods } => {
                let namespace_ok = match namespaces {
                    NamespaceScope::Own => policy_namespace == self.namespace,
                    NamespaceScope::Matching(sel) => sel.matches(&self.namespace_labels),
                };
                namespace_ok && self.pods.implies(pods)
            }
        }
    }

    /// For each configured DNS port (same order as `ports`), whether this
    /// egress rule of a policy in `policy_namespace` reaches DNS on it.
    pub fn rule_reach(&self, policy_namespace: &str, rule: &Rule) -> Vec<bool> {
        let peers_ok = match &rule.peers {
            None => true,
            Some(peers) => peers.iter().any(|p| self.peer_reaches(policy_namespace, p)),
        };
        self.ports
            .iter()
            .map(|&(protocol, port)| {
                peers_ok && (rule.ports.is_empty() || rule.ports.iter().any(|e| self.port_allows(e, protocol, port)))
            })
            .collect()
    }
}
