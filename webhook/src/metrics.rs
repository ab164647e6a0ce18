//! Prometheus metrics: requests by kind, operation and verdict; request
//! latency; the serving certificate's expiry; refused certificate reloads;
//! open, refused and timed-out connections; the per-namespace review lock
//! and the overlay of admitted changes; the background audit's findings
//! ([`AuditMetrics`], under `tierguard_audit_`).

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::collections::BTreeSet;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, PoisonError};

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// What the webhook answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum Verdict {
    /// admitted, nothing new wrong
    Allowed,
    /// rejected (enforce mode)
    Denied,
    /// admitted with the violations as warnings (warn mode)
    Warned,
    /// admitted, violations only logged and counted (audit mode)
    Audited,
    /// admitted with a JSONPatch
    Patched,
    /// the request could not be read
    Invalid,
    /// the webhook could not write its answer (its own fault, HTTP 500)
    Error,
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// e.g. `NetworkPolicy`; `unknown` when the request could not be read
    pub kind: String,
    /// e.g. `CREATE`
    pub operation: String,
    /// the verdict
    pub verdict: Verdict,
}

/// Which connection limit closed a connection.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Timeout {
    /// the TLS handshake did not finish in time
    Handshake,
    /// a request's headers did not arrive in time
    Header,
    /// a request's body did not arrive in time
    Body,
    /// no request for longer than the idle timeout
    Idle,
}

impl Timeout {
    /// The label value, as operators type it in queries.
    pub fn as_str(self) -> &'static str {
        match self {
            Timeout::Handshake => "handshake",
            Timeout::Header => "header",
            Timeout::Body => "body",
            Timeout::Idle => "idle",
        }
    }
}

impl EncodeLabelValue for Timeout {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// Labels of the connection timeout counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TimeoutLabels {
    /// which timeout
    pub timeout: Timeout,
}

/// Labels of the latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PathLabels {
    /// `/validate` or `/mutate`
    pub path: String,
}

type HistogramFamily = Family<PathLabels, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_125, 2.0, 16))
}

/// The webhook's metrics and their registry.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: HistogramFamily,
    cert_expiry: Gauge,
    cert_refused: Counter,
    open_connections: Gauge,
    refused_connections: Counter,
    timeouts: Family<TimeoutLabels, Counter>,
    overlay: OverlayMetrics,
    audit: AuditMetrics,
}

/// The metrics of the per-namespace review lock and of the overlay of
/// admitted changes (handles: clones update the same series).
#[derive(Clone, Debug)]
pub struct OverlayMetrics {
    /// seconds a NetworkPolicy review waited for its namespace's turn
    /// (observed only for reviews that found the namespace busy)
    pub lock_wait: Histogram,
    /// changes admitted and not yet seen in the watch
    pub entries: Gauge,
    /// changes that expired without the watch ever showing them
    pub expired: Counter,
}

