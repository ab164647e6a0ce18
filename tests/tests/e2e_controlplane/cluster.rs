//! The cluster the enforcement part runs: three nodes, pods in a governed
//! three-tier namespace, a namespace of its own tier, a DNS pod and an
//! unpoliced client; the node agents; and the engine's prediction of what
//! every probe must show, computed from the objects the API server holds.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::de::DeserializeOwned;
use tierguard::engine::Endpoint;
use tierguard::labels::Labels;
use tierguard::policy::Protocol;
use tierguard::{Cluster, NamespaceInfo};
use tierguard_conformance::conformance::dataplane::{Outcome, Probe};
use tierguard_conformance::netns::topology::NodeSpec;
use tierguard_enforcer::daemon::watch;
use tierguard_integration::e2e::fabric::PodPlan;
use tierguard_integration::e2e::kubectl::Kubectl;
use tierguard_integration::e2e::netns::ControlPlaneNetns;
use tierguard_integration::e2e::process::{Managed, Stamps};

/// The nodes: names and own addresses.
pub fn nodes() -> Vec<NodeSpec> {
    [("node-a", 1), ("node-b", 2), ("node-c", 3)]
        .into_iter()
        .map(|(name, i)| NodeSpec {
            name: name.to_string(),
            ip: Ipv4Addr::new(10, 244, 0, i),
            ipv6: None,
        })
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

/// Every pod the run may create, with the network namespace it gets.
pub fn pod_plans() -> Vec<PodPlan> {
    let plan = |namespace: &str, name: &str, node: &str, ip: [u8; 4], pairs: &[(&str, &str)]| PodPlan {
        namespace: namespace.into(),
        name: name.into(),
        node: node.into(),
        ip: Ipv4Addr::from(ip),
        labels: labels(pairs),
    };
    vec![
        plan(
            "shop",
            "gw-a",
            "node-a",
            [10, 244, 1, 10],
            &[("app", "gw"), ("tier", "gateway")],
        ),
        plan(
            "shop",
            "fe-b",
            "node-b",
            [10, 244, 1, 11],
            &[("app", "fe"), ("tier", "frontend")],
        ),
        plan(
            "shop",
            "be-a",
            "node-a",
            [10, 244, 1, 12],
            &[("app", "be"), ("tier", "backend")],
        ),
        plan(
            "shop",
            "be-b",
            "node-b",
            [10, 244, 1, 13],
            &[("app", "be"), ("tier", "backend")],
        ),
        plan(
            "shop",
            "be-c",
            "node-c",
            [10, 244, 1, 14],
            &[("app", "be"), ("tier", "backend")],
        ),
        plan(
            "shop",
            "db-c",
            "node-c",
            [10, 244, 1, 15],
            &[("app", "db"), ("tier", "data")],
        ),
        plan("web-frontend", "ui-c", "node-c", [10, 244, 2, 10], &[("app", "ui")]),
        plan(
            "kube-system",
            "coredns-b",
            "node-b",
            [10, 244, 3, 10],
            &[("k8s-app", "kube-dns")],
        ),
        plan("tools", "client-a", "node-a", [10, 244, 4, 10], &[("app", "client")]),
    ]
}

/// Ports every pod serves (and the probes use).
pub fn served_ports() -> Vec<(Protocol, u16)> {
    vec![
        (Protocol::Tcp, 443),
        (Protocol::Tcp, 8080),
        (Protocol::Tcp, 5432),
        (Protocol::Udp, 53),
    ]
}

/// The Pod object of a plan (a container that declares the served ports).
pub fn pod_object(plan: &PodPlan) -> serde_json::Value {
    let ports: Vec<serde_json::Value> = served_ports()
        .into_iter()
        .map(|(protocol, port)| {
            serde_json::json!({
                "name": format!("{}-{port}", protocol.to_string().to_lowercase()),
                "containerPort": port,
                "protocol": protocol.to_string(),
            })
        })
        .collect();
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": plan.name, "namespace": plan.namespace, "labels": plan.labels},
        "spec": {
            "nodeName": plan.node,
            "containers": [{"name": "app", "image": "registry.invalid/tierguard-e2e/echo:1", "ports": ports}],
        },
    })
}

/// The status a kubelet would report for a running pod at `ip` on `node_ip`.
pub fn pod_status(ip: Ipv4Addr, node_ip: Ipv4Addr) -> serde_json::Value {
    serde_json::json!({"status": {
        "phase": "Running",
        "hostIP": node_ip.to_string(),
        "podIP": ip.to_string(),
        "podIPs": [{"ip": ip.to_string()}],
        "conditions": [{"type": "Ready", "status": "True"}],
    }})
}

/// Creates the pod and sets its status; returns when the status is set
/// (the moment a pod becomes enforceable).
pub fn create_pod(kubectl: &Kubectl, plan: &PodPlan) -> anyhow::Result<std::time::Instant> {
    let node_ip = nodes()
        .into_iter()
        .find(|n| n.name == plan.node)
        .map(|n| n.ip)
        .context("unknown node")?;
    // The ServiceAccount admission plugin refuses pods until the namespace's
    // default ServiceAccount exists (the controller manager makes it).
    tierguard_integration::e2e::process::wait_for(
        "the pod to be created",
        std::time::Duration::from_secs(30),
        std::time::Duration::from_millis(200),
        || {
            let out = kubectl.run(&["create", "-f", "-"], Some(&pod_object(plan).to_string()))?;
            if out.ok {
                return Ok(Some(()));
            }
            if out.stderr.contains("serviceaccount") {
                return Ok(None);
            }
            anyhow::bail!("kubectl create pod {}: {}", plan.key(), out.printed())
        },
    )?;
    let out = kubectl.run(
        &[
            "-n",
            &plan.namespace,
            "patch",
            "pod",
            &plan.name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &pod_status(plan.ip, node_ip).to_string(),
        ],
        None,
    )?;
    anyhow::ensure!(out.ok, "setting the status of {}: {}", plan.key(), out.printed());
    Ok(out.returned)
}

