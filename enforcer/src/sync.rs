//! The `Syncer`: compile -> render -> apply for one node, incrementally,
//! for both address families: IPv4 (iptables) first, then IPv6 (ip6tables).
//! Each family's restore is atomic on its own and keeps its own per-chain
//! hashes; when the IPv4 apply fails the IPv6 one is not attempted (both stay
//! at their previous, self-consistent rule sets) and the error says which
//! family failed.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::apply::{Applier, ApplyError, ApplyReport, Repairs, XtablesWait, backend};
use crate::compile::{NodeView, compile_family};
use crate::conntrack::{ConntrackTable, EnforceExisting, ExecConntrack, denied};
use crate::incremental::IncrementalCompiler;
use crate::render::{DEFAULT_ALLOW_MARK, RenderCache, RenderOptions, Rendered, render, render_with};
use crate::ruleset::{Family, RuleSet};

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
    /// whether to program the IPv6 filter table too (off only on a kernel without IPv6)
    pub ipv6: bool,
    /// how long iptables waits for the xtables lock (legacy backend) before the sync fails
    pub xtables_wait: XtablesWait,
    /// what to do with established connections the new rules deny
    pub enforce_existing: EnforceExisting,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            backend: None,
            nflog_group: None,
            pod_cidrs: Vec::new(),
            allow_mark: DEFAULT_ALLOW_MARK,
            ipv6: true,
            xtables_wait: XtablesWait::default(),
            enforce_existing: EnforceExisting::Keep,
        }
    }
}

/// What one sync did in one address family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FamilyReport {
    /// chains declared and rewritten
    pub chains_written: usize,
    /// stale chains deleted
    pub chains_removed: usize,
    /// sets rebuilt (under the name the rules do not use)
    pub sets_written: usize,
    /// sets changed in place (members added and deleted)
    pub sets_updated: usize,
    /// stale sets destroyed
    pub sets_removed: usize,
    /// rules in force after the sync
    pub rules: usize,
    /// sets in force after the sync
    pub sets: usize,
    /// bytes of restore script sent to the kernel
    pub script_bytes: usize,
    /// what a resync found drifted and rewrote (empty for a sync)
    pub repairs: Repairs,
}

impl FamilyReport {
    /// Whether the sync changed anything of this family in the kernel.
    pub fn changed(&self) -> bool {
        self.chains_written + self.chains_removed + self.sets_written + self.sets_updated + self.sets_removed > 0
    }
}

/// What one sync did, per address family.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// the IPv4 family (iptables)
    pub v4: FamilyReport,
    /// the IPv6 family (ip6tables); all zero when IPv6 is off
    pub v6: FamilyReport,
    /// conntrack entries of denied connections deleted (`EnforceExisting::Delete`)
    pub conntrack_deleted: usize,
}

impl SyncReport {
    /// Each family's report, IPv4 first.
    pub fn families(&self) -> [(Family, &FamilyReport); 2] {
        [(Family::V4, &self.v4), (Family::V6, &self.v6)]
    }

    /// Rules in force in both families.
    pub fn total_rules(&self) -> usize {
        self.v4.rules + self.v6.rules
    }

    /// Sets in force in both families.
    pub fn total_sets(&self) -> usize {
        self.v4.sets + self.v6.sets
    }

    /// Bytes of restore script sent to the kernel in both families.
    pub fn total_script_bytes(&self) -> usize {
        self.v4.script_bytes + self.v6.script_bytes
    }
}

/// A sync that failed; the previous rule set stays in force.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// Neither iptables-legacy nor iptables-nft could be run.
    #[error("no iptables backend found (iptables-legacy-save and iptables-nft-save both failed)")]
    NoBackend,
    /// Applying the IPv4 rule set failed (the IPv6 one was not attempted).
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// Applying the IPv6 rule set failed (the IPv4 one is applied).
    #[error("IPv6: {0}")]
    ApplyIpv6(#[source] ApplyError),
}

