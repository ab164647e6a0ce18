//! Reading a PEM certificate chain and private key from files.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sha2::{Digest, Sha256};

use super::material::{CertError, Material};

fn read(path: &Path) -> Result<Vec<u8>, CertError> {
    std::fs::read(path).map_err(|source| CertError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// The digest of the two files' current content (to notice changes).
pub fn digest(cert_path: &Path, key_path: &Path) -> Result<[u8; 32], CertError> {
    let mut hasher = Sha256::new();
    hasher.update(read(cert_path)?);
    hasher.update(read(key_path)?);
    Ok(hasher.finalize().into())
}

/// Reads the chain and key. Follows symlinks (Secret volumes).
pub fn read_pem(cert_path: &Path, key_path: &Path) -> Result<Material, CertError> {
    let cert_bytes = read(cert_path)?;
    let key_bytes = read(key_path)?;
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| CertError::Pem {
        path: PathBuf::from(path),
        message: e.to_string(),
    };
    let chain = CertificateDer::pem_slice_iter(&cert_bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert_path, e))?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate(cert_path.to_path_buf()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => CertError::NoKey(key_path.to_path_buf()),
        e => pem_error(key_path, e),
    })?;
    let mut hasher = Sha256::new();
    hasher.update(&cert_bytes);
    hasher.update(&key_bytes);
    Ok(Material {
        chain,
        key,
        digest: hasher.finalize().into(),
    })
}
