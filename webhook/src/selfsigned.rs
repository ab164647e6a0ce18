//! A self-signed CA and serving certificates, for local use and tests
//! (never for a cluster: cert-manager issues the real ones).

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

pub use rcgen::date_time_ymd;

/// A certificate authority that can issue serving certificates.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// the CA certificate, PEM
    pub cert_pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A serving certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    /// certificate, PEM
    pub cert_pem: String,
    /// private key (PKCS#8), PEM
    pub key_pem: String,
    /// DER of the certificate (for fingerprints)
    pub cert_der: Vec<u8>,
}

/// When an issued certificate is valid.
#[derive(Clone, Copy, Debug)]
pub enum Validity {
    /// from yesterday for a year
    Current,
    /// ended in the past
    Expired,
    /// starts in the future
    NotYetValid,
}

/// Generates a CA.
pub fn generate_ca(common_name: &str) -> Result<Ca, rcgen::Error> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(Ca {
        cert_pem: cert.pem(),
        issuer: Issuer::new(params, key),
    })
}

impl Ca {
    /// Issues a serving certificate for `names` (DNS names or IP addresses).
    pub fn issue(&self, names: &[String], validity: Validity) -> Result<Issued, rcgen::Error> {
        let key = KeyPair::generate()?;
        self.issue_with_key(names, validity, &key)
    }

    /// Issues a serving certificate for `names` with a given key.
    pub fn issue_with_key(&self, names: &[String], validity: Validity, key: &KeyPair) -> Result<Issued, rcgen::Error> {
        let mut params = CertificateParams::new(names.to_vec())?;
        let mut dn = DistinguishedName::new();
        dn.push(
            DnType::CommonName,
            names.first().map(String::as_str).unwrap_or("tierguard-webhook"),
        );
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, validity);
        let cert = params.signed_by(key, &self.issuer)?;
        Ok(Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().to_vec(),
        })
    }
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

fn set_validity(params: &mut CertificateParams, validity: Validity) {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let now = date_time_ymd(1970, 1, 1) + since_epoch;
    let (not_before, not_after) = match validity {
        Validity::Current => (now - DAY, now + 365 * DAY),
        Validity::Expired => (now - 30 * DAY, now - DAY),
        Validity::NotYetValid => (now + DAY, now + 30 * DAY),
    };
    params.not_before = not_before;
    params.not_after = not_after;
}

/// Files written for local use.
#[derive(Clone, Debug)]
pub struct DevCerts {
    /// the folder
    pub dir: PathBuf,
    /// `ca.crt`
    pub ca: PathBuf,
    /// `tls.crt`
    pub cert: PathBuf,
    /// `tls.key`
    pub key: PathBuf,
}

/// The names a local certificate carries: localhost, 127.0.0.1, ::1 and `service_names`.
pub fn local_names(service_names: &[String]) -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    for n in service_names {
        if !names.contains(n) {
            names.push(n.clone());
        }
    }
    names
}

/// Generates a CA and a serving certificate for [`local_names`] and writes
/// `ca.crt`, `tls.crt` and `tls.key` into `dir`.
pub fn write_dev_certs(dir: &Path, service_names: &[String]) -> anyhow::Result<DevCerts> {
    use anyhow::Context as _;
    let ca = generate_ca("tierguard-webhook local CA").context("generating a CA")?;
    let issued = ca
        .issue(&local_names(service_names), Validity::Current)
        .context("issuing the serving certificate")?;
    let certs = DevCerts {
        dir: dir.to_path_buf(),
        ca: dir.join("ca.crt"),
        cert: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    std::fs::write(&certs.ca, &ca.cert_pem).with_context(|| format!("writing {}", certs.ca.display()))?;
    std::fs::write(&certs.cert, &issued.cert_pem).with_context(|| format!("writing {}", certs.cert.display()))?;
    std::fs::write(&certs.key, &issued.key_pem).with_context(|| format!("writing {}", certs.key.display()))?;
    Ok(certs)
}
