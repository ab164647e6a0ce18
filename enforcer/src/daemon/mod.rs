//! The node agent: cluster updates in, debounced syncs out, a periodic full
//! resync, retries with backoff on failure. The loop is fed by a stream of
//! [`Update`]s, so it runs the same on kube watchers ([`watch`]) and in tests.

pub mod metrics;
pub mod server;
pub mod watch;

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::{Stream, StreamExt};
use tierguard::policy::PolicyId;
use tierguard::{Cluster, NamespaceInfo, PodInfo, Policy};
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use crate::exec::Executor;
use crate::sync::Syncer;
use metrics::Metrics;

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
            Update::Pods(pods) => {
                let old: Vec<(String, String)> =
                    cluster.pods().map(|p| (p.namespace.clone(), p.name.clone())).collect();
                for (ns, name) in old {
                    cluster.remove_pod(&ns, &name);
                }
                pods.into_iter().for_each(|p| cluster.upsert_pod(p));
                return Some(Kind::Pods);
            }
            Update::Namespaces(list) => {
                let old: Vec<String> = cluster.namespaces().map(|n| n.name.clone()).collect();
                for name in old {
                    cluster.remove_namespace(&name);
                }
                list.into_iter().for_each(|n| cluster.upsert_namespace(n));
                return Some(Kind::Namespaces);
            }
            Update::Policies(list) => {
                let old: Vec<PolicyId> = cluster.policies().map(|p| p.id.clone()).collect();
                for id in old {
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

/// Timing of the loop.
#[derive(Clone, Copy, Debug)]
pub struct LoopConfig {
    /// quiet period after a change before syncing
    pub debounce: Duration,
    /// full resync period
    pub resync: Duration,
    /// first retry delay after a failed sync (doubles up to `max_backoff`)
    pub backoff: Duration,
    /// longest retry delay
    pub max_backoff: Duration,
}

impl Default for LoopConfig {
    fn default() -> Self {
        LoopConfig {
            debounce: Duration::from_millis(200),
            resync: Duration::from_secs(300),
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(60),
        }
    }
}

fn record<E: Executor>(syncer: &mut Syncer<E>, cluster: &Cluster, full: bool, metrics: &Metrics) -> bool {
    let started = std::time::Instant::now();
    let result = if full {
        syncer.resync(cluster)
    } else {
        syncer.sync(cluster)
    };
    metrics.sync_duration.observe(started.elapsed().as_secs_f64());
    match result {
        Ok(report) => {
            metrics.syncs.inc();
            metrics
                .conntrack_deleted
                .inc_by(u64::try_from(report.conntrack_deleted).unwrap_or(u64::MAX));
            metrics
                .rules
                .set(i64::try_from(report.total_rules()).unwrap_or(i64::MAX));
            metrics.sets.set(i64::try_from(report.total_sets()).unwrap_or(i64::MAX));
            let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
            metrics.last_success.set(now.as_secs_f64());
            tracing::info!(
                full,
                chains_written = report.chains_written,
                chains_removed = report.chains_removed,
                sets_written = report.sets_written,
                sets_removed = report.sets_removed,
                rules = report.rules,
                sets = report.sets,
                "synced"
            );
            true
        }
        Err(e) => {
            metrics.errors.inc();
            tracing::error!(error = %e, full, "sync failed; the previous rules stay in force");
            false
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
    let mut cluster = Cluster::new();
    let mut listed = BTreeSet::new();
    let all = [Kind::Pods, Kind::Namespaces, Kind::Policies];
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    // When the next change-driven sync is due (None: nothing pending).
    let mut due: Option<Instant> = None;
    let mut next_resync = Instant::now() + config.resync;
    let mut backoff = config.backoff;
    let mut full_pending = false;
    loop {
        let ready = all.iter().all(|k| listed.contains(k));
        let wake = match due {
            Some(t) if ready => t,
            _ => far(),
        };
        let resync_at = if ready { next_resync } else { far() };
        tokio::select! {
            _ = shutdown.cancelled() => break,
            update = updates.next() => {
                let Some(update) = update else { break };
                if let Update::NodeAddresses(addresses) = &update {
                    syncer.set_node_addresses(addresses.clone());
                }
                if let Some(kind) = update.apply(&mut cluster) {
                    listed.insert(kind);
                }
                // Debounce: the sync waits for a quiet period, but a failed sync's backoff is kept.
                let quiet = Instant::now() + config.debounce;
                due = Some(match due {
                    Some(t) if t > quiet => t,
                    _ => quiet,
                });
            }
            _ = sleep_until(wake) => {
                let ok = record(&mut syncer, &cluster, full_pending, &metrics);
                if ok {
                    due = None;
                    full_pending = false;
                    backoff = config.backoff;
                } else {
                    due = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
            _ = sleep_until(resync_at) => {
                next_resync = Instant::now() + config.resync;
                if record(&mut syncer, &cluster, true, &metrics) {
                    backoff = config.backoff;
                } else {
                    full_pending = true;
                    due = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(config.max_backoff);
                }
            }
        }
    }
    syncer
}
