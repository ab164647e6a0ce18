//! Changes admitted but not yet seen in the watch.
//!
//! A review is judged against the cached cluster state, which learns of a
//! change only when the watch delivers it, some time after the webhook
//! admitted it. Two changes that are each fine alone (deleting one of two
//! DNS allows) would otherwise both pass when they arrive close together. So
//! NetworkPolicy reviews take turns per namespace ([`locks`]), and every
//! change admitted for real (not a dry run, not denied) is kept here, by
//! object, until the cached state shows it; each review is judged against
//! the cached state with these changes applied.
//!
//! A change ends when the cached state has moved past the version it
//! replaced: for a CREATE or UPDATE, the object is there with another
//! resourceVersion than the one it had when the change was admitted (the
//! admitted object has no resourceVersion of its own yet); for a DELETE, the
//! object is gone (or there at a later version). resourceVersions are
//! compared as numbers when both are numbers (as etcd's are) so that a cache
//! still behind the replaced version does not count as past it, else as
//! opaque strings. A change the cached state never shows (the API server
//! refused to persist it after admission: a conflict, a quota, another
//! webhook) ends after an expiry, with a warning and a count.
//!
//! Only the webhook's own admissions are known here: replicas do not share
//! their overlays.

pub mod locks;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::NamespaceInfo;
use tierguard::guardrails::{self, Operation, PolicyState, Review};
use tierguard::labels::{Labels, NAMESPACE_NAME_LABEL};
use tierguard::template::TierTemplate;

use crate::metrics::OverlayMetrics;
use crate::state::{Snapshot, StateSource, policy_namespace};
use locks::{NamespaceLocks, NamespaceTurn};

/// How long an admitted change counts without the watch showing it.
///
/// Validating webhooks run in parallel, so a change admitted here is
/// persisted once the slowest other validating webhook on the resource has
/// answered: within the API server's default webhook timeout (10 s) unless
/// a webhook sets a longer one; the watch then delivers it, normally well
/// under a second later. 5 s more covers the write and the watch. A longer
/// expiry keeps a change the API server refused to persist (conflict,
/// quota, another webhook's denial) counting for longer, so it should not
/// be raised beyond the slowest webhook's timeout plus a few seconds.
pub const DEFAULT_EXPIRY: Duration = Duration::from_secs(15);

/// The time an overlay reads (controllable in tests).
pub trait Clock: Send + Sync + fmt::Debug + 'static {
    /// Now.
    fn now(&self) -> Instant;
}

/// The monotonic system clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to.
#[derive(Debug)]
pub struct ManualClock {
    now: Mutex<Instant>,
}

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock {
            now: Mutex::new(Instant::now()),
        }
    }
}

impl ManualClock {
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(PoisonError::into_inner);
        *now += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The object a change is about.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ObjectKey {
    /// a NetworkPolicy
    NetworkPolicy {
        /// its namespace
        namespace: String,
        /// its name
        name: String,
    },
    /// a Namespace
    Namespace {
        /// its name
        name: String,
    },
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ObjectKey::NetworkPolicy { namespace, name } => write!(f, "NetworkPolicy {namespace}/{name}"),
            ObjectKey::Namespace { name } => write!(f, "Namespace {name}"),
        }
    }
}

/// What an admitted change makes of its object.
#[derive(Clone, Debug)]
enum Change {
    /// the policy as admitted (CREATE, UPDATE)
    Policy(Arc<NetworkPolicy>),
    /// the policy is gone (DELETE)
    PolicyDeleted,
    /// the namespace's labels as admitted (CREATE, UPDATE)
    Namespace(Labels),
}

#[derive(Clone, Debug)]
struct Entry {
    change: Change,
    operation: Operation,
    /// the resourceVersion the change replaces (none: no object before it)
    replaces: Option<String>,
    admitted_at: Instant,
}

/// Whether a cached object at `cached` has moved past `replaced`.
fn moved_past(cached: Option<&str>, replaced: Option<&str>) -> bool {
    if let (Some(cached), Some(replaced)) = (cached, replaced)
        && let (Ok(cached), Ok(replaced)) = (cached.parse::<u64>(), replaced.parse::<u64>())
    {
        return cached > replaced;
    }
    cached != replaced
}

impl Entry {
    /// Whether `snapshot` shows the change (or something after it).
    fn observed(&self, key: &ObjectKey, snapshot: &Snapshot) -> bool {
        let cached: Option<Option<&str>> = match key {
            ObjectKey::NetworkPolicy { namespace, name } => snapshot
                .policy
                .policies
                .get(&(namespace.clone(), name.clone()))
                .map(|np| np.metadata.resource_version.as_deref()),
            ObjectKey::Namespace { name } => snapshot.namespace_versions.get(name).map(Option::as_deref),
        };
        match (&self.change, cached) {
            (Change::PolicyDeleted, None) => true,
            (_, None) => false,
            (_, Some(version)) => moved_past(version, self.replaces.as_deref()),
        }
    }
}

