//! Load benchmark: real AdmissionReview requests over HTTPS (keep-alive,
//! HTTP/1.1) against `serve --state` with a namespace of 50 policies, and
//! against a trivial axum+rustls echo handler in the same run, at
//! concurrency 1, 16 and 64. Prints p50, p99 and requests/s for both and
//! the ratio.
//!
//! Then the per-namespace review lock: 16 namespaces of 50 policies, 1 and
//! 16 clients sending to different namespaces or all to one, with dry-run
//! CREATEs (judged, never recorded: the lock alone) and admitted CREATEs
//! (recorded in the overlay, so each later review in the namespace reads a
//! state merged for it); with how many reviews waited for their namespace
//! and for how long, and what an uncontended turn costs.
//!
//! `cargo bench -p tierguard-webhook --bench admission_load`
//! (`BENCH_SECONDS` sets the measured time per level, default 5).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use serde_json::{Value, json};
use tierguard_webhook::limits::ConnectionLimits;
use tierguard_webhook::metrics::Metrics;
use tierguard_webhook::overlay::Overlay;
use tierguard_webhook::serve::{self, Options};
use tierguard_webhook::state::files::FileState;
use tierguard_webhook::tls::{self, CertReloader};
use tierguard_webhook::{selfsigned, server};

const POLICIES: usize = 50;

/// Namespaces of the lock cases.
const LOCK_NAMESPACES: usize = 16;

/// A governed namespace with a default-deny (with DNS) and 49 allow policies
/// that follow the template.
fn write_state(dir: &Path) -> Value {
    std::fs::write(dir.join("state.yaml"), namespace_text("load")).unwrap();
    review("load", false)
}

/// The namespace `namespace` and its policies.
fn namespace_text(namespace: &str) -> String {
    let mut text = format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {namespace}}}\n");
    let _ = write!(
        text,
        "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: default-deny-all, namespace: {namespace}}}
spec:
  podSelector: {{}}
  policyTypes: [Ingress, Egress]
  egress:
  - to: [{{namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: kube-system}}}}, podSelector: {{matchLabels: {{k8s-app: kube-dns}}}}}}]
    ports: [{{protocol: UDP, port: 53}}, {{protocol: TCP, port: 53}}]
"
    );
    let flows = [
        ("backend", "Ingress", "from", "frontend"),
        ("backend", "Ingress", "from", "gateway"),
        ("backend", "Egress", "to", "data"),
        ("data", "Ingress", "from", "backend"),
        ("gateway", "Egress", "to", "backend"),
        ("frontend", "Egress", "to", "backend"),
        ("backend", "Egress", "to", "backend"),
    ];
    for i in 1..POLICIES {
        let (tier, direction, peer_key, peer) = flows[i % flows.len()];
        let rules = if direction == "Ingress" { "ingress" } else { "egress" };
        let _ = write!(
            text,
            "---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: p{i:02}, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{tier: {tier}, app: app{i}}}}}
  policyTypes: [{direction}]
  {rules}:
  - {peer_key}: [{{podSelector: {{matchLabels: {{tier: {peer}}}}}}}]
    ports: [{{protocol: TCP, port: {port}}}]
",
            port = 8000 + i
        );
    }
    text
}

/// A CREATE of a policy that follows the template into `namespace`.
fn review(namespace: &str, dry_run: bool) -> Value {
    let object: Value = serde_yaml::from_str(&format!(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {{name: new-backend-api, namespace: {namespace}}}
spec:
  podSelector: {{matchLabels: {{tier: backend, app: api}}}}
  policyTypes: [Ingress]
  ingress:
  - from: [{{podSelector: {{matchLabels: {{tier: frontend}}}}}}]
    ports: [{{protocol: TCP, port: 9443}}]
"
    ))
    .unwrap();
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "bench",
            "kind": {"group": "networking.k8s.io", "version": "v1", "kind": "NetworkPolicy"},
            "resource": {"group": "networking.k8s.io", "version": "v1", "resource": "networkpolicies"},
            "name": "new-backend-api",
            "namespace": namespace,
            "operation": "CREATE",
            "userInfo": {"username": "bench"},
            "object": object,
            "oldObject": null,
            "dryRun": dry_run
        }
    })
}

struct Stats {
    p50: Duration,
    p99: Duration,
    rps: f64,
    errors: usize,
}

