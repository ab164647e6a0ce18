//! State read from manifest files and folders (`serve --state`, `check`).

use std::path::PathBuf;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::input::read_manifests;
use tierguard::manifest::Manifest;

use super::{Snapshot, StateSource};

/// Manifests that could not be read: the error of the walker the enforcer
/// and the case runner share (it names the path).
pub use tierguard::input::InputError as LoadError;

/// The Namespaces and NetworkPolicies of a set of manifests.
#[derive(Clone, Debug, Default)]
pub struct Loaded {
    /// every file read, in order
    pub files: Vec<PathBuf>,
    /// Namespaces
    pub namespaces: Vec<Namespace>,
    /// NetworkPolicies
    pub policies: Vec<NetworkPolicy>,
}

impl Loaded {
    /// The snapshot of these objects.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot::build(&self.namespaces, &self.policies)
    }
}

/// Reads every Namespace and NetworkPolicy under `paths` (files as given,
/// folders as `tierguard::input::manifest_files` walks them); other kinds
/// are ignored.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for file in read_manifests(paths)? {
        for manifest in file.manifests {
            match manifest {
                Manifest::Namespace(ns) => loaded.namespaces.push(ns),
                Manifest::NetworkPolicy(np) => loaded.policies.push(np),
                Manifest::Pod(_) | Manifest::Node(_) | Manifest::Other { .. } => {}
            }
        }
        loaded.files.push(file.path);
    }
    Ok(loaded)
}

/// A fixed state read once from manifests.
#[derive(Debug)]
pub struct FileState {
    snapshot: Arc<Snapshot>,
}

impl FileState {
    /// Reads the manifests under `paths`.
    pub fn read(paths: &[PathBuf]) -> Result<FileState, LoadError> {
        Ok(FileState::from_snapshot(load(paths)?.snapshot()))
    }

    /// A state from a snapshot already built.
    pub fn from_snapshot(snapshot: Snapshot) -> FileState {
        FileState {
            snapshot: Arc::new(snapshot),
        }
    }
}

impl StateSource for FileState {
    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot)
    }

    fn is_synced(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_errors_name_the_file() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("bad.yaml");
        std::fs::write(
            &file,
            "kind: NetworkPolicy\nmetadata: {name: np, namespace: shop}\nspec: {podSelector: 7}\n",
        )?;
        let err = load(&[file]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(
            err.contains("bad.yaml: document 1 (NetworkPolicy shop/np): spec.podSelector"),
            "{err}"
        );
        Ok(())
    }
}
