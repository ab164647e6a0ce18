//! Tier groups of a governed namespace (docs/guardrails.md, "Groups") and how they are
//! named in messages.

use crate::labels::Labels;
use crate::selector::Selector;

use super::context::Context;
use super::types::Group;

/// A group with the pod selector that describes exactly its pods.
pub(crate) struct GroupScope {
    /// the group
    pub group: Group,
    /// its pods; `{}` for a tier-labelled namespace, whose pod labels are not consulted
    pub selector: Selector,
}

/// The groups of a governed namespace with these (effective) labels.
pub(crate) fn groups(ctx: &Context<'_>, namespace_labels: &Labels) -> Vec<GroupScope> {
    if let Some(tier) = ctx.namespace_tier(namespace_labels) {
        // Only `{}` implies `{}`, so only an empty podSelector covers this group.
        return vec![GroupScope {
            group: Group::Namespace(tier.to_string()),
            selector: Selector::everything(),
        }];
    }
    let mut out: Vec<GroupScope> = ctx
        .tier_selectors
        .iter()
        .map(|(t, sel)| GroupScope {
            group: Group::Tier(t.clone()),
            selector: sel.clone(),
        })
        .collect();
    out.push(GroupScope {
        group: Group::Untiered,
        selector: ctx.untiered.clone(),
    });
    out
}

impl Group {
    /// The template tier whose flows apply to the group; untiered pods have none.
    pub(crate) fn tier(&self) -> Option<&str> {
        match self {
            Group::Namespace(t) | Group::Tier(t) => Some(t),
            Group::Untiered => None,
        }
    }

    /// How messages name the group, e.g. `tier data`.
    pub(crate) fn describe(&self) -> String {
        match self {
            Group::Namespace(t) | Group::Tier(t) => format!("tier {t}"),
            Group::Untiered => "untiered pods".to_string(),
        }
    }
}
