//! Running the kernel's tools: the `Executor` trait, and the host implementation.

use std::io::Write;
use std::process::{Command, Stdio};

/// A command that could not be run, or exited non-zero.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{program} {}: {}", .args.join(" "), self.reason())]
pub struct ExecError {
    /// the program
    pub program: String,
    /// its arguments
    pub args: Vec<String>,
    /// exit code; `None` when it could not be started or was killed
    pub code: Option<i32>,
    /// standard error (or the spawn error)
    pub stderr: String,
}

impl ExecError {
    fn reason(&self) -> String {
        let stderr = self.stderr.trim();
        match self.code {
            Some(code) => format!("exit {code}: {stderr}"),
            None => stderr.to_string(),
        }
    }
}

/// Runs programs; the one seam between the enforcer and the kernel.
pub trait Executor: Send + Sync {
    /// Runs `program` with `args`, feeding `stdin` if `Some`; `Ok(stdout)` on
    /// exit 0, `Err` with stderr otherwise.
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError>;
}

impl<E: Executor + ?Sized> Executor for &E {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        (**self).run(program, args, stdin)
    }
}

impl<E: Executor + ?Sized> Executor for Box<E> {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        (**self).run(program, args, stdin)
    }
}

impl<E: Executor + ?Sized> Executor for std::sync::Arc<E> {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        (**self).run(program, args, stdin)
    }
}

/// Runs on this host via `std::process::Command`.
#[derive(Debug, Clone, Copy, Default)]
pub struct HostExecutor;

impl Executor for HostExecutor {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        let fail = |code: Option<i32>, stderr: String| ExecError {
            program: program.to_string(),
            args: args.to_vec(),
            code,
            stderr,
        };
        let mut child = Command::new(program)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| fail(None, e.to_string()))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // A tool that exits early closes its stdin; the exit status tells why.
            let _ = pipe.write_all(text.as_bytes());
        }
        let out = child.wait_with_output().map_err(|e| fail(None, e.to_string()))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(fail(
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            ))
        }
    }
}
