//! The `netns` data plane: pods as Linux network namespaces behind a node
//! namespace that carries the enforcer's real rules (docs/cases.md, "Running cases").
//!
//! - [`topology`]: the namespaces, veth pairs and routes of a case's cluster;
//!   removed on drop, on SIGINT/SIGTERM, and swept by later runs if a process died.
//! - [`echo`]: TCP/UDP (and SCTP when the kernel has it) echo servers in pod namespaces.
//! - [`probe`]: concurrent probes from client pod namespaces.
//! - [`executor`]: runs `iptables-restore`, `ipset`, `conntrack` inside a node namespace,
//!   so each node's [`Syncer`] applies exactly what the daemon would.

pub mod echo;
pub mod executor;
pub mod probe;
pub mod topology;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use anyhow::Context;
use tierguard::Cluster;
use tierguard::engine::AddressFamily;
use tierguard::policy::Protocol;

use self::echo::EchoServers;
pub use self::executor::NetnsExecutor;
pub use self::probe::{ProbeOptions, Prober};
pub use self::topology::{NodeSpec, PodNs, Topology};
use crate::conformance::dataplane::{DataPlane, Outcome, Probe};
use tierguard_enforcer::exec::Executor;
use tierguard_enforcer::sync::{NodeIdentity, SyncOptions, SyncReport, Syncer};

/// What can go wrong building or driving the namespaces.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// Not running as root.
    #[error("the netns data plane needs root (effective uid {0})")]
    NotRoot(u32),
    /// A required program is not installed.
    #[error("the netns data plane needs `{0}` on PATH (iproute2, iptables, ipset, conntrack)")]
    MissingTool(&'static str),
    /// A command failed.
    #[error("`{command}` failed ({}): {stderr}", code.map_or("not run".to_string(), |c| format!("exit {c}")))]
    Command {
        /// the command line
        command: String,
        /// exit code, if it ran
        code: Option<i32>,
        /// what it said
        stderr: String,
    },
    /// Could not enter a namespace.
    #[error("cannot enter network namespace {netns}: {reason}")]
    Enter {
        /// the namespace
        netns: String,
        /// why
        reason: String,
    },
    /// A sysctl could not be set.
    #[error("cannot set {key}: {reason}")]
    Sysctl {
        /// the key
        key: String,
        /// why
        reason: String,
    },
    /// An echo server could not listen.
    #[error("pod {pod} cannot listen on {protocol}/{port}: {reason}")]
    Listen {
        /// the pod
        pod: String,
        /// protocol
        protocol: Protocol,
        /// port
        port: u16,
        /// why
        reason: String,
    },
    /// A pod names a node the data plane does not know.
    #[error("unknown node {0}")]
    UnknownNode(String),
    /// A probe names a pod that has no namespace (unknown, or no IPv4 address).
    #[error("pod {0} is not in the netns topology (unknown pod, or no IPv4 address)")]
    UnknownPod(String),
    /// A probe over a family names a pod without an address of that family.
    #[error("pod {pod} has no {family:?} address to probe")]
    NoAddress {
        /// the pod
        pod: String,
        /// the family asked for
        family: AddressFamily,
    },
    /// The data plane was used before `start`.
    #[error("the netns data plane has not been started")]
    NotStarted,
    /// Probes from fixed source ports would need ports past 65535.
    #[error("{probes} probes from source port {first} on would need ports past 65535")]
    SourcePorts {
        /// the first source port asked for
        first: u16,
        /// how many probes
        probes: usize,
    },
    /// A worker thread panicked.
    #[error("a netns worker thread panicked")]
    Panicked,
    /// I/O.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// The programs the data plane runs.
pub const REQUIRED_TOOLS: [&str; 6] = [
    "ip",
    "iptables",
    "iptables-save",
    "iptables-restore",
    "ipset",
    "conntrack",
];

/// The programs the data plane also runs when a case has IPv6 addresses
/// (the node's IPv6 rules are checked and written with them).
pub const REQUIRED_IPV6_TOOLS: [&str; 3] = ["ip6tables", "ip6tables-save", "ip6tables-restore"];

fn effective_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
        || ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
            .iter()
            .any(|dir| Path::new(dir).join(program).is_file())
}

/// Whether this process can run the netns data plane: root, and every tool installed.
pub fn preflight() -> Result<(), NetnsError> {
    match effective_uid() {
        Some(0) => {}
        Some(uid) => return Err(NetnsError::NotRoot(uid)),
        None => return Err(NetnsError::NotRoot(u32::MAX)),
    }
    for tool in REQUIRED_TOOLS {
        if !on_path(tool) {
            return Err(NetnsError::MissingTool(tool));
        }
    }
    Ok(())
}

