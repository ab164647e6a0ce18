//! `graph -n NAMESPACE`: the namespace's tier groups as nodes, with the
//! external world, the cluster DNS and other namespaces as peers; the flows
//! the engine allows as edges labelled with ports, each marked as allowed by
//! the template or as an R3 violation; the groups without default-deny (R1)
//! or DNS (R2) marked.
//!
//! A group is judged through a stand-in pod: a pod of the namespace with only
//! the group's tier label (and the container ports of the real pods of the
//! group, so named ports resolve). That is how the guardrails see a tier:
//! by its label, whatever pods carry it today.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use serde::Serialize;
use tierguard::cluster::{Cluster, ContainerPort, PodInfo};
use tierguard::engine::{Endpoint, SideVerdict, Verdict};
use tierguard::guardrails::{Group, PeerTier, Violation, ViolationKey};
use tierguard::labels::Labels;
use tierguard::policy::{Direction, Peer, PortHit, PortMatch, Protocol};
use tierguard::template::{FlowPeer, TierTemplate};

/// What a node stands for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind", content = "name")]
pub enum NodeKind {
    /// pods of a template tier in the namespace (or every pod of a namespace labelled with the tier)
    Tier(String),
    /// pods of the namespace with no template tier
    Untiered,
    /// addresses outside the cluster
    External,
    /// the cluster DNS pods
    Dns,
    /// the pods of another namespace
    Namespace(String),
}

/// A node of the graph.
#[derive(Clone, Debug, Serialize)]
pub struct Node {
    /// stable id (`tier-backend`, `external`, `dns`, `ns-web`)
    pub id: String,
    /// what it is
    pub kind: NodeKind,
    /// the text on it
    pub label: String,
    /// column, left to right
    pub layer: usize,
    /// the directions R1 finds without default-deny
    pub missing_default_deny: Vec<Direction>,
    /// R2: the DNS ports it cannot reach
    pub missing_dns: Vec<String>,
    /// messages of the R1/R2 violations on it
    pub violations: Vec<String>,
}

/// Whether the template allows a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum EdgeStatus {
    /// the template allows it
    Template,
    /// R3: the template does not allow it
    Violation,
}

/// An edge: traffic `from` may send to `to`.
#[derive(Clone, Debug, Serialize)]
pub struct Edge {
    /// source node id
    pub from: String,
    /// destination node id
    pub to: String,
    /// the ports (`TCP/8080`, `any port`); empty when only one side opens it
    pub ports: Vec<String>,
    /// whether both sides allow it (else only a policy on one side opens it, which R3 still flags)
    pub open: bool,
    /// template or violation
    pub status: EdgeStatus,
    /// the R3 messages about it
    pub violations: Vec<String>,
}

/// The graph of one namespace.
#[derive(Clone, Debug, Serialize)]
pub struct Graph {
    /// the namespace
    pub namespace: String,
    /// nodes, by layer then order within it
    pub nodes: Vec<Node>,
    /// edges
    pub edges: Vec<Edge>,
}

/// An address outside every pod network for the external node: the first
/// address of every ipBlock of the policies (minus excepts) is tried, and this
/// one, from TEST-NET-3 (RFC 5737), stands for "the internet".
const EXTERNAL_PROBE: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 1));

/// A port that no policy names, probed to tell "every port" from a list.
const ANY_PORT_PROBE: (Protocol, u16) = (Protocol::Tcp, 65_000);

struct Member {
    id: String,
    pods: Vec<PodInfo>,
    addresses: Vec<IpAddr>,
}

fn stand_in(namespace: &str, name: &str, labels: Labels, ports: Vec<ContainerPort>) -> PodInfo {
    PodInfo {
        namespace: namespace.to_string(),
        name: name.to_string(),
        labels,
        ips: Vec::new(),
        node: None,
        ports,
        host_network: false,
    }
}

fn ports_of<'a>(pods: impl Iterator<Item = &'a PodInfo>) -> Vec<ContainerPort> {
    let set: BTreeSet<(String, u16, Protocol)> = pods
        .flat_map(|p| p.ports.iter())
        .map(|p| (p.name.clone().unwrap_or_default(), p.port, p.protocol))
        .collect();
    set.into_iter()
        .map(|(name, port, protocol)| ContainerPort {
            name: (!name.is_empty()).then_some(name),
            port,
            protocol,
        })
        .collect()
}

