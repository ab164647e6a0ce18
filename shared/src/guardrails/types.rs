//! The guardrails' plain data: which rule is broken, the groups and peer
//! tiers violations are keyed by, and what a review or a mutation returns.
//! They sit at the bottom so that every module can name them without
//! reaching up to the rules or the API.

use std::collections::BTreeMap;
use std::fmt;

use crate::policy::{Direction, Protocol};

/// Which guardrail rule a violation breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum RuleId {
    /// default-deny
    R1,
    /// DNS
    R2,
    /// template flows
    R3,
    /// structure
    R4,
    /// namespace labels (tier label, `kubernetes.io/metadata.name`)
    Namespace,
}

impl fmt::Display for RuleId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RuleId::R1 => "R1",
            RuleId::R2 => "R2",
            RuleId::R3 => "R3",
            RuleId::R4 => "R4",
            RuleId::Namespace => "NS",
        })
    }
}

/// A tier group of a governed namespace (docs/guardrails.md, "Groups").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Group {
    /// The namespace is labelled with this tier: all its pods form one group.
    Namespace(String),
    /// Pods labelled with this template tier, in an unlabelled namespace.
    Tier(String),
    /// Pods with no template tier, in an unlabelled namespace.
    Untiered,
}

/// The tier a peer may be of, for R3.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum PeerTier {
    /// pods of a template tier
    Tier(String),
    /// pods with no template tier (or in ungoverned namespaces)
    Untiered,
    /// ipBlock peers
    External,
}

/// What makes a violation "the same" before and after a change
/// (docs/guardrails.md, "What makes a change fail").
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum ViolationKey {
    /// R1 (namespace, group, direction)
    DefaultDeny {
        /// namespace
        namespace: String,
        /// group
        group: Group,
        /// direction
        direction: Direction,
    },
    /// R2 (namespace, group, port)
    Dns {
        /// namespace
        namespace: String,
        /// group
        group: Group,
        /// protocol
        protocol: Protocol,
        /// port
        port: u16,
    },
    /// R3 (namespace, policy, direction, group, peer tier)
    Template {
        /// namespace
        namespace: String,
        /// policy name
        policy: String,
        /// direction
        direction: Direction,
        /// the tier the policy may select
        tier: String,
        /// the peer's tier
        peer: PeerTier,
    },
    /// R4 (namespace, policy, field path)
    Structure {
        /// namespace
        namespace: String,
        /// policy name
        policy: String,
        /// field path, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`
        field: String,
    },
    /// Namespace label problems (namespace, label key)
    NamespaceLabel {
        /// namespace
        namespace: String,
        /// label key
        label: String,
    },
}

/// One violation with its human message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// identity for before/after comparison
    pub key: ViolationKey,
    /// names the policy, namespace, tier, rule and field, and says how to fix it
    pub message: String,
}

impl Violation {
    /// The rule broken.
    pub fn rule(&self) -> RuleId {
        match self.key {
            ViolationKey::DefaultDeny { .. } => RuleId::R1,
            ViolationKey::Dns { .. } => RuleId::R2,
            ViolationKey::Template { .. } => RuleId::R3,
            ViolationKey::Structure { .. } => RuleId::R4,
            ViolationKey::NamespaceLabel { .. } => RuleId::Namespace,
        }
    }
}

/// Admission operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    /// CREATE
    Create,
    /// UPDATE
    Update,
    /// DELETE
    Delete,
}

/// The outcome of reviewing one change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Review {
    /// violations the change introduces (the change is rejected in enforce mode when non-empty)
    pub new_violations: Vec<Violation>,
    /// messages to return as warnings even when admitted (e.g. R4 in an ungoverned namespace,
    /// an unknown `tierguard.io/tier` annotation)
    pub warnings: Vec<String>,
}

/// The result of mutating a Namespace.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Mutation {
    /// RFC 6902 patch; empty when nothing changes
    pub patch: json_patch::Patch,
    /// warnings for the AdmissionResponse
    pub warnings: Vec<String>,
}

/// Everything wrong with a state, as `check` and an audit of a live cluster
/// report it: the violations of governed namespaces, and the structure (R4)
/// problems of policies in namespaces that are not governed, which are only
/// warnings there (the webhook admits such policies and warns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StateAudit {
    /// violations by governed namespace, each list sorted by key; namespaces
    /// without any are left out
    pub violations: BTreeMap<String, Vec<Violation>>,
    /// R4 problems by ungoverned namespace, each list sorted by key;
    /// namespaces without any are left out
    pub warnings: BTreeMap<String, Vec<Violation>>,
}

impl StateAudit {
    /// Whether the state passes: no violations (warnings do not count).
    pub fn passes(&self) -> bool {
        self.violations.is_empty()
    }
}
