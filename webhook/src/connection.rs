//! Serving one accepted connection under the [`ConnectionLimits`]: the TLS
//! handshake timeout, the header, body and idle timeouts, and the HTTP/1 and
//! HTTP/2 size and stream limits.
//!
//! hyper's own HTTP/1 header timeout is not used: hyper starts it as soon as
//! a keep-alive connection goes idle, so it would also close idle
//! connections after the header timeout and race the API server's next
//! request on them. Here the header timeout runs from the first byte of a
//! request, and an idle connection gets the (longer) idle timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt as _;

use crate::limits::{ConnectionLimits, MIN_HTTP1_BUF_BYTES};
use crate::metrics::{Metrics, Timeout};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a connection is, as far as the timeouts care.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// waiting for a request's headers: since the handshake for the first
    /// request, since the request's first byte for later HTTP/1 requests
    AwaitingHeaders { since: Instant },
    /// requests in flight: each has its own body deadline, nothing else runs
    Busy { in_flight: usize },
    /// no request in flight and no byte of the next one
    Idle { since: Instant },
}

/// A connection's phase and how it moves; pure, so the rules are tested
/// without sockets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Activity {
    phase: Phase,
    /// HTTP/2 frames (pings, settings, window updates) arrive while idle and
    /// say nothing about a request, so only HTTP/1 reads start the header
    /// timeout of an idle connection
    http2: bool,
}

impl Activity {
    pub(crate) fn new(now: Instant, http2: bool) -> Activity {
        Activity {
            phase: Phase::AwaitingHeaders { since: now },
            http2,
        }
    }

    /// Bytes came in; returns whether the phase changed.
    pub(crate) fn bytes_received(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Idle { .. } if !self.http2 => {
                self.phase = Phase::AwaitingHeaders { since: now };
                true
            }
            _ => false,
        }
    }

    /// A request's headers were read; returns whether the phase changed.
    pub(crate) fn request_started(&mut self) -> bool {
        match self.phase {
            Phase::Busy { in_flight } => {
                self.phase = Phase::Busy {
                    in_flight: in_flight.saturating_add(1),
                };
                false
            }
            Phase::AwaitingHeaders { .. } | Phase::Idle { .. } => {
                self.phase = Phase::Busy { in_flight: 1 };
                true
            }
        }
    }

    /// A request was answered (or abandoned); returns whether the phase changed.
    pub(crate) fn request_finished(&mut self, now: Instant) -> bool {
        match self.phase {
            Phase::Busy { in_flight } if in_flight > 1 => {
                self.phase = Phase::Busy {
                    in_flight: in_flight - 1,
                };
                false
            }
            Phase::Busy { .. } => {
                self.phase = Phase::Idle { since: now };
                true
            }
            Phase::AwaitingHeaders { .. } | Phase::Idle { .. } => false,
        }
    }

    /// When the connection must be closed and why; `None` while requests
    /// are in flight (or the deadline is beyond the clock's range).
    pub(crate) fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Timeout)> {
        match self.phase {
            Phase::AwaitingHeaders { since } => {
                since.checked_add(limits.header_timeout).map(|at| (at, Timeout::Header))
            }
            Phase::Idle { since } => since.checked_add(limits.idle_timeout).map(|at| (at, Timeout::Idle)),
            Phase::Busy { .. } => None,
        }
    }
}

/// A connection's [`Activity`], shared by its reader, its requests and its
/// watchdog.
#[derive(Debug)]
struct ConnectionClock {
    activity: Mutex<Activity>,
    /// one waiter (the watchdog); `notify_one` keeps a permit when it is not
    /// waiting, so no change is missed
    changed: Notify,
}

impl ConnectionClock {
    fn new(http2: bool) -> ConnectionClock {
        ConnectionClock {
            activity: Mutex::new(Activity::new(Instant::now(), http2)),
            changed: Notify::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Activity) -> bool) {
        let changed = change(&mut self.activity.lock().unwrap_or_else(PoisonError::into_inner));
        if changed {
            self.changed.notify_one();
        }
    }

    fn deadline(&self, limits: &ConnectionLimits) -> Option<(Instant, Timeout)> {
        self.activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .deadline(limits)
    }

