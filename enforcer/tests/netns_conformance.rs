//! The reachability cases pass on the netns data plane: real namespaces,
//! the enforcer's real rules, real TCP and UDP packets.

// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use netns_support::netns_available;

fn run_cases(dir: &Path) {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-enforcer"))
        .args(["conformance", "--dataplane", "netns"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "conformance --dataplane netns {} exited {:?}\n{stdout}\n{stderr}",
        dir.display(),
        out.status.code()
    );
    let last = stdout.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default();
    assert!(last.contains(" passed, 0 failed"), "closing line: {last:?}");
    assert!(!last.starts_with("0 passed"), "no case ran: {last:?}");
}

#[test]
fn the_public_cases_pass_on_netns() {
    if !netns_available("netns_conformance") {
        return;
    }
    run_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/conformance/cases"));
}

#[test]
fn the_repositorys_own_cases_pass_on_netns() {
    if !netns_available("netns_conformance") {
        return;
    }
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
    if !dir.is_dir() {
        eprintln!("no {}: nothing to run", dir.display());
        return;
    }
    run_cases(&dir);
}
