//! One governed namespace's violations over a set of policies. Everything that
//! depends on a single policy is computed once into `PolicyFacts`, so the
//! before and after states of a review share it and only the set-level
//! checks (R1, R2) run twice.

use std::borrow::Cow;

use crate::labels::Labels;
use crate::policy::Direction;

use super::context::Context;
use super::default_deny::default_deny_violations;
use super::dns_rule::dns_violations;
use super::facts::{EgressScope, PolicyFacts, Wanted};
use super::flows::{FlowInput, flow_violations};
use super::groups::{GroupScope, groups};
use super::parsed::ParsedPolicy;
use super::state::effective_labels;
use super::structure::structure_violations;
use super::types::Violation;

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
