//! Compiling what changed: one node's rule set for one address family, kept
//! across syncs and brought up to date from the cluster's change journal
//! ([`Cluster::changes_since`]), so that a pod event costs the policies it
//! touches, not the whole cluster.
//!
//! Two things are kept:
//!
//! - **targets**: for every distinct peer the compiled chains use (a rule's
//!   selector peers with the namespace their scope depends on, an ipBlock, or
//!   "any"), the pods it covers and their addresses, counted, so a pod that
//!   comes, goes or changes is added to or taken out of each target by
//!   testing that one pod (the engine's `scope_includes` and selector match);
//! - **chains**: every compiled policy chain with its sets, the targets it
//!   read and whether it read the local pods (ingress named ports).
//!
//! A chain is compiled again when its policy changed, a target it read
//! changed, or (ingress named ports) a local pod changed; a target is
//! rebuilt from the cluster when a namespace changed and its scope reads
//! namespace labels. The chains are compiled by the same rule logic as
//! [`compile_family`](crate::compile::compile_family) ([`ChainCompiler`]) and the rest (local pods and their
//! isolation, unused sets) by the same functions, so the result is the
//! from-scratch one; the differential tests compare the two after every
//! event of random event streams. Anything the journal cannot account for
//! (another cluster value, more changes than it keeps, a new node view)
//! starts over from nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::IpAddr;
use std::rc::Rc;
use std::sync::Arc;

use tierguard::journal::{Changed, Revision};
use tierguard::policy::{Direction, IpBlock, NamespaceScope, Peer, Policy, PolicyId};
use tierguard::{Cluster, ContainerPort, PodInfo};

use crate::compile::{
    ChainCompiler, NodeView, PodIndex, Target, is_local_in, isolation, local_pods, scope_key, used_sets,
};
use crate::ruleset::{Family, IpSet, PolicyChain, RuleSet, SetEntry};

/// A pod, by namespace and name (the cluster's order).
type PodKey = (String, String);

/// A peer as the targets are keyed: what the pods it covers depend on.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum TargetId {
    Any,
    /// selector peers, each with the policy namespace its scope depends on ("" for none)
    Pods(Vec<(String, Peer)>),
    Block(IpBlock),
}

impl TargetId {
    fn of(target: &Target<'_>, namespace: &str) -> TargetId {
        match target {
            Target::Any => TargetId::Any,
            Target::Block(_, block) => TargetId::Block((*block).clone()),
            Target::Pods(peers) => TargetId::Pods(
                peers
                    .iter()
                    .map(|peer| match peer {
                        Peer::Pods { namespaces, .. } => {
                            (scope_key(namespaces, namespace).to_string(), (*peer).clone())
                        }
                        Peer::Block(_) => (String::new(), (*peer).clone()),
                    })
                    .collect(),
            ),
        }
    }

    /// Whether `pod` is one of the pods this peer covers: the decision of
    /// `ClusterIndex::pods_of`, for one pod.
    fn covers(&self, cluster: &Cluster, family: Family, pod: &PodInfo) -> bool {
        if pod.host_network {
            return false;
        }
        match self {
            TargetId::Any => true,
            TargetId::Block(block) => pod.ips.iter().any(|ip| family.has_addr(ip) && block.contains(ip)),
            TargetId::Pods(peers) => peers.iter().any(|(namespace, peer)| match peer {
                Peer::Pods { namespaces, pods } => {
                    cluster.scope_includes(namespaces, namespace, &pod.namespace) && pods.matches(&pod.labels)
                }
                Peer::Block(_) => false,
            }),
        }
    }

    /// Whether the pods covered depend on namespace labels.
    fn reads_namespace_labels(&self) -> bool {
        match self {
            TargetId::Pods(peers) => peers.iter().any(|(_, peer)| {
                matches!(
                    peer,
                    Peer::Pods {
                        namespaces: NamespaceScope::Matching(_),
                        ..
                    }
                )
            }),
            TargetId::Any | TargetId::Block(_) => false,
        }
    }
}

