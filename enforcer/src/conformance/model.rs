//! The `model` data plane: the policy engine's verdict for every probe.

use tierguard::Cluster;
use tierguard::engine::{Endpoint, Verdict};

use super::dataplane::{DataPlane, Outcome, Probe};

/// The engine's verdict on a probe, or `None` when a pod is unknown.
pub fn verdict(cluster: &Cluster, probe: &Probe) -> Option<Verdict> {
    let pod = |key: &str| key.split_once('/').and_then(|(ns, name)| cluster.pod(ns, name));
    let (from, to) = (pod(&probe.from)?, pod(&probe.to)?);
    Some(cluster.allowed(Endpoint::Pod(from), Endpoint::Pod(to), probe.protocol, probe.port))
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
        probes
            .iter()
            .map(|p| match verdict(cluster, p) {
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
