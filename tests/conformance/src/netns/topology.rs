//! The case's cluster as network namespaces: a node namespace per node, a
//! namespace per pod joined to its node by a veth pair, routed like Calico
//! (docs/cases.md, "Running cases"). Nothing links to the host's own network.
//!
//! Every namespace is named `tg-<pid>-<instance><kind><index>` and recorded
//! in a process-wide registry, so a SIGINT/SIGTERM handler can remove them
//! and a later run can sweep the ones a killed process left behind.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};

use nix::sched::CloneFlags;
use tierguard::Cluster;

use super::NetnsError;
use tierguard_enforcer::exec::{Executor, HostExecutor};

/// Where `ip netns` keeps its namespaces.
pub const NETNS_DIR: &str = "/run/netns";
/// The gateway address every pod routes through (as Calico does).
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(169, 254, 1, 1);
/// The IPv6 gateway of every pod with an IPv6 address: a fixed link-local
/// address on the host end of its veth. Link-local, because the node answers
/// neighbour solicitations only for addresses on the interface they arrive on
/// (IPv6 has no proxy ARP that answers for any routed address).
pub const GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 1);
/// Prefix of every namespace this module creates.
pub const PREFIX: &str = "tg-";

static REGISTRY: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
static INSTANCE: AtomicUsize = AtomicUsize::new(0);
static SIGNALS: OnceLock<()> = OnceLock::new();

/// The path of a named network namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new(NETNS_DIR).join(name)
}

/// Runs `f` on a fresh thread that has entered network namespace `netns`.
/// Sockets created there stay in that namespace; child processes spawned there run in it.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, NetnsError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, NetnsError> + Send + 'static,
{
    let path = netns_path(netns);
    let name = netns.to_string();
    let handle = std::thread::Builder::new()
        .name(format!("netns-{name}"))
        .spawn(move || {
            let file = File::open(&path).map_err(|e| NetnsError::Enter {
                netns: name.clone(),
                reason: e.to_string(),
            })?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetnsError::Enter {
                netns: name.clone(),
                reason: e.to_string(),
            })?;
            f()
        })
        .map_err(NetnsError::Io)?;
    handle.join().map_err(|_| NetnsError::Panicked)?
}

/// Runs a program on the host, feeding `stdin`; `Ok(stdout)` on exit 0.
pub fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<String, NetnsError> {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    HostExecutor
        .run(program, &args, stdin)
        .map_err(|e| NetnsError::Command {
            command: format!("{program} {}", args.join(" ")),
            code: e.code,
            stderr: e.stderr.trim().to_string(),
        })
}

/// `ip -n <netns> -batch -` with one command a line.
fn ip_batch(netns: &str, lines: &[String]) -> Result<(), NetnsError> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut script = lines.join("\n");
    script.push('\n');
    run("ip", &["-n", netns, "-batch", "-"], Some(&script)).map(drop)
}

/// Sets sysctls (`key=value`, keys as `sysctl` spells them) inside `netns`.
fn sysctl(netns: &str, settings: &[String]) -> Result<(), NetnsError> {
    let settings = settings.to_vec();
    in_netns(netns, move || {
        for setting in &settings {
            let (key, value) = setting.split_once('=').unwrap_or((setting, "1"));
            let path = Path::new("/proc/sys").join(key.replace('.', "/"));
            std::fs::write(&path, value).map_err(|e| NetnsError::Sysctl {
                key: key.to_string(),
                reason: e.to_string(),
            })?;
        }
        Ok(())
    })
}

fn add_netns(name: &str) -> Result<(), NetnsError> {
    // Registered first: a failure half-way still removes it.
    REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(name.to_string());
    run("ip", &["netns", "add", name], None).map(drop)
}

/// Deletes a namespace this process created; a missing one is fine.
pub fn delete_netns(name: &str) -> Result<(), NetnsError> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner()).remove(name);
    if !netns_path(name).exists() {
        return Ok(());
    }
    run("ip", &["netns", "delete", name], None).map(drop)
}

/// Whether process `pid` exists and is not a zombie (a killed process not reaped yet).
fn pid_alive(pid: u32) -> bool {
    match std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("status")) {
        Ok(status) => !status
            .lines()
            .any(|l| l.starts_with("State:") && l.split_whitespace().nth(1) == Some("Z")),
        Err(_) => false,
    }
}

