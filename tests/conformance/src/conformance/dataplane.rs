//! The data planes a case can run on.

use tierguard::Cluster;
use tierguard::engine::AddressFamily;
use tierguard::policy::Protocol;

use super::case::NodeSpec;

/// One probe: a client pod connects to a server pod.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    /// client `namespace/name`
    pub from: String,
    /// server `namespace/name`
    pub to: String,
    /// protocol
    pub protocol: Protocol,
    /// numeric port on the server
    pub port: u16,
}

/// What a probe showed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// connected (TCP/SCTP) or got the echo (UDP)
    Reachable,
    /// refused, dropped or timed out
    Blocked,
    /// could not be run here (e.g. no SCTP in the kernel); never counts as passed
    Skipped,
}

/// Where a case's probes run.
pub trait DataPlane {
    /// `model` or `netns`
    fn name(&self) -> &'static str;
    /// Tells the data plane the case's nodes (their names and own addresses)
    /// before `start`; planes without nodes ignore it.
    fn set_nodes(&mut self, _nodes: &[NodeSpec]) {}
    /// Builds the case's cluster (nodes, namespaces, pods) before the first step.
    fn start(&mut self, cluster: &Cluster) -> anyhow::Result<()>;
    /// Brings the data plane to `cluster` after a step (policies and labels changed).
    fn apply(&mut self, cluster: &Cluster) -> anyhow::Result<()>;
    /// Runs the probes, returning one outcome per probe, in order.
    fn probe(&mut self, cluster: &Cluster, probes: &[Probe]) -> anyhow::Result<Vec<Outcome>>;
    /// Runs the probes over one address family (the client connects to the
    /// server's address of that family). By default IPv4 is [`DataPlane::probe`]
    /// and IPv6 probes are skipped (checked on the model only).
    fn probe_over(
        &mut self,
        cluster: &Cluster,
        probes: &[Probe],
        family: AddressFamily,
    ) -> anyhow::Result<Vec<Outcome>> {
        match family {
            AddressFamily::IPv4 => self.probe(cluster, probes),
            AddressFamily::IPv6 => Ok(vec![Outcome::Skipped; probes.len()]),
        }
    }
    /// Tears everything down; called even when a step failed.
    fn finish(&mut self) -> anyhow::Result<()>;
}
