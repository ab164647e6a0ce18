//! Applying rendered text to the kernel, incrementally: a plan (pure: which
//! sets and chains differ from what was applied last) and its execution
//! through an [`Executor`] (sets first, then one atomic `iptables-restore
//! --noflush`, then sets no rule uses any more).
//!
//! The applier keeps a hash of every chain and set it applied. A chain
//! declared as `:TG-X - [0:0]` in a `--noflush` restore is flushed and
//! refilled within that one transaction, so only changed chains are
//! declared. A set in force is never changed: each set has two names, its
//! rendered one (`tg-X`) and a B name (`tg-X-b`); a changed set is built
//! under the name its rules do not use, and the same restore that rewrites
//! the rules switches them to it. So a failed or killed apply leaves the
//! previous rules matching the previous members, and a packet sees either
//! the old rules with the old sets or the new rules with the new sets, never
//! a mix. Chains and sets found on the node at start (a restart) are adopted
//! with an unknown hash: they stay in force until the first sync rewrites
//! them atomically.
//!
//! An applier serves one address family: IPv4 (`iptables-*`, the `tg-`
//! sets of `family inet`) or IPv6 (`ip6tables-*`, `tg-local6` and `tg-6-`
//! sets of `family inet6`); the two keep separate hashes and never touch
//! each other's chains or sets.

pub mod backend;

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::hash::{Hash, Hasher};

use crate::exec::{ExecError, Executor};
use crate::naming;
use crate::render::{Rendered, RenderedSet, forward_jump, set_options};
use crate::ruleset::Family;
use backend::Backend;

/// A failed step of an apply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// A restore script was refused; nothing of it (iptables) or the sets up
    /// to the failing line (ipset, sets no rule uses yet) took effect.
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
    /// `ipset restore` script building changed sets under the name no rule uses (empty: none)
    pub set_script: String,
    /// sets it rebuilds, by rendered name
    pub sets_written: Vec<String>,
    /// every set of the rendered state: rendered name, the name it is in force under
    /// once the rule script is committed, and the hash of its content
    pub sets: Vec<(String, String, u64)>,
    /// `iptables-restore --noflush` script (empty: nothing to do)
    pub rule_script: String,
    /// chains it declares and refills
    pub chains_written: Vec<String>,
    /// the hash of each chain of the rendered state, with set names as in force
    pub chain_hashes: Vec<(String, u64)>,
    /// chains it deletes
    pub chains_removed: Vec<String>,
    /// sets no longer rendered, by rendered name
    pub sets_removed: Vec<String>,
    /// set names on the node to destroy once the rules no longer use them: the
    /// previous names of rebuilt sets, the sets no longer rendered, and spares
    pub sets_to_destroy: Vec<String>,
}

/// What is in force: names with the hash of their content (`None`: adopted, content unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// chains
    pub chains: BTreeMap<String, Option<u64>>,
    /// sets, by rendered name
    pub sets: BTreeMap<String, Option<u64>>,
    /// the rendered names of the sets in force under their B name (the others are under their own)
    pub b_side: BTreeSet<String>,
    /// the enforcer's sets on the node that no rule in force uses: built by an apply
    /// that failed or was killed, or replaced by a rebuilt one; destroyed after the
    /// next rule restore (or rebuilt and used)
    pub spare: BTreeSet<String>,
}

fn set_script(out: &mut String, name: &str, set: &RenderedSet, family: Family) {
    let kind = set.kind.as_str();
    let options = set_options(family);
    // `name` is no rule's: a spare left by an earlier apply may hold anything.
    let _ = writeln!(out, "create {name} {kind} {options} -exist");
    let _ = writeln!(out, "flush {name}");
    for entry in &set.entries {
        let _ = writeln!(out, "add {name} {entry}");
    }
}

const MATCH_SET: &str = "--match-set ";

