//! External tools (kubectl, openssl, shellcheck): finding them, and the
//! rule for tests that need one: skip with a printed reason on a developer
//! machine, fail under CI (`CI=true`), where `.ci/deploy-deps.sh` installs
//! them.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Manifest;
use crate::manifest::parse_documents;

/// Whether this is a CI run (`CI` set to `true` or `1`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
}

/// The first executable named `name` on `PATH`.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The tool, or `None` after printing (to stderr, uncaptured) why the
/// calling test is skipped.
///
/// # Panics
/// Under CI when the tool is missing: CI must have it.
pub fn tool_or_skip(name: &str, purpose: &str) -> Option<PathBuf> {
    if let Some(p) = find_tool(name) {
        return Some(p);
    }
    assert!(
        !in_ci(),
        "{name} is required under CI ({purpose}); .ci/deploy-deps.sh installs it"
    );
    // straight to stderr, past the test harness's capture, so the skip shows
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: {name} is not on PATH, so this test cannot {purpose}"
    );
    None
}

/// `kubectl kustomize DIR`, parsed into manifests.
pub fn kustomize(kubectl: &Path, dir: &Path) -> Result<Vec<Manifest>, String> {
    let out = Command::new(kubectl)
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|e| format!("{} kustomize {}: {e}", kubectl.display(), dir.display()))?;
    if !out.status.success() {
        return Err(format!(
            "kubectl kustomize {} failed ({}): {}",
            dir.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8(out.stdout).map_err(|e| e.to_string())?;
    parse_documents(&text, &dir.join("kustomization.yaml")).map_err(|e| e.to_string())
}
