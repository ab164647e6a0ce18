//! The `serve` command: wires template, state, TLS and the server together,
//! and drains on SIGTERM/SIGINT.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tierguard::template::TierTemplate;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::admission::Admission;
use crate::audit::lease::LeaseConfig;
use crate::audit::{Audit, AuditOptions, ReportOptions};
use crate::cli::ServeArgs;
use crate::limits::ConnectionLimits;
use crate::metrics::Metrics;
use crate::overlay::{self, Overlay, SystemClock};
use crate::readiness::Readiness;
use crate::server::{self, AppState};
use crate::state::StateSource;
use crate::state::files::FileState;
use crate::state::kube::KubeState;
use crate::tls::{self, CertReloader};
use crate::{selfsigned, template};

/// Everything a running server needs.
pub struct Options {
    /// where to listen (port 0 picks one)
    pub listen: SocketAddr,
    /// the tier template
    pub template: TierTemplate,
    /// the cluster state
    pub state: Arc<dyn StateSource>,
    /// serving certificate file
    pub cert: PathBuf,
    /// serving key file
    pub key: PathBuf,
    /// names the certificate must carry (one of)
    pub service_names: Vec<String>,
    /// how long to keep answering, not ready, before closing the listener
    pub drain: Duration,
    /// periodic certificate re-check
    pub cert_recheck: Duration,
    /// what one client, or many, may hold of the server
    pub limits: ConnectionLimits,
}

/// How the overlay of admitted changes behaves.
#[derive(Clone, Copy, Debug)]
pub struct OverlayOptions {
    /// how long an admitted change counts without the watch showing it
    pub expiry: Duration,
}

impl Default for OverlayOptions {
    fn default() -> Self {
        OverlayOptions {
            expiry: overlay::DEFAULT_EXPIRY,
        }
    }
}

/// How often the overlay is settled besides at each review.
const OVERLAY_SWEEP: Duration = Duration::from_secs(1);

/// A server that is running.
pub struct Running {
    /// the address it listens on
    pub local_addr: SocketAddr,
    /// its metrics
    pub metrics: Arc<Metrics>,
    /// its readiness
    pub readiness: Arc<Readiness>,
    /// its certificate reloader
    pub cert: Arc<CertReloader>,
    stop: oneshot::Sender<()>,
    server: JoinHandle<()>,
    cert_watch: JoinHandle<()>,
    overlay_sweep: JoinHandle<()>,
    audit: Option<Audit>,
}

impl std::fmt::Debug for Running {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Running").field("local_addr", &self.local_addr).finish()
    }
}

/// Binds and starts serving, with the default overlay options.
pub async fn start(options: Options) -> anyhow::Result<Running> {
    start_with(options, OverlayOptions::default()).await
}

/// Binds and starts serving, without the background audit.
pub async fn start_with(options: Options, overlay_options: OverlayOptions) -> anyhow::Result<Running> {
    start_with_audit(options, overlay_options, None).await
}

