//! Compilation: the cluster, seen from one node, into abstract rule sets
//! (which local pods are isolated by which policies, and what each policy's
//! rules match, as address sets and ports). Peer and port matching use the
//! engine's own pieces (`Cluster::isolating`, `Cluster::scope_includes` and
//! the peer's `Selector::matches`, which is what `Cluster::peer_matches` does
//! for a pod; `IpBlock::contains`; `PodInfo::named_port`), memoised per
//! distinct peer within one compile, so the data plane cannot disagree with
//! the model (the differential tests check it packet by packet).
//!
//! Host-network pods are left out entirely: they are never local (their
//! traffic is the node's, which is accepted as such) and never in a selector
//! peer's set or a named port's destinations (their address is the node's;
//! only ipBlocks match it), as in the engine.
//!
//! One rule set per address family ([`Family`]): the IPv4 rule set holds the
//! IPv4 pod addresses and IPv4 ipBlocks only, the IPv6 one the IPv6 ones
//! (rendered for `ip6tables-restore`, sets of `family inet6`). An ipBlock of
//! one family never matches an address of the other.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::rc::Rc;
use std::sync::Arc;

use ipnet::IpNet;
use tierguard::Cluster;
use tierguard::PodInfo;
use tierguard::labels::Labels;
use tierguard::policy::{Direction, IpBlock, NamespaceScope, Peer, Policy, PortMatch, Rule};

use crate::naming;
pub use crate::ruleset::{
    Family, IpSet, Isolation, LocalPod, Match, PeerMatch, PolicyChain, PortSpec, RuleSet, SetEntry, SetKind,
};

/// Inputs besides the cluster.
#[derive(Clone, Debug, Default)]
pub struct NodeView {
    /// the node's name (pods with this `spec.nodeName` are local)
    pub name: String,
    /// the node's own addresses
    pub addresses: Vec<IpAddr>,
    /// this node's pod CIDRs, if known (fail closed for pods not yet seen)
    pub pod_cidrs: Vec<IpNet>,
}

fn addrs(ips: &[IpAddr], family: Family) -> impl Iterator<Item = IpAddr> + '_ {
    ips.iter().copied().filter(move |ip| family.has_addr(ip))
}

/// hash:net rejects /0: split it into two halves.
fn net_entries(net: IpNet) -> Vec<IpNet> {
    if net.prefix_len() == 0 {
        let halves: [&str; 2] = match net {
            IpNet::V4(_) => ["0.0.0.0/1", "128.0.0.0/1"],
            IpNet::V6(_) => ["::/1", "8000::/1"],
        };
        halves.iter().filter_map(|s| s.parse().ok()).collect()
    } else {
        vec![net]
    }
}

/// The entries of an ipBlock's set, `None` when the block is of the other family.
fn block_set(block: &IpBlock, family: Family) -> Option<BTreeSet<SetEntry>> {
    let cidr = block.cidr;
    if !family.has_net(&cidr) {
        return None;
    }
    // ipset stores networks masked, so entries are masked here too: two spellings of
    // one network (Kubernetes accepts host bits, 10.0.0.7/24) are one element, and
    // the same element twice in a set is refused by `ipset restore` (or, under
    // -exist, silently overwritten in script order).
    let mut entries: BTreeSet<SetEntry> = net_entries(cidr.trunc()).into_iter().map(SetEntry::Net).collect();
    for hole in &block.except {
        if family.has_net(hole) {
            let hole = hole.trunc();
            // A hole equal to a network entry (a half of a split /0) replaces it.
            entries.remove(&SetEntry::Net(hole));
            entries.insert(SetEntry::NoMatch(hole));
        }
    }
    Some(entries)
}

/// One peer of a rule, before ports are applied.
pub(crate) enum Target<'r> {
    Any,
    /// the union of the rule's selector peers
    Pods(Vec<&'r Peer>),
    Block(usize, &'r IpBlock),
}

/// Where a compile finds the pods a rule's peer covers: an index of the whole
/// cluster built for one compile ([`compile_family`]), or targets kept up to
/// date across syncs ([`crate::incremental`]). The rule logic above it is one
/// and the same, so the two cannot spell a chain differently.
pub(crate) trait PodIndex<'a> {
    /// The pods (never host-network ones) `target` covers as a peer of a
    /// policy in `namespace`, in cluster order.
    fn pods_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Rc<Vec<&'a PodInfo>>;

    /// Their addresses of the compile's family, as hash:ip entries.
    fn entries_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Arc<BTreeSet<SetEntry>>;
}