/// Admitted changes not yet in the cached state, and the per-namespace turns
/// of NetworkPolicy reviews.
#[derive(Debug)]
pub struct Overlay {
    expiry: Duration,
    clock: Arc<dyn Clock>,
    metrics: OverlayMetrics,
    entries: Mutex<BTreeMap<ObjectKey, Entry>>,
    locks: NamespaceLocks,
}

impl Default for Overlay {
    /// The default expiry, the system clock, metrics registered nowhere.
    fn default() -> Self {
        Overlay::new(DEFAULT_EXPIRY, Arc::new(SystemClock), OverlayMetrics::default())
    }
}

impl Overlay {
    /// An empty overlay whose changes count for at most `expiry` each.
    pub fn new(expiry: Duration, clock: Arc<dyn Clock>, metrics: OverlayMetrics) -> Overlay {
        let locks = NamespaceLocks::new(metrics.lock_wait.clone());
        Overlay {
            expiry,
            clock,
            metrics,
            entries: Mutex::new(BTreeMap::new()),
            locks,
        }
    }

    /// How long a change counts without the watch showing it.
    pub fn expiry(&self) -> Duration {
        self.expiry
    }

    /// Waits for `namespace`'s turn to judge a NetworkPolicy change; hold it
    /// until the change is recorded (or denied).
    pub async fn turn(&self, namespace: &str) -> NamespaceTurn<'_> {
        self.locks.lock(namespace).await
    }

    /// Namespaces with a review holding or waiting for their turn.
    pub fn busy_namespaces(&self) -> usize {
        self.locks.busy()
    }

    /// The cached state and the pending changes that bear on a NetworkPolicy
    /// review in `namespace`: its own policies' changes and every namespace's
    /// label changes. Never waits on the API server.
    pub fn view(&self, state: &dyn StateSource, namespace: &str) -> View {
        // Fetched (and built, after a watch event) outside the lock, so a
        // rebuild does not hold up every review; the one taken under the
        // lock below is then normally the cached one.
        drop(state.snapshot());
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        // Taken and applied under one lock: an entry dropped because this
        // snapshot shows it is dropped only for readers whose snapshot is at
        // least as new.
        let snapshot = state.snapshot();
        self.settle_locked(&mut entries, &snapshot);
        let mut policies = Vec::new();
        let mut namespaces = Vec::new();
        for (key, entry) in entries.iter() {
            match (key, &entry.change) {
                (ObjectKey::NetworkPolicy { namespace: ns, name }, Change::Policy(np)) if ns == namespace => {
                    policies.push((name.clone(), Some(Arc::clone(np))));
                }
                (ObjectKey::NetworkPolicy { namespace: ns, name }, Change::PolicyDeleted) if ns == namespace => {
                    policies.push((name.clone(), None));
                }
                (ObjectKey::Namespace { name }, Change::Namespace(labels)) => {
                    namespaces.push((name.clone(), labels.clone()));
                }
                _ => {}
            }
        }
        View {
            snapshot,
            namespace: namespace.to_string(),
            policies,
            namespaces,
        }
    }

    /// Drops the changes the cached state now shows and those past their expiry.
    pub fn settle(&self, state: &dyn StateSource) {
        drop(state.snapshot());
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let snapshot = state.snapshot();
        self.settle_locked(&mut entries, &snapshot);
    }

    fn settle_locked(&self, entries: &mut BTreeMap<ObjectKey, Entry>, snapshot: &Snapshot) {
        let now = self.clock.now();
        entries.retain(|key, entry| {
            if entry.observed(key, snapshot) {
                tracing::debug!(object = %key, operation = ?entry.operation, "admitted change seen in the watch");
                return false;
            }
            let age = now.saturating_duration_since(entry.admitted_at);
            if age >= self.expiry {
                self.metrics.expired.inc();
                tracing::warn!(
                    object = %key,
                    operation = ?entry.operation,
                    seconds = age.as_secs_f64(),
                    "admitted change never appeared in the watch (the API server may not have persisted it); \
                     reviews no longer count it"
                );
                return false;
            }
            true
        });
        self.metrics
            .entries
            .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
    }

    fn record(&self, key: ObjectKey, operation: Operation, change: Change, replaces: Option<String>) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        tracing::debug!(object = %key, ?operation, ?replaces, "admitted change counts until the watch shows it");
        entries.insert(
            key,
            Entry {
                change,
                operation,
                replaces,
                admitted_at: self.clock.now(),
            },
        );
        self.metrics
            .entries
            .set(i64::try_from(entries.len()).unwrap_or(i64::MAX));
    }

    /// Records an admitted NetworkPolicy change; `snapshot` is the cached
    /// state it was judged against (a CREATE replaces whatever version of the
    /// object that state holds, normally none).
    pub fn admit_policy(
        &self,
        snapshot: &Snapshot,
        operation: Operation,
        old: Option<&NetworkPolicy>,
        new: Option<&NetworkPolicy>,
    ) {
        let (object, change) = match (operation, old, new) {
            (Operation::Create | Operation::Update, _, Some(new)) => (new, Change::Policy(Arc::new(new.clone()))),
            (Operation::Delete, Some(old), _) => (old, Change::PolicyDeleted),
            _ => return,
        };
        let Some(name) = object.metadata.name.clone().filter(|n| !n.is_empty()) else {
            tracing::debug!(?operation, "admitted NetworkPolicy without a name: not recorded");
            return;
        };
        let namespace = policy_namespace(object);
        let replaces = match operation {
            Operation::Create => snapshot
                .policy
                .policies
                .get(&(namespace.clone(), name.clone()))
                .and_then(|np| np.metadata.resource_version.clone()),
            Operation::Update | Operation::Delete => old.and_then(|o| o.metadata.resource_version.clone()),
        };
        self.record(
            ObjectKey::NetworkPolicy { namespace, name },
            operation,
            change,
            replaces,
        );
    }

    /// Records an admitted Namespace CREATE or UPDATE (its labels change which
    /// namespaces are governed and what tier their pods are).
    pub fn admit_namespace(&self, state: &dyn StateSource, old: Option<&Namespace>, new: &Namespace) {
        let Some(name) = new.metadata.name.clone().filter(|n| !n.is_empty()) else {
            return;
        };
        let (operation, replaces) = match old {
            Some(old) => (Operation::Update, old.metadata.resource_version.clone()),
            None => (
                Operation::Create,
                state.snapshot().namespace_versions.get(&name).cloned().flatten(),
            ),
        };
        self.record(
            ObjectKey::Namespace { name },
            operation,
            Change::Namespace(NamespaceInfo::from_k8s(new).labels),
            replaces,
        );
    }

    /// How many changes are pending.
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Whether no change is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The objects with a pending change, in order.
    pub fn keys(&self) -> Vec<ObjectKey> {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .keys()
            .cloned()
            .collect()
    }

    /// Settles the overlay against `state` every `period` (so expiries are
    /// logged and counted, and the size gauge is right, without reviews).
    pub fn spawn_sweeper(
        self: Arc<Self>,
        state: Arc<dyn StateSource>,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(period);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                self.settle(state.as_ref());
            }
        })
    }
}