/// Client `i` sends `bodies[i % bodies.len()]`.
async fn run_level(
    client: &reqwest::Client,
    url: &str,
    bodies: &[Bytes],
    concurrency: usize,
    duration: Duration,
) -> Stats {
    let run = |measure: Duration| {
        let tasks: Vec<_> = (0..concurrency)
            .map(|i| {
                let (client, url, body) = (client.clone(), url.to_string(), bodies[i % bodies.len()].clone());
                tokio::spawn(async move {
                    let mut latencies = Vec::new();
                    let mut errors = 0;
                    let end = Instant::now() + measure;
                    while Instant::now() < end {
                        let start = Instant::now();
                        let ok = match client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body.clone())
                            .send()
                            .await
                        {
                            Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                            Err(_) => false,
                        };
                        if ok {
                            latencies.push(start.elapsed());
                        } else {
                            errors += 1;
                        }
                    }
                    (latencies, errors)
                })
            })
            .collect();
        async move {
            let started = Instant::now();
            let mut all = Vec::new();
            let mut errors = 0;
            for t in tasks {
                let (l, e) = t.await.unwrap();
                all.extend(l);
                errors += e;
            }
            (all, errors, started.elapsed())
        }
    };
    // warm-up: open the keep-alive connections
    let _ = run(Duration::from_millis(500)).await;
    let (mut latencies, errors, elapsed) = run(duration).await;
    latencies.sort();
    let pick = |q: f64| {
        latencies
            .get(((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1))
            .copied()
            .unwrap_or_default()
    };
    Stats {
        p50: pick(0.50),
        p99: pick(0.99),
        rps: latencies.len() as f64 / elapsed.as_secs_f64(),
        errors,
    }
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let duration = Duration::from_secs(seconds);
    let dir = tempfile::tempdir().unwrap();
    let review = write_state(dir.path());
    let body = Bytes::from(serde_json::to_vec(&review).unwrap());
    let certs = selfsigned::write_dev_certs(dir.path(), &[]).unwrap();

    // the webhook, as `serve --state`
    let state = FileState::read(&[dir.path().join("state.yaml")]).unwrap();
    let webhook = serve::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        template: tierguard::TierTemplate::built_in(),
        state: Arc::new(state),
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        service_names: vec!["localhost".to_string()],
        drain: Duration::ZERO,
        cert_recheck: Duration::from_secs(60),
        limits: ConnectionLimits::default(),
    })
    .await
    .unwrap();

    // the echo handler: same TLS stack, no logic
    let echo_cert = CertReloader::new(
        certs.cert.clone(),
        certs.key.clone(),
        vec!["localhost".into()],
        Arc::new(Metrics::new()),
    );
    echo_cert.check();
    let echo_tls = Arc::new(tls::server_config(echo_cert.resolver()).unwrap());
    let (listener, echo_addr) = server::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let (echo_stop, echo_stopped) = tokio::sync::oneshot::channel::<()>();
    let echo = tokio::spawn(server::serve_tls(
        listener,
        echo_tls,
        Router::new().route("/validate", post(|body: Bytes| async move { body })),
        ConnectionLimits::default(),
        Arc::new(Metrics::new()),
        async move {
            let _ = echo_stopped.await;
        },
    ));

    let ca = reqwest::Certificate::from_pem(&std::fs::read(&certs.ca).unwrap()).unwrap();
    let client_for = |addr, concurrency: usize| {
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(ca.clone())
            .resolve("localhost", addr)
            .http1_only()
            .pool_max_idle_per_host(concurrency)
            .build()
            .unwrap()
    };
    // sanity: the request is a real review and is admitted
    let probe: Value = client_for(webhook.local_addr, 1)
        .post(format!("https://localhost:{}/validate", webhook.local_addr.port()))
        .body(body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(probe["response"]["allowed"], true, "{probe}");

    println!(
        "admission_load: {POLICIES} policies in namespace `load`, NetworkPolicy CREATE, {} byte body, {seconds} s per level, HTTP/1.1 keep-alive over TLS, client in the same process",
        body.len()
    );
    println!(
        "{:>11} | {:>10} {:>10} {:>10} | {:>10} {:>10} {:>10} | {:>9} {:>9}",
        "concurrency", "hook p50", "hook p99", "hook rps", "echo p50", "echo p99", "echo rps", "p50 ratio", "rps ratio"
    );
    for concurrency in [1, 16, 64] {
        let hook = run_level(
            &client_for(webhook.local_addr, concurrency),
            &format!("https://localhost:{}/validate", webhook.local_addr.port()),
            std::slice::from_ref(&body),
            concurrency,
            duration,
        )
        .await;
        let plain = run_level(
            &client_for(echo_addr, concurrency),
            &format!("https://localhost:{}/validate", echo_addr.port()),
            std::slice::from_ref(&body),
            concurrency,
            duration,
        )
        .await;
        println!(
            "{concurrency:>11} | {:>10} {:>10} {:>10.0} | {:>10} {:>10} {:>10.0} | {:>8.2}x {:>8.2}x{}",
            ms(hook.p50),
            ms(hook.p99),
            hook.rps,
            ms(plain.p50),
            ms(plain.p99),
            plain.rps,
            hook.p50.as_secs_f64() / plain.p50.as_secs_f64().max(1e-9),
            plain.rps / hook.rps.max(1e-9),
            if hook.errors + plain.errors > 0 {
                format!("  ({} webhook / {} echo errors)", hook.errors, plain.errors)
            } else {
                String::new()
            }
        );
    }
    webhook.shutdown().await;
    let _ = echo_stop.send(());
    let _ = echo.await;

    lock_cases(dir.path(), &certs, &client_for, duration, seconds).await;
}

