//! Deciding whether a certificate may be served: valid now, matching its
//! key, and naming one of the webhook's Service DNS names.

use std::net::IpAddr;
use std::sync::Arc;

use rustls::sign::CertifiedKey;
use x509_parser::extensions::GeneralName;
use x509_parser::time::ASN1Time;

use super::crypto::provider;
use super::material::{CertError, Material};

/// A certificate that may be served.
#[derive(Debug, Clone)]
pub struct Verified {
    /// chain and signing key, for rustls
    pub certified_key: Arc<CertifiedKey>,
    /// notAfter, Unix seconds
    pub not_after: i64,
    /// serial number, hex
    pub serial: String,
    /// digest of the files it came from
    pub digest: [u8; 32],
}

fn san_matches(san: &GeneralName<'_>, wanted: &str) -> bool {
    match san {
        GeneralName::DNSName(name) => {
            let name = name.to_ascii_lowercase();
            let wanted = wanted.to_ascii_lowercase();
            match name.strip_prefix("*.") {
                Some(suffix) => wanted
                    .split_once('.')
                    .is_some_and(|(label, rest)| !label.is_empty() && rest == suffix),
                None => name == wanted,
            }
        }
        GeneralName::IPAddress(bytes) => match wanted.parse::<IpAddr>() {
            Ok(IpAddr::V4(ip)) => *bytes == ip.octets().as_slice(),
            Ok(IpAddr::V6(ip)) => *bytes == ip.octets().as_slice(),
            Err(_) => false,
        },
        _ => false,
    }
}

fn describe(san: &GeneralName<'_>) -> String {
    match san {
        GeneralName::DNSName(n) => (*n).to_string(),
        GeneralName::IPAddress(b) => match b.len() {
            4 => <[u8; 4]>::try_from(*b)
                .map(|o| IpAddr::from(o).to_string())
                .unwrap_or_default(),
            16 => <[u8; 16]>::try_from(*b)
                .map(|o| IpAddr::from(o).to_string())
                .unwrap_or_default(),
            _ => format!("{b:?}"),
        },
        other => other.to_string(),
    }
}

/// Checks `material` at time `now` against `service_names`.
pub fn verify(material: Material, service_names: &[String], now: ASN1Time) -> Result<Verified, CertError> {
    let Material { chain, key, digest } = material;
    let leaf = chain.first().ok_or_else(|| CertError::Parse("empty chain".into()))?;
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| CertError::Parse(e.to_string()))?;
    let validity = cert.validity();
    if now > validity.not_after {
        return Err(CertError::Expired {
            not_after: validity.not_after.to_string(),
        });
    }
    if now < validity.not_before {
        return Err(CertError::NotYetValid {
            not_before: validity.not_before.to_string(),
        });
    }
    let sans: Vec<GeneralName<'_>> = cert
        .subject_alternative_name()
        .map_err(|e| CertError::Parse(format!("subjectAltName: {e}")))?
        .map(|ext| ext.value.general_names.clone())
        .unwrap_or_default();
    if !service_names
        .iter()
        .any(|wanted| sans.iter().any(|san| san_matches(san, wanted)))
    {
        return Err(CertError::MissingServiceName {
            wanted: service_names.join(", "),
            sans: sans.iter().map(describe).collect::<Vec<_>>().join(", "),
        });
    }
    let serial = cert.raw_serial_as_string();
    let not_after = validity.not_after.timestamp();
    let signing_key = provider()
        .key_provider
        .load_private_key(key)
        .map_err(|e| CertError::Key(e.to_string()))?;
    let certified_key = CertifiedKey::new(chain, signing_key);
    match certified_key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(CertError::KeyMismatch);
        }
        Err(e) => return Err(CertError::Key(format!("cannot compare key and certificate: {e}"))),
    }
    Ok(Verified {
        certified_key: Arc::new(certified_key),
        not_after,
        serial,
        digest,
    })
}
