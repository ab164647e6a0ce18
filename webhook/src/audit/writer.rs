//! Keeps the cluster's reports in line with the latest audit, through a
//! [`ReportSink`]: discovers the report API, plans (see [`super::report`])
//! and writes. Used only while this replica leads.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::findings::{Finding, Findings};
use super::report::{self, ReportKind};
use super::sink::{ReportSink, SinkError};
use crate::metrics::AuditMetrics;

/// What one reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    /// the API written to; `None`: the cluster serves no report API (metrics only)
    pub kind: Option<ReportKind>,
    /// reports applied
    pub applied: usize,
    /// reports deleted
    pub deleted: usize,
}

/// Writes reports through a sink.
#[derive(Debug)]
pub struct Reporter<S> {
    sink: S,
    metrics: AuditMetrics,
    kind: Option<ReportKind>,
    /// when discovery last found no report API
    looked: Option<Instant>,
    /// how long to wait before looking again
    rediscover: Duration,
    /// the findings of each report this writer applied
    written: BTreeMap<String, Vec<Finding>>,
}

impl<S: ReportSink> Reporter<S> {
    /// A writer that looks for a report API again at most every `rediscover`
    /// while the cluster serves none.
    pub fn new(sink: S, metrics: AuditMetrics, rediscover: Duration) -> Reporter<S> {
        Reporter {
            sink,
            metrics,
            kind: None,
            looked: None,
            rediscover,
            written: BTreeMap::new(),
        }
    }

    /// The sink.
    pub fn sink(&self) -> &S {
        &self.sink
    }

    /// Forgets what it wrote, so that the next reconcile rewrites every
    /// report (called on losing the lease: another replica may write meanwhile).
    pub fn forget(&mut self) {
        self.written.clear();
    }

    async fn kind(&mut self) -> Result<Option<ReportKind>, SinkError> {
        if self.kind.is_some() {
            return Ok(self.kind);
        }
        if self.looked.is_some_and(|t| t.elapsed() < self.rediscover) {
            return Ok(None);
        }
        let found = self.sink.discover().await?;
        match found {
            Some(kind) => tracing::info!(api = %kind.api_version(), kind = kind.kind(), "writing policy reports"),
            None => tracing::info!(
                "neither openreports.io/v1alpha1 nor wgpolicyk8s.io/v1alpha2 is served: audit results as metrics only"
            ),
        }
        self.kind = found;
        self.looked = found.is_none().then(Instant::now);
        Ok(found)
    }

    fn lost_api(&mut self, e: &SinkError) {
        if matches!(e, SinkError::Gone(_)) {
            // The CRD went away: look for either API again next time.
            self.kind = None;
            self.looked = None;
            self.written.clear();
        }
    }

