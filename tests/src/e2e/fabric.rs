//! The nodes and pods of the end-to-end cluster as network namespaces (the
//! enforcer's netns topology: a namespace per node, one per pod behind a
//! veth, routed like Calico), echo servers on every pod port, probes between
//! pods, and a fingerprint of a node's rules (to see when they change).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use tierguard::cluster::{ContainerPort, PodInfo};
use tierguard::labels::Labels;
use tierguard::policy::Protocol;
use tierguard::{Cluster, NamespaceInfo};
use tierguard_conformance::conformance::dataplane::{Outcome, Probe};
use tierguard_conformance::netns::echo::EchoServers;
use tierguard_conformance::netns::probe::{Endpoint, ProbeOptions, Prober};
use tierguard_conformance::netns::topology::{self, NodeSpec, Topology};

/// A pod the test will create (it gets a network namespace up front, so it
/// can be created, deleted and created again through the API).
#[derive(Clone, Debug)]
pub struct PodPlan {
    /// namespace
    pub namespace: String,
    /// name
    pub name: String,
    /// node
    pub node: String,
    /// its address
    pub ip: Ipv4Addr,
    /// labels when created
    pub labels: Labels,
}

impl PodPlan {
    /// `namespace/name`
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// Pods as network namespaces behind node namespaces.
pub struct Fabric {
    runtime: tokio::runtime::Runtime,
    topology: Topology,
    echo: EchoServers,
    prober: Prober,
}

impl std::fmt::Debug for Fabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fabric")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl Fabric {
    /// Builds `nodes` and `pods`; every pod serves `ports` (TCP and UDP echo).
    pub fn build(nodes: &[NodeSpec], pods: &[PodPlan], ports: &[(Protocol, u16)]) -> anyhow::Result<Fabric> {
        topology::install_signal_cleanup();
        topology::sweep_stale();
        let mut cluster = Cluster::new();
        for pod in pods {
            cluster.upsert_namespace(NamespaceInfo::new(&pod.namespace, Labels::new()));
            cluster.upsert_pod(PodInfo {
                namespace: pod.namespace.clone(),
                name: pod.name.clone(),
                labels: pod.labels.clone(),
                ips: vec![IpAddr::V4(pod.ip)],
                node: Some(pod.node.clone()),
                ports: Vec::<ContainerPort>::new(),
                host_network: false,
            });
        }
        let topology = Topology::build(&cluster, nodes).context("building the node and pod namespaces")?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("e2e-probes")
            .enable_all()
            .build()
            .context("starting the probe runtime")?;
        let mut echo = EchoServers::new(runtime.handle().clone());
        let mut endpoints = BTreeMap::new();
        for pod in topology.pods() {
            // the e2e pods are IPv4 only and have namespaces of their own
            echo.ensure(&pod.key, &pod.netns, &[IpAddr::V4(Ipv4Addr::UNSPECIFIED)], ports)
                .with_context(|| format!("echo servers in {}", pod.key))?;
            endpoints.insert(
                pod.key.clone(),
                Endpoint {
                    netns: pod.netns.clone(),
                    ip: pod.ip,
                    ipv6: None,
                },
            );
        }
        let prober = Prober::new(
            runtime.handle().clone(),
            endpoints,
            false,
            ProbeOptions {
                connect_timeout: Duration::from_millis(800),
                udp_timeout: Duration::from_millis(500),
                udp_attempts: 2,
                parallelism: 256,
            },
        );
        Ok(Fabric {
            runtime,
            topology,
            echo,
            prober,
        })
    }

    /// The node and pod namespaces.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// One outcome per probe, in order.
    pub fn probe(&self, probes: &[Probe]) -> anyhow::Result<Vec<Outcome>> {
        self.prober.run(probes).context("probing")
    }

    /// Forgets every connection on every node (so no earlier one counts).
    pub fn flush_conntrack(&self) -> anyhow::Result<()> {
        for node in self.topology.nodes() {
            topology::run("ip", &["netns", "exec", &node.netns, "conntrack", "-F"], None)
                .with_context(|| format!("flushing conntrack on {}", node.spec.name))?;
        }
        Ok(())
    }

    /// Stops the echo servers and removes every namespace.
    pub fn teardown(mut self) -> anyhow::Result<()> {
        self.echo.stop();
        let result = self.topology.teardown().context("removing the namespaces");
        drop(self.runtime);
        result
    }
}

/// The enforcer's part of a node's kernel state: `TG-` chains and rules
/// from `iptables-save` and `tg-` sets from `ipset save`, hashed.
pub fn fingerprint(node_netns: &str) -> anyhow::Result<[u8; 32]> {
    let mut hash = Sha256::new();
    for (program, args) in [("iptables-save", &["-t", "filter"][..]), ("ipset", &["save"][..])] {
        let mut all = vec!["netns", "exec", node_netns, program];
        all.extend_from_slice(args);
        let out = topology::run("ip", &all, None).with_context(|| format!("{program} in {node_netns}"))?;
        for line in out.lines() {
            // iptables-save's comment lines carry the time; only the enforcer's objects count
            if line.starts_with('#') || !(line.contains("TG-") || line.contains("tg-")) {
                continue;
            }
            hash.update(line.as_bytes());
            hash.update(b"\n");
        }
    }
    Ok(hash.finalize().into())
}
