//! Applying rendered text to the kernel, incrementally: a plan (pure: which
//! sets and chains differ from what was applied last) and its execution
//! through an [`Executor`] (sets first, then one atomic `iptables-restore
//! --noflush`, then sets no rule uses any more).
//!
//! The applier keeps a hash of every chain it applied, and the members of
//! every set. A chain declared as `:TG-X - [0:0]` in a `--noflush` restore is
//! flushed and refilled within that one transaction, so only changed chains
//! are declared. A set whose members changed is changed in place when that
//! is cheaper than a rebuild: its new members are added in the `ipset
//! restore` before the rule restore (so every address is in its sets before a
//! rule relies on it), its old members deleted in a second `ipset restore`
//! after the rule restore committed (so an address leaves a set only once no
//! rule of the new state wants it there). A new set, a set whose type
//! changed, one whose delta is larger than itself, or one whose content is
//! unknown is rebuilt instead: each set has two names, its rendered one
//! (`tg-X`) and a B name (`tg-X-b`); it is built under the name its rules do
//! not use, and the same restore that rewrites the rules switches them to it.
//! So a failed or killed apply leaves the previous rules in force, matching
//! the previous members plus, at most, the additions. Chains and sets found
//! on the node at start (a restart) are adopted with an unknown content:
//! they stay in force until the first sync rewrites them atomically.
//!
//! An applier serves one address family: IPv4 (`iptables-*`, the `tg-`
//! sets of `family inet`) or IPv6 (`ip6tables-*`, `tg-local6` and `tg-6-`
//! sets of `family inet6`); the two keep separate hashes and never touch
//! each other's chains or sets.

pub mod backend;

use std::borrow::Cow;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt::Write;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use crate::exec::{ExecError, Executor};
use crate::naming;
use crate::render::{Rendered, RenderedSet, forward_jump, set_options};
use crate::ruleset::{Family, SetKind};
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
    /// `ipset restore` script run before the rules: building new and rebuilt sets under
    /// the name no rule uses, and adding the new members of the sets changed in place
    /// (empty: none)
    pub set_script: String,
    /// sets it rebuilds, by rendered name
    pub sets_written: Vec<String>,
    /// sets it changes in place (members added and deleted), by rendered name
    pub sets_updated: Vec<String>,
    /// `ipset restore` script run once the rule restore committed: deleting the old
    /// members of the sets changed in place (empty: none)
    pub set_delete_script: String,
    /// members added to and deleted from sets in place
    pub members_added: usize,
    /// see `members_added`
    pub members_deleted: usize,
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

/// The members of a set in force, as this applier wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetContent {
    /// the hash of `set` (a cheap test for "unchanged")
    pub hash: u64,
    /// type and members
    pub set: RenderedSet,
}

impl SetContent {
    /// The content of `set`.
    pub fn of(set: &RenderedSet) -> SetContent {
        SetContent {
            hash: hash_of(set),
            set: set.clone(),
        }
    }
}

/// How a set in force becomes its rendered content.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SetChange<'a> {
    /// nothing to do
    Same,
    /// in place: members to add, members to delete
    Delta(Vec<&'a str>, Vec<&'a str>),
    /// under the other name, switched to by the rule restore
    Rebuild,
}

/// How `old` (the set in force; `None`: unknown) becomes `new`, whose hash is `hash`.
fn set_change<'a>(old: Option<&'a SetContent>, new: &'a RenderedSet, hash: u64) -> SetChange<'a> {
    let Some(old) = old else {
        return SetChange::Rebuild;
    };
    // As for chains, the hash decides "unchanged": comparing every member of every
    // set on every sync would cost as much as rendering them.
    if old.hash == hash {
        return SetChange::Same;
    }
    if old.set.kind != new.kind {
        return SetChange::Rebuild;
    }
    let before: HashSet<&str> = old.set.entries.iter().map(String::as_str).collect();
    let after: HashSet<&str> = new.entries.iter().map(String::as_str).collect();
    let added: Vec<&str> = new
        .entries
        .iter()
        .map(String::as_str)
        .filter(|e| !before.contains(e))
        .collect();
    let deleted: Vec<&str> = old
        .set
        .entries
        .iter()
        .map(String::as_str)
        .filter(|e| !after.contains(e))
        .collect();
    if added.is_empty() && deleted.is_empty() {
        // The same members in another order: the kernel's set is already right.
        return SetChange::Delta(added, deleted);
    }
    // A rebuild writes the whole set once; a delta larger than that is not cheaper.
    // An entry with options (`CIDR nomatch`) is one whose flag may change while its
    // address stays: an add/del by text alone could leave the other flag, so rebuild.
    if added.len() + deleted.len() > new.entries.len() || added.iter().chain(&deleted).any(|e| e.contains(' ')) {
        return SetChange::Rebuild;
    }
    SetChange::Delta(added, deleted)
}

