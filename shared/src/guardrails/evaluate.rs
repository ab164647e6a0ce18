//! One governed namespace's violations over a set of policies. Everything that
//! depends on a single policy is computed once into `PolicyFacts`, so the
//! before and after states of a review share it and only the set-level
//! checks (R1, R2) run twice.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::labels::Labels;
use crate::policy::{Direction, FieldError, Policy};
use crate::selector::Selector;

use super::Violation;
use super::context::{Context, effective_labels};
use super::default_deny::default_deny_violations;
use super::dns_rule::dns_violations;
use super::flows::{FlowInput, flow_violations};
use super::groups::{GroupScope, groups};
use super::structure::{kept_rule_indices, structure_violations};

/// Pods of a group that an egress-isolating policy selects, for R2.
pub(crate) struct EgressScope {
    /// index into the namespace's groups
    pub group: usize,
    /// the group's selector AND the policy's podSelector
    pub pods: Selector,
    /// whether that is the whole group
    pub whole_group: bool,
}

/// What one policy contributes, independent of the other policies.
pub(crate) struct PolicyFacts {
    /// the policy's name
    pub name: String,
    /// its usable part
    pub policy: Policy,
    /// per group: whether the podSelector selects every pod of the group
    pub covers: Vec<bool>,
    /// R2: the pods whose DNS this policy's egress isolation puts at stake
    pub egress_scopes: Vec<EgressScope>,
    /// per configured DNS port: whether an egress rule of this policy reaches it
    pub dns_reach: Vec<bool>,
    /// its R3 and R4 violations
    pub own: Vec<Violation>,
}

/// A namespace being evaluated.
pub(crate) struct NamespaceEval<'c> {
    ctx: &'c Context<'c>,
    /// its name
    pub namespace: String,
    labels: Labels,
    /// whether the template governs it (no R1-R3 otherwise)
    pub governed: bool,
    groups: Vec<GroupScope>,
}

impl<'c> NamespaceEval<'c> {
    /// Prepares the evaluation of `namespace`.
    pub fn new(ctx: &'c Context<'c>, namespace: &str) -> Self {
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

    /// Parses one policy of the namespace and works out what it contributes;
    /// its own (R3, R4) violations only `with_own`, since a review needs them
    /// only for the policy that changes.
    pub fn facts(&self, name: &str, raw: &NetworkPolicy, with_own: bool) -> PolicyFacts {
        let lenient = Policy::from_k8s_lenient(raw);
        let policy = lenient.policy;
        let errors = lenient.errors;
        let selector = &policy.pod_selector;

        let isolates_egress = policy.isolates(Direction::Egress);
        let mut covers = Vec::with_capacity(self.groups.len());
        let mut may_select = Vec::with_capacity(self.groups.len());
        let mut egress_scopes = Vec::new();
        for (i, group) in self.groups.iter().enumerate() {
            // A covered group is selected whole (group selectors are
            // satisfiable); otherwise the intersection decides, and is kept as
            // the R2 scope so it is built once.
            let (covered, may, both) = if group.selector.implies(selector) {
                (true, true, None)
            } else {
                let both = group.selector.and(selector);
                (false, both.is_satisfiable(), Some(both))
            };
            covers.push(covered);
            may_select.push(may);
            if isolates_egress && may {
                egress_scopes.push(EgressScope {
                    group: i,
                    pods: both.unwrap_or_else(|| group.selector.clone()),
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
            self.own_violations(name, raw, &policy, &errors, &may_select)
        } else {
            Vec::new()
        };
        PolicyFacts {
            name: name.to_string(),
            policy,
            covers,
            egress_scopes,
            dns_reach,
            own,
        }
    }

    /// R3 and R4 of one policy.
    fn own_violations(
        &self,
        name: &str,
        raw: &NetworkPolicy,
        policy: &Policy,
        errors: &[FieldError],
        may_select: &[bool],
    ) -> Vec<Violation> {
        let spec = raw.spec.as_ref();
        let ingress_count = spec.and_then(|s| s.ingress.as_ref()).map_or(0, Vec::len);
        let egress_count = spec.and_then(|s| s.egress.as_ref()).map_or(0, Vec::len);
        let ingress_indices = kept_rule_indices("ingress", ingress_count, errors);
        let egress_indices = kept_rule_indices("egress", egress_count, errors);
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
                    policy,
                    targets,
                    ingress_indices: &ingress_indices,
                    egress_indices: &egress_indices,
                },
            )
        } else {
            Vec::new()
        };
        own.extend(structure_violations(&self.namespace, name, errors));
        own
    }

    /// Every violation of the namespace holding exactly `policies`, sorted by
    /// key, one per key. Ungoverned namespaces have none.
    pub fn violations(&self, policies: &[&PolicyFacts]) -> Vec<Violation> {
        if !self.governed {
            return Vec::new();
        }
        let mut policies = policies.to_vec();
        // Name order makes the message kept for a shared key deterministic.
        policies.sort_by(|a, b| a.name.cmp(&b.name));
        let mut out = default_deny_violations(&self.ctx.template.tier_label, &self.namespace, &self.groups, &policies);
        out.extend(dns_violations(self.ctx, &self.namespace, &self.groups, &policies));
        for p in &policies {
            out.extend(p.own.iter().cloned());
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out.dedup_by(|a, b| a.key == b.key);
        out
    }
}
