//! The checks behind the fuzz targets in `tests/fuzz/`, compiled on stable so
//! that `cargo test` replays every stored corpus input and crash reproducer
//! through exactly the code the fuzzer ran.
//!
//! Each check takes the fuzzer's raw bytes and panics when the code under
//! test panics or breaks one of the invariants the check states; any other
//! outcome (an answer, or a clean error) is a pass.

mod admission;
mod case;
mod manifests;
mod selector;
mod template;

use std::path::{Path, PathBuf};

pub use admission::admission_review;
pub use case::reachability_case;
pub use manifests::manifests;
pub use selector::{SelectorCase, selector_algebra};
pub use template::template;

/// A fuzz target's check.
pub type Check = fn(&[u8]);

/// Every fuzz target, by the name of its `fuzz_targets/<name>.rs` file and
/// of its `corpus/<name>/` and `regressions/<name>/` folders.
pub const TARGETS: [(&str, Check); 5] = [
    ("admission_review", admission_review),
    ("manifests", manifests),
    ("template", template),
    ("reachability_case", reachability_case),
    ("selector_algebra", selector_algebra),
];

/// The fuzz crate's folder, `tests/fuzz`.
pub fn fuzz_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz")
}

/// The check of the target named `name`.
pub fn check_for(name: &str) -> Option<Check> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, c)| *c)
}

/// A file holding one input for code that only reads files, removed when
/// dropped. Named per process and thread so parallel replays do not collide.
struct InputFile {
    path: PathBuf,
}

impl InputFile {
    fn write(data: &[u8]) -> InputFile {
        let path = std::env::temp_dir().join(format!(
            "tierguard-fuzz-{}-{:?}.yaml",
            std::process::id(),
            std::thread::current().id()
        ));
        if let Err(e) = std::fs::write(&path, data) {
            panic!("cannot write the fuzz input to {}: {e}", path.display());
        }
        InputFile { path }
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for InputFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Checks that rendered rules and sets make a well-formed `iptables-restore`
/// and `ipset restore` script: one rule per line, nothing a name or label
/// from the input could smuggle in (line breaks, unbalanced quotes,
/// backslashes), and exactly the lines the chains and sets hold.
fn check_rendered(rendered: &tierguard_enforcer::render::Rendered, what: &str) {
    for (chain, rules) in &rendered.chains {
        assert!(
            is_plain_token(chain),
            "{what}: chain name {chain:?} is not a plain token"
        );
        for rule in rules {
            assert!(
                !rule.chars().any(char::is_control),
                "{what}: rule of {chain} has a control character: {rule:?}"
            );
            assert!(
                !rule.contains('\\') && rule.matches('"').count() % 2 == 0,
                "{what}: rule of {chain} has a backslash or unbalanced quotes: {rule:?}"
            );
        }
    }
    for (name, set) in &rendered.sets {
        assert!(is_plain_token(name), "{what}: set name {name:?} is not a plain token");
        for entry in set.entries.iter() {
            assert!(
                !entry.chars().any(char::is_control) && !entry.contains('"'),
                "{what}: entry of set {name} is not plain: {entry:?}"
            );
        }
    }
    let iptables = rendered.iptables_script();
    // `*filter`, the comment naming the FORWARD jump, one `:CHAIN` line per
    // chain, one `-A` line per rule, `COMMIT`.
    let expected = 3 + rendered.chains.len() + rendered.rule_count();
    assert_eq!(
        iptables.lines().count(),
        expected,
        "{what}: iptables-restore script has the wrong number of lines:\n{iptables}"
    );
    let ipset = rendered.ipset_script();
    let entries: usize = rendered.sets.values().map(|s| s.entries.len()).sum();
    assert_eq!(
        ipset.lines().count(),
        2 * rendered.sets.len() + entries,
        "{what}: ipset script has the wrong number of lines:\n{ipset}"
    );
}

fn is_plain_token(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_graphic() && c != '"' && c != '\\')
}
