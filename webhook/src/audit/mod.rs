//! The background audit (issue 13): every violation of the current state,
//! off the request path, published as metrics on every replica and, by the
//! replica holding the audit Lease, as one policy report per violating
//! governed namespace.
//!
//! - [`findings`]: one audit of a snapshot (pure, `audit_state`, the rules
//!   and keys of `check`).
//! - [`report`]: report objects and the plan of writes (pure).
//! - [`sink`], [`writer`]: the report API behind a trait, and the writer
//!   that keeps the reports in line with the latest audit.
//! - [`lease`]: leader election over a Lease.
//!
//! The auditor looks at the state once per `min_interval` (1 s): it audits
//! when the snapshot changed since the last audit, or `interval` has passed
//! (so a burst of watch events costs at most one audit a second). The audit
//! itself runs on the blocking pool, never on the runtime's workers that
//! answer admissions, and reads the same cached snapshot requests read.

pub mod findings;
pub mod lease;
pub mod report;
pub mod sink;
pub mod writer;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tierguard::template::TierTemplate;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use self::findings::Findings;
use self::lease::{Election, Elector, LeaseConfig};
use self::sink::{KubeReportSink, ReportSink};
use self::writer::Reporter;
use crate::metrics::AuditMetrics;
use crate::state::{Snapshot, StateSource};

/// The longest wait before retrying failed report writes.
const MAX_RETRY: Duration = Duration::from_secs(60);

/// Default seconds between audits of an unchanged state.
pub const DEFAULT_INTERVAL_SECONDS: u64 = 60;

/// How the audit runs.
#[derive(Clone, Debug)]
pub struct AuditOptions {
    /// audit an unchanged state this often
    pub interval: Duration,
    /// look for state changes this often (at most one audit per this)
    pub min_interval: Duration,
    /// where reports go; `None`: metrics only (e.g. `--state` files)
    pub reports: Option<ReportOptions>,
}

impl AuditOptions {
    /// Metrics only, every `interval`.
    pub fn metrics_only(interval: Duration) -> AuditOptions {
        AuditOptions {
            interval,
            min_interval: Duration::from_secs(1),
            reports: None,
        }
    }
}

/// Where and how reports are written.
#[derive(Clone)]
pub struct ReportOptions {
    /// the API server
    pub client: kube::Client,
    /// the election
    pub lease: LeaseConfig,
    /// how long to wait before looking for a report API again when none is served
    pub rediscover: Duration,
    /// how long to wait before retrying after a failed write
    pub retry: Duration,
}

impl std::fmt::Debug for ReportOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReportOptions")
            .field("lease", &self.lease)
            .field("rediscover", &self.rediscover)
            .finish_non_exhaustive()
    }
}

/// One audit's result, as the writer gets it.
#[derive(Clone, Debug)]
pub struct AuditRun {
    /// what was found
    pub findings: Arc<Findings>,
    /// when the audit finished (Unix seconds)
    pub finished: i64,
}

/// The running audit.
#[derive(Debug)]
pub struct Audit {
    /// the latest audit (`None` before the first)
    pub latest: watch::Receiver<Option<AuditRun>>,
    /// whether this replica writes the reports (always false without reports)
    pub leading: watch::Receiver<bool>,
    stop_auditor: oneshot::Sender<()>,
    auditor: JoinHandle<()>,
    writer: Option<(oneshot::Sender<()>, JoinHandle<()>, Election)>,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Audits `snapshot` on the blocking pool and publishes the metrics.
async fn audit_once(template: &Arc<TierTemplate>, snapshot: Arc<Snapshot>, metrics: &AuditMetrics) -> Option<AuditRun> {
    let started = Instant::now();
    let template = Arc::clone(template);
    let found = tokio::task::spawn_blocking(move || findings::audit(&template, &snapshot)).await;
    let found = match found {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "audit failed");
            return None;
        }
    };
    let took = started.elapsed();
    let finished = unix_now();
    metrics.record(found.counts(), found.warnings, finished, took.as_secs_f64());
    tracing::debug!(
        namespaces = found.namespaces.len(),
        violating = found.violating().count(),
        violations = found.total(),
        warnings = found.warnings,
        ms = took.as_secs_f64() * 1000.0,
        "audit"
    );
    Some(AuditRun {
        findings: Arc::new(found),
        // f64 seconds since 1970 fit an i64 for the next few billion years
        #[allow(clippy::cast_possible_truncation)]
        finished: finished as i64,
    })
}

