//! Applying rendered text to the kernel, incrementally: a plan (pure: which
//! sets and chains differ from what was applied last) and its execution
//! through an [`Executor`] (sets first, then one atomic `iptables-restore
//! --noflush`, then stale sets).
//!
//! The applier keeps a hash of every chain and set it applied. A chain
//! declared as `:TG-X - [0:0]` in a `--noflush` restore is flushed and
//! refilled within that one transaction, so only changed chains are
//! declared. Sets are never flushed in place: a changed set is built under a
//! scratch name and swapped in. Chains and sets found on the node at start
//! (a restart) are adopted with an unknown hash: they stay in force until
//! the first sync rewrites them atomically.
//!
//! An applier serves one address family: IPv4 (`iptables-*`, the `tg-`
//! sets of `family inet`) or IPv6 (`ip6tables-*`, `tg-local6` and `tg-6-`
//! sets of `family inet6`); the two keep separate hashes and never touch
//! each other's chains or sets.

pub mod backend;

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::hash::{Hash, Hasher};

use crate::compile::Family;
use crate::exec::{ExecError, Executor};
use crate::naming;
use crate::render::{Rendered, RenderedSet, forward_jump, set_options};
use backend::Backend;

/// A failed step of an apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A restore script was refused; nothing of it (iptables) or the sets up
    /// to the failing line (ipset) took effect.
    #[error("{tool} failed{}: {}", .line.map(|l| format!(" at line {l}")).unwrap_or_default(), .text.as_ref().map(|t| format!("`{t}`: {}", .stderr.trim())).unwrap_or_else(|| .stderr.trim().to_string()))]
    Restore {
        /// the program
        tool: String,
        /// 1-based line of the script the tool reported
        line: Option<usize>,
        /// that line's text
        text: Option<String>,
        /// what the tool said
        stderr: String,
    },
    /// A command failed.
    #[error(transparent)]
    Exec(#[from] ExecError),
}

/// The line number in a restore tool's error (`line 5 failed`, `Error in line 3:`).
pub fn failing_line(stderr: &str) -> Option<usize> {
    let lower = stderr.to_ascii_lowercase();
    let mut rest = lower.as_str();
    while let Some(at) = rest.find("line ") {
        let after = &rest[at + 5..];
        let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(n) = digits.parse() {
            return Some(n);
        }
        rest = after;
    }
    None
}

fn restore_error(tool: &str, script: &str, err: ExecError) -> ApplyError {
    if err.code.is_none() {
        return ApplyError::Exec(err);
    }
    let line = failing_line(&err.stderr);
    let text = line
        .and_then(|n| script.lines().nth(n.checked_sub(1)?))
        .map(str::to_string);
    ApplyError::Restore {
        tool: tool.to_string(),
        line,
        text,
        stderr: err.stderr,
    }
}

fn hash_of<T: Hash>(value: &T) -> u64 {
    let mut h = DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

/// What one apply must do to go from the applied state to the rendered one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// `ipset restore` script building and swapping changed sets (empty: none)
    pub set_script: String,
    /// sets it rebuilds
    pub sets_written: Vec<String>,
    /// `iptables-restore --noflush` script (empty: nothing to do)
    pub rule_script: String,
    /// chains it declares and refills
    pub chains_written: Vec<String>,
    /// chains it deletes
    pub chains_removed: Vec<String>,
    /// sets to destroy once the rules no longer use them
    pub sets_removed: Vec<String>,
}

/// What is in force: names with the hash of their content (`None`: adopted, content unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// chains
    pub chains: BTreeMap<String, Option<u64>>,
    /// sets
    pub sets: BTreeMap<String, Option<u64>>,
}

fn set_script(out: &mut String, name: &str, set: &RenderedSet, family: Family) {
    let tmp = naming::tmp_set(name);
    let kind = set.kind.as_str();
    let options = set_options(family);
    let _ = writeln!(out, "create {tmp} {kind} {options} -exist");
    let _ = writeln!(out, "flush {tmp}");
    for entry in &set.entries {
        let _ = writeln!(out, "add {tmp} {entry}");
    }
    let _ = writeln!(out, "create {name} {kind} {options} -exist");
    let _ = writeln!(out, "swap {tmp} {name}");
    let _ = writeln!(out, "destroy {tmp}");
}

