//! The crypto provider, on its own so that `verify` can load keys with it
//! without importing the module that builds the server config.

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// The crypto provider every TLS object of the webhook uses (ring).
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
