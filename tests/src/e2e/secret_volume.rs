//! A Secret or ConfigMap volume as the kubelet writes it: the files live in
//! a timestamped folder, `..data` is a symlink to it, and each key is a
//! symlink through `..data`. An update writes a new folder and swaps
//! `..data` with one rename, so a reader never sees half an update (this is
//! what the webhook's certificate reload must handle).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;

static GENERATION: AtomicU64 = AtomicU64::new(0);

/// Writes `files` (key -> content) into volume folder `dir`, atomically.
pub fn project(dir: &Path, files: &[(&str, &[u8])]) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let stamp = format!(
        "..{}_{}_{generation}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos()
    );
    let fresh = dir.join(&stamp);
    std::fs::create_dir(&fresh).with_context(|| format!("creating {}", fresh.display()))?;
    for (key, content) in files {
        std::fs::write(fresh.join(key), content).with_context(|| format!("writing {key}"))?;
    }
    let data = dir.join("..data");
    let old: Option<PathBuf> = std::fs::read_link(&data).ok();
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&stamp, &tmp).context("linking ..data_tmp")?;
    std::fs::rename(&tmp, &data).context("swapping ..data")?;
    for (key, _) in files {
        let link = dir.join(key);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(key), &link)
                .with_context(|| format!("linking {key}"))?;
        }
    }
    if let Some(old) = old {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}