impl AppliedState {
    /// The plan that brings the node from this state to `desired`.
    pub fn plan(&self, desired: &Rendered) -> Plan {
        let mut plan = Plan::default();
        for (name, set) in &desired.sets {
            if self.sets.get(name).copied().flatten() != Some(hash_of(set)) {
                set_script(&mut plan.set_script, name, set, desired.family);
                plan.sets_written.push(name.clone());
            }
        }
        plan.sets_removed = self
            .sets
            .keys()
            .filter(|name| !desired.sets.contains_key(*name))
            .cloned()
            .collect();
        for (name, rules) in &desired.chains {
            if self.chains.get(name).copied().flatten() != Some(hash_of(rules)) {
                plan.chains_written.push(name.clone());
            }
        }
        plan.chains_removed = self
            .chains
            .keys()
            .filter(|name| !desired.chains.contains_key(*name))
            .cloned()
            .collect();
        if !plan.chains_written.is_empty() || !plan.chains_removed.is_empty() {
            let script = &mut plan.rule_script;
            script.push_str("*filter\n");
            for name in plan.chains_written.iter().chain(&plan.chains_removed) {
                let _ = writeln!(script, ":{name} - [0:0]");
            }
            for name in &plan.chains_written {
                for rule in desired.chains.get(name).into_iter().flatten() {
                    let _ = writeln!(script, "-A {name} {rule}");
                }
            }
            for name in &plan.chains_removed {
                let _ = writeln!(script, "-X {name}");
            }
            script.push_str("COMMIT\n");
        }
        plan
    }
}

/// Chains and jumps found in an `iptables-save -t filter` output.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedFilter {
    /// TG- chains declared
    pub chains: BTreeSet<String>,
    /// rules of chains that are not ours that jump to ours (`-A FORWARD ... -j TG-FORWARD`),
    /// as the rule spec after `-A`
    pub jumps: Vec<String>,
}