    /// Resolves when the connection has overrun a deadline, with which one.
    async fn expired(&self, limits: &ConnectionLimits) -> Timeout {
        loop {
            match self.deadline(limits) {
                Some((at, timeout)) if at <= Instant::now() => return timeout,
                Some((at, _)) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(at) => {}
                        () = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// Counts one request as in flight until dropped (answered or cancelled).
struct InFlight(Arc<ConnectionClock>);

impl InFlight {
    fn start(clock: &Arc<ConnectionClock>) -> InFlight {
        clock.update(Activity::request_started);
        InFlight(Arc::clone(clock))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let now = Instant::now();
        self.0.update(|activity| activity.request_finished(now));
    }
}

/// The decrypted stream, telling the clock when request bytes arrive.
struct TrackedIo<S> {
    inner: S,
    /// `None` for HTTP/2, whose reads say nothing about requests
    clock: Option<Arc<ConnectionClock>>,
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        if buf.filled().len() > before
            && let Some(clock) = &self.clock
        {
            let now = Instant::now();
            clock.update(|activity| activity.bytes_received(now));
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails once its deadline passes, so a client that
/// trickles a body cannot hold a request open.
#[derive(Debug, thiserror::Error)]
#[error("request body not received within {} s", .0.as_secs_f64())]
pub struct BodyTimedOut(pub Duration);

/// A request body with a deadline for its last byte.
pub(crate) struct DeadlineBody<B> {
    inner: B,
    timeout: Duration,
    deadline: Option<Instant>,
    /// made on the first wait only: bodies that are already complete cost no timer
    sleep: Option<Pin<Box<Sleep>>>,
    metrics: Arc<Metrics>,
    timed_out: bool,
}

impl<B> DeadlineBody<B> {
    pub(crate) fn new(inner: B, timeout: Duration, metrics: Arc<Metrics>) -> DeadlineBody<B> {
        DeadlineBody {
            inner,
            timeout,
            deadline: Instant::now().checked_add(timeout),
            sleep: None,
            metrics,
            timed_out: false,
        }
    }
}

impl<B> Body for DeadlineBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.timed_out {
            return Poll::Ready(None);
        }
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|f| f.map_err(Into::into)));
        }
        let Some(deadline) = self.deadline else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        ready!(sleep.as_mut().poll(cx));
        self.timed_out = true;
        self.metrics.timed_out(Timeout::Body);
        Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.timeout)))))
    }

    fn is_end_stream(&self) -> bool {
        self.timed_out || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The HTTP/1 and HTTP/2 connection builders, configured once.
#[derive(Clone, Debug)]
pub struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Protocols {
    /// Builders carrying `limits`' size and stream limits.
    pub fn new(limits: &ConnectionLimits) -> Protocols {
        let mut http1 = http1::Builder::new();
        http1
            // our own header timeout applies instead (see the module doc)
            .header_read_timeout(None)
            .max_header_size(limits.max_header_bytes as usize)
            .max_buf_size(limits.http1_max_buf_bytes.max(MIN_HTTP1_BUF_BYTES));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .max_concurrent_streams(limits.http2_max_streams)
            .max_header_list_size(limits.max_header_bytes)
            .max_pending_accept_reset_streams(limits.http2_max_pending_resets)
            .max_local_error_reset_streams(limits.http2_max_local_error_resets);
        Protocols { http1, http2 }
    }
}

/// What every connection of a server shares.
#[derive(Clone)]
pub struct ConnectionContext {
    /// TLS
    pub acceptor: TlsAcceptor,
    /// the configured builders
    pub protocols: Arc<Protocols>,
    /// the routes
    pub router: Router,
    /// the limits
    pub limits: ConnectionLimits,
    /// where timeouts are counted
    pub metrics: Arc<Metrics>,
}

impl std::fmt::Debug for ConnectionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionContext")
            .field("limits", &self.limits)
            .finish()
    }
}

/// Handshakes and serves one connection until the client closes it, a
/// timeout cuts it, or graceful shutdown ends it.
pub async fn serve(context: ConnectionContext, tcp: TcpStream, peer: SocketAddr, watcher: Watcher) {
    let ConnectionContext {
        acceptor,
        protocols,
        router,
        limits,
        metrics,
    } = context;
    let stream = match tokio::time::timeout(limits.handshake_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            metrics.timed_out(Timeout::Handshake);
            return;
        }
    };
    // TLS carries HTTP/2 only when ALPN chose it
    let is_http2 = stream.get_ref().1.alpn_protocol() == Some(b"h2".as_slice());
    let clock = Arc::new(ConnectionClock::new(is_http2));
    let io = TokioIo::new(TrackedIo {
        inner: stream,
        clock: (!is_http2).then(|| Arc::clone(&clock)),
    });
    let requests = {
        let clock = Arc::clone(&clock);
        let metrics = Arc::clone(&metrics);
        hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let in_flight = InFlight::start(&clock);
            let request = request.map(|body| DeadlineBody::new(body, limits.body_timeout, Arc::clone(&metrics)));
            let router = router.clone();
            async move {
                let response = router.oneshot(request).await;
                drop(in_flight);
                response
            }
        })
    };
    let finished = if is_http2 {
        run_until_expired(
            watcher.watch(protocols.http2.serve_connection(io, requests)),
            &clock,
            &limits,
        )
        .await
    } else {
        run_until_expired(
            watcher.watch(protocols.http1.serve_connection(io, requests)),
            &clock,
            &limits,
        )
        .await
    };
    match finished {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
        Err(timeout) => {
            tracing::debug!(%peer, timeout = timeout.as_str(), "connection timed out");
            metrics.timed_out(timeout);
        }
    }
}