/// `rule` with each set it matches (`--match-set NAME`) under the name in `names`
/// (rendered name -> name in force), when it has one there.
fn with_set_names<'r>(rule: &'r str, names: &BTreeMap<&str, &str>) -> Cow<'r, str> {
    if names.is_empty() || !rule.contains(MATCH_SET) {
        return Cow::Borrowed(rule);
    }
    let mut out = String::with_capacity(rule.len() + 8);
    let mut rest = rule;
    while let Some(at) = rest.find(MATCH_SET) {
        let (head, tail) = rest.split_at(at + MATCH_SET.len());
        out.push_str(head);
        let end = tail.find(' ').unwrap_or(tail.len());
        let set = &tail[..end];
        out.push_str(names.get(set).copied().unwrap_or(set));
        rest = &tail[end..];
    }
    out.push_str(rest);
    Cow::Owned(out)
}

impl AppliedState {
    /// The name the set rendered as `name` is in force under (whether or not it is in force).
    pub fn name_in_force(&self, name: &str) -> String {
        if self.b_side.contains(name) {
            naming::other_side_name(name)
        } else {
            name.to_string()
        }
    }

    /// The plan that brings the node from this state to `desired`.
    pub fn plan(&self, desired: &Rendered) -> Plan {
        let mut plan = Plan::default();
        // Rendered name -> name in force after this plan, for the sets not under their rendered name.
        let mut renamed: BTreeMap<&str, String> = BTreeMap::new();
        let mut used_after: BTreeSet<String> = BTreeSet::new();
        for (name, set) in &desired.sets {
            let hash = hash_of(set);
            let applied = self.sets.get(name).copied();
            let current = self.name_in_force(name);
            let target = match applied {
                Some(Some(h)) if h == hash => current,
                Some(_) => {
                    // In force under `current`: built under its other name, used from the rule restore on.
                    let other = naming::other_side_name(&current);
                    set_script(&mut plan.set_script, &other, set, desired.family);
                    plan.sets_written.push(name.clone());
                    plan.sets_to_destroy.push(current);
                    other
                }
                None => {
                    set_script(&mut plan.set_script, name, set, desired.family);
                    plan.sets_written.push(name.clone());
                    name.clone()
                }
            };
            if target != *name {
                renamed.insert(name, target.clone());
            }
            used_after.insert(target.clone());
            plan.sets.push((name.clone(), target, hash));
        }
        for name in self.sets.keys().filter(|name| !desired.sets.contains_key(*name)) {
            plan.sets_removed.push(name.clone());
            plan.sets_to_destroy.push(self.name_in_force(name));
        }
        plan.sets_to_destroy
            .extend(self.spare.iter().filter(|s| !used_after.contains(*s)).cloned());

        let names: BTreeMap<&str, &str> = renamed.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut chain_rules: Vec<(&String, Vec<Cow<str>>)> = Vec::new();
        for (name, rules) in &desired.chains {
            let rules: Vec<Cow<str>> = rules.iter().map(|r| with_set_names(r, &names)).collect();
            let hash = hash_of(&rules);
            plan.chain_hashes.push((name.clone(), hash));
            if self.chains.get(name).copied().flatten() != Some(hash) {
                plan.chains_written.push(name.clone());
                chain_rules.push((name, rules));
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
            for (name, rules) in &chain_rules {
                for rule in rules {
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
    /// sets our chains match (`--match-set NAME`), as named on the node
    pub sets_used: BTreeSet<String>,
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
            if naming::is_owned_chain(chain) {
                let words: Vec<&str> = rule.split_whitespace().collect();
                for pair in words.windows(2) {
                    if pair[0] == MATCH_SET.trim_end() && naming::is_owned_set(pair[1]) {
                        out.sets_used.insert(pair[1].to_string());
                    }
                }
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
    /// a rule restore ended without telling whether it committed: read the node again first
    readopt: bool,
    /// how long iptables waits for the xtables lock
    xtables_wait: XtablesWait,
}

/// How long the iptables tools wait for the xtables lock (`/run/xtables.lock`),
/// which the legacy backend takes for every change; nf_tables commits are
/// transactions and take no lock. When the wait runs out the tool changes
/// nothing and fails, so the sync fails and is retried; the rules in force stay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XtablesWait {
    /// longest wait, in whole seconds (at least 1)
    pub seconds: u32,
    /// how often the lock is tried meanwhile, in microseconds
    pub interval_micros: u32,
}

impl Default for XtablesWait {
    /// What kube-proxy uses: 5 seconds, tried every 100 ms.
    fn default() -> Self {
        XtablesWait {
            seconds: 5,
            interval_micros: 100_000,
        }
    }
}

impl XtablesWait {
    /// `-w SECONDS -W MICROS`.
    pub fn args(self) -> Vec<String> {
        vec![
            "-w".to_string(),
            self.seconds.max(1).to_string(),
            "-W".to_string(),
            self.interval_micros.to_string(),
        ]
    }
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
            readopt: false,
            xtables_wait: XtablesWait::default(),
        }
    }

    /// The applier with `wait` as its xtables lock wait.
    pub fn with_xtables_wait(mut self, wait: XtablesWait) -> Applier {
        self.xtables_wait = wait;
        self
    }

    fn restore_args(&self) -> Vec<String> {
        let mut out = vec!["--noflush".to_string()];
        out.extend(self.xtables_wait.args());
        out
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
    /// where nothing is enforced. A set is in force under the name our chains match
    /// it by; our sets no chain matches are spares (left by an apply that was killed
    /// or failed), destroyed after the next rule restore. Scratch sets of earlier
    /// versions are destroyed.
    pub fn adopt(&mut self, executor: &dyn Executor) -> Result<(), ApplyError> {
        let saved = self.save(executor)?;
        let mut state = AppliedState {
            chains: saved.chains.into_iter().map(|c| (c, None)).collect(),
            ..AppliedState::default()
        };
        for name in self.list_sets(executor)? {
            if name.starts_with(naming::TMP_SET_PREFIX) {
                if let Err(e) = executor.run("ipset", &args(&["destroy", &name]), None) {
                    tracing::warn!(set = %name, error = %e, "could not destroy a leftover scratch set");
                }
            } else if saved.sets_used.contains(&name) {
                let rendered = naming::rendered_set_name(&name).to_string();
                if rendered != name {
                    state.b_side.insert(rendered.clone());
                }
                state.sets.insert(rendered, None);
            } else {
                state.spare.insert(name);
            }
        }
        self.state = state;
        self.readopt = false;
        Ok(())
    }

    /// Forgets the content hashes, so the next apply rewrites every chain and set (drift repair).
    pub fn invalidate(&mut self) {
        self.state.chains.values_mut().for_each(|h| *h = None);
        self.state.sets.values_mut().for_each(|h| *h = None);
    }

    /// Brings the node to `desired`. On error, the chains in force are the previous
    /// ones, matching the previous sets.
    pub fn apply(&mut self, executor: &dyn Executor, desired: &Rendered) -> Result<ApplyReport, ApplyError> {
        if self.readopt {
            self.adopt(executor)?;
        }
        let plan = self.state.plan(desired);
        if !plan.set_script.is_empty() {
            // No rule uses what this script builds until the rule restore commits.
            let written: BTreeSet<&String> = plan.sets_written.iter().collect();
            for (name, target, _) in &plan.sets {
                if written.contains(name) {
                    self.state.spare.insert(target.clone());
                }
            }
            executor
                .run("ipset", &args(&["restore"]), Some(&plan.set_script))
                .map_err(|e| restore_error(self.set_tool(), &plan.set_script, e))?;
        }
        if !plan.rule_script.is_empty() {
            let tool = self.program("-restore");
            if let Err(e) = executor.run(&tool, &self.restore_args(), Some(&plan.rule_script)) {
                // Killed or not started: whether it committed is unknown, the node tells.
                self.readopt = e.code.is_none();
                return Err(restore_error(&tool, &plan.rule_script, e));
            }
        }
        for (name, hash) in &plan.chain_hashes {
            self.state.chains.insert(name.clone(), Some(*hash));
        }
        for name in &plan.chains_removed {
            self.state.chains.remove(name);
        }
        for name in &plan.sets_removed {
            self.state.sets.remove(name);
            self.state.b_side.remove(name);
        }
        for (name, target, hash) in &plan.sets {
            self.state.sets.insert(name.clone(), Some(*hash));
            if *target == *name {
                self.state.b_side.remove(name);
            } else {
                self.state.b_side.insert(name.clone());
            }
            self.state.spare.remove(target);
        }
        self.state.spare.extend(plan.sets_to_destroy.iter().cloned());
        self.ensure_jump(executor)?;
        let mut sets_removed = 0;
        let removed: BTreeSet<&str> = plan.sets_removed.iter().map(String::as_str).collect();
        for name in &plan.sets_to_destroy {
            match executor.run("ipset", &args(&["destroy", name]), None) {
                Ok(_) => {
                    self.state.spare.remove(name);
                    if removed.contains(naming::rendered_set_name(name)) {
                        sets_removed += 1;
                    }
                }
                // Still referenced by something: kept as a spare, retried next sync.
                Err(e) => tracing::warn!(set = %name, error = %e, "could not destroy a set no rule uses"),
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
        let mut check = self.xtables_wait.args();
        check.extend(args(&["-C", "FORWARD"]));
        check.extend(forward_jump());
        if executor.run(&program, &check, None).is_ok() {
            return Ok(());
        }
        let mut insert = self.xtables_wait.args();
        insert.extend(args(&["-I", "FORWARD", "1"]));
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
                .run(&tool, &self.restore_args(), Some(&script))
                .map_err(|e| restore_error(&tool, &script, e))?;
            report.chains_removed = saved.chains.len();
        }
        self.state.chains.clear();
        for name in self.list_sets(executor)? {
            executor.run("ipset", &args(&["destroy", &name]), None)?;
            report.sets_removed += 1;
        }
        self.state = AppliedState::default();
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ruleset::SetKind;

    fn rendered(members: &[&str]) -> Rendered {
        let mut out = Rendered::default();
        out.sets.insert(
            "tg-local".into(),
            RenderedSet {
                kind: SetKind::HashNet,
                entries: members.iter().map(|m| m.to_string()).collect(),
            },
        );
        out.chains.insert(
            "TG-FORWARD".into(),
            vec!["-m set ! --match-set tg-local src -m set ! --match-set tg-local dst -j RETURN".into()],
        );
        out
    }

    /// The state after `plan` committed.
    fn committed(state: &AppliedState, plan: &Plan) -> AppliedState {
        let mut next = state.clone();
        next.chains = plan.chain_hashes.iter().map(|(c, h)| (c.clone(), Some(*h))).collect();
        next.sets.clear();
        next.b_side.clear();
        for (name, target, hash) in &plan.sets {
            next.sets.insert(name.clone(), Some(*hash));
            if target != name {
                next.b_side.insert(name.clone());
            }
        }
        next
    }

    #[test]
    fn a_changed_set_alternates_names_and_its_rules_follow() {
        let first = AppliedState::default().plan(&rendered(&["10.0.0.1"]));
        assert!(
            first.set_script.contains("create tg-local hash:net"),
            "{}",
            first.set_script
        );
        assert!(
            first.rule_script.contains("! --match-set tg-local src"),
            "{}",
            first.rule_script
        );
        let state = committed(&AppliedState::default(), &first);
        assert_eq!(state.plan(&rendered(&["10.0.0.1"])).rule_script, "");

        let second = state.plan(&rendered(&["10.0.0.1", "10.0.0.2"]));
        assert!(
            !second.set_script.contains("tg-local "),
            "the set in force is untouched: {}",
            second.set_script
        );
        assert!(
            second.set_script.contains("add tg-local-b 10.0.0.2"),
            "{}",
            second.set_script
        );
        assert!(
            second
                .rule_script
                .contains("! --match-set tg-local-b src -m set ! --match-set tg-local-b dst"),
            "{}",
            second.rule_script
        );
        assert_eq!(second.sets_to_destroy, ["tg-local"]);
        let state = committed(&state, &second);
        assert_eq!(state.plan(&rendered(&["10.0.0.1", "10.0.0.2"])).rule_script, "");

        let third = state.plan(&rendered(&["10.0.0.2"]));
        assert!(
            third.set_script.contains("add tg-local 10.0.0.2"),
            "{}",
            third.set_script
        );
        assert_eq!(third.sets_to_destroy, ["tg-local-b"]);
    }

    #[test]
    fn adopting_reads_which_name_of_a_set_the_rules_use() {
        let saved = parse_save(
            "*filter\n:TG-FORWARD - [0:0]\n-A TG-FORWARD -m set --match-set tg-local-b src -j ACCEPT\n\
             -A FORWARD -m set --match-set tg-other src -j ACCEPT\nCOMMIT\n",
        );
        assert_eq!(saved.sets_used.into_iter().collect::<Vec<_>>(), ["tg-local-b"]);
    }
}
