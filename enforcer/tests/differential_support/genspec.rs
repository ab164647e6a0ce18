//! Random small clusters and NetworkPolicies, their Kubernetes objects, and an
//! oracle that evaluates Kubernetes' NetworkPolicy semantics directly on the
//! generated specs (not through the library), so the model itself is checked too.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use ipnet::Ipv4Net;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Map, Value, json};
use tierguard::Cluster;
use tierguard::cluster::{ContainerPort, NamespaceInfo, PodInfo};
use tierguard::policy::{Policy, Protocol};

pub type Labels = BTreeMap<String, String>;

pub const POD_KEYS: [&str; 3] = ["pod", "app", "tier"];
pub const POD_VALUES: [&str; 3] = ["a", "b", "c"];
pub const NS_KEYS: [&str; 2] = ["ns", "team"];
pub const NS_VALUES: [&str; 3] = ["x", "y", "a"];
pub const NS_NAMES: [&str; 3] = ["x", "y", "z"];
pub const PORT_NAMES: [&str; 4] = ["serve-80-tcp", "web", "dns", "metrics"];
pub const PORT_NUMBERS: [u16; 5] = [53, 80, 81, 8080, 5000];
/// Destination ports probed: every container port number plus some nobody serves.
pub const PROBE_PORTS: [u16; 7] = [53, 80, 81, 8080, 5000, 443, 1];
pub const NAME_LABEL: &str = "kubernetes.io/metadata.name";

#[derive(Clone, Debug)]
pub struct NsSpec {
    pub name: String,
    pub labels: Labels,
}

#[derive(Clone, Debug)]
pub struct PortDecl {
    pub name: String,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub labels: Labels,
    pub ip: Ipv4Addr,
    pub node: usize,
    pub ports: Vec<PortDecl>,
}

impl PodSpec {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

#[derive(Clone, Debug)]
pub struct ClusterSpec {
    /// (name, own address)
    pub nodes: Vec<(String, Ipv4Addr)>,
    pub namespaces: Vec<NsSpec>,
    pub pods: Vec<PodSpec>,
    /// give each node its pod CIDR 10.244.<node+1>.0/24 (pods of node n live there)
    pub pod_cidrs: bool,
}

#[derive(Clone, Debug)]
pub struct Expr {
    pub key: String,
    pub op: &'static str,
    pub values: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Sel {
    /// `None`: no matchLabels key
    pub labels: Option<Labels>,
    /// `None`: no matchExpressions key
    pub exprs: Option<Vec<Expr>>,
}

#[derive(Clone, Debug)]
pub enum PeerSpec {
    /// at least one of the two is set
    Pods {
        ns: Option<Sel>,
        pods: Option<Sel>,
    },
    Block {
        cidr: Ipv4Net,
        except: Vec<Ipv4Net>,
    },
}

#[derive(Clone, Debug)]
pub enum PortNum {
    Num(u16),
    Name(String),
}

#[derive(Clone, Debug)]
pub struct PortSpec {
    pub protocol: Option<Protocol>,
    pub port: Option<PortNum>,
    /// only with a numeric port, >= it
    pub end_port: Option<u16>,
}

#[derive(Clone, Debug)]
pub struct RuleSpec {
    /// `None`: key absent; `Some([])`: empty list
    pub peers: Option<Vec<PeerSpec>>,
    pub ports: Option<Vec<PortSpec>>,
}

#[derive(Clone, Debug)]
pub struct PolicySpec {
    pub namespace: String,
    pub name: String,
    pub pod_selector: Sel,
    pub policy_types: Option<Vec<&'static str>>,
    pub ingress: Option<Vec<RuleSpec>>,
    pub egress: Option<Vec<RuleSpec>>,
}

// ---------------------------------------------------------------- strategies

fn labels_of(keys: &'static [&'static str], values: &'static [&'static str]) -> BoxedStrategy<Labels> {
    proptest::collection::vec(proptest::option::of(select(values)), keys.len())
        .prop_map(move |vals| {
            keys.iter()
                .zip(vals)
                .filter_map(|(k, v)| v.map(|v| (k.to_string(), v.to_string())))
                .collect()
        })
        .boxed()
}

