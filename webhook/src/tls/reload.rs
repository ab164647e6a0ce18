//! Swapping the serving certificate without a restart. A custom rustls
//! resolver hands out the certificate in use; a reloader re-reads the files
//! when their folder changes (notify; Secret volumes swap a `..data`
//! symlink, so the file paths stay and their targets change) and on a
//! periodic re-check that compares content digests, verifies what it reads
//! and swaps it in, or refuses it and keeps the one in use.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use notify::Watcher as _;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use x509_parser::time::ASN1Time;

use super::load;
use super::material::CertError;
use super::verify::{Verified, verify};
use crate::metrics::Metrics;

/// Hands rustls the certificate in use (none until a good one is loaded).
#[derive(Debug, Default)]
pub struct ReloadingResolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
}

impl ReloadingResolver {
    /// Installs a certificate.
    pub fn set(&self, key: Arc<CertifiedKey>) {
        if let Ok(mut current) = self.current.write() {
            *current = Some(key);
        }
    }

    /// Whether a certificate is installed.
    pub fn has_cert(&self) -> bool {
        self.current.read().map(|c| c.is_some()).unwrap_or(false)
    }
}

impl ResolvesServerCert for ReloadingResolver {
    fn resolve(&self, _client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.current.read().ok().and_then(|c| c.clone())
    }
}

/// What a check found.
#[derive(Debug)]
pub enum ReloadOutcome {
    /// the files did not change since the last check
    Unchanged,
    /// a new certificate is in use
    Loaded {
        /// its serial, hex
        serial: String,
    },
    /// the new files were refused; the previous certificate (if any) stays
    Refused(CertError),
}

#[derive(Debug, Default)]
struct Seen {
    in_use: Option<Verified>,
    refused: Option<[u8; 32]>,
}

/// Watches a certificate and key file pair.
#[derive(Debug)]
pub struct CertReloader {
    cert_path: PathBuf,
    key_path: PathBuf,
    service_names: Vec<String>,
    resolver: Arc<ReloadingResolver>,
    seen: Mutex<Seen>,
    metrics: Arc<Metrics>,
}

impl CertReloader {
    /// A reloader for these files; call [`CertReloader::check`] to load them.
    pub fn new(cert_path: PathBuf, key_path: PathBuf, service_names: Vec<String>, metrics: Arc<Metrics>) -> Self {
        CertReloader {
            cert_path,
            key_path,
            service_names,
            resolver: Arc::new(ReloadingResolver::default()),
            seen: Mutex::new(Seen::default()),
            metrics,
        }
    }

    /// The resolver to give rustls.
    pub fn resolver(&self) -> Arc<ReloadingResolver> {
        Arc::clone(&self.resolver)
    }

    /// Whether a good certificate is in use.
    pub fn has_cert(&self) -> bool {
        self.resolver.has_cert()
    }

    /// Serial of the certificate in use.
    pub fn serial(&self) -> Option<String> {
        self.seen
            .lock()
            .ok()
            .and_then(|s| s.in_use.as_ref().map(|v| v.serial.clone()))
    }

    /// Re-reads the files if their content changed, and swaps in a good certificate.
    pub fn check(&self) -> ReloadOutcome {
        let Ok(mut seen) = self.seen.lock() else {
            return ReloadOutcome::Unchanged;
        };
        let digest = match load::digest(&self.cert_path, &self.key_path) {
            Ok(d) => d,
            Err(e) => return self.refuse(&mut seen, None, e),
        };
        if seen.in_use.as_ref().is_some_and(|v| v.digest == digest) || seen.refused == Some(digest) {
            return ReloadOutcome::Unchanged;
        }
        let verified = load::read_pem(&self.cert_path, &self.key_path)
            .and_then(|material| verify(material, &self.service_names, ASN1Time::now()));
        match verified {
            Ok(v) => {
                tracing::info!(
                    cert = %self.cert_path.display(),
                    serial = %v.serial,
                    not_after = v.not_after,
                    "serving certificate loaded"
                );
                self.resolver.set(Arc::clone(&v.certified_key));
                self.metrics.set_cert_expiry(v.not_after);
                let serial = v.serial.clone();
                seen.in_use = Some(v);
                seen.refused = None;
                ReloadOutcome::Loaded { serial }
            }
            Err(e) => self.refuse(&mut seen, Some(digest), e),
        }
    }

    fn refuse(&self, seen: &mut Seen, digest: Option<[u8; 32]>, error: CertError) -> ReloadOutcome {
        // A file that cannot be read is logged once per distinct content; an unreadable
        // pair (mid-swap, missing) is only logged when nothing is being served.
        if digest.is_some() || seen.in_use.is_none() {
            let keeping = seen
                .in_use
                .as_ref()
                .map(|v| format!("keeping the certificate in use (serial {})", v.serial))
                .unwrap_or_else(|| "no certificate is being served".to_string());
            tracing::error!(
                cert = %self.cert_path.display(),
                key = %self.key_path.display(),
                reason = %error,
                "refusing serving certificate: {error}; {keeping}"
            );
            self.metrics.cert_refused();
        }
        if digest.is_some() {
            seen.refused = digest;
        }
        ReloadOutcome::Refused(error)
    }

    /// Checks now, then on every change in the files' folders and every
    /// `interval`, until the returned task is aborted.
    pub fn spawn_watch(self: Arc<Self>, interval: Duration) -> Result<tokio::task::JoinHandle<()>, notify::Error> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
        let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = tx.send(());
            }
        })?;
        let mut dirs: Vec<&Path> = [&self.cert_path, &self.key_path]
            .iter()
            .map(|p| {
                p.parent()
                    .filter(|d| !d.as_os_str().is_empty())
                    .unwrap_or(Path::new("."))
            })
            .collect();
        dirs.dedup();
        for dir in dirs {
            watcher.watch(dir, notify::RecursiveMode::NonRecursive)?;
        }
        Ok(tokio::spawn(async move {
            let _watcher = watcher;
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    event = rx.recv() => {
                        if event.is_none() {
                            break;
                        }
                        // let a multi-step update (several events) settle, then read once
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        while rx.try_recv().is_ok() {}
                    }
                    _ = ticker.tick() => {}
                }
                self.check();
            }
        }))
    }
}
