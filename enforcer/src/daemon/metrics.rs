//! The agent's Prometheus metrics.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

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
    /// conntrack entries of connections the new rules deny, deleted (`--enforce-existing delete`)
    pub conntrack_deleted: Counter,
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
        let conntrack_deleted = Counter::default();
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
            "conntrack_deleted",
            "Conntrack entries of established connections the new rules deny, deleted",
            conntrack_deleted.clone(),
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
}
