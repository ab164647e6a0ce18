//! certs/gen-dev-certs.sh makes a CA and a serving certificate the webhook
//! accepts: the Service DNS names (from the webhook contract) and localhost in
//! the SANs, signed by a CA with the CA basic constraint, for server auth,
//! and a key that matches. A second run keeps the CA and issues a new
//! serving certificate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tierguard_integration::{repo_root, tool};
use tierguard_webhook::contract as webhook;
use x509_parser::extensions::GeneralName;
use x509_parser::pem::parse_x509_pem;
use x509_parser::prelude::{FromDer, X509Certificate};

fn run_script(out: &Path) {
    let script = repo_root().join("certs/gen-dev-certs.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(out)
        .status()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    assert!(status.success(), "{} failed: {status}", script.display());
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Parses a PEM certificate, returning its DER bytes.
fn der_of(pem_bytes: &[u8]) -> Vec<u8> {
    let (_, pem) = parse_x509_pem(pem_bytes).expect("PEM");
    assert_eq!(pem.label, "CERTIFICATE");
    pem.contents
}

fn cert(der: &[u8]) -> X509Certificate<'_> {
    let (rest, c) = X509Certificate::from_der(der).expect("X.509 DER");
    assert!(rest.is_empty(), "trailing bytes after the certificate");
    c
}

/// The DER SubjectPublicKeyInfo of a PEM private key, through openssl.
fn public_key_of(key: &Path, openssl: &Path) -> Vec<u8> {
    let out = Command::new(openssl)
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .output()
        .expect("openssl pkey");
    assert!(
        out.status.success(),
        "openssl pkey: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn dev_certificates_are_valid_for_the_webhook_service() {
    let Some(openssl) = tool::tool_or_skip("openssl", "run certs/gen-dev-certs.sh") else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("certs");
    run_script(&out);

    let ca_der = der_of(&read(out.join("ca.crt")));
    let ca = cert(&ca_der);
    let tls_der = der_of(&read(out.join("tls.crt")));
    let tls = cert(&tls_der);

    // the CA: self-signed, CA:TRUE (critical), may sign certificates
    let bc = ca
        .basic_constraints()
        .expect("valid extensions")
        .expect("basicConstraints");
    assert!(bc.critical && bc.value.ca, "CA basicConstraints: {bc:?}");
    let ku = ca.key_usage().expect("valid extensions").expect("keyUsage");
    assert!(ku.value.key_cert_sign(), "CA keyUsage keyCertSign");
    assert_eq!(ca.subject(), ca.issuer());
    ca.verify_signature(None).expect("the CA signs itself");

    // the serving cert: signed by the CA, not a CA, server auth, the SANs
    assert_eq!(tls.issuer(), ca.subject());
    tls.verify_signature(Some(ca.public_key()))
        .expect("the serving certificate is signed by the CA");
    let bc = tls
        .basic_constraints()
        .expect("valid extensions")
        .expect("basicConstraints");
    assert!(!bc.value.ca, "serving cert must not be a CA");
    let eku = tls
        .extended_key_usage()
        .expect("valid extensions")
        .expect("extendedKeyUsage");
    assert!(eku.value.server_auth, "serverAuth");
    let ku = tls.key_usage().expect("valid extensions").expect("keyUsage");
    assert!(ku.value.digital_signature(), "digitalSignature");
    assert!(tls.validity().is_valid(), "valid now");

    let san = tls
        .subject_alternative_name()
        .expect("valid extensions")
        .expect("subjectAltName");
    let mut dns = BTreeSet::new();
    let mut ips = BTreeSet::new();
    for name in &san.value.general_names {
        match name {
            GeneralName::DNSName(d) => {
                dns.insert(d.to_string());
            }
            GeneralName::IPAddress(ip) => {
                ips.insert(ip.to_vec());
            }
            other => panic!("unexpected SAN {other:?}"),
        }
    }
    let svc = format!("{}.{}.svc", webhook::SERVICE_NAME, webhook::NAMESPACE);
    let want: BTreeSet<String> = [svc.clone(), format!("{svc}.cluster.local"), "localhost".to_string()].into();
    assert_eq!(dns, want);
    assert_eq!(ips, BTreeSet::from([vec![127, 0, 0, 1]]));

    // the key matches the certificate
    assert_eq!(public_key_of(&out.join("tls.key"), &openssl), tls.public_key().raw);
    assert_eq!(public_key_of(&out.join("ca.key"), &openssl), ca.public_key().raw);

    // a second run keeps the CA and issues a fresh serving cert under it
    let serial = tls.raw_serial().to_vec();
    run_script(&out);
    assert_eq!(der_of(&read(out.join("ca.crt"))), ca_der, "CA kept");
    let tls2_der = der_of(&read(out.join("tls.crt")));
    let tls2 = cert(&tls2_der);
    assert_ne!(tls2.raw_serial(), serial.as_slice(), "a new serving certificate");
    tls2.verify_signature(Some(ca.public_key()))
        .expect("signed by the kept CA");
}

#[test]
fn dev_certificate_script_rejects_bad_usage() {
    let script = repo_root().join("certs/gen-dev-certs.sh");
    // (arguments, why they are wrong)
    let cases: &[(&[&str], &str)] = &[(&[], "no output folder"), (&["a", "b"], "two output folders")];
    for (args, why) in cases {
        let out = Command::new("bash").arg(&script).args(*args).output().expect("bash");
        assert_eq!(out.status.code(), Some(2), "{why}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("usage:"), "{why}");
    }
}
