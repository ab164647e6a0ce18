//! Reading the code blocks of the documentation (`docs/*.md`, `README.md`)
//! and checking `console` blocks against the binaries, for the tests that
//! keep the documentation true (`tests/tests/docs_examples.rs`, and
//! `docs_console.rs` in the webhook, enforcer and conformance crates).
//!
//! Only `std` is used here: the webhook, enforcer and conformance tests include this file
//! by path, because only a package's own tests can name its binaries
//! (`CARGO_BIN_EXE_*`), and building them from another package's test would
//! rebuild them with other dependency features on every run.

// Each including crate uses only part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One fenced code block of a Markdown file.
#[derive(Debug)]
pub struct Block {
    /// `docs/x.md:12`, for messages
    pub place: String,
    /// the language, e.g. `yaml`
    pub lang: String,
    /// the info string's other words, e.g. `template`, `rules=R1`
    pub words: Vec<String>,
    /// the lines between the fences
    pub text: String,
}

impl Block {
    /// Whether the info string has this word.
    pub fn has(&self, word: &str) -> bool {
        self.words.iter().any(|w| w == word)
    }

    /// The value of a `key=value` word of the info string.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.words
            .iter()
            .find_map(|w| w.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
    }
}

/// The fenced blocks of a Markdown file, in order.
pub fn blocks(root: &Path, path: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let name = path.strip_prefix(root).unwrap_or(path).display().to_string();
    let mut out = Vec::new();
    let mut open: Option<Block> = None;
    for (i, line) in text.lines().enumerate() {
        match open.as_mut() {
            None => {
                if let Some(info) = line.strip_prefix("```") {
                    let mut words = info.split_whitespace().map(str::to_string);
                    open = Some(Block {
                        place: format!("{name}:{}", i + 1),
                        lang: words.next().unwrap_or_default(),
                        words: words.collect(),
                        text: String::new(),
                    });
                }
            }
            Some(block) => {
                if line.starts_with("```") {
                    out.extend(open.take());
                } else {
                    block.text.push_str(line);
                    block.text.push('\n');
                }
            }
        }
    }
    assert!(open.is_none(), "{name}: a code block is not closed");
    out
}

/// The pages of `docs/`, in name order.
pub fn doc_pages(root: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(root.join("docs")).unwrap_or_else(|e| panic!("docs/: {e}"));
    let mut pages: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "md"))
        .collect();
    pages.sort();
    assert!(pages.len() >= 6, "docs/ lost its pages: {pages:?}");
    pages
}

/// Every console block of the documentation and of the top-level README.
pub fn console_blocks(root: &Path) -> Vec<Block> {
    let mut pages = doc_pages(root);
    pages.push(root.join("README.md"));
    pages
        .iter()
        .flat_map(|p| blocks(root, p))
        .filter(|b| b.lang == "console")
        .collect()
}

/// The binary a console command runs and its arguments. `cargo run -q -p
/// NAME -- ARGS` (as the README writes it) runs the binary NAME.
pub fn program_of(command: &str) -> Option<(String, Vec<String>)> {
    let words: Vec<String> = command.split_whitespace().map(str::to_string).collect();
    match words.as_slice() {
        [cargo, run, quiet, p, name, dashes, rest @ ..]
            if cargo == "cargo" && run == "run" && quiet == "-q" && p == "-p" && dashes == "--" =>
        {
            Some((name.clone(), rest.to_vec()))
        }
        [name, rest @ ..] => Some((name.clone(), rest.to_vec())),
        [] => None,
    }
}

/// One `$ command` of a console block with the output shown after it.
pub struct Step {
    /// the command after `$ `
    pub command: String,
    /// the lines that follow it, up to the next command
    pub output: String,
}

/// The commands of a console block.
pub fn steps(block: &Block) -> Vec<Step> {
    let mut out: Vec<Step> = Vec::new();
    for line in block.text.lines() {
        match line.strip_prefix("$ ") {
            Some(command) => out.push(Step {
                command: command.to_string(),
                output: String::new(),
            }),
            None => {
                let step = out
                    .last_mut()
                    .unwrap_or_else(|| panic!("{}: output without a command: {line:?}", block.place));
                step.output.push_str(line);
                step.output.push('\n');
            }
        }
    }
    out
}

/// Runs the commands of `block` whose binary `binary` knows (from `root`)
/// and checks that each prints exactly what the block shows (stdout, then
/// stderr) and, where `echo $?` follows, exits with the code shown. Returns
/// how many commands ran; commands of other binaries are left to the test
/// that can run them.
pub fn check_console(root: &Path, block: &Block, binary: &dyn Fn(&str) -> Option<PathBuf>) -> usize {
    let mut last_code: Option<Option<i32>> = None;
    let mut ran = 0;
    for step in steps(block) {
        if step.command == "echo $?" {
            // `None`: the command before is another test's.
            if let Some(code) = last_code.unwrap_or_else(|| panic!("{}: `echo $?` without a command", block.place)) {
                assert_eq!(
                    step.output,
                    format!("{code}\n"),
                    "{}: exit code of the command before",
                    block.place
                );
            }
            continue;
        }
        let (name, args) = program_of(&step.command).unwrap_or_else(|| panic!("{}: empty command", block.place));
        let Some(program) = binary(&name) else {
            last_code = Some(None);
            continue;
        };
        let out = Command::new(&program)
            .args(&args)
            .current_dir(root)
            .env_remove("RUST_LOG")
            .output()
            .unwrap_or_else(|e| panic!("{}: {}: {e}", block.place, program.display()));
        let got = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            got.trim_end(),
            step.output.trim_end(),
            "{}: `{}` printed something else",
            block.place,
            step.command
        );
        last_code = Some(out.status.code());
        ran += 1;
    }
    ran
}
