//! Reachability: whether a connection is allowed under the cluster's
//! NetworkPolicies, and why.
//!
//! The rules are Kubernetes': a pod is isolated in a direction when some
//! policy in its namespace selects it and has that direction in its
//! (defaulted) policyTypes; an isolated pod accepts exactly the union of the
//! rules of those policies; a connection needs the source's egress and the
//! destination's ingress both to allow it. A pod may always reach itself.
//!
//! A host-network pod (`spec.hostNetwork: true`) has its node's address, and
//! its traffic cannot be told from the node's: as Kubernetes lets plugins
//! that cannot tell them apart do (kube-router, Calico, and the enforcer
//! here), such a pod is never isolated, selector peers never match it, and
//! named ports do not resolve on it. As a peer it is the address it has, so
//! ipBlocks still match it. And since traffic between a pod and the node it
//! runs on is always allowed, a host-network pod and a pod on the same node
//! always reach each other.
//!
//! The enforcer compiles its rule sets from the same peer and port matching
//! functions (`peer_matches`, `PolicyPort::allows`), so the model and the
//! data plane cannot drift apart.

use std::fmt;
use std::net::IpAddr;

use crate::cluster::{Cluster, PodInfo};
use crate::policy::{Direction, NamespaceScope, Peer, Policy, PolicyId, PortHit, Protocol};

/// One end of a connection.
#[derive(Clone, Copy, Debug)]
pub enum Endpoint<'a> {
    /// A pod the cluster knows.
    Pod(&'a PodInfo),
    /// An address that is not a known pod (outside the cluster, or a node).
    Address(IpAddr),
}

impl Endpoint<'_> {
    fn addresses(&self) -> &[IpAddr] {
        match self {
            Endpoint::Pod(p) => &p.ips,
            Endpoint::Address(ip) => std::slice::from_ref(ip),
        }
    }
}

/// The address family a connection uses. A dual-stack pod is reached over
/// one of its addresses at a time, and only ipBlocks tell the families apart:
/// a block matches the endpoint's address of the connection's family only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AddressFamily {
    /// IPv4
    IPv4,
    /// IPv6
    IPv6,
}

impl AddressFamily {
    /// Whether `ip` is of this family.
    pub fn has(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (AddressFamily::IPv4, IpAddr::V4(_)) | (AddressFamily::IPv6, IpAddr::V6(_))
        )
    }
}

impl fmt::Display for Endpoint<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Pod(p) => write!(f, "{}/{}", p.namespace, p.name),
            Endpoint::Address(ip) => write!(f, "{ip}"),
        }
    }
}

/// What both sides judge: `protocol` to port `port` of `destination` (which
/// resolves named ports), over `family` (`None`: any address).
#[derive(Clone, Copy)]
struct Connection<'a> {
    protocol: Protocol,
    port: u16,
    destination: Endpoint<'a>,
    family: Option<AddressFamily>,
}

/// How one side (the source's egress or the destination's ingress) judged a connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub enum SideVerdict {
    /// A pod talking to itself; policies do not apply.
    SamePod,
    /// This end is not a pod, so no policy applies on this side.
    NotAPod,
    /// This end is a host-network pod: its traffic is the node's, which
    /// NetworkPolicy does not isolate.
    HostNetwork,
    /// The other end is a host-network pod on this pod's own node: traffic
    /// between a pod and its node is always allowed.
    OwnNode,
    /// No policy isolates the pod in this direction.
    NotIsolated,
    /// A rule allows it.
    Allowed {
        /// the policy
        policy: PolicyId,
        /// index of the rule in `spec.ingress` / `spec.egress`
        rule: usize,
        /// index of the peer in `from` / `to`; `None` when the rule has no peers (all)
        peer: Option<usize>,
        /// what in `ports` allowed it
        port: PortHit,
    },
    /// Isolated, and no rule of the isolating policies allows it.
    Denied {
        /// the policies that isolate the pod in this direction
        isolated_by: Vec<PolicyId>,
    },
}

impl SideVerdict {
    /// Whether this side lets the connection through.
    pub fn is_allowed(&self) -> bool {
        !matches!(self, SideVerdict::Denied { .. })
    }
}

/// The verdict on a connection, with both sides' reasons.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Verdict {
    /// The source's egress.
    pub egress: SideVerdict,
    /// The destination's ingress.
    pub ingress: SideVerdict,
}

impl Verdict {
    /// Whether the connection is allowed.
    pub fn allowed(&self) -> bool {
        self.egress.is_allowed() && self.ingress.is_allowed()
    }
}

