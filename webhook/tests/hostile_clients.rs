//! The real server under hostile clients on loopback, with small limits:
//! half-open TLS handshakes, slow headers, slow bodies, idle keep-alive
//! connections (HTTP/1 and HTTP/2), oversized headers, a flood of HTTP/2
//! streams on one connection, and more connections than the cap. Each
//! attack's connections must be closed by the limit meant for it, the
//! metrics must count it, the process's memory must stay bounded, and a
//! well-behaved client's AdmissionReviews must keep being answered
//! throughout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use support::{Harness, Req, SERVICE_NAME, yaml};
use tierguard_webhook::limits::ConnectionLimits;
use tierguard_webhook::metrics::{Metrics, Timeout};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

const HANDSHAKE: Duration = Duration::from_millis(1000);
const HEADER: Duration = Duration::from_millis(1000);
const BODY: Duration = Duration::from_millis(1000);
/// well above the header timeout, to see that idle connections get the idle one
const IDLE: Duration = Duration::from_millis(3000);
const MAX_CONNECTIONS: usize = 32;
const MAX_HEADER_BYTES: u32 = 4096;
const MAX_STREAMS: u32 = 8;
/// how late a close may come on a loaded machine; the lower bounds are tight
const SLACK: Duration = Duration::from_secs(5);

fn limits() -> ConnectionLimits {
    ConnectionLimits {
        max_connections: MAX_CONNECTIONS,
        handshake_timeout: HANDSHAKE,
        header_timeout: HEADER,
        body_timeout: BODY,
        idle_timeout: IDLE,
        max_header_bytes: MAX_HEADER_BYTES,
        http2_max_streams: MAX_STREAMS,
        ..ConnectionLimits::default()
    }
}

/// A closing time: not before the timeout (minus timer slack, as the server's
/// clock starts a little before the client's), not much after.
fn assert_closed_by(what: &str, elapsed: Duration, timeout: Duration) {
    assert!(
        elapsed >= timeout.mul_f64(0.8) && elapsed <= timeout + SLACK,
        "{what}: closed after {elapsed:?}, the timeout is {timeout:?}"
    );
}

fn connector(ca_pem: &str, alpn: &[u8]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tierguard_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    TlsConnector::from(Arc::new(config))
}

async fn tls(connector: &TlsConnector, addr: SocketAddr) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    connector
        .connect(ServerName::try_from(SERVICE_NAME).unwrap(), tcp)
        .await
}

/// Reads until the server closes (EOF or reset); returns what it sent and
/// how long that took. Bounded, so a server that never closes fails the test.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(IDLE + SLACK * 2, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the connection open; it sent {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A NetworkPolicy the guardrails deny: a well-behaved review has a verdict.
fn review() -> Value {
    Req::create(
        "NetworkPolicy",
        yaml(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: data-open, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: data}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
    ports: [{protocol: TCP, port: 5432}]
",
        ),
    )
    .review()
}

