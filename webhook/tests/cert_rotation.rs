//! Certificate rotation the way the kubelet updates a Secret volume: a new
//! timestamped folder, a temp symlink renamed over `..data`. The next
//! handshake shows the new certificate, without a restart and without a
//! failed request; a bad new certificate is refused and the old one stays.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::{CertificateDer, ServerName};
use support::{Harness, Req, SERVICE_NAME, allowed, issue, yaml};
use tierguard_webhook::selfsigned::{Ca, Issued, Validity};

/// The leaf certificate the server presents on a fresh handshake.
async fn presented(h: &Harness) -> Vec<u8> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(h.ca.cert_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(tierguard_webhook::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(h.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from(SERVICE_NAME).unwrap(), tcp)
        .await
        .unwrap();
    tls.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

use rustls_pki_types::pem::PemObject as _;

/// Waits (bounded) until the server presents `want`.
async fn wait_for_cert(h: &Harness, want: &Issued) {
    for _ in 0..200 {
        if presented(h).await == want.cert_der {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the server never presented the new certificate");
}

fn refused_count(h: &Harness) -> u64 {
    let text = h.running.as_ref().unwrap().metrics.encode().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tierguard_webhook_certificate_reloads_refused_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn wait_for_refusals(h: &Harness, n: u64) {
    for _ in 0..200 {
        if refused_count(h) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the bad certificate was never looked at");
}

fn policy() -> serde_json::Value {
    yaml(
        "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-admin, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {tier: frontend}}}]}]
",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_style_rotation_without_restart_or_failed_requests() {
    let mut h = Harness::start(None).await;
    assert_eq!(presented(&h).await, h.first.cert_der);

    // requests on fresh connections all through the rotation
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let load = {
        let client = support::client_for(&h.ca, h.addr, false);
        let url = h.url("/validate");
        let body = Req::create("NetworkPolicy", policy()).review();
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match client.post(&url).json(&body).send().await {
                    Ok(r) if r.status() == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    };

    let second = issue(&h.ca, Validity::Current);
    h.volume.rotate_to(&second.cert_pem, &second.key_pem);
    wait_for_cert(&h, &second).await;
    let before = ok.load(Ordering::Relaxed);
    while ok.load(Ordering::Relaxed) < before + 5 && failed.load(Ordering::Relaxed) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during rotation");
    assert!(ok.load(Ordering::Relaxed) > 0);

    // and once more, to be sure the watch survives the first swap
    let third = issue(&h.ca, Validity::Current);
    h.volume.rotate_to(&third.cert_pem, &third.key_pem);
    wait_for_cert(&h, &third).await;
    assert!(allowed(
        &h.post("/validate", &Req::create("NetworkPolicy", policy()).review())
            .await
    ));
    h.stop().await;
}

fn other_key_pair(ca: &Ca) -> (String, String) {
    let a = issue(ca, Validity::Current);
    let b = issue(ca, Validity::Current);
    (a.cert_pem, b.key_pem)
}

#[tokio::test]
async fn bad_certificates_are_refused_and_the_old_one_keeps_serving() {
    let mut h = Harness::start(None).await;
    let first = h.first.clone();
    let expired = issue(&h.ca, Validity::Expired);
    let not_yet = issue(&h.ca, Validity::NotYetValid);
    let wrong_san =
        h.ca.issue(&["evil.example.com".to_string()], Validity::Current)
            .unwrap();
    let (cert, mismatched_key) = other_key_pair(&h.ca);
    let bad: Vec<(&str, String, String)> = vec![
        ("expired", expired.cert_pem, expired.key_pem),
        ("not yet valid", not_yet.cert_pem, not_yet.key_pem),
        ("wrong SAN", wrong_san.cert_pem, wrong_san.key_pem),
        ("key mismatch", cert, mismatched_key),
        ("garbage", "not a certificate".to_string(), "not a key".to_string()),
    ];
    for (n, (name, cert, key)) in bad.into_iter().enumerate() {
        h.volume.rotate_to(&cert, &key);
        wait_for_refusals(&h, n as u64 + 1).await;
        assert_eq!(
            presented(&h).await,
            first.cert_der,
            "{name}: old certificate no longer served"
        );
        assert!(h.running.as_ref().unwrap().readiness.blockers().is_empty(), "{name}");
    }
    // a good one after the bad ones is taken
    let good = issue(&h.ca, Validity::Current);
    h.volume.rotate_to(&good.cert_pem, &good.key_pem);
    wait_for_cert(&h, &good).await;
    h.stop().await;
}

#[test]
fn verify_names_the_reason() {
    use tierguard_webhook::tls::CertError;
    use tierguard_webhook::tls::load::read_pem;
    use tierguard_webhook::tls::verify::verify;
    let ca = tierguard_webhook::selfsigned::generate_ca("t").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let write = |cert: &str, key: &str| {
        std::fs::write(dir.path().join("c"), cert).unwrap();
        std::fs::write(dir.path().join("k"), key).unwrap();
        read_pem(&dir.path().join("c"), &dir.path().join("k")).unwrap()
    };
    let names = vec![SERVICE_NAME.to_string()];
    let now = x509_parser::time::ASN1Time::now();
    let ok = issue(&ca, Validity::Current);
    assert!(verify(write(&ok.cert_pem, &ok.key_pem), &names, now).is_ok());
    let e = issue(&ca, Validity::Expired);
    assert!(matches!(
        verify(write(&e.cert_pem, &e.key_pem), &names, now),
        Err(CertError::Expired { .. })
    ));
    let (c, k) = other_key_pair(&ca);
    assert!(matches!(
        verify(write(&c, &k), &names, now),
        Err(CertError::KeyMismatch)
    ));
    let w = ca.issue(&["other.svc".to_string()], Validity::Current).unwrap();
    let err = verify(write(&w.cert_pem, &w.key_pem), &names, now).err().unwrap();
    assert!(matches!(err, CertError::MissingServiceName { .. }));
    assert_eq!(
        err.to_string(),
        "certificate SANs [other.svc] include none of the service names [localhost]"
    );
    // wildcard SANs match one label
    let wc = ca
        .issue(&["*.tierguard-system.svc".to_string()], Validity::Current)
        .unwrap();
    let svc = vec!["tierguard-webhook.tierguard-system.svc".to_string()];
    assert!(verify(write(&wc.cert_pem, &wc.key_pem), &svc, now).is_ok());
}