/// Removes `tg-<pid>-...` namespaces whose process is gone (left by a killed run).
/// Returns the names removed.
pub fn sweep_stale() -> Vec<String> {
    let mut removed = Vec::new();
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return removed;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !pid_alive(pid) {
            match run("ip", &["netns", "delete", &name], None) {
                Ok(_) => removed.push(name),
                Err(e) => tracing::warn!(netns = %name, error = %e, "could not remove a stale namespace"),
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), "removed stale namespaces of earlier runs");
    }
    removed
}

/// Removes every namespace this process still has.
pub fn delete_all_registered() {
    let names: Vec<String> = REGISTRY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .cloned()
        .collect();
    for name in names {
        if let Err(e) = delete_netns(&name) {
            tracing::warn!(netns = %name, error = %e, "could not remove a namespace");
        }
    }
}

/// Once per process: on SIGINT or SIGTERM, remove every namespace this
/// process created, then exit (130 / 143).
pub fn install_signal_cleanup() {
    SIGNALS.get_or_init(|| {
        let started = std::thread::Builder::new().name("tg-netns-signals".into()).spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
                return;
            };
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
                else {
                    return;
                };
                let code = tokio::select! {
                    _ = int.recv() => 130,
                    _ = term.recv() => 143,
                };
                eprintln!("interrupted: removing the test namespaces");
                delete_all_registered();
                std::process::exit(code);
            });
        });
        if let Err(e) = started {
            tracing::warn!(error = %e, "no signal handler: Ctrl-C will leave namespaces behind");
        }
    });
}

/// A node of the case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSpec {
    /// `spec.nodeName` of its pods
    pub name: String,
    /// its own address (put on its `lo`)
    pub ip: Ipv4Addr,
    /// its IPv6 address on a dual-stack cluster (put on its `lo` too)
    pub ipv6: Option<Ipv6Addr>,
}

/// A node namespace.
#[derive(Clone, Debug)]
pub struct NodeNs {
    /// the node
    pub spec: NodeSpec,
    /// its network namespace
    pub netns: String,
}

/// A pod namespace.
#[derive(Clone, Debug)]
pub struct PodNs {
    /// `namespace/name`
    pub key: String,
    /// its network namespace
    pub netns: String,
    /// its address
    pub ip: Ipv4Addr,
    /// its IPv6 address, on a dual-stack cluster
    pub ipv6: Option<Ipv6Addr>,
    /// the node it hangs off
    pub node: String,
    /// name of the host end of its veth, in the node namespace (none for a
    /// host-network pod)
    pub host_if: String,
    /// a host-network pod: a process in its node's namespace, with the node's address
    pub host_network: bool,
}

/// The namespaces of one case; removed on drop.
#[derive(Debug)]
pub struct Topology {
    nodes: Vec<NodeNs>,
    pods: BTreeMap<String, PodNs>,
    created: Vec<String>,
}

/// The default node of a case (docs/cases.md).
pub fn default_node() -> NodeSpec {
    NodeSpec {
        name: "node-1".into(),
        ip: Ipv4Addr::new(10, 244, 0, 1),
        ipv6: None,
    }
}

/// The nodes a cluster needs: `given` plus any node its pods name (addresses
/// 10.244.0.N picked for unknown ones); the first is where pods without a node go.
pub fn nodes_for(cluster: &Cluster, given: &[NodeSpec]) -> Vec<NodeSpec> {
    let mut nodes: Vec<NodeSpec> = if given.is_empty() {
        vec![default_node()]
    } else {
        given.to_vec()
    };
    let mut next = 1u8;
    for pod in cluster.pods() {
        let Some(name) = &pod.node else { continue };
        if nodes.iter().any(|n| &n.name == name) {
            continue;
        }
        while nodes.iter().any(|n| n.ip == Ipv4Addr::new(10, 244, 0, next)) && next < 254 {
            next += 1;
        }
        nodes.push(NodeSpec {
            name: name.clone(),
            ip: Ipv4Addr::new(10, 244, 0, next),
            ipv6: None,
        });
    }
    nodes
}

impl Topology {
    /// Builds the namespaces for `cluster` on `nodes` (see [`nodes_for`]).
    /// Pods without an IPv4 address are left out (with a warning).
    pub fn build(cluster: &Cluster, nodes: &[NodeSpec]) -> Result<Topology, NetnsError> {
        let instance = INSTANCE.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{}", std::process::id(), to_base36(instance));
        let mut topo = Topology {
            nodes: Vec::new(),
            pods: BTreeMap::new(),
            created: Vec::new(),
        };
        // On error, `topo` is dropped and removes what exists so far.
        topo.build_inner(cluster, nodes, &base)?;
        Ok(topo)
    }

