//! Hostile load: 12,000 TLS connections that send
//! `POST /validate HTTP/1.1\r\nHost: x\r\n` and then nothing, against the
//! real `tierguard-webhook serve` binary (a child process, so its RSS is the
//! server's alone), while a well-behaved client sends AdmissionReviews over
//! its keep-alive connection. Prints the server's RSS before, at peak and
//! after, how many attack connections the server still holds after the
//! header timeout, and the good client's p50/p99 latency during the attack.
//!
//! `cargo bench -p tierguard-webhook --bench hostile_load` runs it with the
//! default limits; `HOSTILE_LIMITS=off` passes flags that lift them (cap and
//! timeouts set to huge values), which is how the server behaved before it
//! had limits. It needs `ulimit -n` of at least 12,500 (both processes hold
//! one descriptor per connection) and stops by itself within ~2 minutes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::pki_types::pem::PemObject as _;
use serde_json::Value;
use tierguard_webhook::limits;
use tierguard_webhook::selfsigned;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsConnector;

const ATTACK_CONNECTIONS: usize = 12_000;
/// attack connections being opened at once
const OPENING: usize = 200;
/// stop opening new attack connections after this long, whatever the count
const OPENING_BUDGET: Duration = Duration::from_secs(50);

/// The server as a child process, killed when dropped.
struct Server {
    child: Child,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn open_files_limit() -> u64 {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

fn connector(ca: &Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca).unwrap();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(tierguard_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    TlsConnector::from(Arc::new(config))
}

fn review() -> Value {
    let object: Value = serde_yaml::from_str(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-admin, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress]
  ingress:
  - from: [{podSelector: {matchLabels: {tier: frontend}}}]
    ports: [{protocol: TCP, port: 9090}]
",
    )
    .unwrap();
    serde_json::json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "name": "backend-admin",
            "namespace": "shop",
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": object,
            "oldObject": null,
            "dryRun": false
        }
    })
}

/// Counts of the attack, shared by its tasks.
#[derive(Default)]
struct Attack {
    handshaken: AtomicUsize,
    refused: AtomicUsize,
    closed_by_server: AtomicUsize,
}