async fn auditor(
    template: Arc<TierTemplate>,
    state: Arc<dyn StateSource>,
    metrics: AuditMetrics,
    options: AuditOptions,
    tx: watch::Sender<Option<AuditRun>>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(options.min_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last snapshot audited: a new Arc means the state changed (the
    // state sources hand out the same Arc until a watch event).
    let mut last: Option<(Arc<Snapshot>, Instant)> = None;
    let mut logged: Option<(usize, usize, usize)> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        // Auditing a state that is not fully listed would report its
        // missing policies as violations, and delete reports.
        if !state.is_synced() {
            continue;
        }
        let source = Arc::clone(&state);
        // Building a snapshot after a change parses every policy: blocking work.
        let Ok(snapshot) = tokio::task::spawn_blocking(move || source.snapshot()).await else {
            continue;
        };
        let due = last
            .as_ref()
            .is_none_or(|(seen, at)| !Arc::ptr_eq(seen, &snapshot) || at.elapsed() >= options.interval);
        if !due {
            continue;
        }
        last = Some((Arc::clone(&snapshot), Instant::now()));
        if let Some(run) = audit_once(&template, snapshot, &metrics).await {
            // One info line when the result changes, not one a minute.
            let summary = (
                run.findings.violating().count(),
                run.findings.total(),
                run.findings.warnings,
            );
            if logged != Some(summary) {
                tracing::info!(
                    namespaces = run.findings.namespaces.len(),
                    violating = summary.0,
                    violations = summary.1,
                    warnings = summary.2,
                    "audit"
                );
                logged = Some(summary);
            }
            tx.send_replace(Some(run));
        }
    }
}

async fn write_reports<S: ReportSink>(
    mut reporter: Reporter<S>,
    mut latest: watch::Receiver<Option<AuditRun>>,
    mut leading: watch::Receiver<bool>,
    metrics: AuditMetrics,
    retry: Duration,
    mut stop: oneshot::Receiver<()>,
) {
    let mut retry_at: Option<tokio::time::Instant> = None;
    // Doubles after each failed reconcile up to MAX_RETRY (a missing RBAC
    // grant should not fill the log every few seconds), and resets on success.
    let mut backoff = retry;
    loop {
        let wait_retry = async {
            match retry_at {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            r = latest.changed() => if r.is_err() { return },
            r = leading.changed() => if r.is_err() { return },
            () = wait_retry => {}
            _ = &mut stop => return,
        }
        let leads = *leading.borrow_and_update();
        metrics.set_leader(leads);
        if !leads {
            reporter.forget();
            retry_at = None;
            continue;
        }
        let Some(run) = latest.borrow_and_update().clone() else {
            continue;
        };
        match reporter.reconcile(&run.findings, run.finished).await {
            Ok(done) => {
                retry_at = None;
                backoff = retry;
                if done.applied + done.deleted > 0 {
                    tracing::info!(applied = done.applied, deleted = done.deleted, "policy reports written");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_seconds = backoff.as_secs_f64(), "policy reports not (all) written");
                retry_at = Some(tokio::time::Instant::now() + backoff);
                backoff = (backoff * 2).min(MAX_RETRY.max(retry));
            }
        }
    }
}

impl Audit {
    /// Starts auditing `state` against `template`.
    pub fn start(
        template: Arc<TierTemplate>,
        state: Arc<dyn StateSource>,
        metrics: AuditMetrics,
        options: AuditOptions,
    ) -> Audit {
        let (tx, latest) = watch::channel(None);
        let (stop_auditor, stopped) = oneshot::channel();
        let reports = options.reports.clone();
        let auditor = tokio::spawn(auditor(template, state, metrics.clone(), options, tx, stopped));
        let (leading, writer) = match reports {
            None => (watch::channel(false).1, None),
            Some(reports) => {
                let api = kube::Api::namespaced(reports.client.clone(), &reports.lease.namespace);
                let election = Election::spawn(Elector::new(api, reports.lease.clone()));
                let reporter = Reporter::new(KubeReportSink::new(reports.client), metrics.clone(), reports.rediscover);
                let (stop, stopped) = oneshot::channel();
                let task = tokio::spawn(write_reports(
                    reporter,
                    latest.clone(),
                    election.leading.clone(),
                    metrics,
                    reports.retry,
                    stopped,
                ));
                (election.leading.clone(), Some((stop, task, election)))
            }
        };
        Audit {
            latest,
            leading,
            stop_auditor,
            auditor,
            writer,
        }
    }

    /// Stops auditing and writing, and releases the Lease if held.
    pub async fn stop(self) {
        let _ = self.stop_auditor.send(());
        if let Err(e) = self.auditor.await {
            tracing::error!(error = %e, "audit task failed");
        }
        if let Some((stop, task, election)) = self.writer {
            // The writer first, so nothing is written after the release.
            let _ = stop.send(());
            if let Err(e) = task.await {
                tracing::error!(error = %e, "report writer task failed");
            }
            election.stop().await;
        }
    }
}