pub fn pod_labels() -> BoxedStrategy<Labels> {
    labels_of(&POD_KEYS, &POD_VALUES)
}

pub fn ns_labels() -> BoxedStrategy<Labels> {
    labels_of(&NS_KEYS, &NS_VALUES)
}

fn protocol() -> impl Strategy<Value = Protocol> {
    select(Protocol::ALL.to_vec())
}

fn pod_ports() -> impl Strategy<Value = Vec<PortDecl>> {
    proptest::collection::vec(
        proptest::option::weighted(0.5, (select(&PORT_NUMBERS[..]), protocol())),
        PORT_NAMES.len(),
    )
    .prop_map(|slots| {
        PORT_NAMES
            .iter()
            .zip(slots)
            .filter_map(|(name, slot)| {
                slot.map(|(port, protocol)| PortDecl {
                    name: name.to_string(),
                    port,
                    protocol,
                })
            })
            .collect()
    })
}

/// 2-3 namespaces, 2-4 pods each, one or two nodes.
pub fn cluster(max_pods_per_ns: usize) -> impl Strategy<Value = ClusterSpec> {
    let namespaces = (2..=3usize).prop_flat_map(|n| proptest::collection::vec(ns_labels(), n));
    let pod = (pod_labels(), 0..2usize, 2..40u8, pod_ports());
    (
        namespaces,
        proptest::collection::vec(proptest::collection::vec(pod, 2..=max_pods_per_ns), 3),
        1..=2usize,
        any::<bool>(),
    )
        .prop_map(|(ns_labels, pods, node_count, pod_cidrs)| {
            let namespaces: Vec<NsSpec> = ns_labels
                .into_iter()
                .enumerate()
                .map(|(i, labels)| NsSpec {
                    name: NS_NAMES[i].to_string(),
                    labels,
                })
                .collect();
            let mut used: BTreeSet<Ipv4Addr> = BTreeSet::new();
            let mut out = Vec::new();
            for (ns, ns_pods) in namespaces.iter().zip(pods) {
                for (j, (labels, node, host, ports)) in ns_pods.into_iter().enumerate() {
                    let node = node % node_count;
                    let mut host = host;
                    let ip = loop {
                        let ip = Ipv4Addr::new(10, 244, node as u8 + 1, host);
                        if used.insert(ip) {
                            break ip;
                        }
                        host += 1;
                    };
                    out.push(PodSpec {
                        namespace: ns.name.clone(),
                        name: ["a", "b", "c", "d"][j].to_string(),
                        labels,
                        ip,
                        node,
                        ports,
                    });
                }
            }
            ClusterSpec {
                nodes: (0..node_count)
                    .map(|i| (format!("node-{}", i + 1), Ipv4Addr::new(10, 244, 0, i as u8 + 1)))
                    .collect(),
                namespaces,
                pods: out,
                pod_cidrs,
            }
        })
}

fn expr(keys: Vec<String>, values: Vec<String>) -> impl Strategy<Value = Expr> {
    (
        select(keys),
        select(vec!["In", "NotIn", "Exists", "DoesNotExist"]),
        proptest::sample::subsequence(values.clone(), 1..=2.min(values.len())),
    )
        .prop_map(|(key, op, values)| Expr {
            key,
            op,
            values: if matches!(op, "In" | "NotIn") {
                values
            } else {
                Vec::new()
            },
        })
}

/// A selector over `keys` (plus a key nobody carries) with `values`.
fn selector(keys: Vec<String>, values: Vec<String>) -> BoxedStrategy<Sel> {
    let mut all_keys = keys;
    all_keys.push("absent".to_string());
    let labels = proptest::collection::btree_map(select(all_keys.clone()), select(values.clone()), 0..=2);
    (
        proptest::option::weighted(0.6, labels),
        proptest::option::weighted(0.5, proptest::collection::vec(expr(all_keys, values), 0..=2)),
    )
        .prop_map(|(labels, exprs)| Sel { labels, exprs })
        .boxed()
}

