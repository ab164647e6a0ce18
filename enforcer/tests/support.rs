//! Shared helpers for tests that need root, iptables and ipset: a scratch
//! network namespace and an executor that runs inside it.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};

use std::path::PathBuf;

use tierguard_enforcer::exec::{ExecError, Executor, HostExecutor};
use tierguard_enforcer::load::load;
use tierguard_enforcer::sync::NodeIdentity;

/// The cluster of `tests/fixtures/<folder>` as node-a sees it, with node-a's addresses.
pub fn load_fixture(folder: &str) -> (tierguard::Cluster, NodeIdentity) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(folder);
    let (cluster, addresses) = load(&[path], "node-a").unwrap_or_else(|e| panic!("{e}"));
    (
        cluster,
        NodeIdentity {
            name: "node-a".into(),
            addresses,
        },
    )
}

/// Runs every program inside a network namespace.
#[derive(Clone, Debug)]
pub struct NetnsExecutor {
    pub netns: String,
}

impl Executor for NetnsExecutor {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        let mut full = vec![
            "netns".to_string(),
            "exec".to_string(),
            self.netns.clone(),
            program.to_string(),
        ];
        full.extend(args.iter().cloned());
        HostExecutor.run("ip", &full, stdin)
    }
}

/// A network namespace deleted on drop.
pub struct Scratch {
    pub exec: NetnsExecutor,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

fn have(program: &str) -> bool {
    std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Why root tests cannot run here, if they cannot.
fn missing() -> Option<String> {
    let uid = std::process::Command::new("id").arg("-u").output();
    if !uid.is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0") {
        return Some("not root".into());
    }
    for program in ["iptables", "iptables-nft-restore", "ipset", "ip"] {
        let ok = if program == "ip" {
            std::process::Command::new("ip")
                .arg("-V")
                .output()
                .is_ok_and(|o| o.status.success())
        } else {
            have(program)
        };
        if !ok {
            return Some(format!("{program} is missing"));
        }
    }
    None
}

impl Scratch {
    /// A fresh namespace, or `None` (with the reason printed) when the test cannot run here.
    /// Panics when CI=true and the test cannot run: CI must not skip it silently.
    pub fn new() -> Option<Scratch> {
        if let Some(reason) = missing() {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but this root test cannot run: {reason}");
            }
            eprintln!("SKIPPED: {reason}");
            return None;
        }
        let name = format!(
            "tg-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let out = std::process::Command::new("ip").args(["netns", "add", &name]).output();
        assert!(out.is_ok_and(|o| o.status.success()), "ip netns add {name} failed");
        Some(Scratch {
            exec: NetnsExecutor { netns: name },
        })
    }

    pub fn run(&self, program: &str, args: &[&str]) -> String {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        match self.exec.run(program, &args, None) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        }
    }

    /// `iptables-save -t filter` without counters and comments (comparable across time).
    pub fn filter_table(&self) -> String {
        self.run("iptables-save", &["-t", "filter"])
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| {
                if l.starts_with(':') {
                    l.split(" [").next().unwrap_or(l)
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn sets(&self) -> Vec<String> {
        self.run("ipset", &["list", "-n"]).lines().map(str::to_string).collect()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "delete", &self.exec.netns])
            .output();
    }
}