    fn build_inner(&mut self, cluster: &Cluster, nodes: &[NodeSpec], base: &str) -> Result<(), NetnsError> {
        let nodes = if nodes.is_empty() {
            vec![default_node()]
        } else {
            nodes.to_vec()
        };
        for (i, spec) in nodes.iter().enumerate() {
            let netns = format!("{base}n{}", to_base36(i));
            self.create(&netns)?;
            self.nodes.push(NodeNs {
                spec: spec.clone(),
                netns,
            });
        }
        for (i, pod) in cluster.pods().enumerate() {
            let Some(ip) = pod.ips.iter().find_map(|ip| match ip {
                IpAddr::V4(v4) => Some(*v4),
                IpAddr::V6(_) => None,
            }) else {
                tracing::warn!(pod = %pod.key(), "pod has no IPv4 address: left out of the netns topology");
                continue;
            };
            let ipv6 = pod.ips.iter().find_map(|ip| match ip {
                IpAddr::V6(v6) => Some(*v6),
                IpAddr::V4(_) => None,
            });
            let node = match &pod.node {
                Some(name) => self
                    .nodes
                    .iter()
                    .find(|n| &n.spec.name == name)
                    .ok_or_else(|| NetnsError::UnknownNode(name.clone()))?,
                None => &self.nodes[0],
            }
            .spec
            .name
            .clone();
            if pod.host_network {
                let node_ns = self
                    .nodes
                    .iter()
                    .find(|n| n.spec.name == node)
                    .ok_or_else(|| NetnsError::UnknownNode(node.clone()))?;
                // Its addresses are the node's: it lives in the node namespace, on no veth.
                let (netns, ip, ipv6) = (node_ns.netns.clone(), node_ns.spec.ip, node_ns.spec.ipv6);
                self.pods.insert(
                    pod.key(),
                    PodNs {
                        key: pod.key(),
                        netns,
                        ip,
                        ipv6,
                        node,
                        host_if: String::new(),
                        host_network: true,
                    },
                );
                continue;
            }
            let netns = format!("{base}p{}", to_base36(i));
            self.create(&netns)?;
            self.pods.insert(
                pod.key(),
                PodNs {
                    key: pod.key(),
                    netns,
                    ip,
                    ipv6,
                    node,
                    host_if: format!("h{i}"),
                    host_network: false,
                },
            );
        }
        for node in &self.nodes {
            self.wire_node(node)?;
        }
        self.wire_fabric()?;
        for pod in self.pods.values().filter(|p| !p.host_network) {
            let mut lines = vec!["link set lo up".to_string(), format!("addr add {}/32 dev eth0", pod.ip)];
            if let Some(v6) = pod.ipv6 {
                // nodad: usable at once, not after duplicate address detection (about a second).
                lines.push(format!("addr add {v6}/128 dev eth0 nodad"));
            }
            lines.extend([
                "link set eth0 up".into(),
                format!("route add {GATEWAY} dev eth0 scope link"),
                format!("route add default via {GATEWAY} dev eth0"),
            ]);
            if pod.ipv6.is_some() {
                // `::/0` rather than `default`: a batch line cannot say `-6`, the prefix does.
                lines.push(format!("route add ::/0 via {GATEWAY6} dev eth0"));
            }
            ip_batch(&pod.netns, &lines)?;
        }
        Ok(())
    }

    fn create(&mut self, netns: &str) -> Result<(), NetnsError> {
        add_netns(netns)?;
        self.created.push(netns.to_string());
        Ok(())
    }

    fn wire_node(&self, node: &NodeNs) -> Result<(), NetnsError> {
        let pods: Vec<&PodNs> = self
            .pods
            .values()
            .filter(|p| p.node == node.spec.name && !p.host_network)
            .collect();
        let mut links = vec![
            "link set lo up".to_string(),
            format!("addr add {}/32 dev lo", node.spec.ip),
        ];
        if let Some(v6) = node.spec.ipv6 {
            links.push(format!("addr add {v6}/128 dev lo nodad"));
        }
        for pod in &pods {
            links.push(format!(
                "link add {} type veth peer name eth0 netns {}",
                pod.host_if, pod.netns
            ));
        }
        ip_batch(&node.netns, &links)?;
        let mut settings = vec![
            "net.ipv4.ip_forward=1".to_string(),
            "net.ipv4.conf.all.rp_filter=0".to_string(),
            "net.ipv4.conf.default.rp_filter=0".to_string(),
        ];
        for pod in &pods {
            settings.push(format!("net.ipv4.conf.{}.proxy_arp=1", pod.host_if));
            settings.push(format!("net.ipv4.neigh.{}.proxy_delay=0", pod.host_if));
            settings.push(format!("net.ipv4.conf.{}.rp_filter=0", pod.host_if));
        }
        if self.has_ipv6() {
            // Also sets `default`, so the fabric veths made later forward too.
            settings.push("net.ipv6.conf.all.forwarding=1".to_string());
        }
        sysctl(&node.netns, &settings)?;
        let mut routes = Vec::new();
        for pod in &pods {
            routes.push(format!("addr add {GATEWAY}/32 dev {}", pod.host_if));
            if pod.ipv6.is_some() {
                routes.push(format!("addr add {GATEWAY6}/64 dev {} nodad", pod.host_if));
            }
            routes.push(format!("link set {} up", pod.host_if));
            routes.push(format!("route add {}/32 dev {}", pod.ip, pod.host_if));
            if let Some(v6) = pod.ipv6 {
                routes.push(format!("route add {v6}/128 dev {}", pod.host_if));
            }
        }
        ip_batch(&node.netns, &routes)
    }