/// How one rule of an isolating policy judged a connection.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct RuleCheck {
    /// the policy
    pub policy: PolicyId,
    /// index of the rule in `spec.ingress` / `spec.egress`
    pub rule: usize,
    /// the peer that matched: `Some(None)` when the rule has no peers (all),
    /// `Some(Some(i))` for `from[i]` / `to[i]`, `None` when none matched
    pub peer: Option<Option<usize>>,
    /// what in `ports` matched; `None` when the port is not among them
    pub port: Option<PortHit>,
}

/// Why one side judged as it did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SideReasons {
    /// the policies isolating this side's pod in this direction (empty when
    /// it is not a pod, or not isolated)
    pub isolated_by: Vec<PolicyId>,
    /// every rule looked at, in order: those before the one that allowed
    /// it and that one, or all of them when none did
    pub rules: Vec<RuleCheck>,
}

/// A verdict with the reasons of both sides ([`Cluster::explain`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Explanation {
    /// the verdict, as [`Cluster::allowed`] gives it
    pub verdict: Verdict,
    /// the source's egress
    pub egress: SideReasons,
    /// the destination's ingress
    pub ingress: SideReasons,
}

fn describe(side: &SideVerdict, direction: Direction, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    let key = match direction {
        Direction::Ingress => ("ingress", "from"),
        Direction::Egress => ("egress", "to"),
    };
    match side {
        SideVerdict::SamePod => write!(f, "{} allowed: same pod", key.0),
        SideVerdict::NotAPod => write!(f, "{} allowed: not a pod", key.0),
        SideVerdict::HostNetwork => write!(f, "{} allowed: host-network pod (node traffic)", key.0),
        SideVerdict::OwnNode => write!(f, "{} allowed: its own node", key.0),
        SideVerdict::NotIsolated => write!(f, "{} allowed: not isolated", key.0),
        SideVerdict::Allowed {
            policy,
            rule,
            peer,
            port,
        } => {
            write!(f, "{} allowed by {policy} {}[{rule}]", key.0, key.0)?;
            match peer {
                Some(i) => write!(f, " {}[{i}]", key.1)?,
                None => write!(f, " (every peer)")?,
            }
            match port {
                PortHit::AllPorts => write!(f, " (every port)"),
                PortHit::Entry(i) => write!(f, " ports[{i}]"),
            }
        }
        SideVerdict::Denied { isolated_by } => {
            let names: Vec<String> = isolated_by.iter().map(ToString::to_string).collect();
            write!(f, "{} denied: isolated by {}, no rule matched", key.0, names.join(", "))
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", if self.allowed() { "allowed" } else { "denied" })?;
        describe(&self.egress, Direction::Egress, f)?;
        write!(f, "; ")?;
        describe(&self.ingress, Direction::Ingress, f)
    }
}

impl Cluster {
    /// Whether `policy` selects `pod` (same namespace, pod selector matches;
    /// never a host-network pod).
    pub fn selects(&self, policy: &Policy, pod: &PodInfo) -> bool {
        !pod.host_network && policy.id.namespace == pod.namespace && policy.pod_selector.matches(&pod.labels)
    }

    /// The policies that isolate `pod` in `direction` (none for a host-network pod).
    pub fn isolating<'a>(&'a self, pod: &'a PodInfo, direction: Direction) -> impl Iterator<Item = &'a Policy> + 'a {
        self.policies_in(&pod.namespace)
            .filter(move |p| !pod.host_network && p.isolates(direction) && p.pod_selector.matches(&pod.labels))
    }

    /// Whether a namespace scope of a peer in a policy of `policy_namespace`
    /// includes namespace `namespace`.
    pub fn scope_includes(&self, scope: &NamespaceScope, policy_namespace: &str, namespace: &str) -> bool {
        match scope {
            NamespaceScope::Own => policy_namespace == namespace,
            NamespaceScope::Matching(sel) => sel.matches(&self.namespace_labels(namespace)),
        }
    }

    /// Whether `peer` of a policy in `policy_namespace` matches `endpoint`.
    /// Selector peers match pods only, never host-network ones; ipBlocks match
    /// by address, pods included.
    pub fn peer_matches(&self, peer: &Peer, policy_namespace: &str, endpoint: Endpoint<'_>) -> bool {
        self.peer_matches_over(peer, policy_namespace, endpoint, None)
    }

    /// [`Cluster::peer_matches`] for a connection over `family` (`None`: any of the
    /// endpoint's addresses).
    fn peer_matches_over(
        &self,
        peer: &Peer,
        policy_namespace: &str,
        endpoint: Endpoint<'_>,
        family: Option<AddressFamily>,
    ) -> bool {
        match peer {
            Peer::Pods { namespaces, pods } => match endpoint {
                Endpoint::Pod(pod) => {
                    !pod.host_network
                        && self.scope_includes(namespaces, policy_namespace, &pod.namespace)
                        && pods.matches(&pod.labels)
                }
                Endpoint::Address(_) => false,
            },
            Peer::Block(block) => endpoint
                .addresses()
                .iter()
                .filter(|ip| family.is_none_or(|f| f.has(ip)))
                .any(|ip| block.contains(ip)),
        }
    }

    /// How `pod`'s side judges `connection` with `peer` in `direction`. With
    /// `checks`, every rule looked at (those of the isolating policies up to
    /// the one that allows it, all of them when none does) is recorded with
    /// what in it matched; the verdict is the same either way, from the same
    /// loop.
    fn side(
        &self,
        pod: &PodInfo,
        direction: Direction,
        peer: Endpoint<'_>,
        connection: &Connection<'_>,
        mut checks: Option<&mut Vec<RuleCheck>>,
    ) -> SideVerdict {
        let Connection {
            protocol,
            port,
            destination,
            family,
        } = *connection;
        let named = |name: &str, proto: Protocol| match destination {
            Endpoint::Pod(d) if !d.host_network => d.named_port(name, proto),
            Endpoint::Pod(_) | Endpoint::Address(_) => None,
        };
        let mut isolated_by = Vec::new();
        for policy in self.isolating(pod, direction) {
            isolated_by.push(policy.id.clone());
            for (rule_index, rule) in policy.rules(direction).iter().enumerate() {
                let port_hit = rule.port_hit(protocol, port, &named);
                // Without a record to keep, a rule whose ports miss needs no peer match.
                if port_hit.is_none() && checks.is_none() {
                    continue;
                }
                let peer_hit = match &rule.peers {
                    None => Some(None),
                    Some(peers) => peers
                        .iter()
                        .position(|p| self.peer_matches_over(p, &policy.id.namespace, peer, family))
                        .map(Some),
                };
                if let Some(checks) = checks.as_deref_mut() {
                    checks.push(RuleCheck {
                        policy: policy.id.clone(),
                        rule: rule_index,
                        peer: peer_hit,
                        port: port_hit,
                    });
                }
                if let (Some(peer_index), Some(port_hit)) = (peer_hit, port_hit) {
                    return SideVerdict::Allowed {
                        policy: policy.id.clone(),
                        rule: rule_index,
                        peer: peer_index,
                        port: port_hit,
                    };
                }
            }
        }
        if isolated_by.is_empty() {
            SideVerdict::NotIsolated
        } else {
            SideVerdict::Denied { isolated_by }
        }
    }

    /// Whether `from` may open a `protocol` connection to port `port` of `to`, and why.
    ///
    /// ```
    /// use tierguard::cluster::{Cluster, NamespaceInfo, PodInfo};
    /// use tierguard::engine::Endpoint;
    /// use tierguard::policy::Protocol;
    /// let mut cluster = Cluster::new();
    /// cluster.upsert_namespace(NamespaceInfo::new("x", Default::default()));
    /// let pod = |name: &str, ip: &str| PodInfo {
    ///     namespace: "x".into(), name: name.into(), labels: Default::default(),
    ///     ips: vec![ip.parse().unwrap()], node: None, ports: vec![], host_network: false,
    /// };
    /// let (a, b) = (pod("a", "10.0.0.1"), pod("b", "10.0.0.2"));
    /// let verdict = cluster.allowed(Endpoint::Pod(&a), Endpoint::Pod(&b), Protocol::Tcp, 80);
    /// assert!(verdict.allowed());
    /// assert_eq!(verdict.to_string(), "allowed: egress allowed: not isolated; ingress allowed: not isolated");
    /// ```
    pub fn allowed(&self, from: Endpoint<'_>, to: Endpoint<'_>, protocol: Protocol, port: u16) -> Verdict {
        self.judge(from, to, protocol, port, None, None)
    }

    /// [`Cluster::allowed`] for a connection over one address family: ipBlocks
    /// match the endpoints' addresses of that family only (a dual-stack pod
    /// reached over IPv4 is not in an IPv6 block, whatever its IPv6 address).
    pub fn allowed_over(
        &self,
        from: Endpoint<'_>,
        to: Endpoint<'_>,
        protocol: Protocol,
        port: u16,
        family: AddressFamily,
    ) -> Verdict {
        self.judge(from, to, protocol, port, Some(family), None)
    }

    /// [`Cluster::allowed`] with every rule the verdict looked at on each
    /// side, and the policies isolating each side's pod: why it is allowed
    /// or denied, rule by rule. The verdict is [`Cluster::allowed`]'s, from
    /// the same code.
    ///
    /// ```
    /// use tierguard::cluster::{Cluster, NamespaceInfo, PodInfo};
    /// use tierguard::engine::Endpoint;
    /// use tierguard::policy::Protocol;
    /// let mut cluster = Cluster::new();
    /// cluster.upsert_namespace(NamespaceInfo::new("x", Default::default()));
    /// let np = serde_json::from_value(serde_json::json!({
    ///     "metadata": {"name": "p", "namespace": "x"},
    ///     "spec": {"podSelector": {}, "ingress": [{"ports": [{"port": 443}]}]}})).unwrap();
    /// cluster.apply_network_policy(&np).unwrap();
    /// let pod = |name: &str, ip: &str| PodInfo {
    ///     namespace: "x".into(), name: name.into(), labels: Default::default(),
    ///     ips: vec![ip.parse().unwrap()], node: None, ports: vec![], host_network: false,
    /// };
    /// let (a, b) = (pod("a", "10.0.0.1"), pod("b", "10.0.0.2"));
    /// let why = cluster.explain(Endpoint::Pod(&a), Endpoint::Pod(&b), Protocol::Tcp, 80);
    /// assert!(!why.verdict.allowed());
    /// assert_eq!(why.ingress.rules[0].peer, Some(None)); // every peer
    /// assert_eq!(why.ingress.rules[0].port, None); // not port 80
    /// ```
    pub fn explain(&self, from: Endpoint<'_>, to: Endpoint<'_>, protocol: Protocol, port: u16) -> Explanation {
        let mut egress = SideReasons::default();
        let mut ingress = SideReasons::default();
        let verdict = self.judge(
            from,
            to,
            protocol,
            port,
            None,
            Some((&mut egress.rules, &mut ingress.rules)),
        );
        for (side, end, direction) in [
            (&mut egress, from, Direction::Egress),
            (&mut ingress, to, Direction::Ingress),
        ] {
            if let Endpoint::Pod(pod) = end {
                side.isolated_by = self.isolating(pod, direction).map(|p| p.id.clone()).collect();
            }
        }
        Explanation {
            verdict,
            egress,
            ingress,
        }
    }

    fn judge(
        &self,
        from: Endpoint<'_>,
        to: Endpoint<'_>,
        protocol: Protocol,
        port: u16,
        family: Option<AddressFamily>,
        checks: Option<(&mut Vec<RuleCheck>, &mut Vec<RuleCheck>)>,
    ) -> Verdict {
        if let (Endpoint::Pod(a), Endpoint::Pod(b)) = (from, to)
            && a.namespace == b.namespace
            && a.name == b.name
        {
            return Verdict {
                egress: SideVerdict::SamePod,
                ingress: SideVerdict::SamePod,
            };
        }
        let own_node = match (from, to) {
            (Endpoint::Pod(a), Endpoint::Pod(b)) => {
                (a.host_network || b.host_network) && a.node.is_some() && a.node == b.node
            }
            _ => false,
        };
        let connection = Connection {
            protocol,
            port,
            destination: to,
            family,
        };
        let (egress_checks, ingress_checks) = match checks {
            Some((e, i)) => (Some(e), Some(i)),
            None => (None, None),
        };
        let egress = match from {
            Endpoint::Pod(pod) if pod.host_network => SideVerdict::HostNetwork,
            Endpoint::Pod(_) if own_node => SideVerdict::OwnNode,
            Endpoint::Pod(pod) => self.side(pod, Direction::Egress, to, &connection, egress_checks),
            Endpoint::Address(_) => SideVerdict::NotAPod,
        };
        let ingress = match to {
            Endpoint::Pod(pod) if pod.host_network => SideVerdict::HostNetwork,
            Endpoint::Pod(_) if own_node => SideVerdict::OwnNode,
            Endpoint::Pod(pod) => self.side(pod, Direction::Ingress, from, &connection, ingress_checks),
            Endpoint::Address(_) => SideVerdict::NotAPod,
        };
        Verdict { egress, ingress }
    }
}

#[cfg(test)]
mod tests;