/// Drives `connection` until it ends or the clock expires (then drops it,
/// which closes the socket).
async fn run_until_expired<F: Future>(
    connection: F,
    clock: &ConnectionClock,
    limits: &ConnectionLimits,
) -> Result<F::Output, Timeout> {
    tokio::select! {
        output = connection => Ok(output),
        timeout = clock.expired(limits) => Err(timeout),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            ..ConnectionLimits::default()
        }
    }

    #[test]
    fn first_request_has_the_header_timeout_from_the_handshake() {
        let t0 = Instant::now();
        for http2 in [false, true] {
            let activity = Activity::new(t0, http2);
            assert_eq!(
                activity.deadline(&limits()),
                Some((t0 + Duration::from_secs(10), Timeout::Header))
            );
        }
    }

    #[test]
    fn idle_http1_connection_gets_the_idle_timeout_then_the_header_timeout_from_the_next_byte() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, false);
        assert!(a.request_started());
        assert_eq!(a.deadline(&limits()), None);
        assert!(a.request_finished(t0 + Duration::from_secs(1)));
        assert_eq!(
            a.deadline(&limits()),
            Some((t0 + Duration::from_secs(121), Timeout::Idle))
        );
        // the next request's first byte, 100 s later: 10 s for its headers
        assert!(a.bytes_received(t0 + Duration::from_secs(101)));
        assert_eq!(
            a.deadline(&limits()),
            Some((t0 + Duration::from_secs(111), Timeout::Header))
        );
        // more bytes of the same headers do not extend it
        assert!(!a.bytes_received(t0 + Duration::from_secs(105)));
        assert_eq!(
            a.deadline(&limits()),
            Some((t0 + Duration::from_secs(111), Timeout::Header))
        );
    }

    #[test]
    fn http2_frames_on_an_idle_connection_do_not_start_the_header_timeout() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, true);
        a.request_started();
        a.request_finished(t0);
        assert!(!a.bytes_received(t0 + Duration::from_secs(30)));
        assert_eq!(
            a.deadline(&limits()),
            Some((t0 + Duration::from_secs(120), Timeout::Idle))
        );
    }

    #[test]
    fn idle_only_once_every_concurrent_request_is_answered() {
        let t0 = Instant::now();
        let mut a = Activity::new(t0, true);
        a.request_started();
        assert!(!a.request_started());
        assert!(!a.request_finished(t0));
        assert_eq!(a.deadline(&limits()), None);
        assert!(a.request_finished(t0 + Duration::from_secs(2)));
        assert_eq!(
            a.deadline(&limits()),
            Some((t0 + Duration::from_secs(122), Timeout::Idle))
        );
    }

    #[test]
    fn a_timeout_beyond_the_clock_means_no_deadline() {
        let a = Activity::new(Instant::now(), false);
        let unbounded = ConnectionLimits {
            header_timeout: Duration::MAX,
            ..limits()
        };
        assert_eq!(a.deadline(&unbounded), None);
    }

    /// A body whose next frame never comes.
    struct Stalled;

    impl Body for Stalled {
        type Data = Bytes;
        type Error = std::convert::Infallible;
        fn poll_frame(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            Poll::Pending
        }
    }

    #[tokio::test]
    async fn a_stalled_body_fails_at_its_deadline_and_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let mut body = DeadlineBody::new(Stalled, Duration::from_millis(200), Arc::clone(&metrics));
        let started = Instant::now();
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let error = frame.expect("an error frame").expect_err("the deadline passed");
        assert_eq!(error.to_string(), "request body not received within 0.2 s");
        assert!(started.elapsed() >= Duration::from_millis(200));
        assert_eq!(metrics.timeouts(Timeout::Body), 1);
        assert!(body.is_end_stream());
    }

    #[tokio::test]
    async fn the_clock_never_expires_in_flight_and_expires_by_the_phase_it_is_in() {
        let limits = ConnectionLimits {
            header_timeout: Duration::from_millis(100),
            idle_timeout: Duration::from_millis(400),
            ..ConnectionLimits::default()
        };
        let clock = Arc::new(ConnectionClock::new(false));
        let in_flight = InFlight::start(&clock);
        let watchdog = tokio::spawn({
            let clock = Arc::clone(&clock);
            async move { (clock.expired(&limits).await, Instant::now()) }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!watchdog.is_finished(), "a request in flight is never cut by the clock");
        drop(in_flight);
        tokio::time::sleep(Duration::from_millis(150)).await;
        assert!(
            !watchdog.is_finished(),
            "an idle connection outlives the header timeout"
        );
        let first_byte = Instant::now();
        clock.update(|a| a.bytes_received(first_byte));
        let (timeout, at) = watchdog.await.unwrap();
        assert_eq!(timeout, Timeout::Header);
        assert!(at >= first_byte + Duration::from_millis(100));
    }
}
