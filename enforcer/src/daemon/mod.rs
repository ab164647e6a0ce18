//! The node agent: cluster updates in, syncs out at a bounded frequency
//! ([`runner`]), a periodic full resync, retries with backoff on failure. The
//! loop is fed by a stream of [`Update`]s, so it runs the same on kube
//! watchers ([`watch`]) and in tests.

pub mod metrics;
pub mod runner;
pub mod server;
pub mod watch;

use std::collections::{BTreeSet, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{FutureExt, Stream, StreamExt};
use tierguard::policy::PolicyId;
use tierguard::{Cluster, NamespaceInfo, PodInfo, Policy};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::exec::Executor;
use crate::sync::{SyncError, SyncReport, Syncer};
use metrics::{EventKind, Metrics};
pub use runner::LoopConfig;
use runner::{SyncEnd, SyncRunner, SyncStart};

/// A kind of object the agent lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// pods
    Pods,
    /// namespaces
    Namespaces,
    /// network policies
    Policies,
}

/// One change to the agent's view of the cluster.
#[derive(Clone, Debug, PartialEq)]
pub enum Update {
    /// a pod was added or changed
    Pod(PodInfo),
    /// a pod is gone (or finished: its address may be reused)
    PodGone {
        /// namespace
        namespace: String,
        /// name
        name: String,
    },
    /// a namespace was added or changed
    Namespace(NamespaceInfo),
    /// a namespace is gone
    NamespaceGone(String),
    /// a policy was added or changed
    Policy(Policy),
    /// a policy is gone
    PolicyGone(PolicyId),
    /// a complete list of pods (after a watch restart): replaces every pod
    Pods(Vec<PodInfo>),
    /// a complete list of namespaces
    Namespaces(Vec<NamespaceInfo>),
    /// a complete list of policies
    Policies(Vec<Policy>),
    /// the node's own addresses changed
    NodeAddresses(Vec<IpAddr>),
}

impl Update {
    /// What the update is about.
    pub fn event_kind(&self) -> EventKind {
        match self {
            Update::Pod(_) | Update::PodGone { .. } | Update::Pods(_) => EventKind::Pod,
            Update::Namespace(_) | Update::NamespaceGone(_) | Update::Namespaces(_) => EventKind::Namespace,
            Update::Policy(_) | Update::PolicyGone(_) | Update::Policies(_) => EventKind::Policy,
            Update::NodeAddresses(_) => EventKind::Node,
        }
    }

    /// Applies the update; returns the kind that is now completely listed, if any.
    pub fn apply(self, cluster: &mut Cluster) -> Option<Kind> {
        match self {
            Update::Pod(pod) => cluster.upsert_pod(pod),
            Update::PodGone { namespace, name } => {
                cluster.remove_pod(&namespace, &name);
            }
            Update::Namespace(ns) => cluster.upsert_namespace(ns),
            Update::NamespaceGone(name) => {
                cluster.remove_namespace(&name);
            }
            Update::Policy(policy) => cluster.upsert_policy(policy),
            Update::PolicyGone(id) => {
                cluster.remove_policy(&id);
            }
            // A relist replaces only what differs: an unchanged object is not
            // touched, so the cluster's journal (and the compile after it) sees
            // just the real changes.
            Update::Pods(pods) => {
                let listed: HashSet<(&str, &str)> =
                    pods.iter().map(|p| (p.namespace.as_str(), p.name.as_str())).collect();
                let gone: Vec<(String, String)> = cluster
                    .pods()
                    .filter(|p| !listed.contains(&(p.namespace.as_str(), p.name.as_str())))
                    .map(|p| (p.namespace.clone(), p.name.clone()))
                    .collect();
                for (ns, name) in gone {
                    cluster.remove_pod(&ns, &name);
                }
                pods.into_iter().for_each(|p| cluster.upsert_pod(p));
                return Some(Kind::Pods);
            }
            Update::Namespaces(list) => {
                let listed: HashSet<&str> = list.iter().map(|n| n.name.as_str()).collect();
                let gone: Vec<String> = cluster
                    .namespaces()
                    .filter(|n| !listed.contains(n.name.as_str()))
                    .map(|n| n.name.clone())
                    .collect();
                for name in gone {
                    cluster.remove_namespace(&name);
                }
                list.into_iter().for_each(|n| cluster.upsert_namespace(n));
                return Some(Kind::Namespaces);
            }
            Update::Policies(list) => {
                let listed: HashSet<&PolicyId> = list.iter().map(|p| &p.id).collect();
                let gone: Vec<PolicyId> = cluster
                    .policies()
                    .filter(|p| !listed.contains(&p.id))
                    .map(|p| p.id.clone())
                    .collect();
                for id in gone {
                    cluster.remove_policy(&id);
                }
                list.into_iter().for_each(|p| cluster.upsert_policy(p));
                return Some(Kind::Policies);
            }
            Update::NodeAddresses(_) => {}
        }
        None
    }
}

/// Updates taken from the stream at once when a sync is due, so that the sync
/// includes what already arrived; bounded so a stream that is always ready
/// cannot hold the sync back.
const MAX_DRAINED_UPDATES: usize = 4096;