/// The index of a whole cluster for one compile: every pod policies can name,
/// grouped by namespace and by label class, with the answers memoised per
/// distinct peer.
struct ClusterIndex<'a> {
    cluster: &'a Cluster,
    family: Family,
    /// every pod of the cluster that policies can name (not host-network), in
    /// cluster order (namespace, then name)
    all: Vec<&'a PodInfo>,
    /// per pod of `all`: its label class (pods with equal labels share one, so a
    /// selector is evaluated once per class)
    class: Vec<usize>,
    /// the labels of each class
    class_labels: Vec<&'a Labels>,
    /// the pod namespaces, in cluster order, with their pods' range in `all`
    namespaces: Vec<(&'a str, Range<usize>)>,
    /// memo: the namespaces (indices into `namespaces`) a scope includes, by
    /// (policy namespace for `Own`, "" for `Matching`; scope)
    scopes: HashMap<(&'a str, &'a NamespaceScope), Rc<Vec<usize>>>,
    /// memo: the pods a target covers
    targets: HashMap<TargetKey<'a>, Rc<Vec<&'a PodInfo>>>,
    /// memo: the hash:ip entries of a target's pods
    entries: HashMap<TargetKey<'a>, Arc<BTreeSet<SetEntry>>>,
}

/// What the pods a target covers depend on (besides the cluster): a selector peer
/// depends on the policy's namespace only when its scope is the policy's own namespace.
#[derive(Clone, PartialEq, Eq, Hash)]
enum TargetKey<'a> {
    Any,
    Pods(Vec<(&'a str, &'a Peer)>),
    Block(&'a IpBlock),
}

/// The policy namespace a scope's decisions depend on ("" when none).
pub(crate) fn scope_key<'a>(scope: &NamespaceScope, policy_namespace: &'a str) -> &'a str {
    match scope {
        NamespaceScope::Own => policy_namespace,
        NamespaceScope::Matching(_) => "",
    }
}

impl<'a> ClusterIndex<'a> {
    fn new(cluster: &'a Cluster, family: Family) -> Self {
        let mut index = ClusterIndex {
            cluster,
            family,
            all: cluster.pods().filter(|p| !p.host_network).collect(),
            class: Vec::new(),
            class_labels: Vec::new(),
            namespaces: Vec::new(),
            scopes: HashMap::new(),
            targets: HashMap::new(),
            entries: HashMap::new(),
        };
        let mut classes: HashMap<&Labels, usize> = HashMap::new();
        for pod in &index.all {
            let next = index.class_labels.len();
            let class = *classes.entry(&pod.labels).or_insert(next);
            if class == next {
                index.class_labels.push(&pod.labels);
            }
            index.class.push(class);
        }
        for (i, pod) in index.all.iter().enumerate() {
            match index.namespaces.last_mut() {
                Some((namespace, range)) if *namespace == pod.namespace.as_str() => range.end = i + 1,
                _ => index.namespaces.push((pod.namespace.as_str(), i..i + 1)),
            }
        }
        index
    }

    fn target_key(target: &Target<'a>, namespace: &'a str) -> TargetKey<'a> {
        match target {
            Target::Any => TargetKey::Any,
            Target::Block(_, block) => TargetKey::Block(block),
            Target::Pods(peers) => TargetKey::Pods(
                peers
                    .iter()
                    .map(|peer| match peer {
                        Peer::Pods { namespaces, .. } => (scope_key(namespaces, namespace), *peer),
                        Peer::Block(_) => ("", *peer),
                    })
                    .collect(),
            ),
        }
    }

    /// The namespaces (indices into `self.namespaces`) a scope of a peer of a policy in
    /// `namespace` includes: the engine's `scope_includes`, once per namespace.
    fn scope_namespaces(&mut self, scope: &'a NamespaceScope, namespace: &'a str) -> Rc<Vec<usize>> {
        let key = (scope_key(scope, namespace), scope);
        if let Some(found) = self.scopes.get(&key) {
            return Rc::clone(found);
        }
        let cluster = self.cluster;
        let found: Rc<Vec<usize>> = Rc::new(
            self.namespaces
                .iter()
                .enumerate()
                .filter(|(_, (pod_namespace, _))| cluster.scope_includes(scope, namespace, pod_namespace))
                .map(|(i, _)| i)
                .collect(),
        );
        self.scopes.insert(key, Rc::clone(&found));
        found
    }
}