/// What is in force: chains with the hash of their content, sets with their
/// members (`None`: adopted, or a delta failed: content unknown).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AppliedState {
    /// chains
    pub chains: BTreeMap<String, Option<u64>>,
    /// sets, by rendered name
    pub sets: BTreeMap<String, Option<SetContent>>,
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
    for entry in set.entries.iter() {
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

    /// The sets (by rendered name) that a chain whose rules change in this plan
    /// matches, set names aside: while the rule restore has not committed, the old
    /// rules of such a chain would meet the new members (old rules with new members
    /// is a verdict neither state gives), so these sets switch with the rules instead.
    fn sets_of_changed_chains<'d>(&self, desired: &'d Rendered) -> HashSet<&'d str> {
        let in_force: BTreeMap<String, String> = self
            .b_side
            .iter()
            .map(|name| (name.clone(), naming::other_side_name(name)))
            .collect();
        let names: BTreeMap<&str, &str> = in_force.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let mut out = HashSet::new();
        for (name, rules) in &desired.chains {
            let current: Vec<Cow<str>> = rules.iter().map(|r| with_set_names(r, &names)).collect();
            match self.chains.get(name) {
                Some(Some(hash)) if *hash == hash_of(&current) => continue,
                // Content unknown (adopted, or drifted): no consistent old rules to keep.
                Some(None) => continue,
                _ => {}
            }
            for rule in rules {
                let mut rest = rule.as_str();
                while let Some(at) = rest.find(MATCH_SET) {
                    let tail = &rest[at + MATCH_SET.len()..];
                    let end = tail.find(' ').unwrap_or(tail.len());
                    out.insert(&tail[..end]);
                    rest = &tail[end..];
                }
            }
        }
        out
    }

    /// The plan that brings the node from this state to `desired`.
    pub fn plan(&self, desired: &Rendered) -> Plan {
        let mut plan = Plan::default();
        // Rendered name -> name in force after this plan, for the sets not under their rendered name.
        let mut renamed: BTreeMap<&str, String> = BTreeMap::new();
        let mut used_after: BTreeSet<String> = BTreeSet::new();
        let switched_with_rules = self.sets_of_changed_chains(desired);
        // Many sets can share their members (render hands one peer's members to
        // every set that holds them): hash and diff each pair of members once.
        let mut hashes: HashMap<(SetKind, *const Vec<String>), u64> = HashMap::new();
        let mut changes: HashMap<(*const Vec<String>, *const Vec<String>), SetChange> = HashMap::new();
        for (name, set) in &desired.sets {
            let applied = self.sets.get(name);
            // The very members applied last time (render hands an unchanged set on
            // shared): their hash is known, and hashing a large set costs as much as
            // rendering it.
            let hash = match applied {
                Some(Some(content))
                    if content.set.kind == set.kind && Arc::ptr_eq(&content.set.entries, &set.entries) =>
                {
                    content.hash
                }
                _ => *hashes
                    .entry((set.kind, Arc::as_ptr(&set.entries)))
                    .or_insert_with(|| hash_of(set)),
            };
            let current = self.name_in_force(name);
            let change = applied.map(|content| match content {
                Some(old) if old.set.kind == set.kind => changes
                    .entry((Arc::as_ptr(&old.set.entries), Arc::as_ptr(&set.entries)))
                    .or_insert_with(|| set_change(Some(old), set, hash))
                    .clone(),
                _ => set_change(content.as_ref(), set, hash),
            });
            let change = match change {
                Some(SetChange::Delta(..)) if switched_with_rules.contains(name.as_str()) => Some(SetChange::Rebuild),
                change => change,
            };
            let target = match change {
                Some(SetChange::Same) => current,
                Some(SetChange::Delta(added, deleted)) => {
                    // In force and of the right type: its members change where they are.
                    for entry in &added {
                        let _ = writeln!(plan.set_script, "add {current} {entry} -exist");
                    }
                    for entry in &deleted {
                        let _ = writeln!(plan.set_delete_script, "del {current} {entry} -exist");
                    }
                    plan.members_added += added.len();
                    plan.members_deleted += deleted.len();
                    plan.sets_updated.push(name.clone());
                    current
                }
                Some(SetChange::Rebuild) => {
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

/// One line of the filter table in `iptables-save` output that the applier reads.
enum FilterLine<'a> {
    /// `:NAME POLICY [packets:bytes]`: a chain declared
    Chain(&'a str),
    /// `-A RULE`, with `RULE` split into its chain and the spec after it
    Rule {
        rule: &'a str,
        chain: &'a str,
        spec: &'a str,
    },
}

/// The chain declarations and rules of the filter table, in order; other tables skipped.
fn filter_lines(save: &str) -> impl Iterator<Item = FilterLine<'_>> {
    let mut in_filter = false;
    save.lines().filter_map(move |line| {
        if let Some(table) = line.strip_prefix('*') {
            in_filter = table == "filter";
            return None;
        }
        if !in_filter {
            return None;
        }
        if let Some(decl) = line.strip_prefix(':') {
            return Some(FilterLine::Chain(decl.split_whitespace().next().unwrap_or_default()));
        }
        let rule = line.strip_prefix("-A ")?;
        let (chain, spec) = rule.split_once(' ').unwrap_or((rule, ""));
        Some(FilterLine::Rule { rule, chain, spec })
    })
}

/// Reads the enforcer's chains from `iptables-save -t filter` output.
pub fn parse_save(save: &str) -> SavedFilter {
    let mut out = SavedFilter::default();
    for line in filter_lines(save) {
        match line {
            FilterLine::Chain(name) => {
                if naming::is_owned_chain(name) {
                    out.chains.insert(name.to_string());
                }
            }
            FilterLine::Rule { rule, chain, .. } => {
                let words: Vec<&str> = rule.split_whitespace().collect();
                let jumps_to_ours = words
                    .windows(2)
                    .any(|w| (w[0] == "-j" || w[0] == "-g") && naming::is_owned_chain(w[1]));
                if !naming::is_owned_chain(chain) && jumps_to_ours {
                    out.jumps.push(rule.to_string());
                }
                if naming::is_owned_chain(chain) {
                    for pair in words.windows(2) {
                        if pair[0] == MATCH_SET.trim_end() && naming::is_owned_set(pair[1]) {
                            out.sets_used.insert(pair[1].to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

/// A rule as option groups, whatever order and quoting `iptables-save` prints it in:
/// each group is an option with its arguments (`--match-set tg-x dst`, `! -s 10.0.0.1/32`),
/// sorted. `iptables-save` moves `-p` first and reorders some targets' options, and
/// quotes comments only when they have a space; none of that changes the groups.
fn rule_form(rule: &str) -> Vec<String> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut any = false;
    for c in rule.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            c if c.is_whitespace() && !quoted => {
                if any {
                    words.push(std::mem::take(&mut current));
                    any = false;
                }
            }
            c => {
                current.push(c);
                any = true;
            }
        }
    }
    if any {
        words.push(current);
    }
    let mut groups: Vec<String> = Vec::new();
    let mut negate = false;
    for word in words {
        if word == "!" {
            negate = true;
        } else if word.starts_with('-') && word.len() > 1 {
            groups.push(if negate { format!("! {word}") } else { word });
            negate = false;
        } else if let Some(last) = groups.last_mut() {
            last.push(' ');
            last.push_str(&word);
        } else {
            groups.push(word);
        }
    }
    groups.sort();
    groups
}

/// The comparable form of a chain's rules.
fn chain_form<S: AsRef<str>>(rules: &[S]) -> u64 {
    hash_of(&rules.iter().map(|r| rule_form(r.as_ref())).collect::<Vec<_>>())
}

/// A set member as `ipset save` prints it: the address of a host prefix without
/// its length, addresses in their canonical form, options kept.
pub fn member_form(entry: &str) -> String {
    let mut words = entry.split_whitespace();
    let first = words.next().unwrap_or_default();
    let address = if let Ok(net) = first.parse::<ipnet::IpNet>() {
        if net.prefix_len() == net.max_prefix_len() {
            net.addr().to_string()
        } else {
            net.to_string()
        }
    } else if let Ok(ip) = first.parse::<std::net::IpAddr>() {
        ip.to_string()
    } else {
        first.to_string()
    };
    let mut out = address;
    for word in words {
        out.push(' ');
        out.push_str(word);
    }
    out
}

/// A set's members, looked up by text or, failing that, by [`member_form`].
struct Members<'a> {
    text: HashSet<&'a str>,
    forms: std::cell::OnceCell<HashSet<String>>,
}

impl<'a> Members<'a> {
    fn new(list: impl Iterator<Item = &'a str>) -> Members<'a> {
        Members {
            text: list.collect(),
            forms: std::cell::OnceCell::new(),
        }
    }

    fn contains(&self, entry: &str) -> bool {
        self.text.contains(entry)
            || self
                .forms
                .get_or_init(|| self.text.iter().map(|e| member_form(e)).collect())
                .contains(&member_form(entry))
    }
}

/// The enforcer's rules as `iptables-save -t filter` prints them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedChains {
    /// TG- chains with their rule specs (after `-A NAME `)
    pub chains: BTreeMap<String, Vec<String>>,
    /// whether a rule of `FORWARD` jumps to `TG-FORWARD`
    pub jump: bool,
}

/// Reads the TG- chains' rules from `iptables-save -t filter` output.
pub fn parse_saved_chains(save: &str) -> SavedChains {
    let mut out = SavedChains::default();
    for line in filter_lines(save) {
        match line {
            FilterLine::Chain(name) => {
                if naming::is_owned_chain(name) {
                    out.chains.entry(name.to_string()).or_default();
                }
            }
            FilterLine::Rule { chain, spec, .. } => {
                if naming::is_owned_chain(chain) {
                    out.chains.entry(chain.to_string()).or_default().push(spec.to_string());
                } else if chain == "FORWARD" {
                    let words: Vec<&str> = spec.split_whitespace().collect();
                    out.jump |= words
                        .windows(2)
                        .any(|w| (w[0] == "-j" || w[0] == "-g") && w[1] == naming::FORWARD_CHAIN);
                }
            }
        }
    }
    out
}

/// A set as `ipset save` prints it (borrowing the output: at 50,000 pods it holds
/// over a million members).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SavedSet<'a> {
    /// the `create` line's words after the name (`hash:ip family inet hashsize ...`)
    pub create: Vec<String>,
    /// members as printed (after `add NAME `)
    pub members: Vec<&'a str>,
}

/// Reads the enforcer's sets from `ipset save` output.
pub fn parse_ipset_save(save: &str) -> BTreeMap<String, SavedSet<'_>> {
    let mut out: BTreeMap<String, SavedSet> = BTreeMap::new();
    for line in save.lines() {
        let mut words = line.splitn(3, ' ');
        let (verb, name, rest) = (
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default(),
            words.next().unwrap_or_default().trim(),
        );
        if !naming::is_owned_set(name) {
            continue;
        }
        match verb {
            "create" => {
                out.entry(name.to_string()).or_default().create = rest.split_whitespace().map(str::to_string).collect();
            }
            "add" => out.entry(name.to_string()).or_default().members.push(rest),
            _ => {}
        }
    }
    out
}

/// Whether a set `ipset save` created with `create` (the words after its name) has
/// type `kind` in `family`. Only those are compared: the kernel prints the hash
/// size it grew to, and its own bucket size and seed.
fn same_type(create: &[String], kind: SetKind, family: Family) -> bool {
    let family_word = match family {
        Family::V4 => "inet",
        Family::V6 => "inet6",
    };
    let kernel_family = create.windows(2).find(|w| w[0] == "family").map(|w| w[1].as_str());
    create.first().is_some_and(|k| k == kind.as_str()) && kernel_family == Some(family_word)
}

/// What a repair found on the node different from what the applier last wrote;
/// each is rewritten by the apply that follows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Repairs {
    /// chains whose rules differ (flushed, a rule added, deleted or changed), missing
    /// ones, and TG- chains this applier did not write
    pub chains: Vec<String>,
    /// set members missing (`tg-x +10.0.0.1`) or stray (`tg-x -10.0.0.9`)
    pub set_members: Vec<String>,
    /// sets missing or of another type, and tg- sets this applier did not write
    pub sets: Vec<String>,
    /// whether the `FORWARD` jump was missing
    pub jump: bool,
}

impl Repairs {
    /// Whether nothing drifted.
    pub fn is_empty(&self) -> bool {
        self.chains.is_empty() && self.set_members.is_empty() && self.sets.is_empty() && !self.jump
    }
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
    /// per chain, for the content this applier wrote (its hash), the form the kernel
    /// prints it in, where that differs from the form of the rules as written
    kernel_forms: BTreeMap<String, (u64, u64)>,
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
    /// sets changed in place
    pub sets_updated: usize,
    /// members added to sets changed in place
    pub members_added: usize,
    /// members deleted from sets changed in place
    pub members_deleted: usize,
    /// sets destroyed
    pub sets_removed: usize,
    /// bytes of restore script sent to the kernel (ipset and iptables)
    pub script_bytes: usize,
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
            kernel_forms: BTreeMap::new(),
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

    /// Forgets what is in force, so the next apply rewrites every chain and rebuilds every set.
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
            // Until the deletions are done too these sets hold neither the old members
            // nor the new ones: should this apply stop here, the next one rebuilds them.
            for name in &plan.sets_updated {
                if let Some(content) = self.state.sets.get_mut(name) {
                    *content = None;
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
        let changed: BTreeSet<&String> = plan.sets_written.iter().chain(&plan.sets_updated).collect();
        for (name, target, _) in &plan.sets {
            if changed.contains(name) {
                let content = desired.sets.get(name).map(SetContent::of);
                self.state.sets.insert(name.clone(), content);
            }
            if *target == *name {
                self.state.b_side.remove(name);
            } else {
                self.state.b_side.insert(name.clone());
            }
            self.state.spare.remove(target);
        }
        self.state.spare.extend(plan.sets_to_destroy.iter().cloned());
        if !plan.set_delete_script.is_empty() {
            // The rules that no longer want these members are committed: they may go.
            if let Err(e) = executor.run("ipset", &args(&["restore"]), Some(&plan.set_delete_script)) {
                for name in &plan.sets_updated {
                    if let Some(content) = self.state.sets.get_mut(name) {
                        *content = None;
                    }
                }
                return Err(restore_error(self.set_tool(), &plan.set_delete_script, e));
            }
        }
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
                // Gone already (destroyed by hand): nothing left to do.
                Err(e) if e.stderr.contains("does not exist") => {
                    self.state.spare.remove(name);
                }
                // Still referenced by something: kept as a spare, retried next sync.
                Err(e) => tracing::warn!(set = %name, error = %e, "could not destroy a set no rule uses"),
            }
        }
        Ok(ApplyReport {
            chains_written: plan.chains_written.len(),
            chains_removed: plan.chains_removed.len(),
            sets_written: plan.sets_written.len(),
            sets_updated: plan.sets_updated.len(),
            members_added: plan.members_added,
            members_deleted: plan.members_deleted,
            sets_removed,
            script_bytes: plan.set_script.len() + plan.rule_script.len() + plan.set_delete_script.len(),
        })
    }

    /// Compares the node with what this applier last wrote (`iptables-save -t filter`,
    /// `ipset save`), and brings it to `desired`, rewriting what changed and what
    /// drifted: chains whose rules differ, set members missing or stray (added and
    /// deleted in place), missing sets and chains, the FORWARD jump. Chains and sets
    /// of unknown content (adopted) are rewritten whole, as by [`Applier::apply`],
    /// and are not counted as repairs.
    pub fn repair(
        &mut self,
        executor: &dyn Executor,
        desired: &Rendered,
    ) -> Result<(ApplyReport, Repairs), ApplyError> {
        let sets_save = executor.run("ipset", &args(&["save"]), None)?;
        self.repair_with_sets(executor, desired, &sets_save)
    }

    /// [`Applier::repair`] with the output of `ipset save` read already (one read
    /// serves both families: an apply of one never touches the other's sets).
    pub fn repair_with_sets(
        &mut self,
        executor: &dyn Executor,
        desired: &Rendered,
        sets_save: &str,
    ) -> Result<(ApplyReport, Repairs), ApplyError> {
        if self.readopt {
            self.adopt(executor)?;
        }
        let save = executor.run(&self.program("-save"), &args(&["-t", "filter"]), None)?;
        let saved = parse_saved_chains(&save);
        let saved_sets = parse_ipset_save(sets_save);
        let repairs = self.find_drift(desired, &saved, &saved_sets);
        let report = self.apply(executor, desired)?;
        // Forms of chains that are gone are no use any more.
        let chains = &self.state.chains;
        self.kernel_forms.retain(|name, _| chains.contains_key(name));
        if !repairs.chains.is_empty() {
            // Record how the kernel prints the chains just rewritten where that is not
            // the form they were written in, so the next repair does not see drift there.
            let save = executor.run(&self.program("-save"), &args(&["-t", "filter"]), None)?;
            let after = parse_saved_chains(&save);
            let b_names = self.b_names();
            let names: BTreeMap<&str, &str> = b_names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            for name in &repairs.chains {
                let (Some(rules), Some(kernel)) = (desired.chains.get(name), after.chains.get(name)) else {
                    continue;
                };
                let written: Vec<Cow<str>> = rules.iter().map(|r| with_set_names(r, &names)).collect();
                let (ours, theirs) = (chain_form(&written), chain_form(kernel));
                if ours != theirs {
                    self.kernel_forms.insert(name.clone(), (hash_of(&written), theirs));
                }
            }
        }
        Ok((report, repairs))
    }

    /// Rendered set name -> the name it is in force under, for the sets not under their own.
    fn b_names(&self) -> BTreeMap<String, String> {
        self.state
            .b_side
            .iter()
            .map(|name| (name.clone(), naming::other_side_name(name)))
            .collect()
    }

    /// Marks in the state what differs on the node from what it says was written, so
    /// that the next plan rewrites it; returns what it marked.
    fn find_drift(
        &mut self,
        desired: &Rendered,
        saved: &SavedChains,
        saved_sets: &BTreeMap<String, SavedSet<'_>>,
    ) -> Repairs {
        let mut repairs = Repairs {
            jump: !saved.jump && self.state.chains.contains_key(naming::FORWARD_CHAIN),
            ..Repairs::default()
        };
        let b_names = self.b_names();
        let names: BTreeMap<&str, &str> = b_names.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for (name, applied) in self.state.chains.iter_mut() {
            let Some(hash) = *applied else {
                continue;
            };
            let drifted = match saved.chains.get(name) {
                None => true,
                Some(kernel) => {
                    let expected = match self.kernel_forms.get(name) {
                        Some((written, form)) if *written == hash => Some(*form),
                        _ => desired.chains.get(name).and_then(|rules| {
                            let written: Vec<Cow<str>> = rules.iter().map(|r| with_set_names(r, &names)).collect();
                            // Only what is still wanted can be compared: a chain the desired
                            // state changes is rewritten anyway.
                            (hash_of(&written) == hash).then(|| chain_form(&written))
                        }),
                    };
                    expected.is_some_and(|form| form != chain_form(kernel))
                }
            };
            if drifted {
                repairs.chains.push(name.clone());
                *applied = None;
            }
        }
        for name in saved.chains.keys() {
            if !self.state.chains.contains_key(name) {
                repairs.chains.push(name.clone());
                self.state.chains.insert(name.clone(), None);
            }
        }
        let family = self.family;
        let mut in_force: BTreeSet<String> = BTreeSet::new();
        for (name, applied) in self.state.sets.iter_mut() {
            let current = b_names.get(name).cloned().unwrap_or_else(|| name.clone());
            in_force.insert(current.clone());
            let Some(content) = applied else {
                continue;
            };
            let Some(kernel) = saved_sets.get(&current) else {
                repairs.sets.push(current);
                *applied = None;
                continue;
            };
            if !same_type(&kernel.create, content.set.kind, family) {
                repairs.sets.push(current);
                *applied = None;
                continue;
            }
            // Most members are printed as they were written (a hash:ip address): compare
            // the text first, and the canonical form only for the others.
            let present = Members::new(kernel.members.iter().copied());
            let all_there = content.set.entries.iter().all(|e| present.contains(e));
            // Members are unique on both sides: all there and as many means no stray one.
            if all_there && kernel.members.len() == content.set.entries.len() {
                continue;
            }
            let wanted = Members::new(content.set.entries.iter().map(String::as_str));
            let before = repairs.set_members.len();
            let mut entries: Vec<String> = Vec::with_capacity(content.set.entries.len());
            for entry in content.set.entries.iter() {
                if present.contains(entry) {
                    entries.push(entry.clone());
                } else {
                    repairs.set_members.push(format!("{current} +{entry}"));
                }
            }
            for member in &kernel.members {
                if !wanted.contains(member) {
                    repairs.set_members.push(format!("{current} -{member}"));
                    entries.push(member.to_string());
                }
            }
            if repairs.set_members.len() > before {
                // What the kernel holds: the plan's delta adds what is missing and
                // deletes what is stray.
                let set = RenderedSet {
                    kind: content.set.kind,
                    entries: Arc::new(entries),
                };
                *content = SetContent::of(&set);
            }
        }
        for name in saved_sets.keys() {
            if naming::set_family(name) == family
                && !name.starts_with(naming::TMP_SET_PREFIX)
                && !in_force.contains(name)
                && !self.state.spare.contains(name)
            {
                repairs.sets.push(name.clone());
                self.state.spare.insert(name.clone());
            }
        }
        repairs
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

    fn rendered(members: &[&str]) -> Rendered {
        let mut out = Rendered::default();
        out.sets.insert(
            "tg-local".into(),
            RenderedSet {
                kind: SetKind::HashNet,
                entries: Arc::new(members.iter().map(|m| m.to_string()).collect()),
            },
        );
        out.chains.insert(
            "TG-FORWARD".into(),
            vec!["-m set ! --match-set tg-local src -m set ! --match-set tg-local dst -j RETURN".into()],
        );
        out
    }

    /// The state after `plan` (for `desired`) committed.
    fn committed(state: &AppliedState, plan: &Plan, desired: &Rendered) -> AppliedState {
        let mut next = state.clone();
        next.chains = plan.chain_hashes.iter().map(|(c, h)| (c.clone(), Some(*h))).collect();
        next.sets.clear();
        next.b_side.clear();
        for (name, target, _) in &plan.sets {
            next.sets
                .insert(name.clone(), desired.sets.get(name).map(SetContent::of));
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
        let state = committed(&AppliedState::default(), &first, &rendered(&["10.0.0.1"]));
        assert_eq!(state.plan(&rendered(&["10.0.0.1"])).rule_script, "");

        // Two added and one deleted: more than the new set's two members, so rebuilt.
        let second = state.plan(&rendered(&["10.0.0.3", "10.0.0.2"]));
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
        let state = committed(&state, &second, &rendered(&["10.0.0.3", "10.0.0.2"]));
        assert_eq!(state.plan(&rendered(&["10.0.0.3", "10.0.0.2"])).rule_script, "");

        let third = state.plan(&rendered(&["10.0.0.4"]));
        assert!(
            third.set_script.contains("add tg-local 10.0.0.4"),
            "{}",
            third.set_script
        );
        assert_eq!(third.sets_to_destroy, ["tg-local-b"]);
    }

    #[test]
    fn a_set_in_force_changes_in_place_adding_before_the_rules_and_deleting_after() {
        let one = rendered(&["10.0.0.1", "10.0.0.2"]);
        let first = AppliedState::default().plan(&one);
        let state = committed(&AppliedState::default(), &first, &one);

        let two = rendered(&["10.0.0.1", "10.0.0.3"]);
        let plan = state.plan(&two);
        assert_eq!(plan.set_script, "add tg-local 10.0.0.3 -exist\n");
        assert_eq!(plan.set_delete_script, "del tg-local 10.0.0.2 -exist\n");
        assert_eq!(plan.sets_updated, ["tg-local"]);
        assert!(plan.sets_written.is_empty());
        assert_eq!(plan.rule_script, "", "the rules keep using tg-local");
        assert!(plan.sets_to_destroy.is_empty());
        let state = committed(&state, &plan, &two);
        assert_eq!(
            state.plan(&two),
            Plan {
                sets: plan.sets.clone(),
                chain_hashes: plan.chain_hashes.clone(),
                ..Plan::default()
            }
        );

        // A set whose content is unknown (adopted, or a failed delta) is rebuilt.
        let mut unknown = state.clone();
        unknown.sets.insert("tg-local".into(), None);
        let plan = unknown.plan(&two);
        assert!(plan.set_script.contains("flush tg-local-b"), "{}", plan.set_script);
        assert_eq!(plan.set_delete_script, "");

        // A changed type is rebuilt.
        let mut net = two.clone();
        if let Some(set) = net.sets.get_mut("tg-local") {
            set.kind = SetKind::HashIp;
        }
        let plan = state.plan(&net);
        assert_eq!(plan.sets_written, ["tg-local"]);
        assert!(plan.sets_updated.is_empty());
    }

    #[test]
    fn a_set_whose_rules_change_too_switches_with_them_instead_of_changing_in_place() {
        let one = rendered(&["10.0.0.1", "10.0.0.2"]);
        let state = committed(&AppliedState::default(), &AppliedState::default().plan(&one), &one);
        // The members and a rule that matches the set change in one sync: in place, the
        // old rules would meet the new members before the rule restore.
        let mut two = rendered(&["10.0.0.1", "10.0.0.3"]);
        if let Some(rules) = two.chains.get_mut("TG-FORWARD") {
            rules.push("-m set --match-set tg-local src -j ACCEPT".into());
        }
        let plan = state.plan(&two);
        assert_eq!(plan.sets_written, ["tg-local"]);
        assert!(plan.sets_updated.is_empty());
        assert_eq!(plan.set_delete_script, "");
        assert!(
            plan.rule_script.contains("--match-set tg-local-b src -j ACCEPT"),
            "{}",
            plan.rule_script
        );
    }

    #[test]
    fn an_entry_with_options_is_rebuilt_not_deleted_by_text() {
        let old = RenderedSet {
            kind: SetKind::HashNet,
            entries: vec!["10.0.0.0/8".into(), "10.1.0.0/16 nomatch".into(), "10.2.0.0/16".into()].into(),
        };
        let new = RenderedSet {
            kind: SetKind::HashNet,
            entries: vec!["10.0.0.0/8".into(), "10.1.0.0/16".into(), "10.2.0.0/16".into()].into(),
        };
        let content = SetContent::of(&old);
        assert_eq!(set_change(Some(&content), &new, hash_of(&new)), SetChange::Rebuild);
        assert_eq!(set_change(Some(&content), &old, hash_of(&old)), SetChange::Same);
    }

    /// A node whose `iptables-save` and `ipset save` print what the test says (the
    /// saves one after the other, the last one from then on); records stdin.
    struct Node {
        save: std::sync::Mutex<Vec<String>>,
        ipset_save: std::sync::Mutex<String>,
        scripts: std::sync::Mutex<Vec<String>>,
    }

    impl Node {
        fn new() -> Node {
            Node {
                save: std::sync::Mutex::new(Vec::new()),
                ipset_save: std::sync::Mutex::new(String::new()),
                scripts: std::sync::Mutex::new(Vec::new()),
            }
        }

        fn prints(&self, saves: &[&str], ipset_save: &str) {
            if let (Ok(mut a), Ok(mut b)) = (self.save.lock(), self.ipset_save.lock()) {
                *a = saves.iter().rev().map(|s| s.to_string()).collect();
                *b = ipset_save.to_string();
            }
            if let Ok(mut s) = self.scripts.lock() {
                s.clear();
            }
        }

        fn scripts(&self) -> Vec<String> {
            self.scripts.lock().map(|s| s.clone()).unwrap_or_default()
        }
    }

    impl Executor for Node {
        fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
            if let (Some(text), Ok(mut s)) = (stdin, self.scripts.lock()) {
                s.push(text.to_string());
            }
            let out = if program.ends_with("-save") {
                let mut saves = self.save.lock().map_err(|_| ExecError {
                    program: program.into(),
                    args: args.to_vec(),
                    code: None,
                    stderr: "poisoned".into(),
                })?;
                if saves.len() > 1 {
                    saves.pop().unwrap_or_default()
                } else {
                    saves.last().cloned().unwrap_or_default()
                }
            } else if program == "ipset" && args.first().is_some_and(|a| a == "save") {
                self.ipset_save.lock().map(|s| s.clone()).unwrap_or_default()
            } else {
                String::new()
            };
            Ok(out)
        }
    }

    fn two_chains() -> Rendered {
        let mut out = rendered(&["10.0.0.1/32", "10.0.0.2/32"]);
        out.chains.insert(
            "TG-P-1-E".into(),
            vec![
                "-m set --match-set tg-local dst -p udp -m udp --dport 53 -m comment --comment \"a b\" -j ACCEPT"
                    .into(),
            ],
        );
        out
    }

    /// `iptables-save` of `two_chains` as the kernel prints it (options reordered, the jump in FORWARD).
    const SAVED: &str = "*filter\n:FORWARD ACCEPT [0:0]\n:TG-FORWARD - [0:0]\n:TG-P-1-E - [0:0]\n\
        -A FORWARD -m comment --comment tierguard -j TG-FORWARD\n\
        -A TG-FORWARD -m set ! --match-set tg-local src -m set ! --match-set tg-local dst -j RETURN\n\
        -A TG-P-1-E -p udp -m set --match-set tg-local dst -m udp --dport 53 -m comment --comment \"a b\" -j ACCEPT\n\
        COMMIT\n";
    const SETS: &str = "create tg-local hash:net family inet hashsize 1024 maxelem 1048576 bucketsize 12 initval 0x1\n\
        add tg-local 10.0.0.2\nadd tg-local 10.0.0.1\ncreate other hash:ip family inet\nadd other 1.2.3.4\n";

    #[test]
    fn a_repair_rewrites_exactly_what_drifted() {
        let node = Node::new();
        let desired = two_chains();
        let mut applier = Applier::new(Backend::Nft);
        applier.apply(&node, &desired).unwrap_or_else(|e| panic!("{e}"));

        node.prints(&[SAVED], SETS);
        let (report, repairs) = applier.repair(&node, &desired).unwrap_or_else(|e| panic!("{e}"));
        assert!(repairs.is_empty(), "{repairs:?}");
        assert_eq!(
            (report.chains_written, report.sets_updated, report.script_bytes),
            (0, 0, 0)
        );

        // A flushed chain, a stray rule, a deleted member, a stray member, a stray set, no jump.
        let drifted = SAVED
            .replace("-A FORWARD -m comment --comment tierguard -j TG-FORWARD\n", "")
            .replace(
                "-A TG-FORWARD -m set ! --match-set tg-local src -m set ! --match-set tg-local dst -j RETURN\n",
                "",
            )
            .replace("COMMIT", "-A TG-P-1-E -j ACCEPT\nCOMMIT");
        let sets = SETS.replace("add tg-local 10.0.0.1\n", "add tg-local 10.9.0.0/16\n")
            + "create tg-stray hash:ip family inet hashsize 1024 maxelem 1048576\n";
        // The save after the rewrite prints the repaired chains.
        node.prints(&[&drifted, SAVED], &sets);
        let (report, repairs) = applier.repair(&node, &desired).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(repairs.chains, ["TG-FORWARD", "TG-P-1-E"]);
        assert_eq!(repairs.set_members, ["tg-local +10.0.0.1/32", "tg-local -10.9.0.0/16"]);
        assert_eq!(repairs.sets, ["tg-stray"]);
        assert!(repairs.jump);
        assert_eq!(
            (report.chains_written, report.sets_updated, report.sets_written),
            (2, 1, 0)
        );
        let scripts = node.scripts();
        assert_eq!(scripts[0], "add tg-local 10.0.0.1/32 -exist\n", "{scripts:?}");
        assert!(
            scripts[1].contains(":TG-FORWARD - [0:0]\n:TG-P-1-E - [0:0]\n"),
            "{scripts:?}"
        );
        assert_eq!(scripts[2], "del tg-local 10.9.0.0/16 -exist\n", "{scripts:?}");
        assert_eq!(scripts.len(), 3, "{scripts:?}");

        // Repaired: the node prints what was written again, nothing to do.
        node.prints(&[SAVED], SETS);
        let (report, repairs) = applier.repair(&node, &desired).unwrap_or_else(|e| panic!("{e}"));
        assert!(repairs.is_empty(), "{repairs:?}");
        assert_eq!(report.script_bytes, 0);
    }

    #[test]
    fn rule_forms_ignore_what_iptables_save_reorders_and_unquotes() {
        assert_eq!(
            rule_form("-m set --match-set tg-x dst -p tcp -m tcp --dport 80 -m comment --comment \"x\" -j ACCEPT"),
            rule_form("-p tcp -m set --match-set tg-x dst -m tcp --dport 80 -m comment --comment x -j ACCEPT"),
        );
        assert_ne!(
            rule_form("-m set ! --match-set tg-x src -j RETURN"),
            rule_form("-m set --match-set tg-x src -j RETURN"),
        );
        assert_ne!(
            rule_form("-s 10.0.0.1/32 -d 10.0.0.2/32 -j ACCEPT"),
            rule_form("-s 10.0.0.2/32 -d 10.0.0.1/32 -j ACCEPT")
        );
        let grown: Vec<String> = "hash:ip family inet hashsize 4096 maxelem 1048576 bucketsize 12 initval 0x69eb0c78"
            .split(' ')
            .map(str::to_string)
            .collect();
        assert!(
            same_type(&grown, SetKind::HashIp, Family::V4),
            "a set that grew keeps its type"
        );
        assert!(!same_type(&grown, SetKind::HashNet, Family::V4));
        assert!(!same_type(&grown, SetKind::HashIp, Family::V6));
        assert_eq!(member_form("10.0.0.1/32"), "10.0.0.1");
        assert_eq!(member_form("2001:db8:0::1"), "2001:db8::1");
        assert_eq!(member_form("10.1.0.0/16 nomatch"), "10.1.0.0/16 nomatch");
    }

    #[test]
    fn a_failed_deletion_batch_fails_the_apply_and_the_next_rebuilds_the_set() {
        struct FailDeletes;
        impl Executor for FailDeletes {
            fn run(&self, program: &str, args: &[String], stdin: Option<&str>) -> Result<String, ExecError> {
                if stdin.is_some_and(|s| s.starts_with("del ")) {
                    return Err(ExecError {
                        program: program.into(),
                        args: args.to_vec(),
                        code: Some(1),
                        stderr: "ipset v7: Error in line 1: boom".into(),
                    });
                }
                Ok(String::new())
            }
        }
        let mut applier = Applier::new(Backend::Nft);
        applier
            .apply(&FailDeletes, &rendered(&["10.0.0.1", "10.0.0.2"]))
            .unwrap_or_else(|e| panic!("{e}"));
        let next = rendered(&["10.0.0.1", "10.0.0.3"]);
        assert!(applier.apply(&FailDeletes, &next).is_err());
        assert_eq!(applier.state.sets.get("tg-local"), Some(&None), "content unknown");
        let plan = applier.state.plan(&next);
        assert_eq!(plan.sets_written, ["tg-local"], "rebuilt from scratch");
        assert!(plan.set_script.contains("flush tg-local-b"), "{}", plan.set_script);
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
