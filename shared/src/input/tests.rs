use std::error::Error;

use super::*;

fn names(root: &Path, files: &[PathBuf]) -> Vec<String> {
    files
        .iter()
        .map(|f| f.strip_prefix(root).unwrap_or(f).display().to_string())
        .collect()
}

#[test]
fn walks_folders_in_name_order_skipping_hidden_entries_and_other_extensions() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    std::fs::create_dir_all(root.join("b/c"))?;
    std::fs::create_dir_all(root.join(".hidden"))?;
    for f in [
        "b/c/z.yml",
        "a.json",
        "b/x.yaml",
        "b/readme.md",
        ".hidden/h.yaml",
        ".dot.yaml",
    ] {
        std::fs::write(root.join(f), "")?;
    }
    let files = manifest_files(&[root.to_path_buf()])?;
    assert_eq!(names(root, &files), ["a.json", "b/c/z.yml", "b/x.yaml"]);
    let yaml_only = files_under(&[root.to_path_buf()], &["yaml"])?;
    assert_eq!(names(root, &yaml_only), ["b/x.yaml"]);
    Ok(())
}

#[test]
fn named_files_are_read_whatever_their_name_in_the_order_given() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    for f in ["b.yaml", "notes.txt", ".hidden.yaml"] {
        std::fs::write(root.join(f), "")?;
    }
    let paths = [root.join("notes.txt"), root.join(".hidden.yaml"), root.to_path_buf()];
    assert_eq!(
        names(root, &manifest_files(&paths)?),
        ["notes.txt", ".hidden.yaml", "b.yaml"]
    );
    Ok(())
}

/// The layout the kubelet writes for a ConfigMap volume: each key a link
/// into `..data`, itself a link to a timestamped folder; during an update the
/// previous folder is still there, with keys the ConfigMap no longer has.
#[cfg(unix)]
fn configmap_volume(root: &Path, current: &[(&str, &str)], stale: &[(&str, &str)]) -> std::io::Result<()> {
    use std::os::unix::fs::symlink;
    let (old, new) = ("..2024_01_01_00_00_00.1", "..2024_01_02_00_00_00.2");
    std::fs::create_dir_all(root.join(old))?;
    std::fs::create_dir_all(root.join(new))?;
    for (key, text) in stale {
        std::fs::write(root.join(old).join(key), text)?;
    }
    for (key, text) in current {
        std::fs::write(root.join(new).join(key), text)?;
        symlink(Path::new("..data").join(key), root.join(key))?;
    }
    symlink(new, root.join("..data"))
}

#[cfg(unix)]
#[test]
fn a_configmap_volume_is_read_once_through_its_links() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let root = dir.path();
    let ns = |name: &str| format!("apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}}}\n");
    configmap_volume(
        root,
        &[("a.yaml", &ns("a")), ("b.yaml", &ns("b"))],
        &[("a.yaml", &ns("a")), ("gone.yaml", &ns("gone"))],
    )?;
    assert_eq!(
        names(root, &manifest_files(&[root.to_path_buf()])?),
        ["a.yaml", "b.yaml"]
    );
    let read = read_manifests(&[root.to_path_buf()])?;
    let objects: Vec<String> = read
        .iter()
        .flat_map(|f| &f.manifests)
        .filter_map(|m| match m {
            Manifest::Namespace(ns) => ns.metadata.name.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(objects, ["a", "b"]);
    // named explicitly, a hidden folder is read like any other
    let named = manifest_files(&[root.join("..data")])?;
    assert_eq!(names(root, &named), ["..data/a.yaml", "..data/b.yaml"]);
    Ok(())
}

#[test]
fn errors_name_the_path() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let missing = dir.path().join("missing");
    let err = manifest_files(std::slice::from_ref(&missing))
        .err()
        .map(|e| e.to_string());
    assert!(
        err.as_deref()
            .is_some_and(|e| e.starts_with(&format!("{}: ", missing.display()))),
        "{err:?}"
    );
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "kind: NetworkPolicy\nmetadata: {name: np, namespace: shop}\nspec: {podSelector: 7}\n",
    )?;
    let err = read_manifests(&[bad]).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("bad.yaml: document 1 (NetworkPolicy shop/np): spec.podSelector"),
        "{err}"
    );
    Ok(())
}