impl<'a> PodIndex<'a> for ClusterIndex<'a> {
    /// Selector peers look at the namespaces their scope includes only; the decision
    /// per pod is the engine's (`scope_includes` + selector, as in `peer_matches`).
    fn pods_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Rc<Vec<&'a PodInfo>> {
        let key = Self::target_key(target, namespace);
        if let Some(found) = self.targets.get(&key) {
            return Rc::clone(found);
        }
        let family = self.family;
        let found: Vec<&'a PodInfo> = match target {
            Target::Any => self.all.clone(),
            Target::Block(_, block) => self
                .all
                .iter()
                .filter(|pod| addrs(&pod.ips, family).any(|ip| block.contains(&ip)))
                .copied()
                .collect(),
            Target::Pods(peers) => {
                let mut covered = vec![false; self.all.len()];
                for peer in peers {
                    let Peer::Pods { namespaces, pods } = peer else {
                        continue;
                    };
                    let mut verdicts: Vec<Option<bool>> = vec![None; self.class_labels.len()];
                    for ns in self.scope_namespaces(namespaces, namespace).iter() {
                        let range = self.namespaces[*ns].1.clone();
                        for i in range {
                            if covered[i] {
                                continue;
                            }
                            let class = self.class[i];
                            let labels = self.class_labels[class];
                            if *verdicts[class].get_or_insert_with(|| pods.matches(labels)) {
                                covered[i] = true;
                            }
                        }
                    }
                }
                covered
                    .iter()
                    .zip(&self.all)
                    .filter(|(c, _)| **c)
                    .map(|(_, pod)| *pod)
                    .collect()
            }
        };
        let found = Rc::new(found);
        self.targets.insert(key, Rc::clone(&found));
        found
    }

    fn entries_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Arc<BTreeSet<SetEntry>> {
        let memo = Self::target_key(target, namespace);
        if let Some(entries) = self.entries.get(&memo) {
            return Arc::clone(entries);
        }
        let family = self.family;
        let entries: Arc<BTreeSet<SetEntry>> = Arc::new(
            self.pods_of(target, namespace)
                .iter()
                .flat_map(|pod| addrs(&pod.ips, family))
                .map(SetEntry::Ip)
                .collect(),
        );
        self.entries.insert(memo, Arc::clone(&entries));
        entries
    }
}

/// Compiles policy chains: the rule logic, over any [`PodIndex`]. The sets a
/// chain uses are collected in `sets` (their names are the policy's own, so
/// no two chains share one).
pub(crate) struct ChainCompiler<'a, 'i, I> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) family: Family,
    /// local pods (with addresses of the family), in cluster order
    pub(crate) local: &'i [&'a PodInfo],
    pub(crate) index: &'i mut I,
    pub(crate) sets: BTreeMap<String, IpSet>,
}

impl<'a, I: PodIndex<'a>> ChainCompiler<'a, '_, I> {
    fn add_set(&mut self, key: String, kind: SetKind, entries: Arc<BTreeSet<SetEntry>>) -> String {
        let name = naming::family_set_name(self.family, &key);
        self.sets.insert(
            name.clone(),
            IpSet {
                kind,
                entries,
                about: key,
            },
        );
        name
    }

    fn ip_set(&mut self, key: String, pods: impl Iterator<Item = &'a PodInfo>) -> String {
        let family = self.family;
        let entries = pods.flat_map(|p| addrs(&p.ips, family)).map(SetEntry::Ip).collect();
        self.add_set(key, SetKind::HashIp, Arc::new(entries))
    }

    /// The hash:ip set of the pods a target covers.
    fn target_set(&mut self, key: String, target: &Target<'a>, namespace: &'a str) -> String {
        let entries = self.index.entries_of(target, namespace);
        self.add_set(key, SetKind::HashIp, entries)
    }