/// What a chain reads of a covered pod.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Member {
    ips: Vec<IpAddr>,
    ports: Vec<ContainerPort>,
}

impl Member {
    fn of(pod: &PodInfo, family: Family) -> Member {
        Member {
            ips: pod.ips.iter().copied().filter(|ip| family.has_addr(ip)).collect(),
            ports: pod.ports.clone(),
        }
    }
}

/// The pods one peer covers, kept up to date.
#[derive(Debug, Default)]
struct TargetState {
    /// the covered pods, with what a chain reads of them: their addresses of the
    /// family and their ports (named egress ports)
    members: BTreeMap<PodKey, Member>,
    /// how many members hold each address (two pods can report one address)
    counts: HashMap<IpAddr, usize>,
    /// the addresses, as hash:ip entries
    entries: Arc<BTreeSet<SetEntry>>,
}

impl TargetState {
    /// The state of `id` from the whole cluster: [`TargetId::covers`] for every pod,
    /// with a selector peer's scope decided once per namespace rather than per pod.
    fn build(id: &TargetId, cluster: &Cluster, family: Family) -> TargetState {
        let mut state = TargetState::default();
        let TargetId::Pods(peers) = id else {
            for pod in cluster.pods().filter(|pod| id.covers(cluster, family, pod)) {
                state.insert(pod, family);
            }
            return state;
        };
        for namespace in cluster.pod_namespaces() {
            let selectors: Vec<&tierguard::Selector> = peers
                .iter()
                .filter_map(|(policy_namespace, peer)| match peer {
                    Peer::Pods { namespaces, pods }
                        if cluster.scope_includes(namespaces, policy_namespace, namespace) =>
                    {
                        Some(pods)
                    }
                    _ => None,
                })
                .collect();
            if selectors.is_empty() {
                continue;
            }
            for pod in cluster.pods_in(namespace) {
                if !pod.host_network && selectors.iter().any(|s| s.matches(&pod.labels)) {
                    state.insert(pod, family);
                }
            }
        }
        state
    }

    fn insert(&mut self, pod: &PodInfo, family: Family) {
        let member = Member::of(pod, family);
        let entries = Arc::make_mut(&mut self.entries);
        for ip in &member.ips {
            let count = self.counts.entry(*ip).or_default();
            *count += 1;
            if *count == 1 {
                entries.insert(SetEntry::Ip(*ip));
            }
        }
        self.members.insert((pod.namespace.clone(), pod.name.clone()), member);
    }

    fn remove(&mut self, key: &PodKey) {
        let Some(member) = self.members.remove(key) else {
            return;
        };
        let entries = Arc::make_mut(&mut self.entries);
        for ip in member.ips {
            if let Some(count) = self.counts.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    self.counts.remove(&ip);
                    entries.remove(&SetEntry::Ip(ip));
                }
            }
        }
    }
}

/// A compiled policy chain and what it was compiled from.
#[derive(Debug)]
struct CachedChain {
    chain: PolicyChain,
    /// the sets its matches use
    sets: BTreeMap<String, IpSet>,
    /// the targets it read (indices into `IncrementalCompiler::targets`)
    targets: Vec<usize>,
    /// when it read the local pods (ingress named ports): those its policy selected then
    local_selected: Option<BTreeSet<PodKey>>,
}

/// What the last update did (for logs, metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UpdateStats {
    /// whether it started over (first use, another cluster, journal overrun, new node view)
    pub from_scratch: bool,
    /// changes read from the journal
    pub changes: usize,
    /// policy chains compiled
    pub chains_compiled: usize,
    /// targets rebuilt from the whole cluster (new ones, or after a namespace change)
    pub targets_built: usize,
}

/// One node's rule set for one family, compiled incrementally; see the module docs.
#[derive(Debug)]
pub struct IncrementalCompiler {
    family: Family,
    node: NodeView,
    /// the cluster revision the state below reflects; `None`: nothing kept
    revision: Option<Revision>,
    targets: Vec<(TargetId, TargetState)>,
    target_index: HashMap<TargetId, usize>,
    chains: HashMap<(PolicyId, Direction), CachedChain>,
    /// the local pods of the last compile
    local: BTreeSet<PodKey>,
    last: UpdateStats,
}