    /// Makes the reports match `findings` (audited at Unix time `seconds`).
    /// Every planned write is tried; the first error is returned after them.
    pub async fn reconcile(&mut self, findings: &Findings, seconds: i64) -> Result<Written, SinkError> {
        let Some(kind) = self.kind().await? else {
            return Ok(Written::default());
        };
        let existing = match self.sink.list(kind).await {
            Ok(existing) => existing,
            Err(e) => {
                self.lost_api(&e);
                return Err(e);
            }
        };
        let plan = report::plan(kind, findings, &existing, &self.written, seconds);
        let mut done = Written {
            kind: Some(kind),
            ..Written::default()
        };
        let mut first_error = None;
        for (namespace, object) in &plan.apply {
            match self.sink.apply(kind, namespace, object).await {
                Ok(()) => {
                    self.metrics.report_write("apply");
                    done.applied += 1;
                    let found = findings.namespaces.get(namespace).cloned().unwrap_or_default();
                    self.written.insert(namespace.clone(), found);
                }
                Err(e) => {
                    self.metrics.report_write("error");
                    tracing::warn!(namespace = %namespace, error = %e, "writing a policy report failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        for namespace in &plan.delete {
            match self.sink.delete(kind, namespace).await {
                Ok(()) => {
                    self.metrics.report_write("delete");
                    done.deleted += 1;
                    self.written.remove(namespace);
                }
                Err(e) => {
                    self.metrics.report_write("error");
                    tracing::warn!(namespace = %namespace, error = %e, "deleting a policy report failed");
                    first_error.get_or_insert(e);
                }
            }
        }
        // Reports of namespaces that are compliant now and had none in the
        // cluster need no memory either.
        self.written
            .retain(|n, _| findings.namespaces.get(n).is_some_and(|f| !f.is_empty()));
        match first_error {
            Some(e) => {
                self.lost_api(&e);
                Err(e)
            }
            None => Ok(done),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;
    use std::sync::{Arc, Mutex};

    use serde_json::Value;
    use tierguard::guardrails::RuleId;

    /// An in-memory sink that records every call.
    #[derive(Clone, Default)]
    struct Memory {
        served: Option<ReportKind>,
        reports: Arc<Mutex<BTreeMap<String, Value>>>,
        calls: Arc<Mutex<Vec<String>>>,
        fail_apply: Arc<Mutex<BTreeSet<String>>>,
    }

    impl Memory {
        fn calls(&self) -> Vec<String> {
            std::mem::take(&mut *self.calls.lock().unwrap())
        }
    }

    impl ReportSink for Memory {
        async fn discover(&self) -> Result<Option<ReportKind>, SinkError> {
            self.calls.lock().unwrap().push("discover".into());
            Ok(self.served)
        }
        async fn list(&self, _: ReportKind) -> Result<BTreeSet<String>, SinkError> {
            Ok(self.reports.lock().unwrap().keys().cloned().collect())
        }
        async fn apply(&self, _: ReportKind, namespace: &str, report: &Value) -> Result<(), SinkError> {
            self.calls.lock().unwrap().push(format!("apply {namespace}"));
            if self.fail_apply.lock().unwrap().contains(namespace) {
                return Err(SinkError::Gone("test".into()));
            }
            self.reports.lock().unwrap().insert(namespace.into(), report.clone());
            Ok(())
        }
        async fn delete(&self, _: ReportKind, namespace: &str) -> Result<(), SinkError> {
            self.calls.lock().unwrap().push(format!("delete {namespace}"));
            self.reports.lock().unwrap().remove(namespace);
            Ok(())
        }
    }

    fn findings(entries: &[(&str, &[RuleId])]) -> Findings {
        Findings {
            namespaces: entries
                .iter()
                .map(|(n, rules)| {
                    let f = rules
                        .iter()
                        .map(|r| Finding {
                            rule: *r,
                            message: format!("{r} in {n}"),
                            resource: None,
                        })
                        .collect();
                    (n.to_string(), f)
                })
                .collect(),
            warnings: 0,
        }
    }

    #[tokio::test]
    async fn writes_only_what_changed_and_deletes_reports_of_compliant_namespaces() {
        let sink = Memory {
            served: Some(ReportKind::OpenReports),
            ..Memory::default()
        };
        let metrics = AuditMetrics::default();
        let mut reporter = Reporter::new(sink.clone(), metrics.clone(), Duration::ZERO);
        let first = findings(&[("a", &[RuleId::R1]), ("b", &[RuleId::R2]), ("c", &[])]);
        let done = reporter.reconcile(&first, 1).await.unwrap();
        assert_eq!((done.applied, done.deleted), (2, 0));
        assert_eq!(sink.calls(), vec!["discover", "apply a", "apply b"]);

        // Same findings again (the timer): nothing written, no discovery.
        let done = reporter.reconcile(&first, 2).await.unwrap();
        assert_eq!((done.applied, done.deleted), (0, 0));
        assert!(sink.calls().is_empty());

        // a gets worse, b is fixed, c breaks.
        let second = findings(&[("a", &[RuleId::R1, RuleId::R3]), ("b", &[]), ("c", &[RuleId::R4])]);
        reporter.reconcile(&second, 3).await.unwrap();
        assert_eq!(sink.calls(), vec!["apply a", "apply c", "delete b"]);
        let reports = sink.reports.lock().unwrap().clone();
        assert_eq!(reports.keys().collect::<Vec<_>>(), vec!["a", "c"]);
        assert_eq!(reports["a"]["summary"]["fail"], 2);
        assert_eq!(reports["a"]["results"][1]["rule"], "R3");
        assert_eq!(
            (metrics.report_writes("apply"), metrics.report_writes("delete")),
            (4, 1)
        );

        // After losing the lease, the next leader term rewrites everything once.
        reporter.forget();
        reporter.reconcile(&second, 4).await.unwrap();
        assert_eq!(sink.calls(), vec!["apply a", "apply c"]);
    }

    #[tokio::test]
    async fn without_a_report_api_it_writes_nothing_and_looks_again_later() {
        let sink = Memory::default();
        let mut reporter = Reporter::new(sink.clone(), AuditMetrics::default(), Duration::from_secs(3600));
        let f = findings(&[("a", &[RuleId::R1])]);
        assert_eq!(reporter.reconcile(&f, 1).await.unwrap(), Written::default());
        assert_eq!(reporter.reconcile(&f, 2).await.unwrap(), Written::default());
        assert_eq!(sink.calls(), vec!["discover"], "rediscovery waits for its interval");
    }

    #[tokio::test]
    async fn a_failed_write_is_reported_and_retried() {
        let sink = Memory {
            served: Some(ReportKind::PolicyReport),
            ..Memory::default()
        };
        sink.fail_apply.lock().unwrap().insert("a".into());
        let metrics = AuditMetrics::default();
        let mut reporter = Reporter::new(sink.clone(), metrics.clone(), Duration::ZERO);
        let f = findings(&[("a", &[RuleId::R1]), ("b", &[RuleId::R1])]);
        assert!(reporter.reconcile(&f, 1).await.is_err());
        assert_eq!(metrics.report_writes("error"), 1);
        sink.fail_apply.lock().unwrap().clear();
        sink.calls();
        reporter.reconcile(&f, 2).await.unwrap();
        let calls = sink.calls();
        assert!(calls.contains(&"apply a".to_string()), "{calls:?}");
    }
}
