//! Replays every stored fuzz input on stable: each file of
//! `tests/fuzz/corpus/<target>/` and `tests/fuzz/regressions/<target>/` goes
//! through the same check the fuzz target runs. A target whose corpus folder
//! is missing or empty fails, so the replay cannot pass by finding nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use tierguard_integration::fuzz_checks::{TARGETS, check_for, fuzz_dir};

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs `target`'s check on every stored input; returns how many ran.
fn replay(target: &str) -> usize {
    let check = check_for(target).unwrap_or_else(|| panic!("no fuzz check named {target}"));
    let corpus = fuzz_dir().join("corpus").join(target);
    assert!(
        corpus.is_dir(),
        "{}: the corpus folder of fuzz target {target} is missing",
        corpus.display()
    );
    let mut inputs = files_in(&corpus);
    assert!(
        !inputs.is_empty(),
        "{}: the corpus of fuzz target {target} is empty",
        corpus.display()
    );
    let regressions = fuzz_dir().join("regressions").join(target);
    if regressions.is_dir() {
        inputs.extend(files_in(&regressions));
    }
    let mut failed = Vec::new();
    for input in &inputs {
        let data = std::fs::read(input).unwrap_or_else(|e| panic!("{}: {e}", input.display()));
        if catch_unwind(AssertUnwindSafe(|| check(&data))).is_err() {
            failed.push(input.display().to_string());
        }
    }
    assert!(
        failed.is_empty(),
        "fuzz target {target}: {} of {} stored inputs fail (the panics are printed above):\n{}",
        failed.len(),
        inputs.len(),
        failed.join("\n")
    );
    inputs.len()
}

#[test]
fn every_target_has_a_fuzz_target_file() {
    for (target, _) in TARGETS {
        let file = fuzz_dir().join("fuzz_targets").join(format!("{target}.rs"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("fuzz_checks::{target}(")),
            "{} does not run fuzz_checks::{target}",
            file.display()
        );
    }
}

#[test]
fn admission_review_corpus_replays() {
    assert!(replay("admission_review") > 0);
}

#[test]
fn manifests_corpus_replays() {
    assert!(replay("manifests") > 0);
}

#[test]
fn template_corpus_replays() {
    assert!(replay("template") > 0);
}

#[test]
fn reachability_case_corpus_replays() {
    assert!(replay("reachability_case") > 0);
}

#[test]
fn selector_algebra_corpus_replays() {
    assert!(replay("selector_algebra") > 0);
}
