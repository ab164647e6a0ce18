//! kubeconfig files for the admin, the controller manager and the
//! ServiceAccounts tierguard's programs run as.

use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;

/// How a kubeconfig's user authenticates.
#[derive(Clone, Debug)]
pub enum Credentials<'a> {
    /// a client certificate and key (PEM files)
    ClientCert {
        /// certificate file
        cert: &'a Path,
        /// key file
        key: &'a Path,
    },
    /// a bearer token (a ServiceAccount token from the TokenRequest API)
    Token(&'a str),
}

/// Writes a kubeconfig for `server`, trusting `ca_pem`, as `user`.
pub fn write(path: &Path, server: &str, ca_pem: &str, user: &str, credentials: &Credentials<'_>) -> anyhow::Result<()> {
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let user_entry = match credentials {
        Credentials::ClientCert { cert, key } => {
            let cert = std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?;
            let key = std::fs::read(key).with_context(|| format!("reading {}", key.display()))?;
            serde_json::json!({"client-certificate-data": b64(&cert), "client-key-data": b64(&key)})
        }
        Credentials::Token(token) => serde_json::json!({ "token": token }),
    };
    let config = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "e2e", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem.as_bytes())}}],
        "users": [{"name": user, "user": user_entry}],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": user}}],
        "current-context": "e2e",
    });
    let text = serde_json::to_string_pretty(&config).context("encoding a kubeconfig")?;
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
