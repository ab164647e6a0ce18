//! `kubectl` as the test's user: every call records its output and the
//! moment it returned (the start of the kubectl -> kernel latency).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::Context as _;

/// What one kubectl call did.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// exit 0
    pub ok: bool,
    /// standard output
    pub stdout: String,
    /// standard error (kubectl prints refusals and warnings here)
    pub stderr: String,
    /// when it returned
    pub returned: Instant,
}

impl Outcome {
    /// stdout and stderr together, as a person at a terminal sees them.
    pub fn printed(&self) -> String {
        let mut text = String::new();
        text.push_str(self.stdout.trim_end());
        if !self.stderr.trim().is_empty() {
            if !text.is_empty() {
                text.push('\n');
            }
            text.push_str(self.stderr.trim_end());
        }
        text
    }

    /// `Ok(stdout)` on exit 0, else an error carrying what kubectl said.
    pub fn success(self, what: &str) -> anyhow::Result<String> {
        if self.ok {
            Ok(self.stdout)
        } else {
            anyhow::bail!("{what} failed: {}", self.printed())
        }
    }
}

/// kubectl with one kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    /// kubectl `bin` talking through `kubeconfig`.
    pub fn new(bin: &Path, kubeconfig: &Path) -> Kubectl {
        Kubectl {
            bin: bin.to_path_buf(),
            kubeconfig: kubeconfig.to_path_buf(),
        }
    }

    /// The same kubectl with another kubeconfig (another user).
    pub fn as_user(&self, kubeconfig: &Path) -> Kubectl {
        Kubectl::new(&self.bin, kubeconfig)
    }

    /// The kubeconfig in use.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs `kubectl ARGS`, feeding `stdin`.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> anyhow::Result<Outcome> {
        let mut child = Command::new(&self.bin)
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting kubectl {}", args.join(" ")))?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes()).context("writing kubectl's stdin")?;
        }
        let out = child.wait_with_output().context("waiting for kubectl")?;
        Ok(Outcome {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            returned: Instant::now(),
        })
    }

    /// Runs `kubectl ARGS` and fails unless it exits 0; returns stdout.
    pub fn ok(&self, args: &[&str]) -> anyhow::Result<String> {
        self.run(args, None)?.success(&format!("kubectl {}", args.join(" ")))
    }

    /// `kubectl apply -f -` of `json`, failing unless it exits 0.
    pub fn apply_json(&self, json: &serde_json::Value) -> anyhow::Result<Outcome> {
        let text = serde_json::to_string(json).context("encoding an object")?;
        let out = self.run(&["apply", "-f", "-"], Some(&text))?;
        if !out.ok {
            anyhow::bail!("kubectl apply failed: {}", out.printed());
        }
        Ok(out)
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> anyhow::Result<serde_json::Value> {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        let text = self.ok(&all)?;
        serde_json::from_str(&text).with_context(|| format!("parsing kubectl {}", all.join(" ")))
    }
}
