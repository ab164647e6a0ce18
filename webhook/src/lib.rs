//! tierguard's admission webhook and offline `check`.
//!
//! - [`admission`]: AdmissionReview in, AdmissionReview out (guardrails + mode).
//! - [`server`]: routes, the rustls accept loop, graceful shutdown; [`serve`] wires it up.
//! - [`limits`], [`connection`]: what a client may hold of the server, and one connection served under it.
//! - [`tls`]: loading, verifying and hot-reloading the serving certificate.
//! - [`state`]: the cluster view, from reflectors or from manifest files.
//! - [`overlay`]: admitted changes not yet in that view, and per-namespace turns.
//! - [`check`]: the same rules over manifest files, for CI.
//! - [`audit`]: the background audit of the current state: metrics and policy reports.
//! - [`plugin`]: the kubectl plugin `kubectl-tierguard` (check, explain, matrix, graph).

pub mod admission;
pub mod audit;
pub mod check;
pub mod cli;
pub mod connection;
pub mod contract;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod overlay;
pub mod plugin;
pub mod readiness;
pub mod selfsigned;
pub mod serve;
pub mod server;
pub mod state;
pub mod template;
pub mod tls;