pub fn pod_selector() -> BoxedStrategy<Sel> {
    selector(
        POD_KEYS.iter().map(ToString::to_string).collect(),
        POD_VALUES.iter().map(ToString::to_string).collect(),
    )
}

pub fn ns_selector(ns_names: &[String]) -> BoxedStrategy<Sel> {
    let plain = selector(
        NS_KEYS.iter().map(ToString::to_string).collect(),
        NS_VALUES.iter().map(ToString::to_string).collect(),
    );
    let by_name = selector(vec![NAME_LABEL.to_string()], ns_names.to_vec());
    prop_oneof![3 => plain, 1 => by_name].boxed()
}

/// An ipBlock built around `candidates` (pod addresses and a few others).
fn block(candidates: Vec<Ipv4Addr>) -> impl Strategy<Value = PeerSpec> {
    let prefix = prop_oneof![
        1 => Just(0u8),
        2 => Just(8u8),
        3 => Just(16u8),
        6 => 20..=32u8,
    ];
    (
        select(candidates.clone()),
        prefix,
        proptest::collection::vec((select(candidates), 1..=16u8, any::<u32>()), 0..=2),
        // Kubernetes accepts CIDRs with host bits set (10.244.1.10/24).
        proptest::bool::weighted(0.3),
    )
        .prop_map(|(base, len, holes, sloppy)| {
            let tidy = |net: Ipv4Net| if sloppy { net } else { net.trunc() };
            let cidr = tidy(Ipv4Net::new(base, len).unwrap());
            let mut except = Vec::new();
            if len < 32 {
                for (addr, delta, bits) in holes {
                    // A hole strictly inside the block: a candidate when it is inside, else some address.
                    let addr = if cidr.contains(&addr) {
                        addr
                    } else {
                        let host = u32::from(cidr.hostmask()) & bits;
                        Ipv4Addr::from(u32::from(cidr.network()) | host)
                    };
                    let hole_len = (len + delta).min(32);
                    except.push(tidy(Ipv4Net::new(addr, hole_len).unwrap()));
                }
            }
            PeerSpec::Block { cidr, except }
        })
}

fn peer(ns_names: Vec<String>, candidates: Vec<Ipv4Addr>) -> impl Strategy<Value = PeerSpec> {
    let pods_only = pod_selector().prop_map(|s| PeerSpec::Pods {
        ns: None,
        pods: Some(s),
    });
    let ns_only = ns_selector(&ns_names).prop_map(|s| PeerSpec::Pods {
        ns: Some(s),
        pods: None,
    });
    let both = (ns_selector(&ns_names), pod_selector()).prop_map(|(n, p)| PeerSpec::Pods {
        ns: Some(n),
        pods: Some(p),
    });
    prop_oneof![3 => pods_only, 2 => ns_only, 2 => both, 3 => block(candidates)]
}

fn port() -> impl Strategy<Value = PortSpec> {
    let proto = proptest::option::of(protocol());
    let num = select(&PORT_NUMBERS[..]);
    let numeric = (
        num,
        proptest::option::weighted(0.4, select(vec![0u16, 1, 27, 1000, 65535])),
    )
        .prop_map(|(n, end)| (Some(PortNum::Num(n)), end.map(|d| n.saturating_add(d))));
    let mut names: Vec<String> = PORT_NAMES.iter().map(ToString::to_string).collect();
    names.push("nope".to_string());
    let named = select(names).prop_map(|n| (Some(PortNum::Name(n)), None));
    let proto_only = Just((None, None));
    (proto, prop_oneof![4 => numeric, 3 => named, 1 => proto_only]).prop_map(|(protocol, (port, end_port))| PortSpec {
        protocol,
        port,
        end_port,
    })
}

fn rule(ns_names: Vec<String>, candidates: Vec<Ipv4Addr>) -> impl Strategy<Value = RuleSpec> {
    let peers = prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        5 => proptest::collection::vec(peer(ns_names, candidates), 1..=3).prop_map(Some),
    ];
    let ports = prop_oneof![
        2 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(port(), 1..=3).prop_map(Some),
    ];
    (peers, ports).prop_map(|(peers, ports)| RuleSpec { peers, ports })
}

