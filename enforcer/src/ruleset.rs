//! The rule sets compile hands to render: per address family, the local
//! pods, the policy chains and the address sets, before they are spelled as
//! restore text. They sit below both, and below naming, so that naming and
//! render need not import compile (`compile` re-exports them for callers
//! that already name them there).

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;
use tierguard::policy::{Direction, PolicyId, Protocol};

/// An address family: each has its own rule set, sets and iptables program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    /// IPv4: `iptables`, `family inet` sets
    #[default]
    V4,
    /// IPv6: `ip6tables`, `family inet6` sets
    V6,
}

impl Family {
    /// Both families, IPv4 first (the order they are applied in).
    pub const BOTH: [Family; 2] = [Family::V4, Family::V6];

    /// Whether an address is of this family.
    pub fn has_addr(self, ip: &IpAddr) -> bool {
        matches!((self, ip), (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_)))
    }

    /// Whether a network is of this family.
    pub fn has_net(self, net: &IpNet) -> bool {
        matches!((self, net), (Family::V4, IpNet::V4(_)) | (Family::V6, IpNet::V6(_)))
    }

    /// The prefix length of one host (`32` / `128`).
    pub fn host_prefix(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl std::fmt::Display for Family {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// One member of a set (all members of a set are of the set's family).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetEntry {
    /// an address (hash:ip)
    Ip(IpAddr),
    /// a network (hash:net)
    Net(IpNet),
    /// a hole in a network (hash:net `nomatch`: the more specific entry wins)
    NoMatch(IpNet),
}

/// The ipset type of a set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SetKind {
    /// `hash:ip`: pod addresses
    HashIp,
    /// `hash:net`: CIDRs with `nomatch` holes
    HashNet,
}

impl SetKind {
    /// The ipset spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SetKind::HashIp => "hash:ip",
            SetKind::HashNet => "hash:net",
        }
    }
}

/// An address set.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpSet {
    /// hash:ip or hash:net
    pub kind: SetKind,
    /// members, sorted (shared: an unchanged set is handed on, not copied)
    pub entries: Arc<BTreeSet<SetEntry>>,
    /// what it stands for (for comments and debugging)
    pub about: String,
}

/// Which peer addresses a match accepts.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PeerMatch {
    /// every address (a rule without peers)
    Any,
    /// addresses in a set
    Set(String),
}

/// Which protocol and destination ports a match accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PortSpec {
    /// every protocol and port (a rule without ports)
    Any,
    /// every port of one protocol
    Protocol(Protocol),
    /// a port range of one protocol
    Range {
        /// protocol
        protocol: Protocol,
        /// first port
        start: u16,
        /// last port
        end: u16,
    },
}

/// One allow match of a policy chain: (policy rule, peer, port entry).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Match {
    /// index of the rule in `spec.ingress` / `spec.egress`
    pub rule: usize,
    /// the peer side: the source for ingress, the destination for egress
    pub peer: PeerMatch,
    /// protocol and destination port
    pub port: PortSpec,
    /// ingress named ports: the local destination pods that resolve the name to this port
    pub local_destinations: Option<String>,
}

/// A policy's rules in one direction, rendered once and shared by every local pod it isolates.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyChain {
    /// the policy
    pub policy: PolicyId,
    /// the direction
    pub direction: Direction,
    /// chain name
    pub chain: String,
    /// allow matches, in rule order
    pub matches: Vec<Match>,
}

/// How a local pod is treated in one direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// no policy isolates it: accept
    Open,
    /// isolated: allowed iff one of the policy chains matches, else dropped
    Isolated {
        /// the pod's chain
        chain: String,
        /// the isolating policies' chains (those with at least one match)
        policies: Vec<String>,
        /// the isolating policies, for comments
        isolated_by: Vec<PolicyId>,
    },
}

/// A pod on this node.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct LocalPod {
    /// namespace
    pub namespace: String,
    /// name
    pub name: String,
    /// its addresses of the rule set's family
    pub ips: Vec<IpAddr>,
    /// ingress treatment
    pub ingress: Isolation,
    /// egress treatment
    pub egress: Isolation,
}

/// Everything one node needs, before it is spelled as restore text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RuleSet {
    /// the address family of every address, network and set below
    pub family: Family,
    /// the node's own addresses (accepted before isolation)
    pub node_addresses: Vec<IpAddr>,
    /// local pods with at least one address of the family, by namespace/name
    pub local_pods: Vec<LocalPod>,
    /// local pod CIDRs (an address there without a pod entry is dropped: fail closed)
    pub local_cidrs: Vec<IpNet>,
    /// policy chains, by name
    pub policies: BTreeMap<String, PolicyChain>,
    /// sets, by name
    pub sets: BTreeMap<String, IpSet>,
}