/// Reads the enforcer's chains from `iptables-save -t filter` output.
pub fn parse_save(save: &str) -> SavedFilter {
    let mut out = SavedFilter::default();
    let mut in_filter = false;
    for line in save.lines() {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            continue;
        }
        if !in_filter {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if naming::is_owned_chain(name) {
                out.chains.insert(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            let jumps_to_ours = rule
                .split_whitespace()
                .collect::<Vec<_>>()
                .windows(2)
                .any(|w| (w[0] == "-j" || w[0] == "-g") && naming::is_owned_chain(w[1]));
            if !naming::is_owned_chain(chain) && jumps_to_ours {
                out.jumps.push(rule.to_string());
            }
        }
    }
    out
}

/// The applier: the applied state plus the means to change it.
#[derive(Debug)]
pub struct Applier {
    backend: Backend,
    family: Family,
    /// what is in force
    pub state: AppliedState,
}

/// What an apply did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// chains rewritten
    pub chains_written: usize,
    /// chains deleted
    pub chains_removed: usize,
    /// sets rebuilt
    pub sets_written: usize,
    /// sets destroyed
    pub sets_removed: usize,
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

impl Applier {
    /// An IPv4 applier that believes nothing is applied.
    pub fn new(backend: Backend) -> Applier {
        Applier::for_family(backend, Family::V4)
    }

    /// An applier of `family` that believes nothing is applied.
    pub fn for_family(backend: Backend, family: Family) -> Applier {
        Applier {
            backend,
            family,
            state: AppliedState::default(),
        }
    }

    /// The address family it applies.
    pub fn family(&self) -> Family {
        self.family
    }

    fn program(&self, tool: &str) -> String {
        self.backend.program_for(self.family, tool)
    }

    fn set_tool(&self) -> &'static str {
        match self.family {
            Family::V4 => "ipset restore",
            Family::V6 => "ipset restore (inet6)",
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    fn save(&self, executor: &dyn Executor) -> Result<SavedFilter, ApplyError> {
        let save = executor.run(&self.program("-save"), &args(&["-t", "filter"]), None)?;
        Ok(parse_save(&save))
    }

    /// The enforcer's sets of this applier's family on the node.
    fn list_sets(&self, executor: &dyn Executor) -> Result<Vec<String>, ApplyError> {
        let list = executor.run("ipset", &args(&["list", "-n"]), None)?;
        Ok(list
            .lines()
            .map(str::trim)
            .filter(|n| naming::is_owned_set(n) && naming::set_family(n) == self.family)
            .map(str::to_string)
            .collect())
    }

    /// Adopts the TG- chains and tg- sets already on the node (after a restart) with
    /// unknown content, so the next apply rewrites them in place, without a window
    /// where nothing is enforced. Leftover scratch sets are destroyed.
    pub fn adopt(&mut self, executor: &dyn Executor) -> Result<(), ApplyError> {
        let saved = self.save(executor)?;
        self.state.chains = saved.chains.into_iter().map(|c| (c, None)).collect();
        self.state.sets.clear();
        for name in self.list_sets(executor)? {
            if name.starts_with(naming::TMP_SET_PREFIX) {
                if let Err(e) = executor.run("ipset", &args(&["destroy", &name]), None) {
                    tracing::warn!(set = %name, error = %e, "could not destroy a leftover scratch set");
                }
            } else {
                self.state.sets.insert(name, None);
            }
        }
        Ok(())
    }

    /// Forgets the content hashes, so the next apply rewrites every chain and set (drift repair).
    pub fn invalidate(&mut self) {
        self.state.chains.values_mut().for_each(|h| *h = None);
        self.state.sets.values_mut().for_each(|h| *h = None);
    }

    /// Brings the node to `desired`. On error, the chains in force are the previous ones.
    pub fn apply(&mut self, executor: &dyn Executor, desired: &Rendered) -> Result<ApplyReport, ApplyError> {
        let plan = self.state.plan(desired);
        if !plan.set_script.is_empty() {
            let result = executor.run("ipset", &args(&["restore"]), Some(&plan.set_script));
            if let Err(err) = result {
                // Some swaps may have happened: rebuild every set of this plan next time.
                for name in &plan.sets_written {
                    self.state.sets.insert(name.clone(), None);
                }
                return Err(restore_error(self.set_tool(), &plan.set_script, err));
            }
            for name in &plan.sets_written {
                let hash = desired.sets.get(name).map(hash_of);
                self.state.sets.insert(name.clone(), hash);
            }
        }
        if !plan.rule_script.is_empty() {
            let tool = self.program("-restore");
            executor
                .run(&tool, &args(&["--noflush", "-w"]), Some(&plan.rule_script))
                .map_err(|e| restore_error(&tool, &plan.rule_script, e))?;
            for name in &plan.chains_written {
                let hash = desired.chains.get(name).map(hash_of);
                self.state.chains.insert(name.clone(), hash);
            }
            for name in &plan.chains_removed {
                self.state.chains.remove(name);
            }
        }
        self.ensure_jump(executor)?;
        let mut sets_removed = 0;
        for name in &plan.sets_removed {
            match executor.run("ipset", &args(&["destroy", name]), None) {
                Ok(_) => {
                    self.state.sets.remove(name);
                    sets_removed += 1;
                }
                // Still referenced by something: kept in the state, retried next sync.
                Err(e) => tracing::warn!(set = %name, error = %e, "could not destroy a stale set"),
            }
        }
        Ok(ApplyReport {
            chains_written: plan.chains_written.len(),
            chains_removed: plan.chains_removed.len(),
            sets_written: plan.sets_written.len(),
            sets_removed,
        })
    }

    /// Inserts `FORWARD -j TG-FORWARD` at the top unless it is there.
    fn ensure_jump(&self, executor: &dyn Executor) -> Result<(), ApplyError> {
        let program = self.program("");
        let mut check = args(&["-w", "-C", "FORWARD"]);
        check.extend(forward_jump());
        if executor.run(&program, &check, None).is_ok() {
            return Ok(());
        }
        let mut insert = args(&["-w", "-I", "FORWARD", "1"]);
        insert.extend(forward_jump());
        executor.run(&program, &insert, None)?;
        Ok(())
    }

    /// Removes the jumps into TG- chains, every TG- chain and every tg- set of its family.
    pub fn cleanup(&mut self, executor: &dyn Executor) -> Result<ApplyReport, ApplyError> {
        let saved = self.save(executor)?;
        let mut report = ApplyReport::default();
        if !saved.chains.is_empty() || !saved.jumps.is_empty() {
            let mut script = String::from("*filter\n");
            for jump in &saved.jumps {
                let _ = writeln!(script, "-D {jump}");
            }
            for chain in &saved.chains {
                let _ = writeln!(script, ":{chain} - [0:0]");
            }
            for chain in &saved.chains {
                let _ = writeln!(script, "-X {chain}");
            }
            script.push_str("COMMIT\n");
            let tool = self.program("-restore");
            executor
                .run(&tool, &args(&["--noflush", "-w"]), Some(&script))
                .map_err(|e| restore_error(&tool, &script, e))?;
            report.chains_removed = saved.chains.len();
        }
        self.state.chains.clear();
        for name in self.list_sets(executor)? {
            executor.run("ipset", &args(&["destroy", &name]), None)?;
            report.sets_removed += 1;
        }
        self.state.sets.clear();
        Ok(report)
    }
}
