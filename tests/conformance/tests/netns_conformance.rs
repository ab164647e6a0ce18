//! The reachability cases pass on the netns data plane: real namespaces,
//! the enforcer's real rules, real TCP and UDP packets, over IPv6 too on the
//! dual-stack cases.

// Test helpers outside #[test] functions panic on failure like the tests do.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod netns_support;

use std::path::{Path, PathBuf};
use std::process::Command;

use netns_support::netns_available;

/// Runs the cases under `dir`; returns what the run printed.
fn run_cases(dir: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tierguard-conformance"))
        .args(["--dataplane", "netns"])
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
    stdout.into_owned()
}

#[test]
fn the_public_cases_pass_on_netns() {
    if !netns_available("netns_conformance") {
        return;
    }
    run_cases(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/conformance/cases"));
}

/// Whether the dual-stack cases can run (the IPv6 tools too): panics under CI=true
/// when they cannot, prints why they are skipped elsewhere.
fn ipv6_available(test: &str) -> bool {
    match tierguard_conformance::netns::preflight_ipv6() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: the netns tests must run in CI, but: {e}");
            }
            eprintln!("{test}: skipped: {e}");
            false
        }
    }
}

#[test]
fn the_repositorys_own_cases_pass_on_netns() {
    if !netns_available("netns_conformance") || !ipv6_available("netns_conformance") {
        return;
    }
    let dir: PathBuf = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../enforcer/tests/cases");
    if !dir.is_dir() {
        eprintln!("no {}: nothing to run", dir.display());
        return;
    }
    let stdout = run_cases(&dir);
    // The dual-stack cases' IPv6 probes ran on packets: a skipped probe would
    // be checked on the model only, and the case line would say so.
    let dual: Vec<&str> = stdout.lines().filter(|l| l.starts_with("ok dual-stack-")).collect();
    assert!(dual.len() >= 2, "the dual-stack cases did not run:\n{stdout}");
    for line in dual {
        assert!(!line.contains("skipped"), "IPv6 probes were not run on netns: {line}");
    }
}
