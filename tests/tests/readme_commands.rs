//! The README's first lines stay true: every `cargo run -p PACKAGE` there
//! (without `--bin`) names a package cargo can run, i.e. one with a single
//! binary or a `default-run` (a second binary without it makes `cargo run`
//! refuse to choose).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use tierguard_integration::repo_root;

/// The packages the README's first lines `cargo run` without `--bin`.
fn packages_run_by_the_first_lines() -> Vec<String> {
    let readme = std::fs::read_to_string(repo_root().join("README.md")).unwrap();
    let mut out = Vec::new();
    for line in readme.lines().take(6) {
        for command in line.split('`').skip(1).step_by(2) {
            let words: Vec<&str> = command.split_whitespace().collect();
            if !command.starts_with("cargo run") || words.contains(&"--bin") {
                continue;
            }
            if let Some(i) = words.iter().position(|w| *w == "-p") {
                out.push(words[i + 1].to_string());
            }
        }
    }
    out
}

#[test]
fn cargo_run_in_the_first_lines_picks_a_binary() {
    let packages = packages_run_by_the_first_lines();
    assert!(!packages.is_empty(), "the README's first lines have no `cargo run -p`");
    // `cargo metadata --no-deps` reads the manifests only (no build, no lock of the target dir).
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(repo_root())
        .output()
        .expect("cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for name in packages {
        let package = metadata["packages"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name.as_str())
            .unwrap_or_else(|| panic!("README runs {name}, which is not a workspace package"));
        let binaries: Vec<&str> = package["targets"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
            .filter_map(|t| t["name"].as_str())
            .collect();
        let default_run = package["default_run"].as_str();
        assert!(
            binaries.len() == 1 || default_run.is_some_and(|d| binaries.contains(&d)),
            "README's `cargo run -p {name}`: {name} has binaries {binaries:?} and no default-run among them"
        );
    }
}