    /// A veth between every two nodes, with routes to the other node and its pods.
    /// IPv6 routes go via the other end's fixed link-local address ([`fabric_link_local`]):
    /// a node would not answer neighbour solicitations on the veth for its own
    /// address, which is on `lo`.
    fn wire_fabric(&self) -> Result<(), NetnsError> {
        let ipv6 = self.has_ipv6();
        for (i, a) in self.nodes.iter().enumerate() {
            for (j, b) in self.nodes.iter().enumerate().skip(i + 1) {
                ip_batch(
                    &a.netns,
                    &[format!("link add n{j} type veth peer name n{i} netns {}", b.netns)],
                )?;
                for (from, to, dev, from_i, to_i) in [(a, b, format!("n{j}"), i, j), (b, a, format!("n{i}"), j, i)] {
                    sysctl(&from.netns, &[format!("net.ipv4.conf.{dev}.rp_filter=0")])?;
                    let mut lines = Vec::new();
                    if ipv6 {
                        lines.push(format!("addr add {}/64 dev {dev} nodad", fabric_link_local(from_i)));
                    }
                    lines.extend([
                        format!("link set {dev} up"),
                        format!("route add {}/32 dev {dev} scope link", to.spec.ip),
                    ]);
                    let to_pods = || self.pods.values().filter(|p| p.node == to.spec.name && !p.host_network);
                    for pod in to_pods() {
                        lines.push(format!("route add {}/32 via {} dev {dev} onlink", pod.ip, to.spec.ip));
                    }
                    if ipv6 {
                        let via = fabric_link_local(to_i);
                        for v6 in to.spec.ipv6.into_iter().chain(to_pods().filter_map(|p| p.ipv6)) {
                            lines.push(format!("route add {v6}/128 via {via} dev {dev}"));
                        }
                    }
                    ip_batch(&from.netns, &lines)?;
                }
            }
        }
        Ok(())
    }

    /// Whether any node or pod has an IPv6 address (a dual-stack cluster).
    pub fn has_ipv6(&self) -> bool {
        self.nodes.iter().any(|n| n.spec.ipv6.is_some()) || self.pods.values().any(|p| p.ipv6.is_some())
    }

    /// The node namespaces, in the order given.
    pub fn nodes(&self) -> &[NodeNs] {
        &self.nodes
    }

    /// The namespace of node `name`.
    pub fn node(&self, name: &str) -> Option<&NodeNs> {
        self.nodes.iter().find(|n| n.spec.name == name)
    }

    /// The pod `namespace/name`.
    pub fn pod(&self, key: &str) -> Option<&PodNs> {
        self.pods.get(key)
    }

    /// Every pod namespace, by key.
    pub fn pods(&self) -> impl Iterator<Item = &PodNs> {
        self.pods.values()
    }

    /// Removes every namespace; the first error is returned, the rest still removed.
    pub fn teardown(&mut self) -> Result<(), NetnsError> {
        let mut first = None;
        for netns in self.created.drain(..).rev() {
            if let Err(e) = delete_netns(&netns) {
                tracing::warn!(netns = %netns, error = %e, "could not remove a namespace");
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// The link-local address of node `index` on its end of every node-to-node veth
/// (`fe80::<index + 1>`; unique on each link, which is all a link-local needs).
fn fabric_link_local(index: usize) -> Ipv6Addr {
    let low = u16::try_from(index + 1).unwrap_or(u16::MAX);
    Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, low)
}

fn to_base36(mut n: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[n % 36]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base36() {
        assert_eq!(to_base36(0), "0");
        assert_eq!(to_base36(35), "z");
        assert_eq!(to_base36(36), "10");
    }
}
