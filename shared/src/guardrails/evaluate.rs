//! One governed namespace's violations over a set of policies. Everything that
//! depends on a single policy is computed once into `PolicyFacts`, so the
//! before and after states of a review share it and only the set-level
//! checks (R1, R2) run twice.

use std::borrow::Cow;
use std::collections::BTreeSet;

use crate::labels::Labels;
use crate::policy::{Direction, Policy};

use super::context::{Context, effective_labels};
use super::default_deny::default_deny_violations;
use super::dns_rule::dns_violations;
use super::flows::{FlowInput, flow_violations};
use super::groups::{GroupScope, groups};
use super::prepared::ParsedPolicy;
use super::structure::structure_violations;
use super::{Violation, ViolationKey};

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

/// A namespace being evaluated.
pub(crate) struct NamespaceEval<'c, 'a> {
    ctx: &'c Context<'a>,
    /// its name
    pub namespace: String,
    labels: Labels,
    /// whether the template governs it (no R1-R3 otherwise)
    pub governed: bool,
    groups: Vec<GroupScope>,
}

impl<'c, 'a> NamespaceEval<'c, 'a> {
    /// Prepares the evaluation of `namespace`.
    pub fn new(ctx: &'c Context<'a>, namespace: &str) -> Self {
        let labels = effective_labels(ctx.state, namespace);
        let governed = ctx.template.governs(&labels);
        let groups = if governed { groups(ctx, &labels) } else { Vec::new() };
        NamespaceEval {
            ctx,
            namespace: namespace.to_string(),
            labels,
            governed,
            groups,
        }
    }

    /// Works out what one (parsed) policy of the namespace contributes; its
    /// own (R3, R4) violations only `with_own`, since a review needs them only
    /// for the policy that changes.
    pub fn facts<'p>(&self, name: &'p str, parsed: Cow<'p, ParsedPolicy>, with_own: bool) -> PolicyFacts<'p> {
        let policy = &parsed.policy;
        let selector = &policy.pod_selector;

        let isolates_egress = policy.isolates(Direction::Egress);
        let mut covers = Vec::with_capacity(self.groups.len());
        let mut may_select = Vec::with_capacity(self.groups.len());
        let mut egress_scopes = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            // A covered group is selected whole (group selectors are
            // satisfiable); otherwise the intersection decides.
            let covered = group.selector.implies(selector);
            let may = covered || group.selector.intersects(selector);
            covers.push(covered);
            may_select.push(may);
            if isolates_egress && may {
                egress_scopes.push(EgressScope {
                    group: i,
                    whole_group: covered,
                });
            }
        }

        let mut dns_reach = vec![false; self.ctx.dns.ports.len()];
        if isolates_egress {
            for rule in &policy.egress {
                let reach = self.ctx.dns.rule_reach(&self.namespace, rule);
                for (acc, r) in dns_reach.iter_mut().zip(reach) {
                    *acc |= r;
                }
            }
        }

        let own = if with_own {
            self.own_violations(name, &parsed, &may_select)
        } else {
            Vec::new()
        };
        PolicyFacts {
            name,
            parsed,
            covers,
            may_select,
            egress_scopes,
            dns_reach,
            own,
        }
    }

    /// R3 and R4 of one policy.
    fn own_violations(&self, name: &str, parsed: &ParsedPolicy, may_select: &[bool]) -> Vec<Violation> {
        let targets: Vec<&str> = self
            .groups
            .iter()
            .zip(may_select)
            .filter(|(_, may)| **may)
            .filter_map(|(g, _)| g.group.tier())
            .collect();

        let mut own = if self.governed {
            flow_violations(
                self.ctx,
                &FlowInput {
                    namespace: &self.namespace,
                    namespace_labels: &self.labels,
                    name,
                    policy: &parsed.policy,
                    targets,
                    ingress_indices: &parsed.ingress_indices,
                    egress_indices: &parsed.egress_indices,
                },
            )
        } else {
            Vec::new()
        };
        own.extend(structure_violations(&self.namespace, name, &parsed.errors));
        own
    }

    /// The `wanted` violations of the namespace holding exactly `policies`,
    /// sorted by key, one per key. Ungoverned namespaces have none.
    pub fn violations(&self, policies: &[&PolicyFacts<'_>], wanted: &Wanted<'_>) -> Vec<Violation> {
        if !self.governed {
            return Vec::new();
        }
        let mut policies = policies.to_vec();
        // Name order makes the message kept for a shared key deterministic.
        policies.sort_by(|a, b| a.name.cmp(b.name));
        let mut out = Vec::new();
        default_deny_violations(
            &self.ctx.template.tier_label,
            &self.namespace,
            &self.groups,
            &policies,
            wanted,
            &mut out,
        );
        dns_violations(self.ctx, &self.namespace, &self.groups, &policies, wanted, &mut out);
        for p in &policies {
            for v in &p.own {
                wanted.push(&mut out, v.key.clone(), || v.message.clone());
            }
        }
        // Every report of a key is wanted or none is, so the message kept
        // for a key is the one it would have among all reports.
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        out
    }
}
