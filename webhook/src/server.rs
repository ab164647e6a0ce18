//! The HTTPS server: routes, the rustls accept loop with its connection cap,
//! and graceful shutdown.

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
use hyper_util::server::graceful::GracefulShutdown;
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;

use crate::admission::{Admission, BadRequest, Endpoint, ReviewError};
use crate::connection::{self, ConnectionContext, Protocols};
use crate::contract;
use crate::limits::ConnectionLimits;
use crate::metrics::{Metrics, Verdict};
use crate::readiness::Readiness;

/// Largest AdmissionReview body accepted: an UPDATE carries object and
/// oldObject, each up to 3 MiB.
pub const MAX_BODY_BYTES: usize = 7 * 1024 * 1024;

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
        Err(rejection) => Err(BadRequest::Body(rejection.body_text()).into()),
    };
    let response = match result {
        Ok(outcome) => {
            app.metrics.count(&outcome.kind, &outcome.operation, outcome.verdict);
            (StatusCode::OK, axum::Json(outcome.response)).into_response()
        }
        Err(err) => {
            let verdict = match &err {
                ReviewError::BadRequest(_) => {
                    tracing::warn!(path, reason = %err, "bad AdmissionReview request");
                    Verdict::Invalid
                }
                ReviewError::ServerFault(_) => {
                    tracing::error!(path, reason = %err, "cannot answer AdmissionReview");
                    Verdict::Error
                }
            };
            app.metrics.count("unknown", "unknown", verdict);
            error_response(&err)
        }
    };
    app.metrics.observe_latency(path, started.elapsed().as_secs_f64());
    response
}

/// The plain-text answer to a review that got no AdmissionReview back.
fn error_response(err: &ReviewError) -> Response {
    (
        StatusCode::from_u16(err.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{err}\n"),
    )
        .into_response()
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
/// accepting and lets in-flight requests finish (up to 30 s). Every
/// connection is held to `limits`; beyond `limits.max_connections` open ones
/// (TLS handshakes included) a new connection is closed right after accept
/// and counted in `metrics`.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    router: Router,
    limits: ConnectionLimits,
    metrics: Arc<Metrics>,
    stop: impl Future<Output = ()>,
) {
    let context = ConnectionContext {
        acceptor: TlsAcceptor::from(tls),
        protocols: Arc::new(Protocols::new(&limits)),
        router,
        limits,
        metrics: Arc::clone(&metrics),
    };
    // Refusing rather than waiting: a waiting connection would sit in the
    // kernel's accept queue behind the very connections that fill the cap,
    // and a client that is refused at once can fail over to another replica.
    let slots = Arc::new(Semaphore::new(limits.max_connections.min(Semaphore::MAX_PERMITS)));
    let graceful = GracefulShutdown::new();
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
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    metrics.connection_refused();
                    tracing::debug!(%peer, max = limits.max_connections, "connection refused: too many open");
                    drop(tcp);
                    continue;
                };
                let open = OpenConnection::new(slot, Arc::clone(&metrics));
                let _ = tcp.set_nodelay(true);
                let context = context.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    connection::serve(context, tcp, peer, watcher).await;
                    drop(open);
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

/// One of the capped connection slots, counted in the open-connections gauge
/// until dropped (also when the connection task panics).
struct OpenConnection {
    _slot: OwnedSemaphorePermit,
    metrics: Arc<Metrics>,
}

impl OpenConnection {
    fn new(slot: OwnedSemaphorePermit, metrics: Arc<Metrics>) -> OpenConnection {
        metrics.connection_opened();
        OpenConnection { _slot: slot, metrics }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.metrics.connection_closed();
    }
}

/// A bound listener with its address (port 0 resolved).
pub async fn bind(addr: SocketAddr) -> std::io::Result<(TcpListener, SocketAddr)> {
    let listener = TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_fault_is_a_500_and_a_bad_request_a_400() {
        let fault = error_response(&ReviewError::ServerFault("cannot serialize response: boom".into()));
        assert_eq!(fault.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let bad = error_response(&ReviewError::BadRequest(BadRequest::MissingRequest));
        assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    }
}
