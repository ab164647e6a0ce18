//! Reading a reachability case file (docs/cases.md) into a
//! validated `Case`: the cluster, and steps whose every policy, pod and
//! matrix reference has been checked. Errors name the file and the field.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;
use tierguard::cluster::{Cluster, ContainerPort, NamespaceInfo, PodInfo};
use tierguard::engine::AddressFamily;
use tierguard::labels::{self, Labels};
use tierguard::policy::{Policy, PolicyId, Protocol};
use tierguard::template::parse_proto_port;

use super::matrix::Matrix;

/// A case file that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: {field}: {message}")]
pub struct CaseError {
    /// the case file
    pub file: String,
    /// the field, e.g. `steps[0].apply[1].spec.podSelector.matchExpressions[0].operator`
    pub field: String,
    /// what is wrong
    pub message: String,
}

/// A node of the case's cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// name
    pub name: String,
    /// the node's own address (the first of `ips`)
    pub ip: IpAddr,
    /// every address of the node (dual stack: one per family)
    pub ips: Vec<IpAddr>,
}

/// One expected matrix for one probe.
#[derive(Clone, Debug)]
pub struct Expectation {
    /// protocol of the probe
    pub protocol: Protocol,
    /// numeric destination port
    pub port: u16,
    /// the address family the client connects over (`family: IPv6`; IPv4 by default)
    pub family: AddressFamily,
    /// the expected matrix
    pub matrix: Matrix,
}

/// One step: actions, then expectations.
#[derive(Clone, Debug, Default)]
pub struct Step {
    /// policies created or replaced
    pub apply: Vec<Policy>,
    /// policies removed
    pub delete: Vec<PolicyId>,
    /// (namespace, pod name, new labels)
    pub label_pods: Vec<(String, String, Labels)>,
    /// (namespace, new labels)
    pub label_namespaces: Vec<(String, Labels)>,
    /// what must hold after the actions
    pub expect: Vec<Expectation>,
}

impl Step {
    /// Applies the step's actions to `cluster`, in the order docs/cases.md gives.
    pub fn apply_to(&self, cluster: &mut Cluster) {
        for policy in &self.apply {
            cluster.upsert_policy(policy.clone());
        }
        for id in &self.delete {
            cluster.remove_policy(id);
        }
        for (ns, name, labels) in &self.label_pods {
            if let Some(pod) = cluster.pod_mut(ns, name) {
                pod.labels = labels.clone();
            }
        }
        for (name, labels) in &self.label_namespaces {
            cluster.upsert_namespace(NamespaceInfo::new(name, labels.clone()));
        }
    }
}