impl IncrementalCompiler {
    /// A compiler that keeps nothing yet.
    pub fn new(family: Family) -> Self {
        IncrementalCompiler {
            family,
            node: NodeView::default(),
            revision: None,
            targets: Vec::new(),
            target_index: HashMap::new(),
            chains: HashMap::new(),
            local: BTreeSet::new(),
            last: UpdateStats::default(),
        }
    }

    /// What the last [`IncrementalCompiler::compile`] did.
    pub fn last_update(&self) -> UpdateStats {
        self.last
    }

    /// Forgets everything: the next compile starts over.
    pub fn reset(&mut self) {
        self.revision = None;
        self.targets.clear();
        self.target_index.clear();
        self.chains.clear();
        self.local.clear();
    }

    /// The rule set of `node` for `cluster`: equal to
    /// [`compile_family`](crate::compile::compile_family)`(cluster, node, family)`, at the cost of what
    /// changed since the last call.
    pub fn compile(&mut self, cluster: &Cluster, node: &NodeView) -> RuleSet {
        let mut stats = UpdateStats::default();
        let changes = match self.revision {
            Some(revision) if self.same_node(node) => cluster
                .changes_since(revision)
                .map(|changes| changes.cloned().collect::<Vec<Changed>>()),
            _ => None,
        };
        match changes {
            Some(changes) => {
                stats.changes = changes.len();
                self.catch_up(cluster, &changes, &mut stats);
            }
            None => {
                self.reset();
                self.node = node.clone();
                stats.from_scratch = true;
            }
        }
        self.revision = Some(cluster.revision());
        let rules = self.assemble(cluster, node, &mut stats);
        self.last = stats;
        rules
    }

    fn same_node(&self, node: &NodeView) -> bool {
        self.node.name == node.name && self.node.addresses == node.addresses && self.node.pod_cidrs == node.pod_cidrs
    }

    /// Brings targets up to date with `changes` and drops the chains they invalidate.
    fn catch_up(&mut self, cluster: &Cluster, changes: &[Changed], stats: &mut UpdateStats) {
        let family = self.family;
        let mut pods: BTreeSet<(&str, &str)> = BTreeSet::new();
        let mut namespaces_changed = false;
        let mut policies: HashSet<&PolicyId> = HashSet::new();
        for change in changes {
            match change {
                Changed::Pod { namespace, name } => {
                    pods.insert((namespace, name));
                }
                Changed::Namespace(_) => namespaces_changed = true,
                Changed::Policy(id) => {
                    policies.insert(id);
                }
            }
        }
        // Which targets change, decided before any is touched: the chains that read
        // them go first, so their sets are the targets' only holders and change in place.
        let mut rebuilt: HashSet<usize> = HashSet::new();
        if namespaces_changed {
            rebuilt.extend(
                self.targets
                    .iter()
                    .enumerate()
                    .filter(|(_, (id, _))| id.reads_namespace_labels())
                    .map(|(i, _)| i),
            );
        }
        // Local pods that came, went or changed: the chains that read local pods
        // (ingress named ports) redo when such a pod was or is selected by their policy.
        let mut local_changed: Vec<(PodKey, Option<&PodInfo>)> = Vec::new();
        let mut moves: Vec<(usize, PodKey, Option<&PodInfo>)> = Vec::new();
        for (namespace, name) in &pods {
            let pod = cluster.pod(namespace, name);
            let key: PodKey = (namespace.to_string(), name.to_string());
            let local_now = pod.filter(|p| is_local_in(p, &self.node, family));
            if local_now.is_some() || self.local.contains(&key) {
                local_changed.push((key.clone(), local_now));
            }
            for (i, (id, state)) in self.targets.iter().enumerate() {
                if rebuilt.contains(&i) {
                    continue;
                }
                let now = pod.filter(|p| id.covers(cluster, family, p));
                let was = state.members.get(&key);
                // A member that stays, with the same addresses and ports (a label
                // change that does not matter here), changes nothing.
                let same = match (was, now) {
                    (Some(member), Some(pod)) => *member == Member::of(pod, family),
                    (None, None) => true,
                    _ => false,
                };
                if !same {
                    moves.push((i, key.clone(), now));
                }
            }
        }
        let changed: HashSet<usize> = rebuilt
            .iter()
            .copied()
            .chain(moves.iter().map(|(i, _, _)| *i))
            .collect();
        let reads_changed_local = |id: &PolicyId, cached: &CachedChain| {
            cached.local_selected.as_ref().is_some_and(|selected| {
                local_changed.iter().any(|(key, now)| {
                    selected.contains(key)
                        || now.is_some_and(|pod| cluster.policy(id).is_some_and(|p| cluster.selects(p, pod)))
                })
            })
        };
        self.chains.retain(|(policy, _), cached| {
            !policies.contains(policy)
                && !reads_changed_local(policy, cached)
                && !cached.targets.iter().any(|t| changed.contains(t))
        });
        for i in rebuilt {
            let (id, state) = &mut self.targets[i];
            *state = TargetState::build(id, cluster, family);
            stats.targets_built += 1;
        }
        for (i, key, now) in moves {
            let state = &mut self.targets[i].1;
            state.remove(&key);
            if let Some(pod) = now {
                state.insert(pod, family);
            }
        }
        for (key, now) in local_changed {
            if now.is_some() {
                self.local.insert(key);
            } else {
                self.local.remove(&key);
            }
        }
    }

