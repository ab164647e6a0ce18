//! The control plane's certificates: one CA that signs the API server's
//! serving certificate and the client certificates of the admin and the
//! controller manager, plus the ServiceAccount token signing key.
//! Nothing here leaves the run folder.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// A certificate (or public key) and its private key, as PEM files.
#[derive(Clone, Debug)]
pub struct PemPair {
    /// the certificate (for the ServiceAccount key: the public key)
    pub cert: PathBuf,
    /// its private key
    pub key: PathBuf,
}

/// The CA that issues every control-plane certificate.
pub struct ClusterCa {
    issuer: Issuer<'static, KeyPair>,
    /// the CA certificate, PEM
    pub cert_pem: String,
    /// where the CA certificate was written
    pub cert_path: PathBuf,
    dir: PathBuf,
}

impl std::fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterCa")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(text.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

impl ClusterCa {
    /// A new CA, written to `dir/ca.crt` (and its key to `dir/ca.key`).
    pub fn create(dir: &Path) -> anyhow::Result<ClusterCa> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name("tierguard-e2e-ca", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().context("generating the CA key")?;
        let cert = params.self_signed(&key).context("signing the CA")?;
        let cert_path = dir.join("ca.crt");
        std::fs::write(&cert_path, cert.pem()).with_context(|| format!("writing {}", cert_path.display()))?;
        write_private(&dir.join("ca.key"), &key.serialize_pem())?;
        Ok(ClusterCa {
            cert_pem: cert.pem(),
            cert_path,
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
        })
    }

    fn issue(&self, file: &str, params: CertificateParams) -> anyhow::Result<PemPair> {
        let key = KeyPair::generate().with_context(|| format!("generating the key of {file}"))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .with_context(|| format!("signing {file}"))?;
        let pair = PemPair {
            cert: self.dir.join(format!("{file}.crt")),
            key: self.dir.join(format!("{file}.key")),
        };
        std::fs::write(&pair.cert, cert.pem()).with_context(|| format!("writing {}", pair.cert.display()))?;
        write_private(&pair.key, &key.serialize_pem())?;
        Ok(pair)
    }

    /// A serving certificate for `dns` names and `ips`.
    pub fn serving(&self, file: &str, common_name: &str, dns: &[&str], ips: &[IpAddr]) -> anyhow::Result<PemPair> {
        // rcgen reads each name as an IP address SAN when it is one, else a DNS name
        let names: Vec<String> = dns
            .iter()
            .map(|d| d.to_string())
            .chain(ips.iter().map(IpAddr::to_string))
            .collect();
        let mut params = CertificateParams::new(names).context("the serving certificate's names")?;
        params.distinguished_name = name(common_name, None);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        self.issue(file, params)
    }

    /// A client certificate: the API server reads the user from the common
    /// name and the groups from the organizations.
    pub fn client(&self, file: &str, user: &str, group: Option<&str>) -> anyhow::Result<PemPair> {
        let mut params = CertificateParams::default();
        params.distinguished_name = name(user, group);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.use_authority_key_identifier_extension = true;
        self.issue(file, params)
    }
}

/// The key pair that signs ServiceAccount tokens: the private key (PKCS#8
/// PEM) for the signer, the public key for the verifiers.
pub fn service_account_key(dir: &Path) -> anyhow::Result<PemPair> {
    let key = KeyPair::generate().context("generating the ServiceAccount signing key")?;
    let pair = PemPair {
        cert: dir.join("sa.pub"),
        key: dir.join("sa.key"),
    };
    write_private(&pair.key, &key.serialize_pem())?;
    std::fs::write(&pair.cert, key.public_key_pem()).with_context(|| format!("writing {}", pair.cert.display()))?;
    Ok(pair)
}
