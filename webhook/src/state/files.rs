//! State read from manifest files and folders (`serve --state`, `check`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::manifest::{Manifest, ManifestError, parse_manifests};

use super::{Snapshot, StateSource};

/// Manifests that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// a file or folder could not be read
    #[error("{path}: {source}")]
    Io {
        /// the path
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// a document does not parse (names file, document, object and field)
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

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

fn is_manifest_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn is_hidden(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with('.'))
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let io = |source| LoadError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()
        .map_err(io)?;
    entries.sort();
    for path in entries {
        if is_hidden(&path) {
            continue;
        }
        if path.is_dir() {
            walk(&path, out)?;
        } else if is_manifest_file(&path) {
            out.push(path);
        }
    }
    Ok(())
}

/// The files `paths` name: files as given, folders walked recursively for
/// `*.yaml`, `*.yml` and `*.json` (sorted; entries starting with `.` skipped).
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for path in paths {
        let meta = std::fs::metadata(path).map_err(|source| LoadError::Io {
            path: path.clone(),
            source,
        })?;
        if meta.is_dir() {
            walk(path, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// Reads every Namespace and NetworkPolicy under `paths`; other kinds are ignored.
pub fn load(paths: &[PathBuf]) -> Result<Loaded, LoadError> {
    let mut loaded = Loaded::default();
    for file in manifest_files(paths)? {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io {
            path: file.clone(),
            source,
        })?;
        for manifest in parse_manifests(&text, &file.display().to_string())? {
            match manifest {
                Manifest::Namespace(ns) => loaded.namespaces.push(ns),
                Manifest::NetworkPolicy(np) => loaded.policies.push(np),
                Manifest::Pod(_) | Manifest::Node(_) | Manifest::Other { .. } => {}
            }
        }
        loaded.files.push(file);
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
    fn walks_folders_sorted_and_skips_hidden_and_other_extensions() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir_all(dir.path().join("b/c"))?;
        std::fs::create_dir_all(dir.path().join(".hidden"))?;
        std::fs::write(dir.path().join("b/c/z.yml"), "")?;
        std::fs::write(dir.path().join("a.json"), "")?;
        std::fs::write(dir.path().join("b/x.yaml"), "")?;
        std::fs::write(dir.path().join("b/readme.md"), "")?;
        std::fs::write(dir.path().join(".hidden/h.yaml"), "")?;
        let files = manifest_files(&[dir.path().to_path_buf()])?;
        let names: Vec<_> = files
            .iter()
            .filter_map(|f| f.strip_prefix(dir.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        assert_eq!(names, vec!["a.json", "b/c/z.yml", "b/x.yaml"]);
        Ok(())
    }

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