impl SyncError {
    /// The address family whose apply failed, if it was an apply.
    pub fn family(&self) -> Option<Family> {
        match self {
            SyncError::NoBackend => None,
            SyncError::Apply(_) => Some(Family::V4),
            SyncError::ApplyIpv6(_) => Some(Family::V6),
        }
    }

    fn apply(family: Family, error: ApplyError) -> SyncError {
        match family {
            Family::V4 => SyncError::Apply(error),
            Family::V6 => SyncError::ApplyIpv6(error),
        }
    }
}

/// Keeps one node's TG- chains and tg- sets equal to the cluster's policies.
pub struct Syncer<E: Executor> {
    node: NodeIdentity,
    executor: E,
    options: SyncOptions,
    backend: Option<Backend>,
    /// the IPv4 and IPv6 appliers, created (and adopting) on first use
    appliers: [Option<Applier>; 2],
    /// the rules changed since the connections they deny were last cut
    /// (`EnforceExisting::Delete`; kept until a cut succeeds)
    cut_pending: bool,
    /// the IPv4 and IPv6 compiles kept across syncs (a sync compiles what changed)
    compilers: [IncrementalCompiler; 2],
    /// the IPv4 and IPv6 sets as last rendered (an unchanged set is not spelled again)
    render_caches: [RenderCache; 2],
}