/// What one NetworkPolicy review reads: a cached snapshot plus the pending
/// changes that bear on its namespace.
#[derive(Debug)]
pub struct View {
    snapshot: Arc<Snapshot>,
    namespace: String,
    /// the namespace's pending policy changes: name -> the policy, or none when deleted
    policies: Vec<(String, Option<Arc<NetworkPolicy>>)>,
    /// every pending namespace label change
    namespaces: Vec<(String, Labels)>,
}

impl View {
    /// The cached state under the overlay.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// Whether pending changes bear on the review (it then reads a state
    /// built for it rather than the prepared snapshot).
    pub fn is_overlaid(&self) -> bool {
        !self.policies.is_empty() || !self.namespaces.is_empty()
    }

    /// The state the review reads when changes are pending: every
    /// namespace's labels and the namespace's own policies, with the pending
    /// changes applied. A NetworkPolicy review reads nothing else, so the
    /// other namespaces' policies are left out and a review costs its
    /// namespace, not the whole cluster.
    pub fn merged(&self) -> Option<PolicyState> {
        if !self.is_overlaid() {
            return None;
        }
        let cached: &PolicyState = &self.snapshot.policy;
        let mut state = PolicyState {
            namespaces: cached.namespaces.clone(),
            policies: cached
                .policies
                .range((self.namespace.clone(), String::new())..)
                .take_while(|((namespace, _), _)| *namespace == self.namespace)
                .map(|(key, np)| (key.clone(), np.clone()))
                .collect(),
        };
        for (name, labels) in &self.namespaces {
            state.namespaces.insert(name.clone(), labels.clone());
        }
        for (name, change) in &self.policies {
            let key = (self.namespace.clone(), name.clone());
            match change {
                Some(np) => {
                    state.policies.insert(key, NetworkPolicy::clone(np));
                }
                None => {
                    state.policies.remove(&key);
                }
            }
        }
        // As in a snapshot: a namespace holding policies is known even
        // before its Namespace object is.
        if !state.policies.is_empty() {
            state
                .namespaces
                .entry(self.namespace.clone())
                .or_insert_with(|| Labels::from([(NAMESPACE_NAME_LABEL.to_string(), self.namespace.clone())]));
        }
        Some(state)
    }

    /// Reviews a NetworkPolicy change against the cached state plus the
    /// pending changes.
    pub fn review_network_policy(
        &self,
        template: &TierTemplate,
        operation: Operation,
        old: Option<&NetworkPolicy>,
        new: Option<&NetworkPolicy>,
    ) -> Review {
        match self.merged() {
            // The snapshot's policies are parsed already: only the change is parsed.
            None => self
                .snapshot
                .policy
                .review_network_policy(template, operation, old, new),
            Some(state) => guardrails::review_network_policy(template, &state, operation, old, new),
        }
    }
}

#[cfg(test)]
mod tests;