/// A validated case.
#[derive(Clone, Debug)]
pub struct Case {
    /// unique name
    pub name: String,
    /// what it pins
    pub description: String,
    /// the nodes
    pub nodes: Vec<NodeSpec>,
    /// the cluster before the first step
    pub cluster: Cluster,
    /// the steps
    pub steps: Vec<Step>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCase {
    name: String,
    #[serde(default)]
    description: String,
    /// the standard cluster with an IPv6 address beside every IPv4 one
    #[serde(default, rename = "dualStack")]
    dual_stack: bool,
    cluster: Option<RawCluster>,
    steps: Vec<RawStep>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    nodes: Option<Vec<RawNode>>,
    #[serde(default)]
    namespaces: Vec<RawNamespace>,
    #[serde(default)]
    pods: Vec<RawPod>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNode {
    name: String,
    ip: Option<String>,
    ips: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawNamespace {
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawPod {
    namespace: String,
    name: String,
    node: Option<String>,
    /// required (or `ips`), except on a host-network pod (whose addresses are its node's)
    ip: Option<String>,
    /// dual stack: one address per family
    ips: Option<Vec<String>>,
    /// a host-network pod: its node's address, no network namespace of its own
    #[serde(default)]
    host_network: bool,
    #[serde(default)]
    labels: Labels,
    #[serde(default)]
    ports: Vec<RawPort>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPort {
    name: Option<String>,
    port: u16,
    #[serde(default = "default_protocol")]
    protocol: String,
}

fn default_protocol() -> String {
    "TCP".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawStep {
    #[serde(default)]
    apply: Vec<serde_json::Value>,
    #[serde(default)]
    delete: Vec<RawRef>,
    #[serde(default)]
    label_pods: Vec<RawPodLabels>,
    #[serde(default)]
    label_namespaces: Vec<RawNamespace>,
    #[serde(default)]
    expect: Vec<RawExpect>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRef {
    namespace: String,
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPodLabels {
    namespace: String,
    name: String,
    #[serde(default)]
    labels: Labels,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExpect {
    probe: String,
    family: Option<String>,
    matrix: String,
}

/// The node of the standard cluster.
pub const STANDARD_NODE: &str = "node-1";

/// The standard cluster of docs/cases.md: namespaces x, y, z, pods a, b, c in
/// each, serving 80 and 81 on TCP, UDP and SCTP, on node-1.
pub fn standard_cluster() -> (Vec<NodeSpec>, Cluster) {
    let mut cluster = Cluster::new();
    let mut ports = Vec::new();
    for port in [80u16, 81] {
        for protocol in Protocol::ALL {
            ports.push(ContainerPort {
                name: Some(format!("serve-{port}-{}", protocol.as_str().to_lowercase())),
                port,
                protocol,
            });
        }
    }
    for (n, ns) in ["x", "y", "z"].into_iter().enumerate() {
        cluster.upsert_namespace(NamespaceInfo::new(
            ns,
            Labels::from([("ns".to_string(), ns.to_string())]),
        ));
        for (m, pod) in ["a", "b", "c"].into_iter().enumerate() {
            cluster.upsert_pod(PodInfo {
                namespace: ns.into(),
                name: pod.into(),
                labels: Labels::from([("pod".to_string(), pod.to_string())]),
                ips: vec![IpAddr::from([10, 244, n as u8 + 1, 10 + m as u8])],
                node: Some(STANDARD_NODE.into()),
                ports: ports.clone(),
                host_network: false,
            });
        }
    }
    let ip = IpAddr::from([10, 244, 0, 1]);
    let nodes = vec![NodeSpec {
        name: STANDARD_NODE.into(),
        ip,
        ips: vec![ip],
    }];
    (nodes, cluster)
}

/// The standard cluster with `dualStack: true`: every pod also has
/// `fd00:10:244:<n>::<10+m>` (same n and m as its IPv4 address), node-1 also
/// `fd00:10:244::1`.
pub fn standard_dual_stack_cluster() -> (Vec<NodeSpec>, Cluster) {
    let (mut nodes, mut cluster) = standard_cluster();
    for (n, ns) in ["x", "y", "z"].into_iter().enumerate() {
        for (m, pod) in ["a", "b", "c"].into_iter().enumerate() {
            let text = format!("fd00:10:244:{}::{}", n + 1, 10 + m);
            if let (Some(pod), Ok(ip)) = (cluster.pod_mut(ns, pod), text.parse::<IpAddr>()) {
                pod.ips.push(ip);
            }
        }
    }
    for node in &mut nodes {
        node.ips.extend("fd00:10:244::1".parse::<IpAddr>());
    }
    (nodes, cluster)
}

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, message: impl Into<String>) -> CaseError {
        CaseError {
            file: self.file.to_string(),
            field: field.into(),
            message: message.into(),
        }
    }

    fn labels(&self, labels: &Labels, field: &str) -> Result<(), CaseError> {
        for (k, v) in labels {
            labels::validate_key(k)
                .and_then(|_| labels::validate_value(v))
                .map_err(|m| self.err(format!("{field}.{k}"), m))?;
        }
        Ok(())
    }

    fn ip(&self, text: &str, field: &str) -> Result<IpAddr, CaseError> {
        text.parse()
            .map_err(|_| self.err(field, format!("{text:?} is not an IP address")))
    }

    /// `ip:` or `ips:` (one address per family); `None` when neither is given.
    fn addresses(
        &self,
        ip: Option<&str>,
        ips: Option<&[String]>,
        field: &str,
    ) -> Result<Option<Vec<IpAddr>>, CaseError> {
        match (ip, ips) {
            (Some(_), Some(_)) => Err(self.err(format!("{field}.ips"), "give ip or ips, not both")),
            (None, None) => Ok(None),
            (Some(text), None) => Ok(Some(vec![self.ip(text, &format!("{field}.ip"))?])),
            (None, Some(list)) => {
                if list.is_empty() {
                    return Err(self.err(format!("{field}.ips"), "must not be empty"));
                }
                let mut out: Vec<IpAddr> = Vec::new();
                for (i, text) in list.iter().enumerate() {
                    let ip = self.ip(text, &format!("{field}.ips[{i}]"))?;
                    if out.iter().any(|o| o.is_ipv6() == ip.is_ipv6()) {
                        return Err(self.err(format!("{field}.ips[{i}]"), format!("{ip}: one address per family")));
                    }
                    out.push(ip);
                }
                Ok(Some(out))
            }
        }
    }
}

/// Parses and validates one case file's text.
pub fn parse_case(text: &str, file: &str) -> Result<Case, CaseError> {
    let ctx = Ctx { file };
    let raw: RawCase = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(text)).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let field = if path == "." {
            inner
                .location()
                .map(|l| format!("line {}", l.line()))
                .unwrap_or_else(|| "case".into())
        } else {
            path
        };
        ctx.err(field, inner.to_string())
    })?;
    if raw.name.trim().is_empty() {
        return Err(ctx.err("name", "must not be empty"));
    }
    let (nodes, initial) = match raw.cluster {
        None if raw.dual_stack => standard_dual_stack_cluster(),
        None => standard_cluster(),
        Some(c) => custom_cluster(c, raw.dual_stack, &ctx)?,
    };
    // Steps are replayed on a copy so that each is checked against the state it meets.
    let mut cluster = initial.clone();
    let mut steps = Vec::new();
    for (i, raw_step) in raw.steps.into_iter().enumerate() {
        let step = parse_step(raw_step, i, &cluster, &ctx)?;
        step.apply_to(&mut cluster);
        steps.push(step);
    }
    Ok(Case {
        name: raw.name,
        description: raw.description,
        nodes,
        cluster: initial,
        steps,
    })
}

fn custom_cluster(raw: RawCluster, dual_stack: bool, ctx: &Ctx<'_>) -> Result<(Vec<NodeSpec>, Cluster), CaseError> {
    let nodes = match raw.nodes {
        None if dual_stack => standard_dual_stack_cluster().0,
        None => standard_cluster().0,
        Some(list) => {
            let mut nodes = Vec::new();
            for (i, n) in list.into_iter().enumerate() {
                let field = format!("cluster.nodes[{i}]");
                let ips = ctx
                    .addresses(n.ip.as_deref(), n.ips.as_deref(), &field)?
                    .ok_or_else(|| ctx.err(format!("{field}.ip"), "is required (or ips)"))?;
                let ip = ips[0];
                if nodes.iter().any(|x: &NodeSpec| x.name == n.name) {
                    return Err(ctx.err(
                        format!("cluster.nodes[{i}].name"),
                        format!("node {} appears twice", n.name),
                    ));
                }
                nodes.push(NodeSpec { name: n.name, ip, ips });
            }
            nodes
        }
    };
    let mut cluster = Cluster::new();
    for (i, ns) in raw.namespaces.into_iter().enumerate() {
        ctx.labels(&ns.labels, &format!("cluster.namespaces[{i}].labels"))?;
        if cluster.namespace(&ns.name).is_some() {
            return Err(ctx.err(
                format!("cluster.namespaces[{i}].name"),
                format!("namespace {} appears twice", ns.name),
            ));
        }
        cluster.upsert_namespace(NamespaceInfo::new(&ns.name, ns.labels));
    }
    let mut seen_ips: BTreeMap<IpAddr, String> = BTreeMap::new();
    // node -> the host-network pod on it
    let mut host_network_pods: BTreeMap<String, String> = BTreeMap::new();
    for (i, p) in raw.pods.into_iter().enumerate() {
        let field = format!("cluster.pods[{i}]");
        if cluster.namespace(&p.namespace).is_none() {
            return Err(ctx.err(
                format!("{field}.namespace"),
                format!("namespace {} is not in cluster.namespaces", p.namespace),
            ));
        }
        let node = p.node.unwrap_or_else(|| STANDARD_NODE.to_string());
        if !nodes.iter().any(|n| n.name == node) {
            return Err(ctx.err(format!("{field}.node"), format!("node {node} is not in cluster.nodes")));
        }
        let node_ips: Vec<IpAddr> = nodes
            .iter()
            .find(|n| n.name == node)
            .map(|n| n.ips.clone())
            .unwrap_or_default();
        let ips = match (
            ctx.addresses(p.ip.as_deref(), p.ips.as_deref(), &field)?,
            p.host_network,
        ) {
            (Some(ips), _) => ips,
            (None, true) => node_ips.clone(),
            (None, false) => return Err(ctx.err(format!("{field}.ip"), "is required (or ips)")),
        };
        let key = format!("{}/{}", p.namespace, p.name);
        if p.host_network {
            if let Some(ip) = ips.iter().find(|ip| !node_ips.contains(ip)) {
                return Err(ctx.err(
                    format!("{field}.ip"),
                    format!("{ip}: a hostNetwork pod has its node's address ({node})"),
                ));
            }
            if let Some(other) = host_network_pods.insert(node.clone(), key) {
                return Err(ctx.err(
                    format!("{field}.hostNetwork"),
                    format!(
                        "node {node} already has the hostNetwork pod {other} (one per node: they would share ports)"
                    ),
                ));
            }
        } else {
            for ip in &ips {
                if let Some(other) = seen_ips.insert(*ip, key.clone()) {
                    return Err(ctx.err(format!("{field}.ip"), format!("{ip} is already the IP of {other}")));
                }
                if node_ips.contains(ip) {
                    return Err(ctx.err(
                        format!("{field}.ip"),
                        format!("{ip} is the address of node {node}: only a hostNetwork pod has it"),
                    ));
                }
            }
        }
        ctx.labels(&p.labels, &format!("{field}.labels"))?;
        let mut ports = Vec::new();
        for (j, port) in p.ports.into_iter().enumerate() {
            let protocol = Protocol::parse(&port.protocol).ok_or_else(|| {
                ctx.err(
                    format!("{field}.ports[{j}].protocol"),
                    format!("{:?} is not TCP, UDP or SCTP", port.protocol),
                )
            })?;
            if port.port == 0 {
                return Err(ctx.err(format!("{field}.ports[{j}].port"), "0 is out of range (1-65535)"));
            }
            ports.push(ContainerPort {
                name: port.name,
                port: port.port,
                protocol,
            });
        }
        if cluster.pod(&p.namespace, &p.name).is_some() {
            return Err(ctx.err(
                format!("{field}.name"),
                format!("pod {}/{} appears twice", p.namespace, p.name),
            ));
        }
        cluster.upsert_pod(PodInfo {
            namespace: p.namespace,
            name: p.name,
            labels: p.labels,
            ips,
            node: Some(node),
            ports,
            host_network: p.host_network,
        });
    }
    Ok((nodes, cluster))
}

fn parse_step(raw: RawStep, i: usize, cluster: &Cluster, ctx: &Ctx<'_>) -> Result<Step, CaseError> {
    let base = format!("steps[{i}]");
    let mut step = Step::default();
    let mut after = cluster.clone();
    for (j, value) in raw.apply.into_iter().enumerate() {
        let field = format!("{base}.apply[{j}]");
        let kind = value.get("kind").and_then(|k| k.as_str()).unwrap_or_default();
        if kind != "NetworkPolicy" {
            return Err(ctx.err(
                format!("{field}.kind"),
                format!("{kind:?}: only NetworkPolicy objects can be applied"),
            ));
        }
        let np: NetworkPolicy = serde_path_to_error::deserialize(value)
            .map_err(|e| ctx.err(format!("{field}.{}", e.path()), e.inner().to_string()))?;
        if np.metadata.namespace.is_none() {
            return Err(ctx.err(format!("{field}.metadata.namespace"), "is required"));
        }
        let policy = Policy::from_k8s(&np).map_err(|e| {
            let first = e.errors.first().cloned();
            let (f, m) = first.map(|x| (x.field, x.message)).unwrap_or_default();
            ctx.err(format!("{field}.{f}"), m)
        })?;
        after.upsert_policy(policy.clone());
        step.apply.push(policy);
    }
    for (j, r) in raw.delete.into_iter().enumerate() {
        let id = PolicyId {
            namespace: r.namespace,
            name: r.name,
        };
        if after.remove_policy(&id).is_none() {
            return Err(ctx.err(
                format!("{base}.delete[{j}]"),
                format!("no NetworkPolicy {id} exists at this step"),
            ));
        }
        step.delete.push(id);
    }
    for (j, p) in raw.label_pods.into_iter().enumerate() {
        let field = format!("{base}.labelPods[{j}]");
        if cluster.pod(&p.namespace, &p.name).is_none() {
            return Err(ctx.err(field, format!("unknown pod {}/{}", p.namespace, p.name)));
        }
        ctx.labels(&p.labels, &format!("{field}.labels"))?;
        step.label_pods.push((p.namespace, p.name, p.labels));
    }
    for (j, n) in raw.label_namespaces.into_iter().enumerate() {
        let field = format!("{base}.labelNamespaces[{j}]");
        if cluster.namespace(&n.name).is_none() {
            return Err(ctx.err(field, format!("unknown namespace {}", n.name)));
        }
        ctx.labels(&n.labels, &format!("{field}.labels"))?;
        step.label_namespaces.push((n.name, n.labels));
    }
    let known = |p: &str| {
        p.split_once('/')
            .is_some_and(|(ns, name)| cluster.pod(ns, name).is_some())
    };
    for (j, e) in raw.expect.into_iter().enumerate() {
        let field = format!("{base}.expect[{j}]");
        let (protocol, port) = parse_proto_port(&e.probe).ok_or_else(|| {
            ctx.err(
                format!("{field}.probe"),
                format!("{:?} is not PROTOCOL/PORT (e.g. TCP/80, UDP/53, SCTP/80)", e.probe),
            )
        })?;
        let family = match e.family.as_deref() {
            None | Some("IPv4") => AddressFamily::IPv4,
            Some("IPv6") => AddressFamily::IPv6,
            Some(other) => {
                return Err(ctx.err(format!("{field}.family"), format!("{other:?} is not IPv4 or IPv6")));
            }
        };
        let matrix = Matrix::parse(&e.matrix, &known).map_err(|m| ctx.err(format!("{field}.matrix"), m.to_string()))?;
        let without = matrix
            .columns
            .iter()
            .chain(matrix.rows.iter().map(|(r, _)| r))
            .find(|key| {
                key.split_once('/')
                    .and_then(|(ns, name)| cluster.pod(ns, name))
                    .is_some_and(|pod| !pod.ips.iter().any(|ip| family.has(ip)))
            });
        if let Some(pod) = without {
            return Err(ctx.err(
                format!("{field}.family"),
                format!("pod {pod} has no {family:?} address"),
            ));
        }
        step.expect.push(Expectation {
            protocol,
            port,
            family,
            matrix,
        });
    }
    Ok(step)
}

#[cfg(test)]
mod tests;