impl<E: Executor> Syncer<E> {
    /// A syncer that has applied nothing yet; the first sync detects the
    /// backend and adopts TG- chains and tg- sets already on the node.
    pub fn new(node: NodeIdentity, executor: E, options: SyncOptions) -> Self {
        Syncer {
            node,
            executor,
            options,
            backend: None,
            appliers: [None, None],
            cut_pending: false,
            compilers: [
                IncrementalCompiler::new(Family::V4),
                IncrementalCompiler::new(Family::V6),
            ],
            render_caches: [RenderCache::default(), RenderCache::default()],
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

    /// What this node gets for `cluster` in IPv4 (compile + render, no I/O).
    pub fn render(&self, cluster: &tierguard::Cluster) -> Rendered {
        self.render_family(cluster, Family::V4)
    }

    /// What this node gets for `cluster` in one address family (compile + render, no I/O).
    pub fn render_family(&self, cluster: &tierguard::Cluster, family: Family) -> Rendered {
        self.compile_and_render(cluster, family).1
    }

    /// The one compile and render of both `sync` and `render`.
    fn compile_and_render(&self, cluster: &tierguard::Cluster, family: Family) -> (RuleSet, Rendered) {
        let rules = compile_family(cluster, &self.node_view(), family);
        let rendered = render(&rules, &self.render_options());
        (rules, rendered)
    }

    fn render_options(&self) -> RenderOptions {
        RenderOptions {
            nflog_group: self.options.nflog_group,
            allow_mark: self.options.allow_mark,
        }
    }

    /// The address families this syncer programs, in the order they are applied.
    pub fn families(&self) -> &'static [Family] {
        if self.options.ipv6 {
            &Family::BOTH
        } else {
            &[Family::V4]
        }
    }

    /// Everything [`Syncer::sync`] would program for `cluster`: one rendered rule
    /// set per family it programs, IPv4 first (compile + render, no I/O). `render`
    /// prints exactly these.
    pub fn render_all(&self, cluster: &tierguard::Cluster) -> Vec<Rendered> {
        self.families()
            .iter()
            .map(|family| self.render_family(cluster, *family))
            .collect()
    }

    fn backend(&mut self) -> Result<Backend, SyncError> {
        if let Some(b) = self.options.backend.or(self.backend) {
            return Ok(b);
        }
        let b = backend::detect(&self.executor).ok_or(SyncError::NoBackend)?;
        tracing::info!(backend = %b, "iptables backend");
        self.backend = Some(b);
        Ok(b)
    }

    fn slot(family: Family) -> usize {
        match family {
            Family::V4 => 0,
            Family::V6 => 1,
        }
    }

    /// The applier of `family`, adopting what is on the node on first use.
    fn applier(&mut self, family: Family) -> Result<&mut Applier, SyncError> {
        let slot = Self::slot(family);
        if self.appliers[slot].is_none() {
            let backend = self.backend()?;
            let mut applier = Applier::for_family(backend, family).with_xtables_wait(self.options.xtables_wait);
            applier.adopt(&self.executor).map_err(|e| SyncError::apply(family, e))?;
            tracing::info!(
                %family,
                chains = applier.state.chains.len(),
                sets = applier.state.sets.len(),
                "adopted existing TG- chains and tg- sets"
            );
            self.appliers[slot] = Some(applier);
        }
        self.appliers[slot].as_mut().ok_or(SyncError::NoBackend)
    }

    /// `repair`: the output of `ipset save` when this is a repairing resync.
    fn sync_family(
        &mut self,
        cluster: &tierguard::Cluster,
        family: Family,
        repair: Option<&str>,
    ) -> Result<(FamilyReport, RuleSet), SyncError> {
        // What changed since the last sync, compiled again; equal to a compile from
        // scratch (`compile_and_render`, which `render` prints).
        let (view, options) = (self.node_view(), self.render_options());
        let slot = Self::slot(family);
        let compiler = &mut self.compilers[slot];
        let rules = compiler.compile(cluster, &view);
        tracing::debug!(%family, update = ?compiler.last_update(), "compiled");
        let rendered = render_with(&rules, &options, &mut self.render_caches[slot]);
        self.applier(family)?;
        let Syncer { executor, appliers, .. } = self;
        let applier = appliers[Self::slot(family)].as_mut().ok_or(SyncError::NoBackend)?;
        let (report, repairs): (ApplyReport, Repairs) = if let Some(sets_save) = repair {
            applier.repair_with_sets(executor, &rendered, sets_save)
        } else {
            applier.apply(executor, &rendered).map(|r| (r, Repairs::default()))
        }
        .map_err(|e| SyncError::apply(family, e))?;
        if !repairs.is_empty() {
            tracing::info!(
                %family,
                chains = ?repairs.chains,
                set_members = ?repairs.set_members,
                sets = ?repairs.sets,
                jump = repairs.jump,
                "resync repaired drift"
            );
        }
        let family_report = FamilyReport {
            chains_written: report.chains_written,
            chains_removed: report.chains_removed,
            sets_written: report.sets_written,
            sets_updated: report.sets_updated,
            sets_removed: report.sets_removed,
            rules: rendered.rule_count(),
            sets: rendered.sets.len(),
            script_bytes: report.script_bytes,
            repairs,
        };
        Ok((family_report, rules))
    }

    /// Deletes the conntrack entries of connections `rule_sets` deny; returns how many.
    fn cut_denied(&self, rule_sets: &[RuleSet]) -> Result<usize, crate::exec::ExecError> {
        let table = ExecConntrack::new(&self.executor);
        let mut deleted = 0;
        for rules in rule_sets {
            let entries = table.list(rules.family)?;
            for entry in denied(&entries, rules) {
                table.delete(entry)?;
                deleted += 1;
                tracing::info!(
                    protocol = %entry.protocol,
                    source = %entry.source,
                    destination = %entry.destination,
                    port = entry.destination_port,
                    "cut a connection the new rules deny"
                );
            }
        }
        Ok(deleted)
    }

    /// Compiles, renders and applies incrementally, IPv4 then IPv6; on error the
    /// failing family's previous rule set stays in force (and IPv6 is not
    /// attempted after an IPv4 failure).
    ///
    /// With [`EnforceExisting::Delete`], a sync that changed the rules then deletes
    /// the conntrack entries of the connections they deny; a failure there is
    /// logged (the rules are in force) and the cut is retried on the next sync.
    pub fn sync(&mut self, cluster: &tierguard::Cluster) -> Result<SyncReport, SyncError> {
        self.sync_or_repair(cluster, false)
    }

    fn sync_or_repair(&mut self, cluster: &tierguard::Cluster, repair: bool) -> Result<SyncReport, SyncError> {
        let sets_save = if repair {
            // Read once for both families; the IPv4 apply does not touch IPv6 sets.
            let list = ["save".to_string()];
            Some(
                self.executor
                    .run("ipset", &list, None)
                    .map_err(|e| SyncError::Apply(ApplyError::Exec(e)))?,
            )
        } else {
            None
        };
        let (v4, rules4) = self.sync_family(cluster, Family::V4, sets_save.as_deref())?;
        let mut rule_sets = vec![rules4];
        let v6 = if self.options.ipv6 {
            let (report, rules6) = self.sync_family(cluster, Family::V6, sets_save.as_deref())?;
            rule_sets.push(rules6);
            report
        } else {
            FamilyReport::default()
        };
        let mut conntrack_deleted = 0;
        if self.options.enforce_existing == EnforceExisting::Delete {
            self.cut_pending |= v4.changed() || v6.changed();
            if self.cut_pending {
                match self.cut_denied(&rule_sets) {
                    Ok(n) => {
                        conntrack_deleted = n;
                        self.cut_pending = false;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot cut denied connections (retried on the next sync)"),
                }
            }
        }
        Ok(SyncReport {
            v4,
            v6,
            conntrack_deleted,
        })
    }

    /// A repairing resync: reads the node's chains and sets, and rewrites only what
    /// differs from what should be there (a flushed chain, a stray rule, a deleted or
    /// stray set member, a missing set, the FORWARD jump) along with what changed;
    /// `repairs` in the report says what drifted.
    pub fn resync(&mut self, cluster: &tierguard::Cluster) -> Result<SyncReport, SyncError> {
        self.sync_or_repair(cluster, true)
    }

    /// A full rewrite: forgets what was written and rewrites every chain and rebuilds
    /// every set.
    pub fn rewrite_all(&mut self, cluster: &tierguard::Cluster) -> Result<SyncReport, SyncError> {
        for applier in self.appliers.iter_mut().flatten() {
            applier.invalidate();
        }
        self.sync(cluster)
    }

    /// Removes every TG- chain (and the FORWARD jump) and every tg- set, of both
    /// families (IPv4 first; each family's chains go in one restore, then its sets).
    pub fn cleanup(&mut self) -> Result<(), SyncError> {
        let backend = self.backend()?;
        let families: &[Family] = if self.options.ipv6 {
            &Family::BOTH
        } else {
            &[Family::V4]
        };
        for &family in families {
            let mut applier = Applier::for_family(backend, family).with_xtables_wait(self.options.xtables_wait);
            let report = applier
                .cleanup(&self.executor)
                .map_err(|e| SyncError::apply(family, e))?;
            tracing::info!(%family, chains = report.chains_removed, sets = report.sets_removed, "cleaned up");
            self.appliers[Self::slot(family)] = None;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Fails the restore of one program; records every program run.
    struct Fake {
        fail: &'static str,
        calls: Mutex<Vec<String>>,
    }

    impl Executor for Fake {
        fn run(&self, program: &str, args: &[String], _stdin: Option<&str>) -> Result<String, ExecError> {
            if let Ok(mut c) = self.calls.lock() {
                c.push(program.to_string());
            }
            if program == self.fail {
                return Err(ExecError {
                    program: program.into(),
                    args: args.to_vec(),
                    code: Some(2),
                    stderr: "line 2 failed".into(),
                });
            }
            Ok(String::new())
        }
    }

    fn syncer(fail: &'static str) -> Syncer<Fake> {
        let node = NodeIdentity {
            name: "n".into(),
            addresses: Vec::new(),
        };
        let options = SyncOptions {
            backend: Some(Backend::Nft),
            ..SyncOptions::default()
        };
        let fake = Fake {
            fail,
            calls: Mutex::new(Vec::new()),
        };
        Syncer::new(node, fake, options)
    }

    #[test]
    fn a_failed_family_is_named_and_ipv6_waits_for_ipv4() {
        let cluster = tierguard::Cluster::new();
        let mut s = syncer("ip6tables-nft-restore");
        let err = s.sync(&cluster).err();
        assert_eq!(err.as_ref().and_then(SyncError::family), Some(Family::V6), "{err:?}");
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            message.starts_with("IPv6: ip6tables-nft-restore failed at line 2"),
            "{message}"
        );

        let mut s = syncer("iptables-nft-restore");
        let err = s.sync(&cluster).err();
        assert_eq!(err.as_ref().and_then(SyncError::family), Some(Family::V4), "{err:?}");
        let calls = s.executor().calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert_eq!(
            calls.last().map(String::as_str),
            Some("iptables-nft-restore"),
            "{calls:?}"
        );
        assert!(!calls.iter().any(|c| c.starts_with("ip6tables")), "{calls:?}");
    }

    /// An empty node whose conntrack table holds `listing` (IPv4); records every command.
    struct Node {
        listing: &'static str,
        fail_list: std::sync::atomic::AtomicBool,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl Executor for Node {
        fn run(&self, program: &str, args: &[String], _stdin: Option<&str>) -> Result<String, ExecError> {
            let mut call = vec![program.to_string()];
            call.extend(args.iter().cloned());
            if let Ok(mut c) = self.calls.lock() {
                c.push(call);
            }
            let listing = program == "conntrack" && args.first().is_some_and(|a| a == "-L");
            if listing && self.fail_list.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(ExecError {
                    program: program.into(),
                    args: args.to_vec(),
                    code: Some(1),
                    stderr: "conntrack: operation failed".into(),
                });
            }
            let ipv4 = args.iter().any(|a| a == "ipv4");
            Ok(if listing && ipv4 {
                self.listing.to_string()
            } else {
                String::new()
            })
        }
    }

    fn conntrack_calls(node: &Node, what: &str) -> Vec<String> {
        let calls = node.calls.lock().map(|c| c.clone()).unwrap_or_default();
        calls
            .into_iter()
            .filter(|c| c[0] == "conntrack" && c.get(1).is_some_and(|a| a == what))
            .map(|c| c[1..].join(" "))
            .collect()
    }

    /// x/a, x/b, x/c on node n; b admits only a.
    fn b_from_a() -> tierguard::Cluster {
        let mut cluster = tierguard::Cluster::new();
        cluster.upsert_namespace(tierguard::NamespaceInfo::new("x", Default::default()));
        for (name, ip) in [("a", "10.0.0.1"), ("b", "10.0.0.2"), ("c", "10.0.0.3")] {
            cluster.upsert_pod(tierguard::PodInfo {
                namespace: "x".into(),
                name: name.into(),
                labels: [("pod".to_string(), name.to_string())].into_iter().collect(),
                ips: ip.parse().into_iter().collect(),
                node: Some("n".into()),
                ports: vec![],
                host_network: false,
            });
        }
        let np: k8s_openapi::api::networking::v1::NetworkPolicy = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "b-from-a", "namespace": "x"},
            "spec": {"podSelector": {"matchLabels": {"pod": "b"}},
                     "ingress": [{"from": [{"podSelector": {"matchLabels": {"pod": "a"}}}]}]}
        }))
        .unwrap_or_default();
        if let Err(e) = cluster.apply_network_policy(&np) {
            panic!("{e}");
        }
        cluster
    }

    const LISTING: &str = "\
ipv4 2 tcp 6 431999 ESTABLISHED src=10.0.0.1 dst=10.0.0.2 sport=40001 dport=80 src=10.0.0.2 dst=10.0.0.1 sport=80 dport=40001 [ASSURED] mark=0 use=1
ipv4 2 tcp 6 431999 ESTABLISHED src=10.0.0.3 dst=10.0.0.2 sport=40002 dport=80 src=10.0.0.2 dst=10.0.0.3 sport=80 dport=40002 [ASSURED] mark=0 use=1
ipv4 2 udp 17 100 src=10.0.0.3 dst=10.0.0.2 sport=40003 dport=53 src=10.0.0.2 dst=10.0.0.3 sport=53 dport=40003 [ASSURED] mark=0 use=1
ipv4 2 tcp 6 431999 ESTABLISHED src=10.0.0.3 dst=10.0.0.1 sport=40004 dport=80 src=10.0.0.1 dst=10.0.0.3 sport=80 dport=40004 [ASSURED] mark=0 use=1
ipv4 2 tcp 6 431999 ESTABLISHED src=10.9.9.9 dst=10.8.8.8 sport=40005 dport=80 src=10.8.8.8 dst=10.9.9.9 sport=80 dport=40005 [ASSURED] mark=0 use=1
";

    fn node_syncer(mode: EnforceExisting) -> Syncer<Node> {
        let identity = NodeIdentity {
            name: "n".into(),
            addresses: Vec::new(),
        };
        let options = SyncOptions {
            backend: Some(Backend::Nft),
            enforce_existing: mode,
            ..SyncOptions::default()
        };
        let node = Node {
            listing: LISTING,
            fail_list: std::sync::atomic::AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
        };
        Syncer::new(identity, node, options)
    }

    #[test]
    fn delete_cuts_exactly_the_denied_connections_after_a_change() {
        let mut s = node_syncer(EnforceExisting::Delete);
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.conntrack_deleted, 2);
        assert_eq!(
            conntrack_calls(s.executor(), "-D"),
            [
                "-D -f ipv4 -p tcp --orig-src 10.0.0.3 --orig-dst 10.0.0.2 --orig-port-src 40002 --orig-port-dst 80",
                "-D -f ipv4 -p udp --orig-src 10.0.0.3 --orig-dst 10.0.0.2 --orig-port-src 40003 --orig-port-dst 53",
            ]
        );
        assert_eq!(conntrack_calls(s.executor(), "-L").len(), 2, "IPv4 and IPv6 listed");
        // Nothing changed: the table is not even listed.
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.conntrack_deleted, 0);
        assert_eq!(conntrack_calls(s.executor(), "-L").len(), 2);
    }

    #[test]
    fn keep_never_touches_conntrack() {
        let mut s = node_syncer(EnforceExisting::Keep);
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.conntrack_deleted, 0);
        let calls = s.executor().calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert!(calls.iter().all(|c| c[0] != "conntrack"), "{calls:?}");
    }

    #[test]
    fn a_failed_cut_is_retried_on_the_next_sync() {
        let mut s = node_syncer(EnforceExisting::Delete);
        s.executor().fail_list.store(true, std::sync::atomic::Ordering::SeqCst);
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.conntrack_deleted, 0, "the rules are in force; the cut waits");
        s.executor().fail_list.store(false, std::sync::atomic::Ordering::SeqCst);
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(report.conntrack_deleted, 2);
    }

    #[test]
    fn the_report_holds_each_family_and_totals_both() {
        let mut s = syncer("never");
        let report = s.sync(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.v4.chains_written > 0 && report.v4.rules > 0, "{report:?}");
        assert!(report.v6.chains_written > 0 && report.v6.rules > 0, "{report:?}");
        assert!(report.v4.rules > report.v6.rules, "only IPv4 pods: {report:?}");
        let families: Vec<Family> = report.families().iter().map(|(f, _)| *f).collect();
        assert_eq!(families, [Family::V4, Family::V6]);
        assert_eq!(report.total_rules(), report.v4.rules + report.v6.rules);
        assert_eq!(report.total_sets(), report.v4.sets + report.v6.sets);
        assert_eq!(
            report.total_script_bytes(),
            report.v4.script_bytes + report.v6.script_bytes
        );

        s.options.ipv6 = false;
        let report = s.rewrite_all(&b_from_a()).unwrap_or_else(|e| panic!("{e}"));
        assert!(report.v4.chains_written > 0, "{report:?}");
        assert_eq!(report.v6, FamilyReport::default(), "IPv6 off: nothing of IPv6");
    }

    #[test]
    fn ipv6_off_runs_no_ipv6_program() {
        let mut s = syncer("never");
        s.options.ipv6 = false;
        let report = s.sync(&tierguard::Cluster::new());
        assert!(report.is_ok(), "{report:?}");
        s.cleanup().expect("cleanup");
        let calls = s.executor.calls.lock().map(|c| c.clone()).unwrap_or_default();
        assert!(!calls.is_empty());
        assert!(calls.iter().all(|p| !p.starts_with("ip6tables")), "{calls:?}");
    }
}