/// A node agent (`tierguard-enforcer run`) inside its node's namespace.
pub struct Agent {
    pub node: NodeSpec,
    pub netns: String,
    pub process: Managed,
    /// when each "synced" line was read
    pub syncs: Stamps,
}

/// Starts the agent of `node` as the enforcer's ServiceAccount, with the
/// DaemonSet's environment (NODE_NAME, NODE_IP).
pub fn start_agent(
    cp: &ControlPlaneNetns,
    bin: &Path,
    node: &NodeSpec,
    node_netns: &str,
    kubeconfig: &Path,
    log: &Path,
) -> anyhow::Result<Agent> {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", node_netns])
        .arg(bin)
        .arg("run")
        .env("NODE_NAME", &node.name)
        .env("NODE_IP", node.ip.to_string())
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "info");
    let _ = cp;
    let (process, syncs) =
        Managed::spawn_stamped(&format!("tierguard-enforcer {}", node.name), command, log, "synced")?;
    Ok(Agent {
        node: node.clone(),
        netns: node_netns.to_string(),
        process,
        syncs,
    })
}

fn items<T: DeserializeOwned>(list: &serde_json::Value, what: &str) -> anyhow::Result<Vec<T>> {
    list["items"]
        .as_array()
        .with_context(|| format!("{what}: no items"))?
        .iter()
        .map(|item| serde_json::from_value(item.clone()).with_context(|| format!("parsing a {what}")))
        .collect()
}

/// The cluster as the API server holds it, read through the agent's own
/// conversion and pod filter.
pub fn live_cluster(kubectl: &Kubectl) -> anyhow::Result<Cluster> {
    let namespaces: Vec<Namespace> = items(&kubectl.get_json(&["namespaces"])?, "Namespace")?;
    let pods: Vec<Pod> = items(&kubectl.get_json(&["pods", "-A"])?, "Pod")?;
    let policies: Vec<NetworkPolicy> = items(&kubectl.get_json(&["networkpolicies", "-A"])?, "NetworkPolicy")?;
    let mut cluster = Cluster::new();
    for ns in &namespaces {
        cluster.upsert_namespace(NamespaceInfo::from_k8s(ns));
    }
    for pod in &pods {
        if let Some(info) = watch::pod_info(pod) {
            cluster.upsert_pod(info);
        }
    }
    for np in &policies {
        cluster.upsert_policy(watch::policy(np));
    }
    Ok(cluster)
}

/// Every probe between the planned pods that exist in `cluster` with their address.
pub fn probes(cluster: &Cluster) -> Vec<Probe> {
    let present: Vec<String> = pod_plans()
        .iter()
        .filter(|p| {
            cluster
                .pod(&p.namespace, &p.name)
                .is_some_and(|pod| pod.ips.contains(&std::net::IpAddr::V4(p.ip)))
        })
        .map(PodPlan::key)
        .collect();
    let mut out = Vec::new();
    for (protocol, port) in served_ports() {
        for from in &present {
            for to in &present {
                if from != to {
                    out.push(Probe {
                        from: from.clone(),
                        to: to.clone(),
                        protocol,
                        port,
                    });
                }
            }
        }
    }
    out
}

/// The engine's verdict for each probe.
pub fn expected(cluster: &Cluster, probes: &[Probe]) -> anyhow::Result<Vec<Outcome>> {
    probes
        .iter()
        .map(|p| {
            let pod = |key: &str| {
                key.split_once('/')
                    .and_then(|(ns, name)| cluster.pod(ns, name))
                    .with_context(|| format!("no pod {key}"))
            };
            let verdict = cluster.allowed(
                Endpoint::Pod(pod(&p.from)?),
                Endpoint::Pod(pod(&p.to)?),
                p.protocol,
                p.port,
            );
            Ok(if verdict.allowed() {
                Outcome::Reachable
            } else {
                Outcome::Blocked
            })
        })
        .collect()
}

/// Matrices in the case format (`.` reachable, `X` blocked), one per probe port.
pub fn matrices(probes: &[Probe], outcomes: &[Outcome]) -> String {
    let mut by_port: BTreeMap<String, BTreeMap<(&str, &str), Outcome>> = BTreeMap::new();
    let mut pods: Vec<&str> = Vec::new();
    for (p, o) in probes.iter().zip(outcomes) {
        by_port
            .entry(format!("{}/{}", p.protocol, p.port))
            .or_default()
            .insert((&p.from, &p.to), *o);
        for key in [p.from.as_str(), p.to.as_str()] {
            if !pods.contains(&key) {
                pods.push(key);
            }
        }
    }
    let width = pods.iter().map(|p| p.len()).max().unwrap_or(1);
    let mut text = String::new();
    for (port, cells) in &by_port {
        text.push_str(&format!("probe: {port}\n{:width$}", "-"));
        for (i, _) in pods.iter().enumerate() {
            text.push_str(&format!(" {:>2}", i + 1));
        }
        text.push('\n');
        for (i, from) in pods.iter().enumerate() {
            text.push_str(&format!("{from:width$}"));
            for to in &pods {
                let cell = if from == to {
                    "."
                } else {
                    match cells.get(&(*from, *to)) {
                        Some(Outcome::Reachable) => ".",
                        Some(Outcome::Blocked) => "X",
                        Some(Outcome::Skipped) => "?",
                        None => "-",
                    }
                };
                text.push_str(&format!("  {cell}"));
            }
            text.push_str(&format!("   ({})\n", i + 1));
        }
    }
    text
}