fn rules(ns_names: Vec<String>, candidates: Vec<Ipv4Addr>) -> impl Strategy<Value = Option<Vec<RuleSpec>>> {
    prop_oneof![
        1 => Just(None),
        1 => Just(Some(Vec::new())),
        4 => proptest::collection::vec(rule(ns_names, candidates), 1..=3).prop_map(Some),
    ]
}

/// Addresses ipBlocks are built around: the pods', a node's, and some outside.
pub fn candidates(cluster: &ClusterSpec) -> Vec<Ipv4Addr> {
    let mut out: Vec<Ipv4Addr> = cluster.pods.iter().map(|p| p.ip).collect();
    out.extend([
        Ipv4Addr::new(10, 244, 0, 1),
        Ipv4Addr::new(10, 244, 1, 0),
        Ipv4Addr::new(10, 244, 2, 255),
        Ipv4Addr::new(192, 168, 7, 9),
    ]);
    out
}

/// A policy named `name` in one of the cluster's namespaces.
pub fn policy(cluster: &ClusterSpec, name: String) -> impl Strategy<Value = PolicySpec> + use<> {
    let ns_names: Vec<String> = cluster.namespaces.iter().map(|n| n.name.clone()).collect();
    let cands = candidates(cluster);
    let types = select(vec![
        None,
        Some(vec![]),
        Some(vec!["Ingress"]),
        Some(vec!["Egress"]),
        Some(vec!["Ingress", "Egress"]),
        Some(vec!["Egress", "Ingress"]),
    ]);
    (
        select(ns_names.clone()),
        pod_selector(),
        types,
        rules(ns_names.clone(), cands.clone()),
        rules(ns_names, cands),
    )
        .prop_map(
            move |(namespace, pod_selector, policy_types, ingress, egress)| PolicySpec {
                namespace,
                name: name.clone(),
                pod_selector,
                policy_types,
                ingress,
                egress,
            },
        )
}

/// A cluster and 1-4 policies on it.
pub fn scenario(max_pods_per_ns: usize) -> impl Strategy<Value = (ClusterSpec, Vec<PolicySpec>)> {
    cluster(max_pods_per_ns).prop_flat_map(|c| {
        let policies = (1..=4usize).prop_flat_map({
            let c = c.clone();
            move |n| (0..n).map(|i| policy(&c, format!("p{i}"))).collect::<Vec<_>>()
        });
        (Just(c), policies)
    })
}

// ---------------------------------------------------------------- objects

fn sel_json(s: &Sel) -> Value {
    let mut m = Map::new();
    if let Some(labels) = &s.labels {
        m.insert("matchLabels".into(), json!(labels));
    }
    if let Some(exprs) = &s.exprs {
        let list: Vec<Value> = exprs
            .iter()
            .map(|e| {
                if e.values.is_empty() {
                    json!({"key": e.key, "operator": e.op})
                } else {
                    json!({"key": e.key, "operator": e.op, "values": e.values})
                }
            })
            .collect();
        m.insert("matchExpressions".into(), Value::Array(list));
    }
    Value::Object(m)
}

fn peer_json(p: &PeerSpec) -> Value {
    match p {
        PeerSpec::Pods { ns, pods } => {
            let mut m = Map::new();
            if let Some(ns) = ns {
                m.insert("namespaceSelector".into(), sel_json(ns));
            }
            if let Some(pods) = pods {
                m.insert("podSelector".into(), sel_json(pods));
            }
            Value::Object(m)
        }
        PeerSpec::Block { cidr, except } => {
            let mut b = Map::new();
            b.insert("cidr".into(), json!(cidr.to_string()));
            if !except.is_empty() {
                b.insert(
                    "except".into(),
                    json!(except.iter().map(ToString::to_string).collect::<Vec<_>>()),
                );
            }
            json!({"ipBlock": b})
        }
    }
}