    fn rule_matches(&mut self, policy: &'a Policy, direction: Direction, index: usize, rule: &'a Rule) -> Vec<Match> {
        let base = format!("{}/{} {direction}[{index}]", policy.id.namespace, policy.id.name);
        let targets: Vec<Target<'a>> = match &rule.peers {
            None => vec![Target::Any],
            Some(peers) => {
                let pods: Vec<&Peer> = peers.iter().filter(|p| matches!(p, Peer::Pods { .. })).collect();
                let mut targets = Vec::new();
                if !pods.is_empty() {
                    targets.push(Target::Pods(pods));
                }
                for (i, peer) in peers.iter().enumerate() {
                    if let Peer::Block(block) = peer {
                        targets.push(Target::Block(i, block));
                    }
                }
                targets
            }
        };
        let mut out = Vec::new();
        for target in &targets {
            // The set of the peer side, built on first use (named egress ports build their own).
            let mut peer_set: Option<PeerMatch> = None;
            let mut peer_match = |this: &mut Self| -> Option<PeerMatch> {
                if let Some(m) = &peer_set {
                    return Some(m.clone());
                }
                let m = match target {
                    Target::Any => PeerMatch::Any,
                    Target::Pods(_) => {
                        PeerMatch::Set(this.target_set(format!("{base} pods"), target, &policy.id.namespace))
                    }
                    Target::Block(i, block) => {
                        let entries = Arc::new(block_set(block, this.family)?);
                        PeerMatch::Set(this.add_set(format!("{base} ipBlock[{i}]"), SetKind::HashNet, entries))
                    }
                };
                peer_set = Some(m.clone());
                Some(m)
            };
            let ports: Vec<Option<(usize, &tierguard::policy::PolicyPort)>> = if rule.ports.is_empty() {
                vec![None]
            } else {
                rule.ports.iter().enumerate().map(Some).collect()
            };
            for port in ports {
                let Some((port_index, port)) = port else {
                    if let Some(peer) = peer_match(self) {
                        out.push(Match {
                            rule: index,
                            peer,
                            port: PortSpec::Any,
                            local_destinations: None,
                        });
                    }
                    continue;
                };
                let protocol = port.protocol;
                match &port.port {
                    PortMatch::All | PortMatch::Range { .. } => {
                        let spec = match port.port {
                            PortMatch::Range { start, end } => PortSpec::Range { protocol, start, end },
                            _ => PortSpec::Protocol(protocol),
                        };
                        if let Some(peer) = peer_match(self) {
                            out.push(Match {
                                rule: index,
                                peer,
                                port: spec,
                                local_destinations: None,
                            });
                        }
                    }
                    PortMatch::Named(name) => {
                        let named = format!("{base} ports[{port_index}] {protocol}/{name}");
                        match direction {
                            // Resolved on the destination: the local pods this policy selects.
                            Direction::Ingress => {
                                let Some(peer) = peer_match(self) else { continue };
                                let mut groups: BTreeMap<u16, Vec<&'a PodInfo>> = BTreeMap::new();
                                for pod in self.local.iter().copied() {
                                    if self.cluster.selects(policy, pod)
                                        && let Some(n) = pod.named_port(name, protocol)
                                    {
                                        groups.entry(n).or_default().push(pod);
                                    }
                                }
                                for (n, pods) in groups {
                                    let set = self.ip_set(format!("{named}={n} destinations"), pods.into_iter());
                                    out.push(Match {
                                        rule: index,
                                        peer: peer.clone(),
                                        port: PortSpec::Range {
                                            protocol,
                                            start: n,
                                            end: n,
                                        },
                                        local_destinations: Some(set),
                                    });
                                }
                            }
                            // Resolved on each destination pod the peer covers.
                            Direction::Egress => {
                                let mut groups: BTreeMap<u16, Vec<&'a PodInfo>> = BTreeMap::new();
                                let covered = self.index.pods_of(target, &policy.id.namespace);
                                for pod in covered.iter().copied() {
                                    if let Some(n) = pod.named_port(name, protocol) {
                                        groups.entry(n).or_default().push(pod);
                                    }
                                }
                                let which = match target {
                                    Target::Any => "any".to_string(),
                                    Target::Pods(_) => "pods".to_string(),
                                    Target::Block(i, _) => format!("ipBlock[{i}]"),
                                };
                                for (n, pods) in groups {
                                    let set = self.ip_set(format!("{named}={n} {which}"), pods.into_iter());
                                    out.push(Match {
                                        rule: index,
                                        peer: PeerMatch::Set(set),
                                        port: PortSpec::Range {
                                            protocol,
                                            start: n,
                                            end: n,
                                        },
                                        local_destinations: None,
                                    });
                                }
                            }
                        }
                    }
                }
            }
        }
        out
    }

    pub(crate) fn policy_chain(&mut self, policy: &'a Policy, direction: Direction) -> PolicyChain {
        let mut matches = Vec::new();
        for (index, rule) in policy.rules(direction).iter().enumerate() {
            matches.extend(self.rule_matches(policy, direction, index, rule));
        }
        PolicyChain {
            policy: policy.id.clone(),
            direction,
            chain: naming::policy_chain_name(&policy.id, direction),
            matches,
        }
    }
}

/// Whether a pod runs on `node`, is not a host-network pod, and has an IPv4
/// address that is not the node's own (host-network pods share the node's
/// address and are not subject to NetworkPolicy; the address check also
/// keeps a pod whose `hostNetwork` was not reported off the node's address).
pub fn is_local(pod: &PodInfo, node: &NodeView) -> bool {
    is_local_in(pod, node, Family::V4)
}