/// Binds and starts serving, and the background audit when `audit` is set.
pub async fn start_with_audit(
    options: Options,
    overlay_options: OverlayOptions,
    audit: Option<AuditOptions>,
) -> anyhow::Result<Running> {
    let metrics = Arc::new(Metrics::new());
    let cert = Arc::new(CertReloader::new(
        options.cert,
        options.key,
        options.service_names,
        Arc::clone(&metrics),
    ));
    cert.check();
    let cert_watch = Arc::clone(&cert)
        .spawn_watch(options.cert_recheck)
        .context("watching the certificate folder")?;
    let readiness = Arc::new(Readiness::new(Arc::clone(&options.state), Some(Arc::clone(&cert))));
    let mode = options.template.mode;
    let overlay = Arc::new(Overlay::new(
        overlay_options.expiry,
        Arc::new(SystemClock),
        metrics.overlay(),
    ));
    let overlay_sweep = Arc::clone(&overlay).spawn_sweeper(Arc::clone(&options.state), OVERLAY_SWEEP);
    let template = Arc::new(options.template);
    let audit = audit.map(|a| Audit::start(Arc::clone(&template), Arc::clone(&options.state), metrics.audit(), a));
    let admission = Arc::new(Admission::with_overlay(template, options.state, overlay));
    readiness.template_loaded();
    let tls_config = Arc::new(tls::server_config(cert.resolver()).context("building the TLS configuration")?);
    let (listener, local_addr) = server::bind(options.listen)
        .await
        .with_context(|| format!("listening on {}", options.listen))?;
    tracing::info!(%local_addr, ?mode, "serving AdmissionReviews over HTTPS");
    let app = AppState {
        admission,
        metrics: Arc::clone(&metrics),
        readiness: Arc::clone(&readiness),
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let drain = options.drain;
    let draining = Arc::clone(&readiness);
    let router = server::router(app);
    let limits = options.limits;
    let server_metrics = Arc::clone(&metrics);
    let server = tokio::spawn(async move {
        let stop = async move {
            let _ = stopped.await;
            draining.start_draining();
            tracing::info!(seconds = drain.as_secs_f64(), "draining: not ready, still answering");
            tokio::time::sleep(drain).await;
            tracing::info!("closing the listener; finishing in-flight requests");
        };
        server::serve_tls(listener, tls_config, router, limits, server_metrics, stop).await;
    });
    Ok(Running {
        local_addr,
        metrics,
        readiness,
        cert,
        stop,
        server,
        cert_watch,
        overlay_sweep,
        audit,
    })
}

impl Running {
    /// The background audit, when it runs.
    pub fn audit(&self) -> Option<&Audit> {
        self.audit.as_ref()
    }

    /// Drains, stops accepting, waits for in-flight requests; stops the
    /// audit and releases its Lease.
    pub async fn shutdown(self) {
        if let Some(audit) = self.audit {
            // First, so that the other replica takes over the reports while
            // this one drains.
            audit.stop().await;
        }
        let _ = self.stop.send(());
        if let Err(e) = self.server.await {
            tracing::error!(error = %e, "server task failed");
        }
        self.cert_watch.abort();
        self.overlay_sweep.abort();
    }
}

async fn signal() -> anyhow::Result<&'static str> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => Ok("SIGTERM"),
        r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT").context("waiting for SIGINT"),
    }
}

/// Runs `serve` until SIGTERM or SIGINT.
pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    let limits = args.connection_limits();
    let identity = args.identity();
    let template = template::load(args.template.as_deref())?;
    let mut client = None;
    let state: Arc<dyn StateSource> = if args.state.is_empty() {
        let c = kube::Client::try_default()
            .await
            .context("connecting to the cluster (use --state PATH to run without one)")?;
        client = Some(c.clone());
        KubeState::start(c)?
    } else {
        let state = FileState::read(&args.state).context("reading --state manifests")?;
        let snapshot = state.snapshot();
        tracing::info!(
            namespaces = snapshot.policy.namespaces.len(),
            networkpolicies = snapshot.policy.policies.len(),
            "state read from manifests"
        );
        Arc::new(state)
    };
    let (cert, key) = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => (cert, key),
        _ => {
            let dir = tempfile::Builder::new()
                .prefix("tierguard-webhook-")
                .tempdir()
                .context("creating a folder for the self-signed certificate")?
                .keep();
            let certs = selfsigned::write_dev_certs(&dir, &args.service_dns)?;
            tracing::warn!(
                dir = %certs.dir.display(),
                ca = %certs.ca.display(),
                "no --tls-cert/--tls-key: generated a self-signed CA and serving certificate for \
                 localhost, 127.0.0.1 and the service names; for local use only (trust ca.crt to connect)"
            );
            (certs.cert, certs.key)
        }
    };
    let options = Options {
        listen: args.listen,
        template,
        state,
        cert,
        key,
        service_names: args.service_dns,
        drain: Duration::from_secs(args.drain_seconds),
        cert_recheck: Duration::from_secs(args.cert_recheck_seconds.max(1)),
        limits,
    };
    let overlay_options = OverlayOptions {
        expiry: Duration::from_secs(args.overlay_expiry_seconds),
    };
    let audit = args.audit.then(|| AuditOptions {
        interval: Duration::from_secs(args.audit_interval_seconds),
        min_interval: Duration::from_secs(1),
        // With --state there is no cluster to write reports to: metrics only.
        reports: client.map(|client| ReportOptions {
            client,
            lease: LeaseConfig::new(&args.audit_lease_namespace, &identity),
            rediscover: Duration::from_secs(args.audit_interval_seconds),
            retry: Duration::from_secs(5),
        }),
    });
    if !args.audit {
        tracing::info!("background audit off (--audit=false)");
    }
    let running = start_with_audit(options, overlay_options, audit).await?;
    let which = signal().await?;
    tracing::info!(signal = which, "shutting down");
    running.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