/// The loop's view: the cluster, which kinds are listed, the scheduler.
struct Agent {
    cluster: Cluster,
    listed: BTreeSet<Kind>,
    runner: SyncRunner<EventKind>,
}

impl Agent {
    fn absorb<E: Executor>(&mut self, update: Update, syncer: &mut Syncer<E>, metrics: &Metrics) {
        let now = Instant::now().into_std();
        if self.runner.changed(now, update.event_kind()) {
            metrics.coalesced_events.inc();
        }
        if let Update::NodeAddresses(addresses) = &update {
            syncer.set_node_addresses(addresses.clone());
        }
        if let Some(kind) = update.apply(&mut self.cluster) {
            self.listed.insert(kind);
            if !self.runner.is_ready()
                && [Kind::Pods, Kind::Namespaces, Kind::Policies]
                    .iter()
                    .all(|k| self.listed.contains(k))
            {
                self.runner.mark_ready();
            }
        }
    }
}

fn apply<E: Executor>(
    syncer: &mut Syncer<E>,
    cluster: &Cluster,
    full: bool,
    metrics: &Metrics,
) -> Result<SyncReport, SyncError> {
    let started = std::time::Instant::now();
    let result = if full {
        syncer.resync(cluster)
    } else {
        syncer.sync(cluster)
    };
    metrics.sync_duration.observe(started.elapsed().as_secs_f64());
    match &result {
        Ok(report) => {
            metrics.syncs.inc();
            for (_, family) in report.families() {
                metrics.observe_repairs(&family.repairs);
            }
            metrics
                .conntrack_deleted
                .inc_by(u64::try_from(report.conntrack_deleted).unwrap_or(u64::MAX));
            metrics
                .rules
                .set(i64::try_from(report.total_rules()).unwrap_or(i64::MAX));
            metrics.sets.set(i64::try_from(report.total_sets()).unwrap_or(i64::MAX));
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            metrics.last_success.set(now.as_secs_f64());
        }
        Err(_) => {
            metrics.errors.inc();
        }
    }
    result
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Runs the sync that is due: applies the rules, tells the runner, records
/// each covered event's wait and logs the outcome.
fn sync_now<E: Executor>(start: SyncStart, syncer: &mut Syncer<E>, agent: &mut Agent, metrics: &Metrics) {
    let result = apply(syncer, &agent.cluster, start.full, metrics);
    let now = Instant::now().into_std();
    let waited_ms = start.oldest.map(|t| millis(now.saturating_duration_since(t)));
    let end = agent.runner.finished(now, result.is_ok());
    match result {
        Ok(report) => {
            if let SyncEnd::Applied(changes) = &end {
                for change in changes {
                    let waited = now.saturating_duration_since(change.arrived);
                    metrics.observe_applied(change.tag, waited, change.count);
                }
            }
            tracing::info!(
                full = start.full,
                events = start.events,
                oldest_event_waited_ms = waited_ms,
                v4.chains_written = report.v4.chains_written,
                v4.chains_removed = report.v4.chains_removed,
                v4.sets_written = report.v4.sets_written,
                v4.sets_updated = report.v4.sets_updated,
                v4.sets_removed = report.v4.sets_removed,
                v6.chains_written = report.v6.chains_written,
                v6.chains_removed = report.v6.chains_removed,
                v6.sets_written = report.v6.sets_written,
                v6.sets_updated = report.v6.sets_updated,
                v6.sets_removed = report.v6.sets_removed,
                script_bytes = report.total_script_bytes(),
                rules = report.total_rules(),
                sets = report.total_sets(),
                "synced"
            );
        }
        Err(e) => {
            let retry_in_ms = match end {
                SyncEnd::Failed { retry_at } => Some(millis(retry_at.saturating_duration_since(now))),
                SyncEnd::Applied(_) => None,
            };
            tracing::error!(
                error = %e,
                full = start.full,
                events = start.events,
                retry_in_ms,
                "sync failed; the previous rules stay in force"
            );
        }
    }
}

/// Runs the loop until `updates` ends or `shutdown` fires. Nothing is synced
/// before pods, namespaces and policies have each been listed once (a partial
/// view could open what the adopted rules keep closed).
pub async fn drive<S, E>(
    updates: S,
    mut syncer: Syncer<E>,
    config: LoopConfig,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Syncer<E>
where
    S: Stream<Item = Update> + Unpin,
    E: Executor,
{
    let mut updates = updates;
    let mut agent = Agent {
        cluster: Cluster::new(),
        listed: BTreeSet::new(),
        runner: SyncRunner::new(config, Instant::now().into_std()),
    };
    loop {
        let due = agent.runner.next_sync_at(Instant::now().into_std());
        let timer = async move {
            match due {
                Some(at) => sleep_until(Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            update = updates.next() => {
                let Some(update) = update else { break };
                agent.absorb(update, &mut syncer, &metrics);
            }
            _ = timer => {
                for _ in 0..MAX_DRAINED_UPDATES {
                    match updates.next().now_or_never() {
                        Some(Some(update)) => agent.absorb(update, &mut syncer, &metrics),
                        Some(None) => return syncer,
                        None => break,
                    }
                }
                if let Some(start) = agent.runner.poll(Instant::now().into_std()) {
                    sync_now(start, &mut syncer, &mut agent, &metrics);
                }
            }
        }
    }
    syncer
}
