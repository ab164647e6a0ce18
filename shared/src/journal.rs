//! A cluster's change journal: which objects changed since a given revision,
//! so that a consumer that keeps results derived from the cluster (the node
//! agent's incremental compile) can redo only what those objects touch.
//!
//! The journal is bounded: a consumer that falls further behind than
//! [`JOURNAL_CAPACITY`] changes, or that reads another cluster (a copy is a
//! history of its own), is told it cannot catch up and starts over.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::policy::PolicyId;

/// Changes kept; more than this between two reads and the reader starts over.
pub const JOURNAL_CAPACITY: usize = 8192;

/// An object whose state changed (added, replaced, mutated or removed).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Changed {
    /// a namespace, by name
    Namespace(String),
    /// a pod
    Pod {
        /// namespace
        namespace: String,
        /// name
        name: String,
    },
    /// a policy
    Policy(PolicyId),
}

/// A point in one cluster's history.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Revision {
    /// which history (each cluster, and each copy of one, has its own)
    lineage: u64,
    /// changes recorded before this point
    number: u64,
}

/// Every cluster value gets its own lineage, copies included: two copies that
/// diverge must never be mistaken for one history.
fn next_lineage() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The last [`JOURNAL_CAPACITY`] changes of one cluster value.
#[derive(Debug)]
pub struct Journal {
    lineage: u64,
    /// the revision number of `entries[0]`
    first: u64,
    entries: VecDeque<Changed>,
}

impl Default for Journal {
    fn default() -> Self {
        Journal {
            lineage: next_lineage(),
            first: 0,
            entries: VecDeque::new(),
        }
    }
}

impl Clone for Journal {
    /// A copy starts a history of its own, empty: nothing derived from the
    /// original carries over to it.
    fn clone(&self) -> Self {
        Journal::default()
    }
}

impl Journal {
    /// Records a change.
    pub fn record(&mut self, change: Changed) {
        if self.entries.len() == JOURNAL_CAPACITY {
            self.entries.pop_front();
            self.first += 1;
        }
        self.entries.push_back(change);
    }

    /// The current revision.
    pub fn revision(&self) -> Revision {
        Revision {
            lineage: self.lineage,
            number: self.first + self.entries.len() as u64,
        }
    }

    /// The changes after `since`, oldest first (an object can appear more than
    /// once); `None` when they are not all known: `since` is of another
    /// history, or older than the oldest change kept.
    pub fn since(&self, since: Revision) -> Option<impl Iterator<Item = &Changed>> {
        let current = self.revision();
        if since.lineage != self.lineage || since.number < self.first || since.number > current.number {
            return None;
        }
        let skip = usize::try_from(since.number - self.first).ok()?;
        Some(self.entries.iter().skip(skip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(name: &str) -> Changed {
        Changed::Namespace(name.to_string())
    }

    #[test]
    fn changes_since_a_revision_in_order() {
        let mut journal = Journal::default();
        journal.record(ns("a"));
        let after_a = journal.revision();
        journal.record(ns("b"));
        journal.record(ns("c"));
        let got: Vec<Changed> = journal.since(after_a).into_iter().flatten().cloned().collect();
        assert_eq!(got, vec![ns("b"), ns("c")]);
        let now: Vec<Changed> = journal
            .since(journal.revision())
            .into_iter()
            .flatten()
            .cloned()
            .collect();
        assert!(now.is_empty());
    }

    #[test]
    fn a_copy_is_another_history() {
        let mut journal = Journal::default();
        journal.record(ns("a"));
        let revision = journal.revision();
        let copy = journal.clone();
        assert!(copy.since(revision).is_none());
        assert!(journal.since(revision).is_some());
    }

    #[test]
    fn a_reader_too_far_behind_starts_over() {
        let mut journal = Journal::default();
        let start = journal.revision();
        for i in 0..JOURNAL_CAPACITY {
            journal.record(ns(&i.to_string()));
        }
        assert_eq!(journal.since(start).map(Iterator::count), Some(JOURNAL_CAPACITY));
        journal.record(ns("one more"));
        assert!(journal.since(start).is_none());
    }
}
