//! Cutting established connections that a new rule set denies
//! (`run --enforce-existing delete`). The kernel accepts packets of a
//! connection conntrack already tracks (`ESTABLISHED` is accepted first), so
//! a tightening policy alone leaves open connections flowing. After a sync
//! that changed the rules, the agent lists the node's conntrack entries,
//! judges each flow of a local pod against the new compiled rule sets
//! ([`verdict`], pure) and deletes the entries of the denied ones
//! ([`table`], the only I/O). Allowed flows, and flows that are not a local
//! pod's, are never touched.

pub mod entry;
pub mod table;
pub mod verdict;

pub use entry::{Entry, parse_entries};
pub use table::{ConntrackTable, ExecConntrack};
pub use verdict::{FlowVerdict, judge};

/// What to do with connections a new rule set denies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum EnforceExisting {
    /// leave them: conntrack keeps them flowing until they end (Kubernetes
    /// leaves this to the plugin; most keep them)
    #[default]
    Keep,
    /// delete their conntrack entries, so their next packet meets the new rules
    Delete,
}

/// The entries of `entries` that `rules` (the family's new compiled rule set) deny.
pub fn denied<'a>(entries: &'a [Entry], rules: &crate::ruleset::RuleSet) -> Vec<&'a Entry> {
    entries
        .iter()
        .filter(|e| rules.family.has_addr(&e.source) && judge(rules, &e.flow()) == FlowVerdict::Denied)
        .collect()
}
