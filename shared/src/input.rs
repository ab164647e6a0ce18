//! Reading manifests from files and folders: the one walker the webhook
//! (`serve --state`, `check`), the enforcer (`render`, `run --state`) and the
//! case runner share, so that the same paths mean the same files everywhere.
//!
//! The only module of this crate that touches the file system, built with the
//! `fs` feature; the rest of the crate only parses text handed to it.
//!
//! The rule: a path that names a file is read whatever its name; a folder is
//! walked recursively in name order for files with one of the extensions
//! asked for, skipping entries whose name starts with `.`. A ConfigMap or
//! Secret volume holds every key twice, once as `key` (a link into
//! `..data/`) and once in the timestamped `..2024_…` folder `..data` points
//! to (during an update also the previous one): only the links are read.

use std::path::{Path, PathBuf};

use crate::manifest::{Manifest, ManifestError, parse_manifests};

/// The extensions of manifest files in a folder.
pub const MANIFEST_EXTENSIONS: &[&str] = &["yaml", "yml", "json"];

/// Input that cannot be read or parsed; the message names the path.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// a file or folder could not be read
    #[error("{path}: {source}")]
    Io {
        /// the file or folder
        path: PathBuf,
        /// why
        source: std::io::Error,
    },
    /// a document does not parse (names file, document, object and field)
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> InputError + '_ {
    move |source| InputError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Whether a folder entry is hidden (skipped by the walk).
fn is_hidden(path: &Path) -> bool {
    path.file_name().is_some_and(|n| n.as_encoded_bytes().starts_with(b"."))
}

fn has_extension(path: &Path, extensions: &[&str]) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| extensions.contains(&e))
}

fn walk(dir: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> Result<(), InputError> {
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        entries.push(entry.map_err(io_error(dir))?.path());
    }
    entries.sort();
    for entry in entries {
        if is_hidden(&entry) {
            continue;
        }
        // `is_dir` follows links: a linked folder is walked like any other.
        if entry.is_dir() {
            walk(&entry, extensions, out)?;
        } else if has_extension(&entry, extensions) {
            out.push(entry);
        }
    }
    Ok(())
}

/// The files `paths` name, in order: a file as given (whatever its name or
/// extension), a folder walked recursively in name order for files ending in
/// one of `extensions`, hidden entries (names starting with `.`) skipped.
pub fn files_under(paths: &[PathBuf], extensions: &[&str]) -> Result<Vec<PathBuf>, InputError> {
    let mut out = Vec::new();
    for path in paths {
        if std::fs::metadata(path).map_err(io_error(path))?.is_dir() {
            walk(path, extensions, &mut out)?;
        } else {
            out.push(path.clone());
        }
    }
    Ok(out)
}

/// The manifest files `paths` name: [`files_under`] with [`MANIFEST_EXTENSIONS`].
pub fn manifest_files(paths: &[PathBuf]) -> Result<Vec<PathBuf>, InputError> {
    files_under(paths, MANIFEST_EXTENSIONS)
}

/// The objects of one manifest file.
#[derive(Clone, Debug)]
pub struct ManifestFile {
    /// the file
    pub path: PathBuf,
    /// its objects, in order (documents and `List` items flattened)
    pub manifests: Vec<Manifest>,
}

/// Reads and parses every manifest file `paths` name ([`manifest_files`]);
/// errors name the file (and the document, object and field of a parse error).
pub fn read_manifests(paths: &[PathBuf]) -> Result<Vec<ManifestFile>, InputError> {
    let mut out = Vec::new();
    for path in manifest_files(paths)? {
        let text = std::fs::read_to_string(&path).map_err(io_error(&path))?;
        let manifests = parse_manifests(&text, &path.display().to_string())?;
        out.push(ManifestFile { path, manifests });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
