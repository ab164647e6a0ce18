//! Serving TLS: reading the certificate and key (`load`), refusing bad ones
//! (`verify`), and swapping them in without a restart (`reload`). Each
//! module uses only those before it, so no two import each other: `material`
//! and `crypto`, then `load` and `verify`, then `reload`, then this one.

mod crypto;
pub mod load;
pub mod material;
pub mod reload;
pub mod verify;

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::server::ResolvesServerCert;

pub use crypto::provider;
pub use material::{CertError, Material};
pub use reload::{CertReloader, ReloadingResolver};
pub use verify::Verified;

/// A TLS 1.2+ server config serving whatever `resolver` returns, offering
/// HTTP/2 and HTTP/1.1 by ALPN.
pub fn server_config(resolver: Arc<dyn ResolvesServerCert>) -> Result<ServerConfig, rustls::Error> {
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
