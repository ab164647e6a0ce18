//! Readiness as a latch: ready only once the template is loaded, the
//! cluster state has synced and a serving certificate is in use; not ready
//! again from the moment a drain starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::state::StateSource;
use crate::tls::CertReloader;

/// What `/readyz` reports.
pub struct Readiness {
    template_loaded: AtomicBool,
    draining: AtomicBool,
    state: Arc<dyn StateSource>,
    cert: Option<Arc<CertReloader>>,
}

impl std::fmt::Debug for Readiness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Readiness").field("blockers", &self.blockers()).finish()
    }
}

impl Readiness {
    /// Readiness over a state source and, when serving from files, a certificate reloader.
    pub fn new(state: Arc<dyn StateSource>, cert: Option<Arc<CertReloader>>) -> Readiness {
        Readiness {
            template_loaded: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            state,
            cert,
        }
    }

    /// Releases the template latch.
    pub fn template_loaded(&self) {
        self.template_loaded.store(true, Ordering::Release);
    }

    /// Starts draining: not ready from now on.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// What keeps the server from being ready (empty when ready).
    pub fn blockers(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if !self.template_loaded.load(Ordering::Acquire) {
            out.push("template not loaded");
        }
        if !self.state.is_synced() {
            out.push("cluster state not synced");
        }
        if self.cert.as_ref().is_some_and(|c| !c.has_cert()) {
            out.push("no serving certificate loaded");
        }
        if self.draining.load(Ordering::Acquire) {
            out.push("shutting down");
        }
        out
    }
}