impl Default for OverlayMetrics {
    /// Handles registered nowhere (for an overlay outside a server).
    fn default() -> Self {
        OverlayMetrics {
            lock_wait: Histogram::new(exponential_buckets(0.000_05, 2.0, 16)),
            entries: Gauge::default(),
            expired: Counter::default(),
        }
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Registers every metric.
    pub fn new() -> Metrics {
        // The root has no prefix so that the audit's series are
        // `tierguard_audit_*` (as documented) next to `tierguard_webhook_*`.
        let mut root = Registry::default();
        let registry = root.sub_registry_with_prefix("tierguard_webhook");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency: HistogramFamily = Family::new_with_constructor(latency_histogram);
        let cert_expiry = Gauge::default();
        let cert_refused = Counter::default();
        let open_connections = Gauge::default();
        let refused_connections = Counter::default();
        let timeouts = Family::<TimeoutLabels, Counter>::default();
        // every kind shows up from the start, at 0, so rates and alerts work before the first one
        for timeout in [Timeout::Handshake, Timeout::Header, Timeout::Body, Timeout::Idle] {
            let _ = timeouts.get_or_create(&TimeoutLabels { timeout });
        }
        registry.register(
            "admission_requests",
            "AdmissionReview requests by kind, operation and verdict",
            requests.clone(),
        );
        registry.register(
            "admission_duration_seconds",
            "Time to answer an AdmissionReview",
            latency.clone(),
        );
        registry.register(
            "certificate_expiry_timestamp_seconds",
            "notAfter of the serving certificate in use (Unix time)",
            cert_expiry.clone(),
        );
        registry.register(
            "certificate_reloads_refused",
            "New serving certificates refused (expired, key mismatch, missing service name, unreadable)",
            cert_refused.clone(),
        );
        registry.register(
            "open_connections",
            "Connections held open, TLS handshakes in progress included",
            open_connections.clone(),
        );
        registry.register(
            "connections_refused",
            "Connections closed right after accept because --max-connections were open",
            refused_connections.clone(),
        );
        registry.register(
            "connection_timeouts",
            "Connections (or, for body, requests) cut by a timeout, by which timeout",
            timeouts.clone(),
        );
        let overlay = OverlayMetrics::default();
        registry.register(
            "namespace_lock_wait_seconds",
            "Time NetworkPolicy reviews waited for an earlier review in the same namespace (only reviews that waited)",
            overlay.lock_wait.clone(),
        );
        registry.register(
            "overlay_entries",
            "Admitted changes not yet seen in the watch, which reviews still count",
            overlay.entries.clone(),
        );
        registry.register(
            "overlay_expired",
            "Admitted changes dropped from the overlay after its expiry without the watch showing them",
            overlay.expired.clone(),
        );
        let audit = AuditMetrics::default();
        audit.register(root.sub_registry_with_prefix("tierguard_audit"));
        Metrics {
            registry: root,
            requests,
            latency,
            cert_expiry,
            cert_refused,
            open_connections,
            refused_connections,
            timeouts,
            overlay,
            audit,
        }
    }

    /// The audit's metrics, for the audit loop and the report writer.
    pub fn audit(&self) -> AuditMetrics {
        self.audit.clone()
    }

    /// The lock and overlay metrics, for the admission handler.
    pub fn overlay(&self) -> OverlayMetrics {
        self.overlay.clone()
    }

    /// Counts one request.
    pub fn count(&self, kind: &str, operation: &str, verdict: Verdict) {
        self.requests
            .get_or_create(&RequestLabels {
                kind: kind.to_string(),
                operation: operation.to_string(),
                verdict,
            })
            .inc();
    }

    /// Records how long a request took.
    pub fn observe_latency(&self, path: &str, seconds: f64) {
        self.latency
            .get_or_create(&PathLabels { path: path.to_string() })
            .observe(seconds);
    }

    /// Sets the expiry of the certificate now in use.
    pub fn set_cert_expiry(&self, not_after_unix: i64) {
        self.cert_expiry.set(not_after_unix);
    }

    /// Counts a refused certificate.
    pub fn cert_refused(&self) {
        self.cert_refused.inc();
    }

    /// Counts a connection as open (until [`Metrics::connection_closed`]).
    pub fn connection_opened(&self) {
        self.open_connections.inc();
    }

    /// Counts an open connection as closed.
    pub fn connection_closed(&self) {
        self.open_connections.dec();
    }

    /// Connections open now.
    pub fn open_connections(&self) -> i64 {
        self.open_connections.get()
    }

    /// Counts a connection refused at the cap.
    pub fn connection_refused(&self) {
        self.refused_connections.inc();
    }

    /// Connections refused so far.
    pub fn refused_connections(&self) -> u64 {
        self.refused_connections.get()
    }

    /// Counts a timeout.
    pub fn timed_out(&self, timeout: Timeout) {
        self.timeouts.get_or_create(&TimeoutLabels { timeout }).inc();
    }

    /// Timeouts of one kind so far.
    pub fn timeouts(&self, timeout: Timeout) -> u64 {
        self.timeouts.get_or_create(&TimeoutLabels { timeout }).get()
    }

    /// The Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Labels of the per-namespace violation gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct NamespaceRuleLabels {
    /// the governed namespace
    pub namespace: String,
    /// `R1`..`R4`
    pub rule: String,
}

/// Labels of the namespace count gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ComplianceLabels {
    /// `compliant` or `violating`
    pub state: String,
}

/// Labels of the report write counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReportOpLabels {
    /// `apply`, `delete` or `error`
    pub op: String,
}

/// The background audit's metrics (handles: clones update the same series).
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    violations: Family<NamespaceRuleLabels, Gauge>,
    /// the (namespace, rule) series set by the last audit, so the next one
    /// removes those that are gone and cardinality stays bounded by the
    /// violating namespaces times the rules
    series: Arc<Mutex<BTreeSet<NamespaceRuleLabels>>>,
    namespaces: Family<ComplianceLabels, Gauge>,
    warnings: Gauge,
    last_timestamp: Gauge<f64, AtomicU64>,
    last_duration: Gauge<f64, AtomicU64>,
    runs: Counter,
    leader: Gauge,
    report_writes: Family<ReportOpLabels, Counter>,
}

