//! Finding input files: paths as given, folders walked recursively in name
//! order, keeping the files whose extension is one of `extensions`.

use std::path::{Path, PathBuf};

/// The files named by `paths`; an error names the path that could not be read.
pub fn files_under(paths: &[PathBuf], extensions: &[&str]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for path in paths {
        collect(path, extensions, &mut out)?;
    }
    Ok(out)
}

fn collect(path: &Path, extensions: &[&str], out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_dir() {
        out.push(path.to_path_buf());
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(path).map_err(|e| format!("{}: {e}", path.display()))? {
        entries.push(entry.map_err(|e| format!("{}: {e}", path.display()))?.path());
    }
    entries.sort();
    for entry in entries {
        let wanted = entry
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| extensions.contains(&e));
        if entry.is_dir() || wanted {
            collect(&entry, extensions, out)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_folders_in_name_order_and_keeps_named_files() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        std::fs::create_dir(dir.path().join("sub"))?;
        for f in ["b.yaml", "a.yml", "c.txt", "sub/d.yaml"] {
            std::fs::write(dir.path().join(f), "")?;
        }
        let explicit = dir.path().join("c.txt");
        let got = files_under(&[dir.path().to_path_buf(), explicit.clone()], &["yaml", "yml"])?;
        let want = vec![
            dir.path().join("a.yml"),
            dir.path().join("b.yaml"),
            dir.path().join("sub/d.yaml"),
            explicit,
        ];
        assert_eq!(got, want);
        assert!(files_under(&[dir.path().join("missing")], &["yaml"]).is_err());
        Ok(())
    }
}