    /// Drops the chains no local pod needs and, once most targets are unused, the
    /// targets no chain reads (a policy churned away must not be kept up to date forever).
    fn collect_garbage(&mut self, needed: &BTreeSet<(PolicyId, Direction)>) {
        self.chains.retain(|key, _| needed.contains(key));
        let used: BTreeSet<usize> = self.chains.values().flat_map(|c| c.targets.iter().copied()).collect();
        if used.len() * 2 >= self.targets.len() {
            return;
        }
        let mut renumbered: HashMap<usize, usize> = HashMap::new();
        let mut kept = Vec::with_capacity(used.len());
        for (i, target) in std::mem::take(&mut self.targets).into_iter().enumerate() {
            if used.contains(&i) {
                renumbered.insert(i, kept.len());
                kept.push(target);
            }
        }
        self.targets = kept;
        self.target_index = self
            .targets
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (id.clone(), i))
            .collect();
        for cached in self.chains.values_mut() {
            for t in &mut cached.targets {
                if let Some(new) = renumbered.get(t) {
                    *t = *new;
                }
            }
        }
    }

    /// The local pods, their isolation and the chains they need (compiled
    /// where not kept), as a rule set.
    fn assemble(&mut self, cluster: &Cluster, node: &NodeView, stats: &mut UpdateStats) -> RuleSet {
        let family = self.family;
        // Kept up to date pod by pod in `catch_up`; a scan of the cluster when starting over.
        if stats.from_scratch {
            self.local = local_pods(cluster, node, family)
                .map(|p| (p.namespace.clone(), p.name.clone()))
                .collect();
        }
        let local: Vec<&PodInfo> = self
            .local
            .iter()
            .filter_map(|(namespace, name)| cluster.pod(namespace, name))
            .collect();
        let mut needed: BTreeSet<(PolicyId, Direction)> = BTreeSet::new();
        let local_pods = isolation(cluster, node, family, &local, |policy, direction| {
            let key = (policy.id.clone(), direction);
            if !self.chains.contains_key(&key) {
                let cached = self.compile_chain(cluster, &local, policy, direction, stats);
                self.chains.insert(key.clone(), cached);
            }
            let name = self
                .chains
                .get(&key)
                .filter(|c| !c.chain.matches.is_empty())
                .map(|c| c.chain.chain.clone());
            needed.insert(key);
            name
        });
        self.collect_garbage(&needed);
        let mut policies: BTreeMap<String, PolicyChain> = BTreeMap::new();
        let mut sets: BTreeMap<String, IpSet> = BTreeMap::new();
        for key in &needed {
            let Some(cached) = self.chains.get(key) else { continue };
            if cached.chain.matches.is_empty() {
                continue;
            }
            policies.insert(cached.chain.chain.clone(), cached.chain.clone());
            sets.extend(cached.sets.iter().map(|(name, set)| (name.clone(), set.clone())));
        }
        RuleSet {
            family,
            node_addresses: node
                .addresses
                .iter()
                .copied()
                .filter(|ip| family.has_addr(ip))
                .collect(),
            local_pods,
            local_cidrs: node.pod_cidrs.iter().copied().filter(|n| family.has_net(n)).collect(),
            policies,
            sets,
        }
    }

    fn compile_chain<'a>(
        &mut self,
        cluster: &'a Cluster,
        local: &[&'a PodInfo],
        policy: &'a Policy,
        direction: Direction,
        stats: &mut UpdateStats,
    ) -> CachedChain {
        stats.chains_compiled += 1;
        let mut index = KeptIndex {
            cluster,
            family: self.family,
            targets: &mut self.targets,
            target_index: &mut self.target_index,
            read: Vec::new(),
            built: 0,
        };
        let mut compiler = ChainCompiler {
            cluster,
            family: self.family,
            local,
            index: &mut index,
            sets: BTreeMap::new(),
        };
        let chain = compiler.policy_chain(policy, direction);
        let sets = used_sets(std::iter::once(&chain), std::mem::take(&mut compiler.sets));
        stats.targets_built += index.built;
        let mut targets = index.read;
        targets.sort_unstable();
        targets.dedup();
        // Only ingress named ports look at the local pods.
        let reads_local = direction == Direction::Ingress
            && policy.rules(direction).iter().any(|rule| {
                rule.ports
                    .iter()
                    .any(|port| matches!(port.port, tierguard::policy::PortMatch::Named(_)))
            });
        let local_selected = reads_local.then(|| {
            local
                .iter()
                .filter(|pod| cluster.selects(policy, pod))
                .map(|pod| (pod.namespace.clone(), pod.name.clone()))
                .collect()
        });
        CachedChain {
            chain,
            sets,
            targets,
            local_selected,
        }
    }
}