/// Layers of the template's tiers: the longest path to a tier along the
/// template's egress flows between tiers (cycles and self-flows ignored), so
/// gateway and frontend come first, then backend, then data.
pub fn tier_layers(template: &TierTemplate) -> BTreeMap<String, usize> {
    let tiers: Vec<&str> = template.tier_names().collect();
    let mut layer: BTreeMap<String, usize> = tiers.iter().map(|t| (t.to_string(), 0)).collect();
    // Bellman-Ford style relaxation, at most |tiers| rounds: a cycle stops growing there.
    for _ in 0..tiers.len() {
        let mut changed = false;
        for from in &tiers {
            let Some(flows) = template.flows(from) else { continue };
            let base = layer.get(*from).copied().unwrap_or(0);
            for peer in &flows.egress_to {
                let FlowPeer::Tier(to) = peer else { continue };
                if to == from || !layer.contains_key(to) {
                    continue;
                }
                // A flow back to an earlier tier that flows forward to this one is a cycle: skip it.
                let back = template
                    .flows(to)
                    .is_some_and(|f| f.egress_to.contains(&FlowPeer::Tier(from.to_string())));
                if back {
                    continue;
                }
                if layer.get(to).copied().unwrap_or(0) < base + 1 && base + 1 < tiers.len() {
                    layer.insert(to.clone(), base + 1);
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// Whether a template flow list (`ingressFrom` / `egressTo`) lets `peer` in or out.
pub fn flow_permits(list: &[FlowPeer], peer: &PeerTier) -> bool {
    list.iter().any(|f| match (f, peer) {
        (FlowPeer::Any, _) => true,
        (FlowPeer::External, PeerTier::External) => true,
        (FlowPeer::Tier(a), PeerTier::Tier(b)) => a == b,
        _ => false,
    })
}

/// Builds the graph of `namespace`.
pub fn build(cluster: &Cluster, template: &TierTemplate, namespace: &str, violations: &[Violation]) -> Graph {
    let layers = tier_layers(template);
    let tier_key = template.tier_label.as_str();
    let ns_labels = cluster.namespace_labels(namespace).into_owned();
    let real: Vec<&PodInfo> = cluster.pods_in(namespace).filter(|p| !p.host_network).collect();
    let max_tier_layer = layers.values().copied().max().unwrap_or(0);

    // The namespace's groups.
    let mut members: Vec<Member> = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    let node = |id: String, kind: NodeKind, label: String, layer: usize| Node {
        id,
        kind,
        label,
        layer,
        missing_default_deny: Vec::new(),
        missing_dns: Vec::new(),
        violations: Vec::new(),
    };
    let namespace_tier = ns_labels.get(tier_key).filter(|t| template.is_tier(t)).cloned();
    let mut peer_tier_of: BTreeMap<String, PeerTier> = BTreeMap::new();
    if let Some(tier) = &namespace_tier {
        let id = format!("tier-{tier}");
        let pods = ports_of(real.iter().copied());
        members.push(Member {
            id: id.clone(),
            pods: vec![stand_in(namespace, &format!("({tier})"), Labels::new(), pods)],
            addresses: Vec::new(),
        });
        peer_tier_of.insert(id.clone(), PeerTier::Tier(tier.clone()));
        nodes.push(node(
            id,
            NodeKind::Tier(tier.clone()),
            format!("{namespace} ({tier})"),
            1 + layers.get(tier).copied().unwrap_or(0),
        ));
    } else {
        for tier in template.tier_names() {
            let id = format!("tier-{tier}");
            let of_tier = real
                .iter()
                .copied()
                .filter(|p| p.labels.get(tier_key).map(String::as_str) == Some(tier));
            let labels = Labels::from([(tier_key.to_string(), tier.to_string())]);
            members.push(Member {
                id: id.clone(),
                pods: vec![stand_in(namespace, &format!("({tier})"), labels, ports_of(of_tier))],
                addresses: Vec::new(),
            });
            peer_tier_of.insert(id.clone(), PeerTier::Tier(tier.to_string()));
            nodes.push(node(
                id,
                NodeKind::Tier(tier.to_string()),
                tier.to_string(),
                1 + layers.get(tier).copied().unwrap_or(0),
            ));
        }
        let untiered: Vec<PodInfo> = real
            .iter()
            .filter(|p| p.labels.get(tier_key).is_none_or(|t| !template.is_tier(t)))
            .map(|p| (*p).clone())
            .collect();
        let untiered_flagged = violations.iter().any(|v| {
            matches!(
                &v.key,
                ViolationKey::DefaultDeny {
                    group: Group::Untiered,
                    ..
                } | ViolationKey::Dns {
                    group: Group::Untiered,
                    ..
                }
            )
        });
        if !untiered.is_empty() || untiered_flagged {
            let pods = if untiered.is_empty() {
                vec![stand_in(namespace, "(untiered)", Labels::new(), Vec::new())]
            } else {
                untiered
            };
            members.push(Member {
                id: "untiered".into(),
                pods,
                addresses: Vec::new(),
            });
            peer_tier_of.insert("untiered".into(), PeerTier::Untiered);
            nodes.push(node("untiered".into(), NodeKind::Untiered, "untiered pods".into(), 1));
        }
    }
    let group_count = members.len();

    // Peers: external, DNS, other namespaces.
    let mut external: Vec<IpAddr> = vec![EXTERNAL_PROBE];
    for policy in cluster.policies() {
        for direction in Direction::BOTH {
            for rule in policy.rules(direction) {
                for peer in rule.peers.iter().flatten() {
                    if let Peer::Block(block) = peer {
                        let ip = block.cidr.network();
                        if block.contains(&ip) && !external.contains(&ip) {
                            external.push(ip);
                        }
                    }
                }
            }
        }
    }
    let pod_ips: BTreeSet<IpAddr> = cluster.pods().flat_map(|p| p.ips.iter().copied()).collect();
    external.retain(|ip| !pod_ips.contains(ip));
    members.push(Member {
        id: "external".into(),
        pods: Vec::new(),
        addresses: external,
    });
    peer_tier_of.insert("external".into(), PeerTier::External);
    nodes.push(node("external".into(), NodeKind::External, "external".into(), 0));
    let peer_layer = max_tier_layer + 2;
    let dns = &template.dns;
    let dns_ports: Vec<ContainerPort> = dns
        .ports
        .iter()
        .map(|(protocol, port)| ContainerPort {
            name: dns.port_names.get(protocol).cloned(),
            port: *port,
            protocol: *protocol,
        })
        .collect();
    if dns.namespace != namespace {
        members.push(Member {
            id: "dns".into(),
            pods: vec![stand_in(&dns.namespace, "(dns)", dns.pod_labels.clone(), dns_ports)],
            addresses: dns.cidrs.iter().map(|c| c.network()).collect(),
        });
        nodes.push(node(
            "dns".into(),
            NodeKind::Dns,
            format!("DNS ({})", dns.namespace),
            peer_layer,
        ));
    }
    let mut others: BTreeSet<String> = cluster.namespaces().map(|n| n.name.clone()).collect();
    others.extend(cluster.pod_namespaces().map(str::to_string));
    others.remove(namespace);
    for other in others {
        let mut pods: Vec<PodInfo> = cluster
            .pods_in(&other)
            .filter(|p| {
                // the DNS pods are the DNS node
                let is_dns = other == dns.namespace && dns.pod_labels.iter().all(|(k, v)| p.labels.get(k) == Some(v));
                !p.host_network && !is_dns
            })
            .cloned()
            .collect();
        if pods.is_empty() && other == dns.namespace {
            continue;
        }
        if pods.is_empty() {
            pods.push(stand_in(&other, "(any pod)", Labels::new(), Vec::new()));
        }
        let id = format!("ns-{other}");
        let labels = cluster.namespace_labels(&other);
        let tier = labels.get(tier_key).filter(|t| template.is_tier(t)).cloned();
        peer_tier_of.insert(id.clone(), tier.map_or(PeerTier::Untiered, PeerTier::Tier));
        members.push(Member {
            id: id.clone(),
            pods,
            addresses: Vec::new(),
        });
        nodes.push(node(
            id,
            NodeKind::Namespace(other.clone()),
            format!("namespace {other}"),
            peer_layer,
        ));
    }

    // Edges: every ordered pair with a group of this namespace on at least one end.
    let probes = probe_ports(cluster, dns);
    let mut edges: Vec<Edge> = Vec::new();
    for (i, a) in members.iter().enumerate() {
        for (j, b) in members.iter().enumerate() {
            if i >= group_count && j >= group_count {
                continue;
            }
            if a.id == "dns" || b.id == "external" && a.id == "external" {
                continue;
            }
            // A group to itself: two of its pods (a pod always reaches itself).
            let twin;
            let b = if i == j {
                twin = Member {
                    id: b.id.clone(),
                    pods: b
                        .pods
                        .iter()
                        .map(|p| PodInfo {
                            name: format!("{} (another)", p.name),
                            ..p.clone()
                        })
                        .collect(),
                    addresses: b.addresses.clone(),
                };
                &twin
            } else {
                b
            };
            let ports = allowed_ports(cluster, a, b, &probes);
            if ports.is_empty() {
                continue;
            }
            let status = template_status(template, &peer_tier_of, &a.id, &b.id, i < group_count, j < group_count);
            edges.push(Edge {
                from: a.id.clone(),
                to: b.id.clone(),
                ports,
                open: true,
                status,
                violations: Vec::new(),
            });
        }
    }

    // Marks from the violations.
    let group_id = |group: &Group| match group {
        Group::Namespace(t) | Group::Tier(t) => format!("tier-{t}"),
        Group::Untiered => "untiered".to_string(),
    };
    let peer_id = |peer: &PeerTier| match peer {
        PeerTier::Tier(t) => format!("tier-{t}"),
        PeerTier::Untiered => "untiered".to_string(),
        PeerTier::External => "external".to_string(),
    };
    for v in violations {
        match &v.key {
            ViolationKey::DefaultDeny { group, direction, .. } => {
                if let Some(n) = nodes.iter_mut().find(|n| n.id == group_id(group)) {
                    n.missing_default_deny.push(*direction);
                    n.violations.push(v.message.clone());
                }
            }
            ViolationKey::Dns {
                group, protocol, port, ..
            } => {
                if let Some(n) = nodes.iter_mut().find(|n| n.id == group_id(group)) {
                    n.missing_dns.push(format!("{protocol}/{port}"));
                    n.violations.push(v.message.clone());
                }
            }
            ViolationKey::Template {
                direction, tier, peer, ..
            } => {
                let this = if namespace_tier.is_some() {
                    nodes.first().map(|n| n.id.clone()).unwrap_or_default()
                } else {
                    format!("tier-{tier}")
                };
                let (from, to) = match direction {
                    Direction::Ingress => (peer_id(peer), this),
                    Direction::Egress => (this, peer_id(peer)),
                };
                if !nodes.iter().any(|n| n.id == from) || !nodes.iter().any(|n| n.id == to) {
                    continue;
                }
                match edges.iter_mut().find(|e| e.from == from && e.to == to) {
                    Some(e) => {
                        e.status = EdgeStatus::Violation;
                        e.violations.push(v.message.clone());
                    }
                    None => edges.push(Edge {
                        from,
                        to,
                        ports: Vec::new(),
                        open: false,
                        status: EdgeStatus::Violation,
                        violations: vec![v.message.clone()],
                    }),
                }
            }
            ViolationKey::Structure { .. } | ViolationKey::NamespaceLabel { .. } => {}
        }
    }
    // Peers no edge touches are left out, except the external world and DNS.
    nodes.retain(|n| !matches!(n.kind, NodeKind::Namespace(_)) || edges.iter().any(|e| e.from == n.id || e.to == n.id));
    nodes.sort_by_key(|n| n.layer);
    Graph {
        namespace: namespace.to_string(),
        nodes,
        edges,
    }
}

fn template_status(
    template: &TierTemplate,
    peer_tier_of: &BTreeMap<String, PeerTier>,
    from: &str,
    to: &str,
    from_is_group: bool,
    to_is_group: bool,
) -> EdgeStatus {
    if to == "dns" {
        return EdgeStatus::Template;
    }
    let tier_of = |id: &str| match peer_tier_of.get(id) {
        Some(PeerTier::Tier(t)) => Some(t.clone()),
        _ => None,
    };
    let peer = |id: &str| peer_tier_of.get(id).cloned().unwrap_or(PeerTier::Untiered);
    let mut ok = true;
    if from_is_group && let Some(tier) = tier_of(from) {
        ok &= template
            .flows(&tier)
            .is_some_and(|f| flow_permits(&f.egress_to, &peer(to)));
    }
    if to_is_group && let Some(tier) = tier_of(to) {
        ok &= template
            .flows(&tier)
            .is_some_and(|f| flow_permits(&f.ingress_from, &peer(from)));
    }
    if ok {
        EdgeStatus::Template
    } else {
        EdgeStatus::Violation
    }
}

/// Every port a policy names (numbers, range ends), the DNS ports, the
/// pods' container ports, and one no policy names.
fn probe_ports(cluster: &Cluster, dns: &tierguard::template::DnsSpec) -> Vec<(Protocol, u16)> {
    let mut set: BTreeSet<(Protocol, u16)> = BTreeSet::new();
    for policy in cluster.policies() {
        for direction in Direction::BOTH {
            for rule in policy.rules(direction) {
                for port in &rule.ports {
                    if let PortMatch::Range { start, end } = port.port {
                        set.insert((port.protocol, start));
                        set.insert((port.protocol, end));
                    }
                }
            }
        }
    }
    set.extend(dns.ports.iter().copied());
    set.extend(
        cluster
            .pods()
            .flat_map(|p| p.ports.iter().map(|c| (c.protocol, c.port))),
    );
    set.insert(ANY_PORT_PROBE);
    set.into_iter().collect()
}

fn unrestricted(side: &SideVerdict) -> bool {
    match side {
        SideVerdict::Allowed { port, .. } => *port == PortHit::AllPorts,
        SideVerdict::Denied { .. } => false,
        _ => true,
    }
}

/// The ports on which some endpoint of `a` reaches some endpoint of `b`.
fn allowed_ports(cluster: &Cluster, a: &Member, b: &Member, probes: &[(Protocol, u16)]) -> Vec<String> {
    fn ends(m: &Member) -> Vec<Endpoint<'_>> {
        m.pods
            .iter()
            .map(Endpoint::Pod)
            .chain(m.addresses.iter().map(|ip| Endpoint::Address(*ip)))
            .collect()
    }
    let (froms, tos) = (ends(a), ends(b));
    let mut any_port = false;
    let mut ports = Vec::new();
    for &(protocol, port) in probes {
        let mut hit = false;
        for from in &froms {
            for to in &tos {
                if let (Endpoint::Address(_), Endpoint::Address(_)) = (from, to) {
                    continue;
                }
                let v: Verdict = cluster.allowed(*from, *to, protocol, port);
                if v.allowed() {
                    hit = true;
                    if unrestricted(&v.egress) && unrestricted(&v.ingress) {
                        any_port = true;
                    }
                }
            }
        }
        if hit && (protocol, port) != ANY_PORT_PROBE {
            ports.push(format!("{protocol}/{port}"));
        }
    }
    if any_port {
        return vec!["any port".to_string()];
    }
    ports
}

/// Positions of the nodes: a layered layout, left to right.
///
/// Our own rather than a layout crate's: the graph is a handful of nodes
/// whose layers are given (the template's tier order), so what is left is
/// stacking each layer's nodes, ordered by the barycenter of their
/// neighbours in the layers before (one Sugiyama sweep), and routing the
/// edges: between neighbouring columns as curves from box side to box side,
/// and an edge that skips a column along a lane of its own above or below
/// the nodes, so it never crosses a box.
#[derive(Clone, Debug)]
pub struct Layout {
    /// node id -> (x, y) of the box's top-left corner
    pub positions: BTreeMap<String, (f64, f64)>,
    /// node id -> column
    pub columns: BTreeMap<String, usize>,
    /// (from, to) -> the y of the lane of an edge that skips a column
    pub lanes: BTreeMap<(String, String), f64>,
    /// canvas width
    pub width: f64,
    /// canvas height
    pub height: f64,
}

/// Box size of a node.
pub const NODE_W: f64 = 180.0;
/// Box size of a node.
pub const NODE_H: f64 = 64.0;
const COLUMN_GAP: f64 = 150.0;
const ROW_GAP: f64 = 70.0;
const MARGIN: f64 = 30.0;
/// Room above the top row for self-loops.
const LOOP_ROOM: f64 = 70.0;
const LANE_GAP: f64 = 20.0;

/// Lays `graph` out.
pub fn layout(graph: &Graph) -> Layout {
    let mut by_layer: BTreeMap<usize, Vec<&Node>> = BTreeMap::new();
    for n in &graph.nodes {
        by_layer.entry(n.layer).or_default().push(n);
    }
    let tallest = by_layer.values().map(Vec::len).max().unwrap_or(1) as f64;
    let block_height = tallest * NODE_H + (tallest - 1.0).max(0.0) * ROW_GAP;
    // Rows: y within the block; columns in layer order.
    let mut rows: BTreeMap<String, f64> = BTreeMap::new();
    let mut columns: BTreeMap<String, usize> = BTreeMap::new();
    let mut rank: BTreeMap<String, f64> = BTreeMap::new();
    for (column, nodes) in by_layer.values().enumerate() {
        // Barycenter of the already placed neighbours; nodes without any keep their order.
        let mut keyed: Vec<(f64, usize, &Node)> = nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let neighbours: Vec<f64> = graph
                    .edges
                    .iter()
                    .filter_map(|e| {
                        if e.to == n.id {
                            rank.get(&e.from).copied()
                        } else if e.from == n.id {
                            rank.get(&e.to).copied()
                        } else {
                            None
                        }
                    })
                    .collect();
                let bary = if neighbours.is_empty() {
                    i as f64
                } else {
                    neighbours.iter().sum::<f64>() / neighbours.len() as f64
                };
                (bary, i, *n)
            })
            .collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        let count = keyed.len() as f64;
        let block = count * NODE_H + (count - 1.0).max(0.0) * ROW_GAP;
        let top = (block_height - block) / 2.0;
        for (row, (_, _, n)) in keyed.iter().enumerate() {
            rows.insert(n.id.clone(), top + row as f64 * (NODE_H + ROW_GAP));
            columns.insert(n.id.clone(), column);
            // Rank in the same units across columns of different heights.
            rank.insert(
                n.id.clone(),
                (top + row as f64 * (NODE_H + ROW_GAP)) / (NODE_H + ROW_GAP),
            );
        }
    }
    // Lanes for the edges that skip a column: above when they start and end
    // in the upper half, else below; one lane each.
    let mut above: Vec<(String, String)> = Vec::new();
    let mut below: Vec<(String, String)> = Vec::new();
    for e in &graph.edges {
        let (Some(ca), Some(cb), Some(ya), Some(yb)) = (
            columns.get(&e.from),
            columns.get(&e.to),
            rows.get(&e.from),
            rows.get(&e.to),
        ) else {
            continue;
        };
        if ca.abs_diff(*cb) < 2 {
            continue;
        }
        let key = (e.from.clone(), e.to.clone());
        if (ya + yb) / 2.0 + NODE_H / 2.0 < block_height / 2.0 {
            above.push(key);
        } else {
            below.push(key);
        }
    }
    let top_space = MARGIN + LOOP_ROOM.max(LANE_GAP * (above.len() as f64 + 1.0));
    let bottom_space = MARGIN + LANE_GAP * (below.len() as f64 + 1.0);
    let height = top_space + block_height + bottom_space;
    let mut lanes = BTreeMap::new();
    for (k, key) in above.into_iter().enumerate() {
        lanes.insert(key, top_space - LANE_GAP * (k as f64 + 1.0));
    }
    for (k, key) in below.into_iter().enumerate() {
        lanes.insert(key, top_space + block_height + LANE_GAP * (k as f64 + 1.0));
    }
    let positions = rows
        .iter()
        .map(|(id, y)| {
            let column = columns.get(id).copied().unwrap_or(0) as f64;
            (id.clone(), (MARGIN + column * (NODE_W + COLUMN_GAP), top_space + y))
        })
        .collect();
    let column_count = by_layer.len() as f64;
    let width = 2.0 * MARGIN + column_count * NODE_W + (column_count - 1.0).max(0.0) * COLUMN_GAP;
    Layout {
        positions,
        columns,
        lanes,
        width,
        height,
    }
}

fn dot_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Graphviz DOT, left to right, nodes of one layer at one rank.
pub fn render_dot(graph: &Graph) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "digraph {} {{",
        dot_quote(&format!("tierguard {}", graph.namespace))
    );
    let _ = writeln!(out, "  rankdir=LR;");
    let _ = writeln!(out, "  node [shape=box, style=rounded];");
    let mut by_layer: BTreeMap<usize, Vec<&Node>> = BTreeMap::new();
    for n in &graph.nodes {
        by_layer.entry(n.layer).or_default().push(n);
    }
    for nodes in by_layer.values() {
        let _ = writeln!(out, "  {{ rank=same;");
        for n in nodes {
            let mut label = n.label.clone();
            let mut attrs = String::new();
            if !n.missing_default_deny.is_empty() {
                let dirs: Vec<String> = n.missing_default_deny.iter().map(ToString::to_string).collect();
                label.push_str(&format!("\nR1: no default-deny ({})", dirs.join(", ")));
            }
            if !n.missing_dns.is_empty() {
                label.push_str(&format!("\nR2: no DNS ({})", n.missing_dns.join(", ")));
            }
            if !n.violations.is_empty() {
                attrs.push_str(", color=red");
            }
            let _ = writeln!(out, "    {} [label={}{attrs}];", dot_quote(&n.id), dot_quote(&label));
        }
        let _ = writeln!(out, "  }}");
    }
    for e in &graph.edges {
        let label = if e.open {
            e.ports.join(", ")
        } else {
            "one side only".to_string()
        };
        let mut attrs = format!("label={}", dot_quote(&label));
        match e.status {
            EdgeStatus::Template => attrs.push_str(", color=darkgreen"),
            EdgeStatus::Violation => attrs.push_str(", color=red, fontcolor=red"),
        }
        if !e.open {
            attrs.push_str(", style=dashed");
        }
        let _ = writeln!(out, "  {} -> {} [{attrs}];", dot_quote(&e.from), dot_quote(&e.to));
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn built_in_tiers_read_left_to_right() {
        let layers = tier_layers(&TierTemplate::built_in());
        assert_eq!(layers.get("gateway"), Some(&0));
        assert_eq!(layers.get("frontend"), Some(&0));
        assert_eq!(layers.get("backend"), Some(&1));
        assert_eq!(layers.get("data"), Some(&2));
    }

    #[test]
    fn a_cyclic_template_still_gets_bounded_layers() -> Result<(), tierguard::template::TemplateError> {
        let text = tierguard::template::BUILT_IN
            .replace("egressTo: []}", "egressTo: [gateway]}")
            .replace("gateway:  {ingressFrom: [any]", "gateway:  {ingressFrom: [any, data]");
        let template = TierTemplate::parse(&text, "t")?;
        let layers = tier_layers(&template);
        assert!(layers.values().all(|l| *l < 4), "{layers:?}");
        Ok(())
    }

    #[test]
    fn dot_quotes_hostile_names() {
        assert_eq!(dot_quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }

    #[test]
    fn layout_puts_layers_in_columns_and_keeps_boxes_apart() {
        let n = |id: &str, layer| Node {
            id: id.into(),
            kind: NodeKind::External,
            label: id.into(),
            layer,
            missing_default_deny: vec![],
            missing_dns: vec![],
            violations: vec![],
        };
        let graph = Graph {
            namespace: "x".into(),
            nodes: vec![n("a", 0), n("b", 1), n("c", 1), n("d", 2)],
            edges: vec![],
        };
        let l = layout(&graph);
        let x = |id: &str| l.positions.get(id).map(|p| p.0).unwrap_or(-1.0);
        let y = |id: &str| l.positions.get(id).map(|p| p.1).unwrap_or(-1.0);
        assert!(x("a") < x("b") && x("b") == x("c") && x("c") < x("d"));
        assert!((y("b") - y("c")).abs() >= NODE_H);
        assert!(l.width >= x("d") + NODE_W && l.height >= y("c").max(y("b")) + NODE_H);
    }
}
