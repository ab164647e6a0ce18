//! The agent's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What a watch event was about (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum EventKind {
    /// a pod, or a relist of pods
    Pod,
    /// a namespace, or a relist of namespaces
    Namespace,
    /// a network policy, or a relist of them
    Policy,
    /// the node's own addresses
    Node,
}

impl EventKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Pod => "pod",
            EventKind::Namespace => "namespace",
            EventKind::Policy => "policy",
            EventKind::Node => "node",
        }
    }
}

impl EncodeLabelValue for EventKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the event-to-applied histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EventLabels {
    /// what the event was about
    pub kind: EventKind,
}

type LatencyFamily = Family<EventLabels, Histogram, fn() -> Histogram>;

/// What a resync repaired (the `kind` label).
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum RepairKind {
    /// a chain whose rules differed, or that was missing or stray
    Chain,
    /// a set member missing or stray
    SetMember,
    /// a set missing, of another type, or stray
    Set,
    /// the FORWARD jump
    Jump,
}

impl RepairKind {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RepairKind::Chain => "chain",
            RepairKind::SetMember => "set_member",
            RepairKind::Set => "set",
            RepairKind::Jump => "jump",
        }
    }
}

impl EncodeLabelValue for RepairKind {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        EncodeLabelValue::encode(&self.as_str(), encoder)
    }
}

/// Labels of the repair counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RepairLabels {
    /// what was repaired
    pub kind: RepairKind,
}

/// From 1 ms (an event synced at once) to 10 s (long syncs, retries), finest
/// around the minimum sync interval.
const EVENT_LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn event_latency_histogram() -> Histogram {
    Histogram::new(EVENT_LATENCY_BUCKETS)
}

/// Sync metrics, shared between the sync loop and the HTTP server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    /// seconds per sync (compile + render + apply)
    pub sync_duration: Histogram,
    /// rules in force
    pub rules: Gauge,
    /// sets in force
    pub sets: Gauge,
    /// Unix time of the last successful sync
    pub last_success: Gauge<f64, AtomicU64>,
    /// failed syncs
    pub errors: Counter,
    /// successful syncs
    pub syncs: Counter,
    /// seconds from a watch event's arrival to the rules that include it being in force
    pub event_to_applied: LatencyFamily,
    /// events folded into a sync that was already pending or running
    pub coalesced_events: Counter,
    /// conntrack entries of connections the new rules deny, deleted (`--enforce-existing delete`)
    pub conntrack_deleted: Counter,
    /// what resyncs found drifted on the node and rewrote, by kind
    pub resync_repairs: Family<RepairLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tierguard_enforcer");
        let sync_duration = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        let rules = Gauge::default();
        let sets = Gauge::default();
        let last_success = Gauge::<f64, AtomicU64>::default();
        let errors = Counter::default();
        let syncs = Counter::default();
        let event_to_applied: LatencyFamily = Family::new_with_constructor(event_latency_histogram);
        let coalesced_events = Counter::default();
        let conntrack_deleted = Counter::default();
        let resync_repairs = Family::<RepairLabels, Counter>::default();
        registry.register(
            "sync_duration_seconds",
            "Time to compile, render and apply the node's rules",
            sync_duration.clone(),
        );
        registry.register("rules", "iptables rules in force", rules.clone());
        registry.register("ipsets", "ipsets in force", sets.clone());
        registry.register(
            "last_successful_sync_timestamp_seconds",
            "Unix time of the last successful sync",
            last_success.clone(),
        );
        registry.register("sync_errors", "Failed syncs", errors.clone());
        registry.register("syncs", "Successful syncs", syncs.clone());
        registry.register(
            "event_to_applied_seconds",
            "Time from a watch event's arrival to the rules that include it being applied, by kind",
            event_to_applied.clone(),
        );
        registry.register(
            "coalesced_events",
            "Watch events folded into a sync that was already pending or running",
            coalesced_events.clone(),
        );
        registry.register(
            "conntrack_deleted",
            "Conntrack entries of established connections the new rules deny, deleted",
            conntrack_deleted.clone(),
        );
        registry.register(
            "resync_repairs",
            "Drift a resync found on the node and rewrote, by kind",
            resync_repairs.clone(),
        );
        Metrics {
            registry,
            sync_duration,
            rules,
            sets,
            last_success,
            errors,
            syncs,
            conntrack_deleted,
            event_to_applied,
            coalesced_events,
            resync_repairs,
        }
    }

    /// Counts what a resync repaired.
    pub fn observe_repairs(&self, repairs: &crate::apply::Repairs) {
        let counts = [
            (RepairKind::Chain, repairs.chains.len()),
            (RepairKind::SetMember, repairs.set_members.len()),
            (RepairKind::Set, repairs.sets.len()),
            (RepairKind::Jump, usize::from(repairs.jump)),
        ];
        for (kind, count) in counts {
            if count > 0 {
                self.resync_repairs
                    .get_or_create(&RepairLabels { kind })
                    .inc_by(u64::try_from(count).unwrap_or(u64::MAX));
            }
        }
    }

    /// Records that `count` events of `kind` each waited `waited` for their rules to be applied.
    pub fn observe_applied(&self, kind: EventKind, waited: std::time::Duration, count: u64) {
        let histogram = self.event_to_applied.get_or_create(&EventLabels { kind });
        for _ in 0..count {
            histogram.observe(waited.as_secs_f64());
        }
    }

    /// The OpenMetrics text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conntrack_deletions_are_counted_under_their_documented_name() {
        let metrics = Metrics::new();
        metrics.conntrack_deleted.inc_by(3);
        let text = metrics.encode();
        assert!(text.contains("tierguard_enforcer_conntrack_deleted_total 3"), "{text}");
    }

    #[test]
    fn repairs_are_counted_by_kind() {
        let metrics = Metrics::new();
        metrics.observe_repairs(&crate::apply::Repairs {
            chains: vec!["TG-EGRESS".into(), "TG-X".into()],
            set_members: vec!["tg-local +10.0.0.1/32".into()],
            sets: vec![],
            jump: true,
        });
        let text = metrics.encode();
        assert!(
            text.contains("tierguard_enforcer_resync_repairs_total{kind=\"chain\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("tierguard_enforcer_resync_repairs_total{kind=\"set_member\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tierguard_enforcer_resync_repairs_total{kind=\"jump\"} 1"),
            "{text}"
        );
        assert!(!text.contains("kind=\"set\"}"), "{text}");
    }
}