impl Default for AuditMetrics {
    /// Handles registered nowhere (for an audit outside a server).
    fn default() -> Self {
        let namespaces = Family::<ComplianceLabels, Gauge>::default();
        // both series exist from the start, so `compliant + violating` works at once
        for state in ["compliant", "violating"] {
            let _ = namespaces.get_or_create(&ComplianceLabels {
                state: state.to_string(),
            });
        }
        let report_writes = Family::<ReportOpLabels, Counter>::default();
        for op in ["apply", "delete", "error"] {
            let _ = report_writes.get_or_create(&ReportOpLabels { op: op.to_string() });
        }
        AuditMetrics {
            violations: Family::default(),
            series: Arc::new(Mutex::new(BTreeSet::new())),
            namespaces,
            warnings: Gauge::default(),
            last_timestamp: Gauge::default(),
            last_duration: Gauge::default(),
            runs: Counter::default(),
            leader: Gauge::default(),
            report_writes,
        }
    }
}

impl AuditMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "violations",
            "Violations of the current state by governed namespace and rule (namespaces without any have no series)",
            self.violations.clone(),
        );
        registry.register(
            "namespaces",
            "Governed namespaces by whether the last audit found violations in them",
            self.namespaces.clone(),
        );
        registry.register(
            "warnings",
            "Structure (R4) problems of policies in ungoverned namespaces, found by the last audit",
            self.warnings.clone(),
        );
        registry.register(
            "last_run_timestamp_seconds",
            "When the last audit finished (Unix time)",
            self.last_timestamp.clone(),
        );
        registry.register(
            "last_run_duration_seconds",
            "How long the last audit took",
            self.last_duration.clone(),
        );
        registry.register("runs", "Audits run", self.runs.clone());
        registry.register(
            "leader",
            "1 while this replica holds the audit Lease and writes the policy reports",
            self.leader.clone(),
        );
        registry.register(
            "report_writes",
            "Policy report writes by operation (apply, delete) and failed writes (error)",
            self.report_writes.clone(),
        );
    }

    /// Publishes one audit: `counts` holds, for every governed namespace,
    /// its violations per rule (empty for a compliant namespace).
    pub fn record<'a>(
        &self,
        counts: impl IntoIterator<Item = (&'a str, Vec<(String, i64)>)>,
        warnings: usize,
        finished_unix: f64,
        seconds: f64,
    ) {
        let (mut compliant, mut violating) = (0_i64, 0_i64);
        let mut now = BTreeSet::new();
        for (namespace, rules) in counts {
            let mut any = false;
            for (rule, n) in rules.into_iter().filter(|(_, n)| *n > 0) {
                any = true;
                let labels = NamespaceRuleLabels {
                    namespace: namespace.to_string(),
                    rule,
                };
                self.violations.get_or_create(&labels).set(n);
                now.insert(labels);
            }
            if any {
                violating += 1;
            } else {
                compliant += 1;
            }
        }
        let mut series = self.series.lock().unwrap_or_else(PoisonError::into_inner);
        for gone in series.difference(&now) {
            self.violations.remove(gone);
        }
        *series = now;
        drop(series);
        self.namespaces
            .get_or_create(&ComplianceLabels {
                state: "compliant".to_string(),
            })
            .set(compliant);
        self.namespaces
            .get_or_create(&ComplianceLabels {
                state: "violating".to_string(),
            })
            .set(violating);
        self.warnings.set(i64::try_from(warnings).unwrap_or(i64::MAX));
        self.last_timestamp.set(finished_unix);
        self.last_duration.set(seconds);
        self.runs.inc();
    }

    /// Sets whether this replica leads.
    pub fn set_leader(&self, leader: bool) {
        self.leader.set(i64::from(leader));
    }

    /// Counts a report write: `apply`, `delete` or `error`.
    pub fn report_write(&self, op: &str) {
        self.report_writes
            .get_or_create(&ReportOpLabels { op: op.to_string() })
            .inc();
    }

    /// Report writes of one operation so far.
    pub fn report_writes(&self, op: &str) -> u64 {
        self.report_writes
            .get_or_create(&ReportOpLabels { op: op.to_string() })
            .get()
    }

    /// Audits run so far.
    pub fn runs(&self) -> u64 {
        self.runs.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_counters_histogram_and_gauge() -> Result<(), std::fmt::Error> {
        let m = Metrics::new();
        m.count("NetworkPolicy", "CREATE", Verdict::Denied);
        m.observe_latency("/validate", 0.001);
        m.set_cert_expiry(1_900_000_000);
        let text = m.encode()?;
        assert!(
            text.contains(
                r#"tierguard_webhook_admission_requests_total{kind="NetworkPolicy",operation="CREATE",verdict="Denied"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"tierguard_webhook_admission_duration_seconds_count{path="/validate"} 1"#));
        assert!(text.contains("tierguard_webhook_certificate_expiry_timestamp_seconds 1900000000"));
        Ok(())
    }

    #[test]
    fn encodes_connection_metrics_with_lowercase_timeout_labels() -> Result<(), std::fmt::Error> {
        let m = Metrics::new();
        m.connection_opened();
        m.connection_opened();
        m.connection_closed();
        m.connection_refused();
        for timeout in [
            Timeout::Handshake,
            Timeout::Header,
            Timeout::Body,
            Timeout::Idle,
            Timeout::Idle,
        ] {
            m.timed_out(timeout);
        }
        let text = m.encode()?;
        assert!(text.contains("tierguard_webhook_open_connections 1\n"), "{text}");
        assert!(
            text.contains("tierguard_webhook_connections_refused_total 1\n"),
            "{text}"
        );
        for (label, count) in [("handshake", 1), ("header", 1), ("body", 1), ("idle", 2)] {
            let line = format!(r#"tierguard_webhook_connection_timeouts_total{{timeout="{label}"}} {count}"#);
            assert!(text.contains(&line), "{line} missing in {text}");
        }
        assert_eq!(
            (m.open_connections(), m.refused_connections(), m.timeouts(Timeout::Idle)),
            (1, 1, 2)
        );
        Ok(())
    }

    #[test]
    fn encodes_the_overlay_metrics_through_their_handles() -> Result<(), std::fmt::Error> {
        let m = Metrics::new();
        let overlay = m.overlay();
        overlay.lock_wait.observe(0.002);
        overlay.entries.set(3);
        overlay.expired.inc();
        let text = m.encode()?;
        assert!(
            text.contains("tierguard_webhook_namespace_lock_wait_seconds_count 1"),
            "{text}"
        );
        assert!(text.contains("tierguard_webhook_overlay_entries 3"), "{text}");
        assert!(text.contains("tierguard_webhook_overlay_expired_total 1"), "{text}");
        Ok(())
    }

    #[test]
    fn audit_series_of_compliant_and_gone_namespaces_are_removed() -> Result<(), std::fmt::Error> {
        let m = Metrics::new();
        let audit = m.audit();
        let r = |pairs: &[(&str, i64)]| pairs.iter().map(|(r, n)| (r.to_string(), *n)).collect::<Vec<_>>();
        audit.record(
            [("a", r(&[("R1", 2), ("R3", 1)])), ("b", r(&[("R2", 1)])), ("c", r(&[]))],
            1,
            1_700_000_000.5,
            0.25,
        );
        let text = m.encode()?;
        for line in [
            r#"tierguard_audit_violations{namespace="a",rule="R1"} 2"#,
            r#"tierguard_audit_violations{namespace="a",rule="R3"} 1"#,
            r#"tierguard_audit_violations{namespace="b",rule="R2"} 1"#,
            r#"tierguard_audit_namespaces{state="compliant"} 1"#,
            r#"tierguard_audit_namespaces{state="violating"} 2"#,
            "tierguard_audit_warnings 1",
            "tierguard_audit_last_run_timestamp_seconds 1700000000.5",
            "tierguard_audit_last_run_duration_seconds 0.25",
            "tierguard_audit_runs_total 1",
            // the webhook's own series keep their prefix
            "tierguard_webhook_overlay_entries 0",
        ] {
            assert!(text.contains(line), "{line} missing in {text}");
        }
        // a fixed, b gone, a's R3 fixed
        audit.record(
            [("a", r(&[("R1", 1), ("R3", 0)])), ("c", r(&[]))],
            0,
            1_700_000_060.0,
            0.5,
        );
        let text = m.encode()?;
        assert!(
            text.contains(r#"tierguard_audit_violations{namespace="a",rule="R1"} 1"#),
            "{text}"
        );
        assert!(!text.contains(r#"namespace="b""#), "{text}");
        assert!(!text.contains(r#"rule="R3""#), "{text}");
        assert!(
            text.contains(r#"tierguard_audit_namespaces{state="compliant"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"tierguard_audit_namespaces{state="violating"} 1"#),
            "{text}"
        );
        assert_eq!(audit.runs(), 2);
        Ok(())
    }
}
