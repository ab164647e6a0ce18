//! R3: the tiers a policy's rules let in or out, against the template flows.

use std::collections::BTreeMap;

use crate::labels::Labels;
use crate::policy::{Direction, NamespaceScope, Peer, Policy, Rule};
use crate::selector::Selector;
use crate::template::FlowPeer;

use super::context::{Context, PeerNamespace};
use super::types::{PeerTier, Violation, ViolationKey};

/// A policy as R3 sees it, in the namespace it lives in.
pub(crate) struct FlowInput<'p> {
    /// the policy's namespace
    pub namespace: &'p str,
    /// that namespace's effective labels
    pub namespace_labels: &'p Labels,
    /// the policy's name
    pub name: &'p str,
    /// the usable part of the policy
    pub policy: &'p Policy,
    /// template tiers the policy may select
    pub targets: Vec<&'p str>,
    /// spec indices of the kept ingress rules
    pub ingress_indices: &'p [usize],
    /// spec indices of the kept egress rules
    pub egress_indices: &'p [usize],
}

/// Every R3 violation of one policy; it depends on no other policy.
pub(crate) fn flow_violations(ctx: &Context<'_>, input: &FlowInput<'_>) -> Vec<Violation> {
    let mut out = Vec::new();
    if input.targets.is_empty() {
        return out;
    }
    for direction in Direction::BOTH {
        // Rules of a direction the policy does not isolate are ignored by Kubernetes.
        if !input.policy.isolates(direction) {
            continue;
        }
        let (indices, peers_key) = match direction {
            Direction::Ingress => (input.ingress_indices, "from"),
            Direction::Egress => (input.egress_indices, "to"),
        };
        for (position, rule) in input.policy.rules(direction).iter().enumerate() {
            if direction == Direction::Egress && ctx.dns.is_dns_rule(rule) {
                continue;
            }
            let spec_index = indices.get(position).copied().unwrap_or(position);
            let peers = rule_peer_tiers(ctx, input.namespace_labels, rule);
            for tier in &input.targets {
                let Some(flows) = ctx.template.flows(tier) else {
                    continue;
                };
                let allowed = match direction {
                    Direction::Ingress => &flows.ingress_from,
                    Direction::Egress => &flows.egress_to,
                };
                for (peer, peer_index) in &peers {
                    if is_allowed(allowed, peer) {
                        continue;
                    }
                    let section = match direction {
                        Direction::Ingress => "ingress",
                        Direction::Egress => "egress",
                    };
                    let field = match peer_index {
                        Some(i) => format!("spec.{section}[{spec_index}].{peers_key}[{i}]"),
                        None => format!("spec.{section}[{spec_index}].{peers_key} (empty: every peer)"),
                    };
                    out.push(Violation {
                        key: ViolationKey::Template {
                            namespace: input.namespace.to_string(),
                            policy: input.name.to_string(),
                            direction,
                            tier: tier.to_string(),
                            peer: peer.clone(),
                        },
                        message: message(input, direction, tier, peer, allowed, &field),
                    });
                }
            }
        }
    }
    out
}

fn message(
    input: &FlowInput<'_>,
    direction: Direction,
    tier: &str,
    peer: &PeerTier,
    allowed: &[FlowPeer],
    field: &str,
) -> String {
    let list = if allowed.is_empty() {
        "nothing".to_string()
    } else {
        allowed.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    };
    let (flow, what) = match direction {
        Direction::Ingress => (format!("lets {} reach tier {tier}", peer.describe()), "ingress from"),
        Direction::Egress => (format!("lets tier {tier} reach {}", peer.describe()), "egress to"),
    };
    format!(
        "policy {} {flow} (template allows {tier} {what}: {list}); in namespace {}, {field} allows {}: \
         narrow that peer to allowed tiers or remove it",
        input.name,
        input.namespace,
        peer.describe(),
    )
}

impl PeerTier {
    fn describe(&self) -> String {
        match self {
            PeerTier::Tier(t) => format!("tier {t}"),
            PeerTier::Untiered => "untiered pods".to_string(),
            PeerTier::External => "external addresses (ipBlock)".to_string(),
        }
    }
}

/// Whether the template flow list lets a peer of this tier through.
fn is_allowed(allowed: &[FlowPeer], peer: &PeerTier) -> bool {
    allowed.iter().any(|flow| match (flow, peer) {
        (FlowPeer::Any, _) => true,
        (FlowPeer::External, PeerTier::External) => true,
        (FlowPeer::Tier(a), PeerTier::Tier(b)) => a == b,
        _ => false,
    })
}

/// The tiers a rule's peers may be of, each with the first peer index giving
/// it (`None`: the rule has no peers, so every peer).
fn rule_peer_tiers(ctx: &Context<'_>, own_labels: &Labels, rule: &Rule) -> BTreeMap<PeerTier, Option<usize>> {
    let mut out = BTreeMap::new();
    let Some(peers) = &rule.peers else {
        out.insert(PeerTier::External, None);
        out.insert(PeerTier::Untiered, None);
        for (t, _) in &ctx.tier_selectors {
            out.insert(PeerTier::Tier(t.clone()), None);
        }
        return out;
    };
    for (i, peer) in peers.iter().enumerate() {
        let mut add = |tier: PeerTier| {
            out.entry(tier).or_insert(Some(i));
        };
        match peer {
            Peer::Block(_) => add(PeerTier::External),
            Peer::Pods {
                namespaces: NamespaceScope::Own,
                pods,
            } => pod_tiers(ctx, own_labels, pods, &mut add),
            Peer::Pods {
                namespaces: NamespaceScope::Matching(namespace_selector),
                pods,
            } => {
                if !pods.is_satisfiable() {
                    continue;
                }
                // Namespaces fall into a few kinds; each kind is resolved once,
                // not once per namespace.
                let mut untiered = false;
                let mut unlabelled = false;
                let mut labelled: Vec<&str> = Vec::new();
                for known in ctx.known_namespaces() {
                    if !namespace_selector.matches(&known.labels) {
                        continue;
                    }
                    match &known.kind {
                        PeerNamespace::Ungoverned | PeerNamespace::UnknownTier => untiered = true,
                        PeerNamespace::Tier(tier) => {
                            if !labelled.contains(&tier.as_str()) {
                                labelled.push(tier);
                            }
                        }
                        PeerNamespace::Unlabelled => unlabelled = true,
                    }
                }
                for tier in labelled {
                    add(PeerTier::Tier(tier.to_string()));
                }
                if unlabelled {
                    ctx.pod_label_tiers(pods).into_iter().for_each(&mut add);
                }
                if untiered {
                    add(PeerTier::Untiered);
                }
            }
        }
    }
    out
}

/// The tiers pods chosen by `pods` may be of in a governed namespace with these labels.
fn pod_tiers(ctx: &Context<'_>, namespace_labels: &Labels, pods: &Selector, add: &mut impl FnMut(PeerTier)) {
    if !pods.is_satisfiable() {
        return;
    }
    match ctx.peer_namespace(namespace_labels) {
        PeerNamespace::Tier(tier) => add(PeerTier::Tier(tier)),
        PeerNamespace::Unlabelled => ctx.pod_label_tiers(pods).into_iter().for_each(add),
        PeerNamespace::UnknownTier | PeerNamespace::Ungoverned => add(PeerTier::Untiered),
    }
}
