//! The HTTPS server: routes, the rustls accept loop and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::admission::{Admission, BadRequest, Endpoint};
use crate::contract;
use crate::metrics::{Metrics, Verdict};
use crate::readiness::Readiness;

/// Largest AdmissionReview body accepted: an UPDATE carries object and
/// oldObject, each up to 3 MiB.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How long in-flight requests get to finish once the listener is closed.
const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handlers share.
#[derive(Clone, Debug)]
pub struct AppState {
    /// answers reviews
    pub admission: Arc<Admission>,
    /// metrics
    pub metrics: Arc<Metrics>,
    /// readiness
    pub readiness: Arc<Readiness>,
}

/// The webhook's routes.
pub fn router(app: AppState) -> Router {
    Router::new()
        .route(contract::VALIDATE_PATH, post(validate))
        .route(contract::MUTATE_PATH, post(mutate))
        .route(contract::HEALTHZ_PATH, get(healthz))
        .route(contract::READYZ_PATH, get(readyz))
        .route(contract::METRICS_PATH, get(metrics))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(app)
}

async fn validate(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(&app, Endpoint::Validate, contract::VALIDATE_PATH, body).await
}

async fn mutate(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Response {
    review(&app, Endpoint::Mutate, contract::MUTATE_PATH, body).await
}

async fn review(app: &AppState, endpoint: Endpoint, path: &str, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let result = match body {
        Ok(body) => app.admission.handle(endpoint, &body).await,
        Err(rejection) => Err(BadRequest::Body(rejection.body_text())),
    };
    let response = match result {
        Ok(outcome) => {
            app.metrics.count(&outcome.kind, &outcome.operation, outcome.verdict);
            (StatusCode::OK, axum::Json(outcome.response)).into_response()
        }
        Err(bad) => {
            tracing::warn!(path, reason = %bad, "bad AdmissionReview request");
            app.metrics.count("unknown", "unknown", Verdict::Invalid);
            (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                format!("{bad}\n"),
            )
                .into_response()
        }
    };
    app.metrics.observe_latency(path, started.elapsed().as_secs_f64());
    response
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(app): State<AppState>) -> Response {
    let blockers = app.readiness.blockers();
    if blockers.is_empty() {
        (StatusCode::OK, "ok\n").into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {}\n", blockers.join(", ")),
        )
            .into_response()
    }
}

async fn metrics(State(app): State<AppState>) -> Response {
    match app.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("encoding metrics: {e}\n")).into_response(),
    }
}

/// Serves `router` over TLS on `listener` until `stop` resolves; then stops
/// accepting and lets in-flight requests finish (up to 30 s).
pub async fn serve_tls(listener: TcpListener, tls: Arc<ServerConfig>, router: Router, stop: impl Future<Output = ()>) {
    let acceptor = TlsAcceptor::from(tls);
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    let mut stop = std::pin::pin!(stop);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let acceptor = acceptor.clone();
                let service = TowerToHyperService::new(router.clone());
                let builder = builder.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => {
                            tracing::debug!(%peer, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(%peer, "TLS handshake timed out");
                            return;
                        }
                    };
                    let connection = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                    if let Err(e) = watcher.watch(connection).await {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                });
            }
            () = &mut stop => break,
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections closed"),
        () = tokio::time::sleep(FINISH_TIMEOUT) => tracing::warn!("in-flight requests did not finish in time"),
    }
}

/// A bound listener with its address (port 0 resolved).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}
