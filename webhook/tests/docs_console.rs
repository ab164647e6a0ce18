//! The `console` examples of `docs/` and the README that run
//! `tierguard-webhook` or `kubectl-tierguard`: each command, run from the repository root, prints
//! exactly what the example shows, and exits with the code it shows. The
//! other examples are checked by `tests/tests/docs_examples.rs`.

#[path = "../../tests/src/docs.rs"]
mod docs;

use std::path::{Path, PathBuf};

#[test]
fn console_examples_show_what_webhook_prints() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let binary = |name: &str| match name {
        "tierguard-webhook" => Some(PathBuf::from(env!("CARGO_BIN_EXE_tierguard-webhook"))),
        "kubectl-tierguard" => Some(PathBuf::from(env!("CARGO_BIN_EXE_kubectl-tierguard"))),
        _ => None,
    };
    let ran: usize = docs::console_blocks(&root)
        .iter()
        .map(|block| docs::check_console(&root, block, &binary))
        .sum();
    assert!(ran >= 3, "the console examples of tierguard-webhook are gone");
}