/// The sum and count of the lock-wait histogram.
fn lock_waits(metrics: &Metrics) -> (f64, u64) {
    let text = metrics.encode().unwrap();
    let read = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("tierguard_webhook_namespace_lock_wait_seconds_{name} ")))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (read("sum"), read("count") as u64)
}

async fn lock_cases(
    dir: &Path,
    certs: &selfsigned::DevCerts,
    client_for: &impl Fn(std::net::SocketAddr, usize) -> reqwest::Client,
    duration: Duration,
    seconds: u64,
) {
    let namespaces: Vec<String> = (0..LOCK_NAMESPACES).map(|i| format!("lock-{i:02}")).collect();
    let text: Vec<String> = namespaces.iter().map(|n| namespace_text(n)).collect();
    let file = dir.join("lock-state.yaml");
    std::fs::write(&file, text.join("---\n")).unwrap();
    let webhook = serve::start(Options {
        listen: "127.0.0.1:0".parse().unwrap(),
        template: tierguard::TierTemplate::built_in(),
        state: Arc::new(FileState::read(&[file]).unwrap()),
        cert: certs.cert.clone(),
        key: certs.key.clone(),
        service_names: vec!["localhost".to_string()],
        drain: Duration::ZERO,
        cert_recheck: Duration::from_secs(60),
        limits: ConnectionLimits::default(),
    })
    .await
    .unwrap();
    let url = format!("https://localhost:{}/validate", webhook.local_addr.port());

    // What taking an uncontended turn costs, without HTTP.
    let overlay = Overlay::default();
    let turns = 200_000u32;
    let started = Instant::now();
    for i in 0..turns {
        let _turn = overlay.turn(&namespaces[i as usize % LOCK_NAMESPACES]).await;
    }
    let per_turn = started.elapsed() / turns;

    println!();
    println!(
        "namespace lock: {LOCK_NAMESPACES} namespaces of {POLICIES} policies, NetworkPolicy CREATE, {seconds} s per level; \
         uncontended turn (no HTTP): {:.0} ns",
        per_turn.as_secs_f64() * 1e9
    );
    println!(
        "{:>7} | {:>10} | {:>8} | {:>10} {:>10} {:>10} | {:>8} {:>12}",
        "clients", "namespaces", "request", "p50", "p99", "rps", "waited", "mean wait"
    );
    for concurrency in [1, 16] {
        for spread in [true, false] {
            for dry_run in [true, false] {
                let targets = if spread { &namespaces[..] } else { &namespaces[..1] };
                let bodies: Vec<Bytes> = targets
                    .iter()
                    .map(|n| Bytes::from(serde_json::to_vec(&review(n, dry_run)).unwrap()))
                    .collect();
                let before = lock_waits(&webhook.metrics);
                let stats = run_level(
                    &client_for(webhook.local_addr, concurrency),
                    &url,
                    &bodies,
                    concurrency,
                    duration,
                )
                .await;
                let after = lock_waits(&webhook.metrics);
                let waited = after.1 - before.1;
                let mean_wait = if waited == 0 {
                    "-".to_string()
                } else {
                    ms(Duration::from_secs_f64((after.0 - before.0) / waited as f64))
                };
                println!(
                    "{concurrency:>7} | {:>10} | {:>8} | {:>10} {:>10} {:>10.0} | {:>8} {:>12}{}",
                    if spread { "different" } else { "one" },
                    if dry_run { "dry run" } else { "admitted" },
                    ms(stats.p50),
                    ms(stats.p99),
                    stats.rps,
                    waited,
                    mean_wait,
                    if stats.errors > 0 {
                        format!("  ({} errors)", stats.errors)
                    } else {
                        String::new()
                    }
                );
            }
        }
    }
    webhook.shutdown().await;
}
