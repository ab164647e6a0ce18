//! The run's checks: each prints `ok NAME` or `FAIL NAME: why`, and the run
//! ends with `N passed, N failed`.

use std::process::ExitCode;

#[derive(Debug, Default)]
pub struct Report {
    passed: usize,
    failed: Vec<String>,
}

impl Report {
    /// Runs one check and records it.
    pub fn check(&mut self, name: &str, f: impl FnOnce() -> anyhow::Result<()>) {
        match f() {
            Ok(()) => {
                self.passed += 1;
                println!("ok {name}");
            }
            Err(e) => self.fail(name, &format!("{e:#}")),
        }
    }

    /// Records a failure.
    pub fn fail(&mut self, name: &str, why: &str) {
        println!("FAIL {name}: {why}");
        self.failed.push(name.to_string());
    }

    /// How many checks failed so far.
    pub fn failed(&self) -> usize {
        self.failed.len()
    }

    /// Prints the closing line.
    pub fn finish(self) -> ExitCode {
        println!();
        if !self.failed.is_empty() {
            println!("failed: {}", self.failed.join(", "));
        }
        println!("{} passed, {} failed", self.passed, self.failed.len());
        if self.failed.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// Prints a section header and a block of text indented under it.
pub fn show(title: &str, text: &str) {
    println!("--- {title}");
    for line in text.lines() {
        println!("    {line}");
    }
}
