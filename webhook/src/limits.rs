//! How much a client may hold of the server: the connection limits and why
//! each default is what it is.
//!
//! The validating webhook fails closed, so a server that runs out of memory
//! blocks every NetworkPolicy change in governed namespaces. Every limit
//! below bounds what one client, or many, can make the server keep. The
//! defaults are chosen around the kube-apiserver's webhook client: it writes
//! a request in one go right after picking a connection, gives up on a call
//! after at most 30 s (`timeoutSeconds`), and closes a keep-alive connection
//! after about 90 s without a request. None of them may cut that client.

use std::time::Duration;

/// Open connections, TLS handshakes in progress included. Each idle TLS
/// connection costs about 22 KiB, so 1024 of them stay near 25 MiB, far
/// below the 256 MiB the Deployment allows, while the legitimate clients
/// (a few connections per API server, probes, one scraper) use a few dozen.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// The API server's client gives up on a handshake after 10 s too.
pub const DEFAULT_HANDSHAKE_TIMEOUT_SECONDS: u64 = 10;
/// Counted from the first byte of a request (or from the handshake, for a
/// connection's first request), never while a keep-alive connection is idle:
/// a client writes a request's headers at once, so 10 s is generous.
pub const DEFAULT_HEADER_TIMEOUT_SECONDS: u64 = 10;
/// From the request's headers to its last body byte. The API server stops
/// waiting after at most 30 s, so a body still arriving then has nobody
/// waiting for its answer; a shorter value could cut a slow but live one.
pub const DEFAULT_BODY_TIMEOUT_SECONDS: u64 = 30;
/// Longer than the API server's ~90 s idle timeout, so that client always
/// closes an idle connection first and never races a new request against
/// our close.
pub const DEFAULT_IDLE_TIMEOUT_SECONDS: u64 = 120;
/// Request headers (HTTP/1 start line included; HTTP/2 header list as the
/// protocol counts it). The API server sends well under 1 KiB.
pub const DEFAULT_MAX_HEADER_BYTES: u32 = 16 * 1024;
/// HTTP/1 read and write buffer per connection (hyper's default is ~400 KiB);
/// bodies stream through it, so it bounds buffering, not body size.
pub const DEFAULT_HTTP1_MAX_BUF_BYTES: usize = 64 * 1024;
/// Concurrent HTTP/2 streams per connection: more than the API server runs
/// at once on one connection (it opens another one beyond the limit).
pub const DEFAULT_HTTP2_MAX_STREAMS: u32 = 100;
/// Streams a client may open and reset before the server accepted them
/// (the "rapid reset" attack) before it gets a GOAWAY; h2's own default.
pub const DEFAULT_HTTP2_MAX_PENDING_RESETS: usize = 20;
/// Streams the server resets because the client broke the protocol before
/// it gets a GOAWAY. A well-behaved client never causes one.
pub const DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESETS: usize = 64;

/// hyper refuses an HTTP/1 buffer smaller than this.
pub const MIN_HTTP1_BUF_BYTES: usize = 8 * 1024;

/// The limits the HTTPS server applies to every connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// connections held at once; the next ones are closed right after accept
    pub max_connections: usize,
    /// TCP accept to finished TLS handshake
    pub handshake_timeout: Duration,
    /// first byte of a request (or end of the handshake) to its last header byte
    pub header_timeout: Duration,
    /// end of a request's headers to its last body byte
    pub body_timeout: Duration,
    /// no request in flight for this long closes the connection
    pub idle_timeout: Duration,
    /// request header size (HTTP/1 and HTTP/2)
    pub max_header_bytes: u32,
    /// HTTP/1 connection buffer (at least [`MIN_HTTP1_BUF_BYTES`])
    pub http1_max_buf_bytes: usize,
    /// HTTP/2 concurrent streams per connection
    pub http2_max_streams: u32,
    /// HTTP/2 streams reset by the client before being accepted, before GOAWAY
    pub http2_max_pending_resets: usize,
    /// HTTP/2 streams reset for the client's protocol errors, before GOAWAY
    pub http2_max_local_error_resets: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: Duration::from_secs(DEFAULT_HANDSHAKE_TIMEOUT_SECONDS),
            header_timeout: Duration::from_secs(DEFAULT_HEADER_TIMEOUT_SECONDS),
            body_timeout: Duration::from_secs(DEFAULT_BODY_TIMEOUT_SECONDS),
            idle_timeout: Duration::from_secs(DEFAULT_IDLE_TIMEOUT_SECONDS),
            max_header_bytes: DEFAULT_MAX_HEADER_BYTES,
            http1_max_buf_bytes: DEFAULT_HTTP1_MAX_BUF_BYTES,
            http2_max_streams: DEFAULT_HTTP2_MAX_STREAMS,
            http2_max_pending_resets: DEFAULT_HTTP2_MAX_PENDING_RESETS,
            http2_max_local_error_resets: DEFAULT_HTTP2_MAX_LOCAL_ERROR_RESETS,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_never_cut_the_api_servers_connections() {
        let limits = ConnectionLimits::default();
        // its idle keep-alive connections live ~90 s: it must close them first
        assert!(limits.idle_timeout > Duration::from_secs(90));
        // its calls last at most 30 s: a body arriving within them is read
        assert!(limits.body_timeout >= Duration::from_secs(30));
        assert!(limits.http1_max_buf_bytes >= MIN_HTTP1_BUF_BYTES);
        assert!(limits.max_header_bytes as usize <= limits.http1_max_buf_bytes);
    }
}
