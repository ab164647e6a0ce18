//! The `Syncer`: compile -> render -> apply for one node, incrementally.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::apply::{Applier, ApplyError, backend};
use crate::compile::{NodeView, compile};
use crate::render::{DEFAULT_ALLOW_MARK, RenderOptions, Rendered, render};

pub use crate::apply::backend::Backend;
pub use crate::exec::{ExecError, Executor, HostExecutor};

/// The node whose pods are enforced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeIdentity {
    /// `spec.nodeName` of its pods
    pub name: String,
    /// its own addresses (kubelet probes come from them)
    pub addresses: Vec<IpAddr>,
}

/// How the syncer renders and applies.
#[derive(Clone, Debug)]
pub struct SyncOptions {
    /// iptables backend; `None` = detect (as kubelet does)
    pub backend: Option<Backend>,
    /// NFLOG group for dropped packets (rate-limited); `None` = no logging
    pub nflog_group: Option<u16>,
    /// this node's pod CIDRs: an address there that is no known pod is dropped (fail closed)
    pub pod_cidrs: Vec<IpNet>,
    /// the packet-mark bit policy chains set on allow
    pub allow_mark: u32,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            backend: None,
            nflog_group: None,
            pod_cidrs: Vec::new(),
            allow_mark: DEFAULT_ALLOW_MARK,
        }
    }
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// chains declared and rewritten
    pub chains_written: usize,
    /// stale chains deleted
    pub chains_removed: usize,
    /// sets rebuilt (tmp + swap)
    pub sets_written: usize,
    /// stale sets destroyed
    pub sets_removed: usize,
    /// rules in force after the sync
    pub rules: usize,
    /// sets in force after the sync
    pub sets: usize,
}

/// A sync that failed; the previous rule set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Neither iptables-legacy nor iptables-nft could be run.
    #[error("no iptables backend found (iptables-legacy-save and iptables-nft-save both failed)")]
    NoBackend,
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
}

/// Keeps one node's TG- chains and tg- sets equal to the cluster's policies.
pub struct Syncer<E: Executor> {
    node: NodeIdentity,
    executor: E,
    options: SyncOptions,
    applier: Option<Applier>,
}

impl<E: Executor> Syncer<E> {
    /// A syncer that has applied nothing yet; the first sync detects the
    /// backend and adopts TG- chains and tg- sets already on the node.
    pub fn new(node: NodeIdentity, executor: E, options: SyncOptions) -> Self {
        Syncer {
            node,
            executor,
            options,
            applier: None,
        }
    }

    /// The node.
    pub fn node(&self) -> &NodeIdentity {
        &self.node
    }

    /// Changes the node's own addresses (e.g. when the Node object changes).
    pub fn set_node_addresses(&mut self, addresses: Vec<IpAddr>) {
        self.node.addresses = addresses;
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The compile and render inputs for this node.
    pub fn node_view(&self) -> NodeView {
        NodeView {
            name: self.node.name.clone(),
            addresses: self.node.addresses.clone(),
            pod_cidrs: self.options.pod_cidrs.clone(),
        }
    }

    /// What this node gets for `cluster` (compile + render, no I/O).
    pub fn render(&self, cluster: &tierguard::Cluster) -> Rendered {
        let options = RenderOptions {
            nflog_group: self.options.nflog_group,
            allow_mark: self.options.allow_mark,
        };
        render(&compile(cluster, &self.node_view()), &options)
    }

    fn backend(&self) -> Result<Backend, SyncError> {
        match self.options.backend {
            Some(b) => Ok(b),
            None => backend::detect(&self.executor).ok_or(SyncError::NoBackend),
        }
    }

    fn applier(&mut self) -> Result<&mut Applier, SyncError> {
        if self.applier.is_none() {
            let backend = self.backend()?;
            tracing::info!(%backend, "iptables backend");
            let mut applier = Applier::new(backend);
            applier.adopt(&self.executor)?;
            tracing::info!(
                chains = applier.state.chains.len(),
                sets = applier.state.sets.len(),
                "adopted existing TG- chains and tg- sets"
            );
            self.applier = Some(applier);
        }
        match self.applier.as_mut() {
            Some(a) => Ok(a),
            None => Err(SyncError::NoBackend),
        }
    }

    /// Compiles, renders and applies incrementally; on error the previous rule set stays in force.
    pub fn sync(&mut self, cluster: &tierguard::Cluster) -> Result<SyncReport, SyncError> {
        let rendered = self.render(cluster);
        self.applier()?;
        let Syncer { executor, applier, .. } = self;
        let applier = applier.as_mut().ok_or(SyncError::NoBackend)?;
        let report = applier.apply(executor, &rendered)?;
        Ok(SyncReport {
            chains_written: report.chains_written,
            chains_removed: report.chains_removed,
            sets_written: report.sets_written,
            sets_removed: report.sets_removed,
            rules: rendered.rule_count(),
            sets: rendered.sets.len(),
        })
    }

    /// A full resync: rewrites every chain and set, repairing drift (a flushed chain, a
    /// deleted FORWARD jump, an emptied set).
    pub fn resync(&mut self, cluster: &tierguard::Cluster) -> Result<SyncReport, SyncError> {
        if let Some(applier) = self.applier.as_mut() {
            applier.invalidate();
        }
        self.sync(cluster)
    }

    /// Removes every TG- chain (and the FORWARD jump) and every tg- set.
    pub fn cleanup(&mut self) -> Result<(), SyncError> {
        let backend = match &self.applier {
            Some(a) => a.backend(),
            None => self.backend()?,
        };
        let mut applier = Applier::new(backend);
        let report = applier.cleanup(&self.executor)?;
        tracing::info!(chains = report.chains_removed, sets = report.sets_removed, "cleaned up");
        self.applier = None;
        Ok(())
    }
}
