//! Long-running processes of the end-to-end test (etcd, the API server, the
//! controller manager, the webhook, the node agents): each logs to a file of
//! the run folder and is stopped when dropped, also when the test fails.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A child process that is stopped (SIGTERM, then SIGKILL) when dropped.
#[derive(Debug)]
pub struct Managed {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Managed {
    /// Starts `command`, its stdout and stderr appended to `log`.
    pub fn spawn(name: &str, mut command: Command, log: &Path) -> anyhow::Result<Managed> {
        let out = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log file")?;
        let child = command
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        Ok(Managed {
            name: name.to_string(),
            child: Some(child),
            log: log.to_path_buf(),
        })
    }

    /// Starts `command` with its output copied to `log` line by line; the
    /// moment each output line containing `marker` is read is recorded in
    /// the returned [`Stamps`] (e.g. the agent's "synced" lines).
    pub fn spawn_stamped(
        name: &str,
        mut command: Command,
        log: &Path,
        marker: &'static str,
    ) -> anyhow::Result<(Managed, Stamps)> {
        let mut file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("opening {}", log.display()))?;
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {name}: {command:?}"))?;
        let stamps = Stamps::default();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        for pipe in [
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        {
            let (tx, stamps) = (tx.clone(), stamps.clone());
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    if line.contains(marker) {
                        stamps.push(Instant::now());
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            });
        }
        drop(tx);
        std::thread::spawn(move || {
            for line in rx {
                let _ = writeln!(file, "{line}");
            }
        });
        Ok((
            Managed {
                name: name.to_string(),
                child: Some(child),
                log: log.to_path_buf(),
            },
            stamps,
        ))
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// Sends `signal` and waits up to `grace` for the exit, then kills it.
    pub fn stop_with(&mut self, signal: Signal, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// SIGTERM, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        self.stop_with(Signal::SIGTERM, Duration::from_secs(10));
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for Managed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The last `lines` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Polls `check` every `every` until it returns `Ok(Some(_))` or `timeout`
/// passes; the last error or "timed out" otherwise.
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    every: Duration,
    mut check: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = Instant::now() + timeout;
    let mut last = None;
    loop {
        match check() {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last = Some(e),
        }
        if Instant::now() >= deadline {
            return Err(match last {
                Some(e) => e.context(format!("{what}: still failing after {timeout:?}")),
                None => anyhow::anyhow!("{what}: not done after {timeout:?}"),
            });
        }
        std::thread::sleep(every);
    }
}

/// When marked output lines were read, in order.
#[derive(Clone, Debug, Default)]
pub struct Stamps(Arc<Mutex<Vec<Instant>>>);

impl Stamps {
    fn push(&self, at: Instant) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(at);
    }

    /// The stamps later than `since`.
    pub fn after(&self, since: Instant) -> Vec<Instant> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .copied()
            .filter(|t| *t > since)
            .collect()
    }
}
