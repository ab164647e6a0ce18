//! Kubernetes manifests as a user has them: multi-document YAML files, and
//! kustomizations that list them.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// One document of a manifest file.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// the file it came from (or the kustomization that rendered it)
    pub path: PathBuf,
    /// 0-based index of the document in that file
    pub doc: usize,
    /// the document
    pub value: Value,
}

/// A manifest that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// the file or folder cannot be read
    #[error("{path}: {source}")]
    Io {
        /// what was read
        path: PathBuf,
        /// why it failed
        source: std::io::Error,
    },
    /// a document is not YAML, or not a mapping
    #[error("{path} document {doc}: {message}")]
    Yaml {
        /// the file
        path: PathBuf,
        /// 0-based document index
        doc: usize,
        /// what is wrong
        message: String,
    },
    /// a folder could not be walked (the error names the path)
    #[error(transparent)]
    Walk(#[from] tierguard::input::InputError),
    /// a kustomization names something that is not there or not usable
    #[error("{path}: {message}")]
    Kustomization {
        /// the kustomization file
        path: PathBuf,
        /// what is wrong
        message: String,
    },
}

impl Manifest {
    /// `kind`, or "" when absent.
    pub fn kind(&self) -> &str {
        self.str_at("/kind").unwrap_or("")
    }

    /// `apiVersion`, or "" when absent.
    pub fn api_version(&self) -> &str {
        self.str_at("/apiVersion").unwrap_or("")
    }

    /// `metadata.name`, or "" when absent.
    pub fn name(&self) -> &str {
        self.str_at("/metadata/name").unwrap_or("")
    }

    /// `metadata.namespace`, when set.
    pub fn namespace(&self) -> Option<&str> {
        self.str_at("/metadata/namespace")
    }

    /// A string at a JSON pointer (`/spec/template/...`).
    pub fn str_at(&self, pointer: &str) -> Option<&str> {
        self.value.pointer(pointer).and_then(Value::as_str)
    }

    /// Where this document is, for messages: `deploy/x.yaml#1 (Kind/name)`.
    pub fn locator(&self) -> String {
        let root = crate::repo_root();
        let shown = self.path.strip_prefix(&root).unwrap_or(&self.path);
        format!("{}#{} ({}/{})", shown.display(), self.doc, self.kind(), self.name())
    }

    /// The document as a Kubernetes type.
    pub fn to_typed<T: DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_value(self.value.clone()).map_err(|e| format!("{}: {e}", self.locator()))
    }
}

/// Splits multi-document YAML into JSON values; empty documents are dropped.
pub fn parse_documents(text: &str, path: &Path) -> Result<Vec<Manifest>, LoadError> {
    let mut out = Vec::new();
    for (doc, de) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let value = Value::deserialize(de).map_err(|e| LoadError::Yaml {
            path: path.to_path_buf(),
            doc,
            message: e.to_string(),
        })?;
        match value {
            Value::Null => {}
            Value::Object(_) => out.push(Manifest {
                path: path.to_path_buf(),
                doc,
                value,
            }),
            other => {
                return Err(LoadError::Yaml {
                    path: path.to_path_buf(),
                    doc,
                    message: format!("a document must be a mapping, found {other}"),
                });
            }
        }
    }
    Ok(out)
}

/// Reads every document of one file.
pub fn load_file(path: &Path) -> Result<Vec<Manifest>, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_documents(&text, path)
}

/// Every `.yaml`/`.yml` file under `dir`, walked as tierguard walks manifest
/// folders (`tierguard::input::files_under`: name order, hidden entries
/// skipped), leaving out the folders named in `skip` (relative to `dir`).
pub fn yaml_files(dir: &Path, skip: &[&str]) -> Result<Vec<PathBuf>, LoadError> {
    let files = tierguard::input::files_under(&[dir.to_path_buf()], &["yaml", "yml"])?;
    Ok(files
        .into_iter()
        .filter(|f| {
            let rel = f.strip_prefix(dir).unwrap_or(f);
            !skip.iter().any(|s| rel.starts_with(s))
        })
        .collect())
}

/// The file of a kustomization folder.
pub fn kustomization_file(dir: &Path) -> Option<PathBuf> {
    ["kustomization.yaml", "kustomization.yml", "Kustomization"]
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// A kustomization's own lists: `resources` and the paths of `patches`.
#[derive(Clone, Debug, Default)]
pub struct Kustomization {
    /// the kustomization file
    pub path: PathBuf,
    /// `resources`, resolved against the folder
    pub resources: Vec<PathBuf>,
    /// `patches[].path` (and `patchesStrategicMerge`), resolved
    pub patches: Vec<PathBuf>,
    /// the whole document
    pub value: Value,
}

/// Reads the kustomization of a folder.
pub fn read_kustomization(dir: &Path) -> Result<Kustomization, LoadError> {
    let path = kustomization_file(dir).ok_or_else(|| LoadError::Kustomization {
        path: dir.to_path_buf(),
        message: "no kustomization.yaml".to_string(),
    })?;
    let docs = load_file(&path)?;
    let [doc] = docs.as_slice() else {
        return Err(LoadError::Kustomization {
            path,
            message: format!("expected one document, found {}", docs.len()),
        });
    };
    let strings = |pointer: &str| -> Vec<PathBuf> {
        doc.value
            .pointer(pointer)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(|s| dir.join(s)).collect())
            .unwrap_or_default()
    };
    let mut patches: Vec<PathBuf> = doc
        .value
        .pointer("/patches")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|p| p.get("path").and_then(Value::as_str))
                .map(|s| dir.join(s))
                .collect()
        })
        .unwrap_or_default();
    patches.extend(strings("/patchesStrategicMerge"));
    Ok(Kustomization {
        resources: strings("/resources"),
        patches,
        value: doc.value.clone(),
        path,
    })
}

/// The resources a kustomization folder lists, followed through nested
/// kustomizations, without applying patches or transformers (that is
/// `kubectl kustomize`'s job; see [`crate::tool::kustomize`]).
pub fn load_kustomization_resources(dir: &Path) -> Result<Vec<Manifest>, LoadError> {
    let k = read_kustomization(dir)?;
    let mut out = Vec::new();
    for r in &k.resources {
        if r.is_dir() {
            out.extend(load_kustomization_resources(r)?);
        } else if r.is_file() {
            out.extend(load_file(r)?);
        } else {
            return Err(LoadError::Kustomization {
                path: k.path.clone(),
                message: format!("resource {} does not exist", r.display()),
            });
        }
    }
    Ok(out)
}

/// The first manifest of a kind and name.
pub fn find<'a>(manifests: &'a [Manifest], kind: &str, name: &str) -> Option<&'a Manifest> {
    manifests.iter().find(|m| m.kind() == kind && m.name() == name)
}

/// Every manifest of a kind.
pub fn of_kind<'a>(manifests: &'a [Manifest], kind: &'a str) -> impl Iterator<Item = &'a Manifest> {
    manifests.iter().filter(move |m| m.kind() == kind)
}
