//! The `model` data plane: the policy engine's verdict for every probe.

use tierguard::Cluster;
use tierguard::engine::{AddressFamily, Endpoint, Verdict};

use super::dataplane::{DataPlane, Outcome, Probe};

/// The engine's verdict on a probe over IPv4, or `None` when a pod is unknown.
pub fn verdict(cluster: &Cluster, probe: &Probe) -> Option<Verdict> {
    verdict_over(cluster, probe, AddressFamily::IPv4)
}

/// The engine's verdict on a probe over `family`, or `None` when a pod is unknown.
pub fn verdict_over(cluster: &Cluster, probe: &Probe, family: AddressFamily) -> Option<Verdict> {
    let pod = |key: &str| key.split_once('/').and_then(|(ns, name)| cluster.pod(ns, name));
    let (from, to) = (pod(&probe.from)?, pod(&probe.to)?);
    Some(cluster.allowed_over(
        Endpoint::Pod(from),
        Endpoint::Pod(to),
        probe.protocol,
        probe.port,
        family,
    ))
}

/// Answers probes from the policy engine.
#[derive(Debug, Default)]
pub struct ModelDataPlane;

impl DataPlane for ModelDataPlane {
    fn name(&self) -> &'static str {
        "model"
    }

    fn start(&mut self, _cluster: &Cluster) -> anyhow::Result<()> {
        Ok(())
    }

    fn apply(&mut self, _cluster: &Cluster) -> anyhow::Result<()> {
        Ok(())
    }

    fn probe(&mut self, cluster: &Cluster, probes: &[Probe]) -> anyhow::Result<Vec<Outcome>> {
        self.probe_over(cluster, probes, AddressFamily::IPv4)
    }

    fn probe_over(
        &mut self,
        cluster: &Cluster,
        probes: &[Probe],
        family: AddressFamily,
    ) -> anyhow::Result<Vec<Outcome>> {
        probes
            .iter()
            .map(|p| match verdict_over(cluster, p, family) {
                Some(v) if v.allowed() => Ok(Outcome::Reachable),
                Some(_) => Ok(Outcome::Blocked),
                None => anyhow::bail!("probe {} -> {}: unknown pod", p.from, p.to),
            })
            .collect()
    }

    fn finish(&mut self) -> anyhow::Result<()> {
        Ok(())
    }
}