/// The kept targets as a [`PodIndex`], recording which ones a chain reads and
/// building the ones not kept yet.
struct KeptIndex<'a, 's> {
    cluster: &'a Cluster,
    family: Family,
    targets: &'s mut Vec<(TargetId, TargetState)>,
    target_index: &'s mut HashMap<TargetId, usize>,
    read: Vec<usize>,
    built: usize,
}

impl KeptIndex<'_, '_> {
    fn target(&mut self, target: &Target<'_>, namespace: &str) -> usize {
        let id = TargetId::of(target, namespace);
        let i = match self.target_index.get(&id) {
            Some(i) => *i,
            None => {
                let state = TargetState::build(&id, self.cluster, self.family);
                self.built += 1;
                self.targets.push((id.clone(), state));
                let i = self.targets.len() - 1;
                self.target_index.insert(id, i);
                i
            }
        };
        self.read.push(i);
        i
    }
}

impl<'a> PodIndex<'a> for KeptIndex<'a, '_> {
    fn pods_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Rc<Vec<&'a PodInfo>> {
        let i = self.target(target, namespace);
        let cluster = self.cluster;
        Rc::new(
            self.targets[i]
                .1
                .members
                .keys()
                .filter_map(|(namespace, name)| cluster.pod(namespace, name))
                .collect(),
        )
    }

    fn entries_of(&mut self, target: &Target<'a>, namespace: &'a str) -> Arc<BTreeSet<SetEntry>> {
        let i = self.target(target, namespace);
        Arc::clone(&self.targets[i].1.entries)
    }
}
