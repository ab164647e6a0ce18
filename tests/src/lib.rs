//! Helpers for tierguard's cross-crate tests: loading the deployment
//! manifests under `deploy/` (plain files and kustomizations), parsing them
//! into their Kubernetes types, rendering them with `kubectl kustomize`, and
//! finding the external tools some tests need.
//!
//! The tests themselves live in `tests/tests/`. [`e2e`] is the harness of
//! the end-to-end test against a real control plane
//! (`tests/tests/e2e_controlplane/`); the kind end-to-end script is
//! `tests/e2e/kind.sh` (it needs Docker and is not part of `cargo test`).
//! The fuzz targets are in `tests/fuzz/` (cargo-fuzz, nightly); their checks
//! are `fuzz_checks`, which `tests/tests/fuzz_replay.rs` runs on the stored
//! corpus.

pub mod docs;
pub mod e2e;
pub mod fuzz_checks;
pub mod kinds;
pub mod manifest;
pub mod tool;

pub use manifest::{LoadError, Manifest};

use std::path::PathBuf;

/// The repository root (the workspace folder).
pub fn repo_root() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    here.parent().map(PathBuf::from).unwrap_or(here)
}

/// The `deploy/` folder.
pub fn deploy_dir() -> PathBuf {
    repo_root().join("deploy")
}
