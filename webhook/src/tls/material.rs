//! What `load` hands `verify`: the certificate material as read, and why a
//! certificate is refused, whether reading or verifying failed. Both steps
//! report the same error, so it sits below them and neither imports the other.

use std::path::PathBuf;

use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// A certificate chain and key as read, with a digest of both files' bytes.
#[derive(Debug)]
pub struct Material {
    /// leaf first
    pub chain: Vec<CertificateDer<'static>>,
    /// the private key
    pub key: PrivateKeyDer<'static>,
    /// SHA-256 over the certificate file then the key file
    pub digest: [u8; 32],
}

/// Why a certificate is refused.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// a file could not be read
    #[error("cannot read {path}: {source}")]
    Read {
        /// the file
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// a file is not PEM
    #[error("{path} is not valid PEM: {message}")]
    Pem {
        /// the file
        path: PathBuf,
        /// why
        message: String,
    },
    /// no CERTIFICATE block
    #[error("{0} holds no certificate")]
    NoCertificate(PathBuf),
    /// no private key block
    #[error("{0} holds no private key")]
    NoKey(PathBuf),
    /// the leaf does not parse
    #[error("certificate does not parse: {0}")]
    Parse(String),
    /// the key is not usable
    #[error("private key is not usable: {0}")]
    Key(String),
    /// past notAfter
    #[error("certificate expired at {not_after}")]
    Expired {
        /// notAfter
        not_after: String,
    },
    /// before notBefore
    #[error("certificate is not valid before {not_before}")]
    NotYetValid {
        /// notBefore
        not_before: String,
    },
    /// the key is not the certificate's
    #[error("private key does not match the certificate's public key")]
    KeyMismatch,
    /// the SANs lack every service name
    #[error("certificate SANs [{sans}] include none of the service names [{wanted}]")]
    MissingServiceName {
        /// what the webhook is reached as
        wanted: String,
        /// what the certificate names
        sans: String,
    },
}
