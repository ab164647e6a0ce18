//! What the set-level rules (R1, R2) read about each policy, and which
//! violations an evaluation wants. They live below the rules and apart from
//! `evaluate`, which fills them in and calls the rules, so that a rule reads
//! them without depending on the evaluation that calls it.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::policy::Policy;

use super::parsed::ParsedPolicy;
use super::types::{Violation, ViolationKey};

/// Pods of a group that an egress-isolating policy selects, for R2.
pub(crate) struct EgressScope {
    /// index into the namespace's groups
    pub group: usize,
    /// whether that is the whole group; otherwise the pods are the group's
    /// selector AND the policy's podSelector (never built: the rules only
    /// ask what it implies, and a message shows it)
    pub whole_group: bool,
}

/// Which violations an evaluation reports, and whether messages are built.
/// Messages cost more than finding the violation, and a review needs them
/// only for the violations that are new.
pub(crate) enum Wanted<'k> {
    /// every violation, with its message
    All,
    /// every violation, keys only (empty messages)
    KeysOnly,
    /// only violations whose key is not in the set, with messages
    NewSince(&'k BTreeSet<ViolationKey>),
}

impl Wanted<'_> {
    /// Reports a violation, building its message only when it is wanted.
    pub fn push(&self, out: &mut Vec<Violation>, key: ViolationKey, message: impl FnOnce() -> String) {
        match self {
            Wanted::All => out.push(Violation {
                key,
                message: message(),
            }),
            Wanted::KeysOnly => out.push(Violation {
                key,
                message: String::new(),
            }),
            Wanted::NewSince(known) => {
                if !known.contains(&key) {
                    out.push(Violation {
                        key,
                        message: message(),
                    });
                }
            }
        }
    }
}

/// What one policy contributes, independent of the other policies.
pub(crate) struct PolicyFacts<'p> {
    /// the policy's name
    pub name: &'p str,
    /// the policy, parsed
    pub parsed: Cow<'p, ParsedPolicy>,
    /// per group: whether the podSelector selects every pod of the group
    pub covers: Vec<bool>,
    /// per group: whether the podSelector may select a pod of the group
    pub may_select: Vec<bool>,
    /// R2: the pods whose DNS this policy's egress isolation puts at stake
    pub egress_scopes: Vec<EgressScope>,
    /// per configured DNS port: whether an egress rule of this policy reaches it
    pub dns_reach: Vec<bool>,
    /// its R3 and R4 violations
    pub own: Vec<Violation>,
}

impl PolicyFacts<'_> {
    /// The usable part of the policy.
    pub fn policy(&self) -> &Policy {
        &self.parsed.policy
    }
}