fn port_json(p: &PortSpec) -> Value {
    let mut m = Map::new();
    if let Some(proto) = p.protocol {
        m.insert("protocol".into(), json!(proto.as_str()));
    }
    match &p.port {
        Some(PortNum::Num(n)) => {
            m.insert("port".into(), json!(n));
        }
        Some(PortNum::Name(n)) => {
            m.insert("port".into(), json!(n));
        }
        None => {}
    }
    if let Some(e) = p.end_port {
        m.insert("endPort".into(), json!(e));
    }
    Value::Object(m)
}

fn rules_json(rules: &[RuleSpec], key: &str) -> Value {
    Value::Array(
        rules
            .iter()
            .map(|r| {
                let mut m = Map::new();
                if let Some(peers) = &r.peers {
                    m.insert(key.into(), Value::Array(peers.iter().map(peer_json).collect()));
                }
                if let Some(ports) = &r.ports {
                    m.insert("ports".into(), Value::Array(ports.iter().map(port_json).collect()));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// The NetworkPolicy object, as JSON.
pub fn policy_json(p: &PolicySpec) -> Value {
    let mut spec = Map::new();
    spec.insert("podSelector".into(), sel_json(&p.pod_selector));
    if let Some(types) = &p.policy_types {
        spec.insert("policyTypes".into(), json!(types));
    }
    if let Some(rules) = &p.ingress {
        spec.insert("ingress".into(), rules_json(rules, "from"));
    }
    if let Some(rules) = &p.egress {
        spec.insert("egress".into(), rules_json(rules, "to"));
    }
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": p.name, "namespace": p.namespace},
        "spec": spec,
    })
}

/// The library's normal form of a generated policy (every generated policy is valid).
pub fn parse_policy(p: &PolicySpec) -> Policy {
    let np: NetworkPolicy = serde_json::from_value(policy_json(p)).unwrap();
    match Policy::from_k8s(&np) {
        Ok(policy) => policy,
        Err(e) => panic!(
            "a valid generated policy was refused: {e}\n{}",
            serde_yaml::to_string(&policy_json(p)).unwrap()
        ),
    }
}

/// The library's cluster for a spec and its policies.
pub fn build_cluster(spec: &ClusterSpec, policies: &[PolicySpec]) -> Cluster {
    let mut cluster = Cluster::new();
    for ns in &spec.namespaces {
        cluster.upsert_namespace(NamespaceInfo::new(&ns.name, ns.labels.clone()));
    }
    for pod in &spec.pods {
        cluster.upsert_pod(PodInfo {
            namespace: pod.namespace.clone(),
            name: pod.name.clone(),
            labels: pod.labels.clone(),
            ips: vec![IpAddr::V4(pod.ip)],
            node: Some(spec.nodes[pod.node].0.clone()),
            ports: pod
                .ports
                .iter()
                .map(|p| ContainerPort {
                    name: Some(p.name.clone()),
                    port: p.port,
                    protocol: p.protocol,
                })
                .collect(),
            host_network: false,
        });
    }
    for p in policies {
        cluster.upsert_policy(parse_policy(p));
    }
    cluster
}

/// A readable dump of a scenario, for failure messages.
pub fn describe(spec: &ClusterSpec, policies: &[PolicySpec]) -> String {
    let mut out = String::new();
    out.push_str(&format!("nodes: {:?} pod_cidrs: {}\n", spec.nodes, spec.pod_cidrs));
    for ns in &spec.namespaces {
        out.push_str(&format!("namespace {} {:?}\n", ns.name, ns.labels));
    }
    for p in &spec.pods {
        let ports: Vec<String> = p
            .ports
            .iter()
            .map(|d| format!("{}={}/{}", d.name, d.protocol, d.port))
            .collect();
        out.push_str(&format!(
            "pod {} {} node-{} {:?} [{}]\n",
            p.key(),
            p.ip,
            p.node + 1,
            p.labels,
            ports.join(" ")
        ));
    }
    for p in policies {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&policy_json(p)).unwrap());
    }
    out
}

// ---------------------------------------------------------------- oracle

/// Kubernetes' label selector semantics, straight from the API docs.
pub fn sel_matches(s: &Sel, labels: &Labels) -> bool {
    let ml = s.labels.iter().flatten().all(|(k, v)| labels.get(k) == Some(v));
    let me = s.exprs.iter().flatten().all(|e| {
        let got = labels.get(&e.key);
        match e.op {
            "In" => got.is_some_and(|v| e.values.contains(v)),
            "NotIn" => got.is_none_or(|v| !e.values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            other => panic!("operator {other}"),
        }
    });
    ml && me
}

fn ns_labels_of(spec: &ClusterSpec, ns: &str) -> Labels {
    let mut labels = spec
        .namespaces
        .iter()
        .find(|n| n.name == ns)
        .map(|n| n.labels.clone())
        .unwrap_or_default();
    labels.insert(NAME_LABEL.to_string(), ns.to_string());
    labels
}

fn isolates(p: &PolicySpec, ingress: bool) -> bool {
    match &p.policy_types {
        Some(types) if !types.is_empty() => types.contains(&if ingress { "Ingress" } else { "Egress" }),
        // Defaulting: Ingress always; Egress when the policy has egress rules.
        _ => ingress || p.egress.as_ref().is_some_and(|e| !e.is_empty()),
    }
}

/// `ipv6`: the connection runs over the pods' IPv6 addresses (a dual-stack
/// cluster); the generated ipBlocks are all IPv4, and a block never matches an
/// address of the other family.
fn peer_ok(spec: &ClusterSpec, policy_ns: &str, peer: &PeerSpec, other: &PodSpec, ipv6: bool) -> bool {
    match peer {
        PeerSpec::Pods { ns, pods } => {
            let ns_ok = match ns {
                None => other.namespace == policy_ns,
                Some(sel) => sel_matches(sel, &ns_labels_of(spec, &other.namespace)),
            };
            let pod_ok = pods.as_ref().is_none_or(|sel| sel_matches(sel, &other.labels));
            ns_ok && pod_ok
        }
        PeerSpec::Block { cidr, except } => {
            !ipv6 && cidr.contains(&other.ip) && !except.iter().any(|e| e.contains(&other.ip))
        }
    }
}

fn port_ok(p: &PortSpec, protocol: Protocol, port: u16, dest: &PodSpec) -> bool {
    if p.protocol.unwrap_or(Protocol::Tcp) != protocol {
        return false;
    }
    match &p.port {
        None => true,
        Some(PortNum::Num(n)) => (*n..=p.end_port.unwrap_or(*n)).contains(&port),
        Some(PortNum::Name(name)) => dest
            .ports
            .iter()
            .any(|d| &d.name == name && d.protocol == protocol && d.port == port),
    }
}

/// Whether `pod`'s side (its ingress, or its egress) lets the connection with `other` through;
/// named ports resolve on the destination (`pod` for ingress, `other` for egress).
#[allow(clippy::too_many_arguments)]
fn side_ok(
    spec: &ClusterSpec,
    policies: &[PolicySpec],
    pod: &PodSpec,
    other: &PodSpec,
    ingress: bool,
    protocol: Protocol,
    port: u16,
    ipv6: bool,
) -> bool {
    let isolating: Vec<&PolicySpec> = policies
        .iter()
        .filter(|p| p.namespace == pod.namespace && sel_matches(&p.pod_selector, &pod.labels) && isolates(p, ingress))
        .collect();
    if isolating.is_empty() {
        return true;
    }
    let dest = if ingress { pod } else { other };
    isolating.iter().any(|p| {
        let rules = if ingress { &p.ingress } else { &p.egress };
        rules.iter().flatten().any(|r| {
            let peers_ok = match &r.peers {
                None => true,
                Some(list) if list.is_empty() => true,
                Some(list) => list.iter().any(|peer| peer_ok(spec, &p.namespace, peer, other, ipv6)),
            };
            let ports_ok = match &r.ports {
                None => true,
                Some(list) if list.is_empty() => true,
                Some(list) => list.iter().any(|pp| port_ok(pp, protocol, port, dest)),
            };
            peers_ok && ports_ok
        })
    })
}

/// Whether Kubernetes allows pod `from` to open `protocol`/`port` to pod `to`.
pub fn oracle(
    spec: &ClusterSpec,
    policies: &[PolicySpec],
    from: &PodSpec,
    to: &PodSpec,
    protocol: Protocol,
    port: u16,
) -> bool {
    oracle_over(spec, policies, from, to, protocol, port, false)
}

/// [`oracle`] over the pods' IPv4 (`ipv6` false) or IPv6 addresses.
pub fn oracle_over(
    spec: &ClusterSpec,
    policies: &[PolicySpec],
    from: &PodSpec,
    to: &PodSpec,
    protocol: Protocol,
    port: u16,
    ipv6: bool,
) -> bool {
    if from.key() == to.key() {
        return true;
    }
    side_ok(spec, policies, from, to, false, protocol, port, ipv6)
        && side_ok(spec, policies, to, from, true, protocol, port, ipv6)
}

// ---------------------------------------------------------------- reading objects back

fn sel_from_json(v: &Value) -> Sel {
    let labels = v.get("matchLabels").map(|m| {
        m.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
            .collect()
    });
    let exprs = v.get("matchExpressions").map(|list| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|e| Expr {
                key: e["key"].as_str().unwrap().to_string(),
                op: match e["operator"].as_str().unwrap() {
                    "In" => "In",
                    "NotIn" => "NotIn",
                    "Exists" => "Exists",
                    "DoesNotExist" => "DoesNotExist",
                    other => panic!("operator {other}"),
                },
                values: e
                    .get("values")
                    .and_then(Value::as_array)
                    .map(|vs| vs.iter().map(|v| v.as_str().unwrap().to_string()).collect())
                    .unwrap_or_default(),
            })
            .collect()
    });
    Sel { labels, exprs }
}

