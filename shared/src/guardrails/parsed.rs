//! One policy as the rules read it. Parsing is kept apart from the state
//! and from the rules so that a prepared state can hold parses without
//! knowing any rule, and every rule reads the same parse.

use k8s_openapi::api::networking::v1::NetworkPolicy;

use crate::policy::{FieldError, LenientPolicy, Policy};

/// One policy as the rules read it: its lenient parse, and where its kept
/// rules sit in the spec (for R3 field paths).
#[derive(Clone, Debug)]
pub(crate) struct ParsedPolicy {
    /// the usable part
    pub policy: Policy,
    /// its structure problems (R4)
    pub errors: Vec<FieldError>,
    /// spec indices of the kept ingress rules
    pub ingress_indices: Vec<usize>,
    /// spec indices of the kept egress rules
    pub egress_indices: Vec<usize>,
}

impl ParsedPolicy {
    /// Parses one policy.
    pub fn new(raw: &NetworkPolicy) -> Self {
        let LenientPolicy { policy, errors } = Policy::from_k8s_lenient(raw);
        let spec = raw.spec.as_ref();
        let ingress_count = spec.and_then(|s| s.ingress.as_ref()).map_or(0, Vec::len);
        let egress_count = spec.and_then(|s| s.egress.as_ref()).map_or(0, Vec::len);
        ParsedPolicy {
            ingress_indices: kept_rule_indices("ingress", ingress_count, &errors),
            egress_indices: kept_rule_indices("egress", egress_count, &errors),
            policy,
            errors,
        }
    }
}

/// Where rule `index`'s errors would sit: `spec.ingress[0].`.
fn rule_prefix(section: &str, index: usize) -> String {
    format!("spec.{section}[{index}].")
}

/// The spec indices of the rules the lenient parser kept, in order: it drops
/// exactly the rules that reported an error under their own path.
fn kept_rule_indices(section: &str, raw_count: usize, errors: &[FieldError]) -> Vec<usize> {
    if errors.is_empty() {
        return (0..raw_count).collect();
    }
    (0..raw_count)
        .filter(|&i| {
            let prefix = rule_prefix(section, i);
            !errors.iter().any(|e| e.field.starts_with(&prefix))
        })
        .collect()
}