/// [`is_local`] for one address family.
pub fn is_local_in(pod: &PodInfo, node: &NodeView, family: Family) -> bool {
    !pod.host_network
        && pod.node.as_deref() == Some(node.name.as_str())
        && addrs(&pod.ips, family).any(|ip| !node.addresses.contains(&ip))
}

/// Compiles the IPv4 rule set of `node`.
pub fn compile(cluster: &Cluster, node: &NodeView) -> RuleSet {
    compile_family(cluster, node, Family::V4)
}

/// Compiles the rule set of `node` for one address family.
pub fn compile_family(cluster: &Cluster, node: &NodeView, family: Family) -> RuleSet {
    let local: Vec<&PodInfo> = local_pods(cluster, node, family).collect();
    let mut index = ClusterIndex::new(cluster, family);
    let mut compiler = ChainCompiler {
        cluster,
        family,
        local: &local,
        index: &mut index,
        sets: BTreeMap::new(),
    };
    let mut policies: BTreeMap<String, PolicyChain> = BTreeMap::new();
    let local_pods = isolation(cluster, node, family, &local, |policy, direction| {
        let name = naming::policy_chain_name(&policy.id, direction);
        if !policies.contains_key(&name) {
            let compiled = compiler.policy_chain(policy, direction);
            policies.insert(name.clone(), compiled);
        }
        policies
            .get(&name)
            .is_some_and(|c| !c.matches.is_empty())
            .then_some(name)
    });
    // Policies whose chain has no match are not rendered (the pod chains drop directly),
    // and sets no match refers to are not built.
    policies.retain(|_, chain| !chain.matches.is_empty());
    let sets = used_sets(policies.values(), std::mem::take(&mut compiler.sets));
    RuleSet {
        family,
        node_addresses: addrs(&node.addresses, family).collect(),
        local_pods,
        local_cidrs: node.pod_cidrs.iter().copied().filter(|n| family.has_net(n)).collect(),
        policies,
        sets,
    }
}

/// The pods of `cluster` local to `node` in `family`, in cluster order.
pub(crate) fn local_pods<'a>(
    cluster: &'a Cluster,
    node: &'a NodeView,
    family: Family,
) -> impl Iterator<Item = &'a PodInfo> + 'a {
    cluster.pods().filter(move |p| is_local_in(p, node, family))
}

/// The local pods with their isolation in both directions. `chain_with_matches`
/// compiles (or finds) a policy's chain and gives its name if it has a match:
/// a chain without one is left out of the pod's list (the pod chain drops).
pub(crate) fn isolation<'a>(
    cluster: &'a Cluster,
    node: &NodeView,
    family: Family,
    local: &[&'a PodInfo],
    mut chain_with_matches: impl FnMut(&'a Policy, Direction) -> Option<String>,
) -> Vec<LocalPod> {
    let mut out = Vec::with_capacity(local.len());
    for pod in local.iter().copied() {
        let mut side = |direction: Direction| -> Isolation {
            let isolating: Vec<&Policy> = cluster.isolating(pod, direction).collect();
            if isolating.is_empty() {
                return Isolation::Open;
            }
            let chains = isolating
                .iter()
                .filter_map(|policy| chain_with_matches(policy, direction))
                .collect();
            Isolation::Isolated {
                chain: naming::pod_chain_name(&pod.namespace, &pod.name, direction),
                policies: chains,
                isolated_by: isolating.iter().map(|p| p.id.clone()).collect(),
            }
        };
        let ingress = side(Direction::Ingress);
        let egress = side(Direction::Egress);
        out.push(LocalPod {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            ips: addrs(&pod.ips, family)
                .filter(|ip| !node.addresses.contains(ip))
                .collect(),
            ingress,
            egress,
        });
    }
    out
}

/// The sets of `built` that a match of `chains` refers to.
pub(crate) fn used_sets<'c>(
    chains: impl Iterator<Item = &'c PolicyChain>,
    mut built: BTreeMap<String, IpSet>,
) -> BTreeMap<String, IpSet> {
    let used: BTreeSet<&String> = chains
        .flat_map(|c| c.matches.iter())
        .flat_map(|m| {
            let peer = match &m.peer {
                PeerMatch::Set(name) => Some(name),
                PeerMatch::Any => None,
            };
            peer.into_iter().chain(m.local_destinations.as_ref())
        })
        .collect();
    built.retain(|name, _| used.contains(name));
    built
}