#[tokio::main]
async fn main() {
    let unbounded = std::env::var("HOSTILE_LIMITS").is_ok_and(|v| v == "off");
    let needed = ATTACK_CONNECTIONS as u64 + 500;
    let limit = open_files_limit();
    if limit < needed {
        eprintln!(
            "hostile_load: needs `ulimit -n` of at least {needed} (it is {limit}); run `ulimit -n 65536` (or as high as the hard limit allows) first"
        );
        std::process::exit(2);
    }
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let certs = selfsigned::write_dev_certs(dir.path(), &[]).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tierguard-webhook"));
    command
        .args([
            "serve",
            "--listen",
            &addr.to_string(),
            "--service-dns",
            "localhost",
            "--state",
        ])
        .arg(repo.join("deploy/examples/three-tier"))
        .arg("--tls-cert")
        .arg(&certs.cert)
        .arg("--tls-key")
        .arg(&certs.key)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if unbounded {
        for flag in [
            "--max-connections",
            "--handshake-timeout-seconds",
            "--header-timeout-seconds",
            "--body-timeout-seconds",
            "--idle-timeout-seconds",
        ] {
            command.args([flag, "100000000"]);
        }
    }
    let server = Server {
        child: command.spawn().expect("starting tierguard-webhook serve"),
    };
    let pid = server.child.id();
    let header_timeout = Duration::from_secs(limits::DEFAULT_HEADER_TIMEOUT_SECONDS);

    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap())
        .resolve("localhost", addr)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let url = format!("https://localhost:{port}/validate");
    let started = Instant::now();
    while client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .is_err()
    {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server did not come up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = review();
    for _ in 0..50 {
        let answer: Value = client
            .post(&url)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["response"]["allowed"], true, "{answer}");
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(pid);

    // the well-behaved client: one review at a time on its keep-alive connection
    let (stop_good, mut good_stopped) = watch::channel(false);
    let good = tokio::spawn({
        let (client, url, body) = (client.clone(), url.clone(), body.clone());
        async move {
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while !*good_stopped.borrow() {
                let sent = Instant::now();
                let ok = match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => r
                        .json::<Value>()
                        .await
                        .is_ok_and(|v| v["response"]["allowed"].is_boolean()),
                    _ => false,
                };
                if ok {
                    latencies.push(sent.elapsed());
                } else {
                    errors += 1;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(20)) => {}
                    _ = good_stopped.changed() => {}
                }
            }
            (latencies, errors)
        }
    });

    let peak_kib = Arc::new(AtomicU64::new(rss_before));
    let (stop_sampling, sampling_stopped) = watch::channel(false);
    let sampler = tokio::spawn({
        let peak_kib = Arc::clone(&peak_kib);
        async move {
            while !*sampling_stopped.borrow() {
                peak_kib.fetch_max(rss_kib(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    // the attack: open, send the partial request, hold until the server closes or we let go
    let attack = Arc::new(Attack::default());
    let (release, released) = watch::channel(false);
    let tls = connector(&certs.ca);
    let opening = Arc::new(Semaphore::new(OPENING));
    let attack_started = Instant::now();
    let mut tasks = Vec::with_capacity(ATTACK_CONNECTIONS);
    for _ in 0..ATTACK_CONNECTIONS {
        if attack_started.elapsed() > OPENING_BUDGET {
            break;
        }
        let permit = Arc::clone(&opening).acquire_owned().await.unwrap();
        let (attack, tls, mut released) = (Arc::clone(&attack), tls.clone(), released.clone());
        tasks.push(tokio::spawn(async move {
            let connect = async {
                let tcp = TcpStream::connect(addr).await?;
                let mut s = tls.connect(ServerName::try_from("localhost").unwrap(), tcp).await?;
                s.write_all(b"POST /validate HTTP/1.1\r\nHost: x\r\n").await?;
                Ok::<_, std::io::Error>(s)
            };
            let stream = tokio::time::timeout(Duration::from_secs(15), connect).await;
            drop(permit);
            let Ok(Ok(mut stream)) = stream else {
                attack.refused.fetch_add(1, Ordering::Relaxed);
                return;
            };
            attack.handshaken.fetch_add(1, Ordering::Relaxed);
            let mut buf = [0u8; 256];
            tokio::select! {
                _ = stream.read(&mut buf) => {
                    attack.closed_by_server.fetch_add(1, Ordering::Relaxed);
                }
                _ = released.changed() => {}
            }
        }));
    }
    let opened_in = attack_started.elapsed();
    // every attempt has had its answer (or given up) once all permits are back
    let _all = opening.acquire_many(OPENING as u32).await.unwrap();
    let attempts = tasks.len();
    tokio::time::sleep(header_timeout + Duration::from_secs(2)).await;
    let still_open = attack.handshaken.load(Ordering::Relaxed) - attack.closed_by_server.load(Ordering::Relaxed);
    let during_attack = attack_started.elapsed();
    let _ = release.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let _ = stop_good.send(true);
    let (mut latencies, errors) = good.await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let _ = stop_sampling.send(true);
    sampler.await.unwrap();
    let rss_after = rss_kib(pid);
    let metrics = client
        .get(format!("https://localhost:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();

    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    println!(
        "hostile_load: {} limits; {attempts} attack connections (POST headers, then nothing) opened {OPENING} at a time in {:.1} s; server in its own process",
        if unbounded {
            "lifted (HOSTILE_LIMITS=off)"
        } else {
            "default"
        },
        opened_in.as_secs_f64()
    );
    println!(
        "  attack: {} handshaken, {} refused or failed, {} closed by the server, {still_open} still open {} s after the last was opened (header timeout {} s)",
        attack.handshaken.load(Ordering::Relaxed),
        attack.refused.load(Ordering::Relaxed),
        attack.closed_by_server.load(Ordering::Relaxed),
        header_timeout.as_secs() + 2,
        header_timeout.as_secs()
    );
    println!(
        "  server RSS: {} before, {} at peak, {} after the attackers left",
        mib(rss_before),
        mib(peak_kib.load(Ordering::Relaxed)),
        mib(rss_after)
    );
    println!(
        "  well-behaved reviews during the attack ({:.1} s): {} answered, {errors} failed, p50 {}, p99 {}",
        during_attack.as_secs_f64(),
        latencies.len(),
        ms(pick(0.50)),
        ms(pick(0.99))
    );
    for line in metrics.lines().filter(|l| {
        l.starts_with("tierguard_webhook_open_connections ")
            || l.starts_with("tierguard_webhook_connections_refused_total")
            || l.starts_with("tierguard_webhook_connection_timeouts_total")
    }) {
        println!("  {line}");
    }
    drop(server);
}