/// Whether this process can also run dual-stack cases: [`preflight`], and the
/// IPv6 tools ([`REQUIRED_IPV6_TOOLS`]) installed.
pub fn preflight_ipv6() -> Result<(), NetnsError> {
    preflight()?;
    match REQUIRED_IPV6_TOOLS.into_iter().find(|tool| !on_path(tool)) {
        Some(tool) => Err(NetnsError::MissingTool(tool)),
        None => Ok(()),
    }
}

/// How the netns data plane is set up.
#[derive(Clone, Debug, Default)]
pub struct NetnsOptions {
    /// The case's nodes; empty = the cases' default (`node-1`, 10.244.0.1), plus any node a pod names.
    pub nodes: Vec<NodeSpec>,
    /// Probe timeouts and parallelism.
    pub probe: ProbeOptions,
    /// Passed to every node's `Syncer`.
    pub sync: SyncOptions,
}

struct Running {
    syncers: Vec<(String, Syncer<NetnsExecutor>)>,
    echo: EchoServers,
    prober: Prober,
    topology: Topology,
}

/// Pods as network namespaces, the enforcer's real rules in each node namespace.
pub struct NetnsDataPlane {
    options: NetnsOptions,
    runtime: tokio::runtime::Runtime,
    sctp: bool,
    running: Option<Running>,
}

impl NetnsDataPlane {
    /// Checks root and tools, installs the Ctrl-C cleanup, and sweeps namespaces
    /// left by killed runs. Nothing is built until [`DataPlane::start`].
    pub fn new(options: NetnsOptions) -> anyhow::Result<Self> {
        preflight()?;
        topology::install_signal_cleanup();
        topology::sweep_stale();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("tg-netns")
            .enable_all()
            .build()
            .context("starting the probe runtime")?;
        let sctp = echo::sctp_supported();
        if !sctp {
            tracing::info!("this kernel has no SCTP: SCTP probes are reported as skipped");
        }
        Ok(NetnsDataPlane {
            options,
            runtime,
            sctp,
            running: None,
        })
    }

    /// Sets the nodes of the next case (call before `start`).
    pub fn set_nodes(&mut self, nodes: Vec<NodeSpec>) {
        self.options.nodes = nodes;
    }

    /// Whether SCTP probes run on this kernel.
    pub fn sctp_supported(&self) -> bool {
        self.sctp
    }

    /// The topology of the running case.
    pub fn topology(&self) -> Option<&Topology> {
        self.running.as_ref().map(|r| &r.topology)
    }

    /// A prober for the running case, usable from other threads while `apply` runs.
    pub fn prober(&self) -> Option<Prober> {
        self.running.as_ref().map(|r| r.prober.clone())
    }

    /// Makes every `(to, protocol, port)` of `probes` served, in every family the
    /// pod has (pods serve their container ports from `start`; probes may name others).
    pub fn ensure_servers(&mut self, probes: &[Probe]) -> Result<(), NetnsError> {
        let sctp = self.sctp;
        let running = self.running.as_mut().ok_or(NetnsError::NotStarted)?;
        let mut wanted: BTreeMap<&str, Vec<(Protocol, u16)>> = BTreeMap::new();
        for probe in probes {
            if probe.protocol != Protocol::Sctp || sctp {
                wanted.entry(&probe.to).or_default().push((probe.protocol, probe.port));
            }
        }
        for (pod, ports) in wanted {
            let pod_ns = running
                .topology
                .pod(pod)
                .ok_or_else(|| NetnsError::UnknownPod(pod.to_string()))?;
            let (netns, listen) = (pod_ns.netns.clone(), listen_addresses(pod_ns));
            running.echo.ensure(pod, &netns, &listen, &ports)?;
        }
        Ok(())
    }

    fn running(&mut self) -> anyhow::Result<&mut Running> {
        Ok(self.running.as_mut().ok_or(NetnsError::NotStarted)?)
    }

    /// Flushes every node's conntrack table, so no earlier connection counts.
    pub fn flush_conntrack(&mut self) -> anyhow::Result<()> {
        let running = self.running()?;
        // Whether a bare `conntrack -F` also empties the IPv6 entries depends on
        // the conntrack-tools and kernel versions (some take the family to be
        // IPv4 and the kernel filters the flush by it): flush IPv6 explicitly.
        let mut flushes = vec![vec!["-F".to_string()]];
        if running.topology.has_ipv6() {
            flushes.push(vec!["-F".to_string(), "-f".to_string(), "ipv6".to_string()]);
        }
        for (node, syncer_node) in running.topology.nodes().iter().zip(&running.syncers) {
            debug_assert_eq!(node.spec.name, syncer_node.0);
            for args in &flushes {
                NetnsExecutor::new(&node.netns)
                    .run("conntrack", args, None)
                    .with_context(|| format!("flushing conntrack on {}", node.spec.name))?;
            }
        }
        Ok(())
    }