/// The API server's part: one keep-alive connection, a review every 50 ms,
/// each must get 200 and a verdict.
struct GoodClient {
    answered: Arc<AtomicU64>,
    failures: Arc<std::sync::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl GoodClient {
    fn start(h: &Harness) -> GoodClient {
        let answered = Arc::new(AtomicU64::new(0));
        let failures = Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (client, url) = (h.client.clone(), h.url("/validate"));
        let task = tokio::spawn({
            let (answered, failures, stop) = (answered.clone(), failures.clone(), stop.clone());
            async move {
                let body = review();
                while !stop.load(Ordering::Relaxed) {
                    let outcome = async {
                        let resp = client.post(&url).json(&body).send().await.map_err(|e| e.to_string())?;
                        let status = resp.status();
                        let review: Value = resp.json().await.map_err(|e| e.to_string())?;
                        if status != 200 || review["response"]["allowed"] != false {
                            return Err(format!("{status}: {review}"));
                        }
                        Ok(())
                    }
                    .await;
                    match outcome {
                        Ok(()) => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => failures.lock().unwrap().push(e),
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        });
        GoodClient {
            answered,
            failures,
            stop,
            task,
        }
    }

    fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    async fn finish(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        Arc::try_unwrap(self.failures).unwrap().into_inner().unwrap()
    }
}

/// Samples the process's RSS and the open-connections gauge, keeping peaks.
struct Sampler {
    peak_rss_kib: Arc<AtomicU64>,
    peak_open: Arc<AtomicI64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(metrics: Arc<Metrics>) -> Sampler {
        let peak_rss_kib = Arc::new(AtomicU64::new(rss_kib()));
        let peak_open = Arc::new(AtomicI64::new(metrics.open_connections()));
        let stop = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let (peak_rss_kib, peak_open, stop) = (peak_rss_kib.clone(), peak_open.clone(), stop.clone());
            async move {
                while !stop.load(Ordering::Relaxed) {
                    peak_rss_kib.fetch_max(rss_kib(), Ordering::Relaxed);
                    peak_open.fetch_max(metrics.open_connections(), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
        Sampler {
            peak_rss_kib,
            peak_open,
            stop,
            task,
        }
    }

    async fn finish(self) -> (u64, i64) {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        (
            self.peak_rss_kib.load(Ordering::Relaxed),
            self.peak_open.load(Ordering::Relaxed),
        )
    }
}

/// Runs `attack`, then checks that the good client was answered meanwhile.
async fn during<T>(good: &GoodClient, name: &str, attack: impl Future<Output = T>) -> T {
    let before = good.answered();
    let out = attack.await;
    // one more round trip, so a slow machine still shows an answer for a short attack
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        good.answered() > before,
        "the well-behaved client got no answer during {name}"
    );
    out
}

// ---- the attacks ----

/// TCP connections that send nothing, and ones that send half a ClientHello.
async fn half_open_handshakes(addr: SocketAddr) {
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            tokio::spawn(async move {
                let mut tcp = TcpStream::connect(addr).await.unwrap();
                if i % 2 == 1 {
                    // a TLS handshake record header announcing 512 bytes, and 10 of them
                    tcp.write_all(&[
                        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0, 0, 0, 0,
                    ])
                    .await
                    .unwrap();
                }
                let (_, elapsed) = read_until_closed(&mut tcp).await;
                assert_closed_by("half-open TLS handshake", elapsed, HANDSHAKE);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Partial request lines and header blocks that never end, on fresh
/// connections and on a keep-alive connection after a full request.
async fn slow_headers(connector: TlsConnector, addr: SocketAddr) {
    let partials: [&[u8]; 2] = [b"POST /valid", b"POST /validate HTTP/1.1\r\nHost: x\r\n"];
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let mut s = tls(&connector, addr).await.unwrap();
                if i >= 8 {
                    // a full request first: the next one's headers are timed from their first byte
                    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
                    let mut buf = [0u8; 1024];
                    let n = s.read(&mut buf).await.unwrap();
                    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
                    // idle for longer than the header timeout: still open
                    tokio::time::sleep(HEADER + HEADER / 2).await;
                }
                s.write_all(partials[i % 2]).await.unwrap();
                let (got, elapsed) = read_until_closed(&mut s).await;
                assert!(got.is_empty(), "{:?}", String::from_utf8_lossy(&got));
                assert_closed_by("slow headers", elapsed, HEADER);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Complete headers announcing a body, then a byte every 300 ms.
async fn slow_bodies(connector: TlsConnector, addr: SocketAddr) {
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let connector = connector.clone();
            tokio::spawn(async move {
                let s = tls(&connector, addr).await.unwrap();
                let (mut read, mut write) = tokio::io::split(s);
                write
                    .write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
                    .await
                    .unwrap();
                let trickle = tokio::spawn(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        if write.write_all(b" ").await.is_err() {
                            break;
                        }
                    }
                });
                let (got, elapsed) = read_until_closed(&mut read).await;
                trickle.abort();
                let text = String::from_utf8_lossy(&got);
                assert!(text.starts_with("HTTP/1.1 400"), "{text}");
                assert!(text.contains("request body not received within 1 s"), "{text}");
                assert_closed_by("slow body", elapsed, BODY);
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// HTTP/1.1 and HTTP/2 connections that make one request, then stay idle:
/// the header timeout must not cut them, the idle timeout must.
async fn idle_keep_alive(h1: TlsConnector, h2: TlsConnector, addr: SocketAddr) {
    let http1 = tokio::spawn(async move {
        let mut s = tls(&h1, addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 1024];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        let (_, elapsed) = read_until_closed(&mut s).await;
        assert_closed_by("idle HTTP/1.1 keep-alive", elapsed, IDLE);
    });
    let http2 = tokio::spawn(async move {
        let s = tls(&h2, addr).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(b"h2".as_slice()));
        let (mut read, mut write) = tokio::io::split(s);
        let mut hello = h2::preface();
        hello.extend(h2::headers(1, "GET", "/healthz", true));
        write.write_all(&hello).await.unwrap();
        let mut reader = h2::Reader::default();
        // the response, then nothing but the close
        while !reader.ended_streams.contains(&1) {
            assert!(reader.next(&mut read, &mut write).await, "closed before answering");
        }
        let started = Instant::now();
        while reader.next(&mut read, &mut write).await {}
        assert_closed_by("idle HTTP/2 connection", started.elapsed(), IDLE);
    });
    http1.await.unwrap();
    http2.await.unwrap();
}

/// A header block over the limit, over HTTP/1.1 (431 and closed) and over
/// HTTP/2 (431 or a refused stream; the connection lives on).
async fn oversized_headers(h1: TlsConnector, h2: TlsConnector, addr: SocketAddr) {
    let big = "a".repeat(MAX_HEADER_BYTES as usize * 2);
    let mut s = tls(&h1, addr).await.unwrap();
    s.write_all(format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (got, _) = read_until_closed(&mut s).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 431"), "{text}");

    let s = tls(&h2, addr).await.unwrap();
    let (mut read, mut write) = tokio::io::split(s);
    let mut hello = h2::preface();
    hello.extend(h2::headers_with(1, "GET", "/healthz", true, &[("x-big", &big)]));
    hello.extend(h2::headers(3, "GET", "/healthz", true));
    write.write_all(&hello).await.unwrap();
    let mut reader = h2::Reader::default();
    while !reader.ended_streams.contains(&3) {
        assert!(
            reader.next(&mut read, &mut write).await,
            "closed before answering stream 3"
        );
    }
    assert!(
        reader.statuses.get(&1).is_some_and(|s| s == "431") || reader.resets.contains(&1),
        "stream 1: {:?} {:?}",
        reader.statuses,
        reader.resets
    );
    assert_eq!(reader.statuses.get(&3).map(String::as_str), Some("200"));
}

/// `streams` streams opened at once on one HTTP/2 connection, none sending
/// its body. Reads until each stream is answered or refused, or the
/// connection ends; returns what the server did and how long it took.
async fn many_streams(h2: TlsConnector, addr: SocketAddr, streams: u32) -> (h2::Reader, Duration) {
    let s = tls(&h2, addr).await.unwrap();
    let (mut read, mut write) = tokio::io::split(s);
    let mut flood = h2::preface();
    for i in 0..streams {
        flood.extend(h2::headers(2 * i + 1, "POST", "/validate", false));
    }
    write.write_all(&flood).await.unwrap();
    let started = Instant::now();
    let mut reader = h2::Reader::default();
    while reader.ended_streams.len() + reader.refused().len() < streams as usize {
        if !reader.next(&mut read, &mut write).await {
            break;
        }
    }
    (reader, started.elapsed())
}

/// Within the reset limit: the first streams up to the stream limit are
/// served (each cut by the body timeout, 400), the rest refused, and the
/// connection lives on.
async fn streams_over_the_limit(h2: TlsConnector, addr: SocketAddr) -> usize {
    const STREAMS: u32 = 40;
    let (reader, elapsed) = many_streams(h2, addr, STREAMS).await;
    assert!(!reader.goaway);
    assert_eq!(reader.statuses.len(), MAX_STREAMS as usize, "{:?}", reader.statuses);
    assert!(reader.statuses.values().all(|s| s == "400"), "{:?}", reader.statuses);
    assert_eq!(
        reader.refused().len(),
        (STREAMS - MAX_STREAMS) as usize,
        "{:?}",
        reader.refused()
    );
    assert_closed_by("streams without a body", elapsed, BODY);
    reader.statuses.len()
}

/// Beyond the reset limit: a GOAWAY, and the connection ends without
/// waiting for any timeout.
async fn stream_flood(h2: TlsConnector, addr: SocketAddr) {
    const STREAMS: u32 = 500;
    let (reader, elapsed) = many_streams(h2, addr, STREAMS).await;
    assert!(
        reader.goaway,
        "{} answered, {} refused",
        reader.statuses.len(),
        reader.refused().len()
    );
    assert!(reader.statuses.len() <= MAX_STREAMS as usize);
    assert!(
        reader.refused().len() < STREAMS as usize,
        "{} refused",
        reader.refused().len()
    );
    assert!(elapsed < BODY, "{elapsed:?}");
}

/// Far more connections than the cap, each holding slow headers once in.
async fn over_the_cap(connector: TlsConnector, addr: SocketAddr) -> (u64, u64) {
    const ATTEMPTS: usize = 2000;
    const WAVE: usize = 400;
    let mut handshaken = 0;
    let mut refused = 0;
    for _ in 0..ATTEMPTS / WAVE {
        let tasks: Vec<_> = (0..WAVE)
            .map(|_| {
                let connector = connector.clone();
                tokio::spawn(async move {
                    let Ok(mut s) = tls(&connector, addr).await else {
                        return false;
                    };
                    let _ = s.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n").await;
                    let _ = read_until_closed(&mut s).await;
                    true
                })
            })
            .collect();
        for t in tasks {
            if t.await.unwrap() {
                handshaken += 1;
            } else {
                refused += 1;
            }
        }
    }
    (handshaken, refused)
}

/// Minimal HTTP/2 framing for the attacks (no client library would send
/// what they send).
mod h2 {
    use std::collections::{BTreeMap, BTreeSet};

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

    const DATA: u8 = 0x0;
    const HEADERS: u8 = 0x1;
    const RST_STREAM: u8 = 0x3;
    const SETTINGS: u8 = 0x4;
    const PING: u8 = 0x6;
    const GOAWAY: u8 = 0x7;
    const END_STREAM: u8 = 0x1;
    const END_HEADERS: u8 = 0x4;
    const ACK: u8 = 0x1;

    pub fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let len = payload.len() as u32;
        let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    pub fn preface() -> Vec<u8> {
        let mut p = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        p.extend(frame(SETTINGS, 0, 0, &[]));
        p
    }

    fn literal(out: &mut Vec<u8>, name: &str, value: &str) {
        // literal without indexing, new name; lengths as HPACK integers, no Huffman
        out.push(0x00);
        integer(out, 7, 0, name.len());
        out.extend_from_slice(name.as_bytes());
        integer(out, 7, 0, value.len());
        out.extend_from_slice(value.as_bytes());
    }

    fn integer(out: &mut Vec<u8>, prefix_bits: u32, first: u8, mut n: usize) {
        let max = (1usize << prefix_bits) - 1;
        if n < max {
            out.push(first | n as u8);
            return;
        }
        out.push(first | max as u8);
        n -= max;
        while n >= 128 {
            out.push((n % 128 + 128) as u8);
            n /= 128;
        }
        out.push(n as u8);
    }

    pub fn headers(stream: u32, method: &str, path: &str, end_stream: bool) -> Vec<u8> {
        headers_with(stream, method, path, end_stream, &[])
    }

    pub fn headers_with(stream: u32, method: &str, path: &str, end_stream: bool, extra: &[(&str, &str)]) -> Vec<u8> {
        let mut block = Vec::new();
        // static table: 2 = :method GET, 3 = :method POST, 7 = :scheme https
        block.push(if method == "GET" { 0x82 } else { 0x83 });
        block.push(0x87);
        literal(&mut block, ":path", path);
        literal(&mut block, ":authority", "localhost");
        for (name, value) in extra {
            literal(&mut block, name, value);
        }
        let flags = END_HEADERS | if end_stream { END_STREAM } else { 0 };
        frame(HEADERS, flags, stream, &block)
    }

    /// What the server sent, frame by frame.
    #[derive(Default)]
    pub struct Reader {
        /// `:status` of each answered stream
        pub statuses: BTreeMap<u32, String>,
        /// streams the server ended (END_STREAM)
        pub ended_streams: BTreeSet<u32>,
        /// streams the server reset (refused, or answered before their body came)
        pub resets: BTreeSet<u32>,
        pub goaway: bool,
    }

    impl Reader {
        /// Streams reset without an answer.
        pub fn refused(&self) -> BTreeSet<u32> {
            self.resets
                .iter()
                .filter(|s| !self.statuses.contains_key(s))
                .copied()
                .collect()
        }

        /// Reads one frame, acknowledging SETTINGS and PING; false once closed.
        pub async fn next(
            &mut self,
            read: &mut (impl AsyncRead + Unpin),
            write: &mut (impl AsyncWrite + Unpin),
        ) -> bool {
            let mut head = [0u8; 9];
            let read_frame = async {
                read.read_exact(&mut head).await?;
                let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
                let mut payload = vec![0u8; len];
                read.read_exact(&mut payload).await?;
                Ok::<_, std::io::Error>(payload)
            };
            let Ok(Ok(payload)) = tokio::time::timeout(super::IDLE + super::SLACK * 2, read_frame).await else {
                return false;
            };
            let (kind, flags) = (head[3], head[4]);
            let stream = u32::from_be_bytes([head[5] & 0x7f, head[6], head[7], head[8]]);
            match kind {
                HEADERS => {
                    self.statuses.insert(stream, status(&payload));
                }
                DATA => {}
                RST_STREAM => {
                    self.resets.insert(stream);
                }
                SETTINGS if flags & ACK == 0 => {
                    let _ = write.write_all(&frame(SETTINGS, ACK, 0, &[])).await;
                }
                PING if flags & ACK == 0 => {
                    let _ = write.write_all(&frame(PING, ACK, 0, &payload)).await;
                }
                GOAWAY => self.goaway = true,
                _ => {}
            }
            if matches!(kind, HEADERS | DATA) && flags & END_STREAM != 0 {
                self.ended_streams.insert(stream);
            }
            true
        }
    }

    /// The `:status` of a response header block. hyper's encoder sends it
    /// first, as an indexed static entry (8 = 200, 12 = 400, ...) or as a
    /// literal with the `:status` name (index 8) and a 3-digit value, plain
    /// or Huffman-coded.
    fn status(block: &[u8]) -> String {
        const STATIC: [(u8, &str); 7] = [
            (8, "200"),
            (9, "204"),
            (10, "206"),
            (11, "304"),
            (12, "400"),
            (13, "404"),
            (14, "500"),
        ];
        let Some(&first) = block.first() else {
            return String::new();
        };
        if first & 0x80 != 0 {
            let index = first & 0x7f;
            return STATIC
                .iter()
                .find(|(i, _)| *i == index)
                .map(|(_, s)| s.to_string())
                .unwrap_or_else(|| format!("index {index}"));
        }
        match block.get(1) {
            Some(&len) if len & 0x80 == 0 => String::from_utf8_lossy(&block[2..2 + usize::from(len)]).into_owned(),
            Some(&len) => huffman_digits(&block[2..2 + usize::from(len & 0x7f)]),
            None => format!("unparsed {block:02x?}"),
        }
    }

    /// Decodes Huffman-coded digits (RFC 7541 appendix B: '0'-'2' are 5 bits,
    /// '3'-'9' 6 bits), which is all a status is made of.
    fn huffman_digits(bytes: &[u8]) -> String {
        let bits: Vec<u8> = bytes
            .iter()
            .flat_map(|b| (0..8).rev().map(move |i| (b >> i) & 1))
            .collect();
        let value = |bits: &[u8]| bits.iter().fold(0u8, |acc, b| acc << 1 | b);
        let mut out = String::new();
        let mut at = 0;
        while at + 5 <= bits.len() {
            let five = value(&bits[at..at + 5]);
            if five <= 2 {
                out.push(char::from(b'0' + five));
                at += 5;
            } else if at + 6 <= bits.len() && (0b011001..=0b011111).contains(&value(&bits[at..at + 6])) {
                out.push(char::from(b'3' + value(&bits[at..at + 6]) - 0b011001));
                at += 6;
            } else {
                break; // padding
            }
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_clients_are_cut_by_their_limits_while_reviews_are_answered() {
    let h = Harness::start_with_limits(None, limits()).await;
    let metrics = Arc::clone(&h.running.as_ref().unwrap().metrics);
    let h1 = connector(&h.ca.cert_pem, b"http/1.1");
    let h2 = connector(&h.ca.cert_pem, b"h2");
    let good = GoodClient::start(&h);
    while good.answered() < 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rss_before = rss_kib();
    let sampler = Sampler::start(Arc::clone(&metrics));

    let before = metrics.timeouts(Timeout::Handshake);
    during(&good, "half-open handshakes", half_open_handshakes(h.addr)).await;
    assert_eq!(metrics.timeouts(Timeout::Handshake) - before, 10);

    let before = metrics.timeouts(Timeout::Header);
    during(&good, "slow headers", slow_headers(h1.clone(), h.addr)).await;
    assert_eq!(metrics.timeouts(Timeout::Header) - before, 10);

    let before = metrics.timeouts(Timeout::Body);
    during(&good, "slow bodies", slow_bodies(h1.clone(), h.addr)).await;
    assert_eq!(metrics.timeouts(Timeout::Body) - before, 6);

    let before = metrics.timeouts(Timeout::Idle);
    during(
        &good,
        "idle keep-alive",
        idle_keep_alive(h1.clone(), h2.clone(), h.addr),
    )
    .await;
    assert!(metrics.timeouts(Timeout::Idle) - before >= 2);

    during(
        &good,
        "oversized headers",
        oversized_headers(h1.clone(), h2.clone(), h.addr),
    )
    .await;

    let before = metrics.timeouts(Timeout::Body);
    let served = during(
        &good,
        "HTTP/2 streams over the limit",
        streams_over_the_limit(h2.clone(), h.addr),
    )
    .await;
    assert_eq!(metrics.timeouts(Timeout::Body) - before, served as u64);
    during(&good, "an HTTP/2 stream flood", stream_flood(h2.clone(), h.addr)).await;

    let before = metrics.refused_connections();
    let (handshaken, refused) = during(&good, "connections over the cap", over_the_cap(h1.clone(), h.addr)).await;
    assert!(refused >= 1000, "{refused} of 2000 refused, {handshaken} served");
    assert_eq!(metrics.refused_connections() - before, refused);

    let (peak_rss_kib, peak_open) = sampler.finish().await;
    let failures = good.finish().await;
    assert!(failures.is_empty(), "the well-behaved client failed: {failures:?}");
    assert!(
        peak_open <= MAX_CONNECTIONS as i64,
        "{peak_open} connections open at once, the cap is {MAX_CONNECTIONS}"
    );
    let growth_kib = peak_rss_kib.saturating_sub(rss_before);
    println!("RSS {rss_before} KiB before, {peak_rss_kib} KiB at peak (+{growth_kib} KiB)");
    // Measured once: with no cap and no header timeout, holding the 2000
    // slow-header connections grew this process (server and clients) by
    // 63 MiB, ~32 KiB each; with the limits the whole run grows it by ~4 MiB.
    assert!(growth_kib < 20 * 1024, "RSS grew by {growth_kib} KiB");
    let text = metrics.encode().unwrap();
    for timeout in ["handshake", "header", "body", "idle"] {
        assert!(
            text.contains(&format!(
                r#"tierguard_webhook_connection_timeouts_total{{timeout="{timeout}"}}"#
            )),
            "{text}"
        );
    }
    h.stop().await;
}
