//! An `Executor` whose commands run inside a network namespace: the program
//! is spawned from a thread that entered the namespace, so it starts there
//! (`iptables-restore`, `ipset`, `conntrack` all act on that namespace).

use std::fs::File;

use nix::sched::CloneFlags;

use super::topology::netns_path;
use tierguard_enforcer::exec::{ExecError, Executor, HostExecutor};

/// Runs programs inside network namespace `netns` (a name under /run/netns).
#[derive(Clone, Debug)]
pub struct NetnsExecutor {
    netns: String,
}

impl NetnsExecutor {
    /// An executor for `netns`.
    pub fn new(netns: impl Into<String>) -> NetnsExecutor {
        NetnsExecutor { netns: netns.into() }
    }

    /// The namespace's name.
    pub fn netns(&self) -> &str {
        &self.netns
    }
}

impl Executor for NetnsExecutor {
    fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
        let fail = |reason: String| ExecError {
            program: program.to_string(),
            args: args.to_vec(),
            code: None,
            stderr: format!("in network namespace {}: {reason}", self.netns),
        };
        let path = netns_path(&self.netns);
        std::thread::scope(|scope| {
            let worker = std::thread::Builder::new()
                .name(format!("exec-{}", self.netns))
                .spawn_scoped(scope, || {
                    let file = File::open(&path).map_err(|e| fail(e.to_string()))?;
                    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| fail(e.to_string()))?;
                    HostExecutor.run(program, args, stdin)
                })
                .map_err(|e| fail(e.to_string()))?;
            worker.join().map_err(|_| fail("the worker thread panicked".into()))?
        })
    }
}