fn peer_from_json(v: &Value) -> PeerSpec {
    if let Some(b) = v.get("ipBlock") {
        return PeerSpec::Block {
            cidr: b["cidr"].as_str().unwrap().parse().unwrap(),
            except: b
                .get("except")
                .and_then(Value::as_array)
                .map(|l| l.iter().map(|e| e.as_str().unwrap().parse().unwrap()).collect())
                .unwrap_or_default(),
        };
    }
    PeerSpec::Pods {
        ns: v.get("namespaceSelector").map(sel_from_json),
        pods: v.get("podSelector").map(sel_from_json),
    }
}

fn port_from_json(v: &Value) -> PortSpec {
    PortSpec {
        protocol: v.get("protocol").map(|p| Protocol::parse(p.as_str().unwrap()).unwrap()),
        port: v.get("port").map(|p| match p {
            Value::String(s) => PortNum::Name(s.clone()),
            n => PortNum::Num(n.as_u64().unwrap() as u16),
        }),
        end_port: v.get("endPort").map(|e| e.as_u64().unwrap() as u16),
    }
}

fn rules_from_json(v: Option<&Value>, key: &str) -> Option<Vec<RuleSpec>> {
    v.map(|list| {
        list.as_array()
            .unwrap()
            .iter()
            .map(|r| RuleSpec {
                peers: r
                    .get(key)
                    .map(|l| l.as_array().unwrap().iter().map(peer_from_json).collect()),
                ports: r
                    .get("ports")
                    .map(|l| l.as_array().unwrap().iter().map(port_from_json).collect()),
            })
            .collect()
    })
}

/// The generator's form of a NetworkPolicy object (for hand-written regressions).
pub fn policy_spec_from_json(v: &Value) -> PolicySpec {
    let spec = &v["spec"];
    PolicySpec {
        namespace: v["metadata"]["namespace"].as_str().unwrap().to_string(),
        name: v["metadata"]["name"].as_str().unwrap().to_string(),
        pod_selector: spec.get("podSelector").map(sel_from_json).unwrap_or(Sel {
            labels: None,
            exprs: None,
        }),
        policy_types: spec.get("policyTypes").map(|l| {
            l.as_array()
                .unwrap()
                .iter()
                .map(|t| match t.as_str().unwrap() {
                    "Ingress" => "Ingress",
                    "Egress" => "Egress",
                    other => panic!("policy type {other}"),
                })
                .collect()
        }),
        ingress: rules_from_json(spec.get("ingress"), "from"),
        egress: rules_from_json(spec.get("egress"), "to"),
    }
}