    /// Syncs every node to `cluster` (no conntrack flush: connections open across it survive).
    pub fn sync(&mut self, cluster: &Cluster) -> anyhow::Result<Vec<SyncReport>> {
        let running = self.running()?;
        let mut reports = Vec::new();
        for (node, syncer) in &mut running.syncers {
            let report = syncer.sync(cluster).with_context(|| format!("syncing node {node}"))?;
            tracing::debug!(node = %node, ?report, "synced");
            reports.push(report);
        }
        Ok(reports)
    }

    /// The syncer of node `name` (its executor runs inside the node namespace).
    pub fn syncer_mut(&mut self, name: &str) -> Option<&mut Syncer<NetnsExecutor>> {
        let running = self.running.as_mut()?;
        running.syncers.iter_mut().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut running) = self.running.take() else {
            return Ok(());
        };
        let mut errors = Vec::new();
        for (node, syncer) in &mut running.syncers {
            if let Err(e) = syncer.cleanup() {
                errors.push(format!("cleanup on {node}: {e}"));
            }
        }
        running.echo.stop();
        if let Err(e) = running.topology.teardown() {
            errors.push(format!("removing the namespaces: {e}"));
        }
        if errors.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("{}", errors.join("; "))
        }
    }
}

impl DataPlane for NetnsDataPlane {
    fn name(&self) -> &'static str {
        "netns"
    }

    fn set_nodes(&mut self, nodes: &[crate::conformance::case::NodeSpec]) {
        self.options.nodes = topology_nodes(nodes);
    }

    fn start(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        self.stop()?;
        let nodes = topology::nodes_for(cluster, &self.options.nodes);
        let ipv6 = nodes.iter().any(|n| n.ipv6.is_some()) || cluster.pods().any(|p| p.ips.iter().any(IpAddr::is_ipv6));
        if ipv6 {
            preflight_ipv6()?;
        }
        let topology = Topology::build(cluster, &nodes).context("building the namespaces")?;
        let mut echo = EchoServers::new(self.runtime.handle().clone());
        for pod in cluster.pods() {
            let Some(ns) = topology.pod(&pod.key()) else { continue };
            let ports: Vec<(Protocol, u16)> = pod
                .ports
                .iter()
                .filter(|p| p.protocol != Protocol::Sctp || self.sctp)
                .map(|p| (p.protocol, p.port))
                .collect();
            echo.ensure(&pod.key(), &ns.netns, &listen_addresses(ns), &ports)?;
        }
        let endpoints = topology
            .pods()
            .map(|p| {
                (
                    p.key.clone(),
                    probe::Endpoint {
                        netns: p.netns.clone(),
                        ip: p.ip,
                        ipv6: p.ipv6,
                    },
                )
            })
            .collect();
        let prober = Prober::new(
            self.runtime.handle().clone(),
            endpoints,
            self.sctp,
            self.options.probe.clone(),
        );
        let syncers = topology
            .nodes()
            .iter()
            .map(|node| {
                let identity = NodeIdentity {
                    name: node.spec.name.clone(),
                    addresses: std::iter::once(IpAddr::V4(node.spec.ip))
                        .chain(node.spec.ipv6.map(IpAddr::V6))
                        .collect(),
                };
                let syncer = Syncer::new(identity, NetnsExecutor::new(&node.netns), self.options.sync.clone());
                (node.spec.name.clone(), syncer)
            })
            .collect();
        self.running = Some(Running {
            syncers,
            echo,
            prober,
            topology,
        });
        Ok(())
    }

    fn apply(&mut self, cluster: &Cluster) -> anyhow::Result<()> {
        self.sync(cluster)?;
        self.flush_conntrack()
    }

    fn probe(&mut self, _cluster: &Cluster, probes: &[Probe]) -> anyhow::Result<Vec<Outcome>> {
        self.ensure_servers(probes)?;
        let prober = self.running()?.prober.clone();
        Ok(prober.run(probes)?)
    }

    fn probe_over(
        &mut self,
        _cluster: &Cluster,
        probes: &[Probe],
        family: AddressFamily,
    ) -> anyhow::Result<Vec<Outcome>> {
        self.ensure_servers(probes)?;
        let prober = self.running()?.prober.clone();
        Ok(prober.run_over(probes, family)?)
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        self.stop()
    }
}

/// Where a pod's echo servers listen: every address of each family it has, or
/// for a host-network pod its node's own addresses only (so that UDP replies
/// leave from the address the client sent to).
fn listen_addresses(pod: &PodNs) -> Vec<IpAddr> {
    if pod.host_network {
        std::iter::once(IpAddr::V4(pod.ip))
            .chain(pod.ipv6.map(IpAddr::V6))
            .collect()
    } else {
        std::iter::once(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
            .chain(pod.ipv6.map(|_| IpAddr::V6(Ipv6Addr::UNSPECIFIED)))
            .collect()
    }
}

/// The case's nodes as the topology takes them: the first address of each family.
/// The topology addresses every node over IPv4, so an IPv6-only node gets an
/// unused `10.244.0.N` beside its own address.
fn topology_nodes(nodes: &[crate::conformance::case::NodeSpec]) -> Vec<NodeSpec> {
    let addresses = |n: &crate::conformance::case::NodeSpec| -> (Option<Ipv4Addr>, Option<Ipv6Addr>) {
        let all = || std::iter::once(&n.ip).chain(&n.ips);
        let v4 = all().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        });
        let v6 = all().find_map(|ip| match ip {
            IpAddr::V6(v6) => Some(*v6),
            IpAddr::V4(_) => None,
        });
        (v4, v6)
    };
    let mut used: Vec<Ipv4Addr> = nodes.iter().filter_map(|n| addresses(n).0).collect();
    nodes
        .iter()
        .map(|n| {
            let (v4, ipv6) = addresses(n);
            let ip = v4.unwrap_or_else(|| {
                let free = (1..=254u8)
                    .map(|last| Ipv4Addr::new(10, 244, 0, last))
                    .find(|ip| !used.contains(ip))
                    .unwrap_or(Ipv4Addr::new(10, 244, 0, 254));
                tracing::info!(node = %n.name, ip = %free, "IPv6-only node: given an IPv4 address in the netns topology");
                used.push(free);
                free
            });
            NodeSpec {
                name: n.name.clone(),
                ip,
                ipv6,
            }
        })
        .collect()
}

impl Drop for NetnsDataPlane {
    fn drop(&mut self) {
        if let Err(e) = self.stop() {
            tracing::warn!(error = %e, "netns data plane teardown");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conformance::case::NodeSpec as CaseNode;

    fn case_node(name: &str, ips: &[&str]) -> CaseNode {
        let ips: Vec<IpAddr> = ips.iter().filter_map(|ip| ip.parse().ok()).collect();
        CaseNode {
            name: name.into(),
            ip: ips[0],
            ips,
        }
    }

    #[test]
    fn case_nodes_keep_one_address_per_family() {
        let nodes = topology_nodes(&[
            case_node("dual", &["10.244.0.1", "fd00:10:244::1"]),
            case_node("v6-only", &["fd00:10:244::2"]),
            case_node("v4-only", &["10.244.0.2"]),
        ]);
        let v6 = |s: &str| s.parse::<Ipv6Addr>().ok();
        assert_eq!(
            nodes,
            [
                NodeSpec {
                    name: "dual".into(),
                    ip: Ipv4Addr::new(10, 244, 0, 1),
                    ipv6: v6("fd00:10:244::1"),
                },
                // Given an IPv4 address no other node has.
                NodeSpec {
                    name: "v6-only".into(),
                    ip: Ipv4Addr::new(10, 244, 0, 3),
                    ipv6: v6("fd00:10:244::2"),
                },
                NodeSpec {
                    name: "v4-only".into(),
                    ip: Ipv4Addr::new(10, 244, 0, 2),
                    ipv6: None,
                },
            ]
        );
    }

    #[test]
    fn pods_listen_on_each_family_they_have() {
        let pod = |host_network: bool, ipv6: Option<Ipv6Addr>| PodNs {
            key: "x/a".into(),
            netns: "n".into(),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            ipv6,
            node: "node-1".into(),
            host_if: String::new(),
            host_network,
        };
        let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
        assert_eq!(listen_addresses(&pod(false, None)), [IpAddr::V4(Ipv4Addr::UNSPECIFIED)]);
        assert_eq!(
            listen_addresses(&pod(false, Some(v6))),
            [IpAddr::V4(Ipv4Addr::UNSPECIFIED), IpAddr::V6(Ipv6Addr::UNSPECIFIED)]
        );
        assert_eq!(
            listen_addresses(&pod(true, Some(v6))),
            [IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V6(v6)]
        );
    }
}
