//! Validation of Namespace CREATE and UPDATE (docs/namespaces.md, "Validation").

use k8s_openapi::api::core::v1::Namespace;

use crate::labels::{Labels, NAMESPACE_NAME_LABEL};
use crate::template::TierTemplate;

use super::types::{Operation, Review, Violation, ViolationKey};

fn labels_of(namespace: &Namespace) -> Labels {
    namespace.metadata.labels.clone().unwrap_or_default()
}

/// See [`super::review_namespace`].
pub(crate) fn review_namespace(
    template: &TierTemplate,
    operation: Operation,
    old: Option<&Namespace>,
    new: &Namespace,
) -> Review {
    if operation == Operation::Delete {
        return Review::default();
    }
    let name = new.metadata.name.as_deref().unwrap_or_default();
    let mut labels = labels_of(new);
    let mut new_violations = Vec::new();

    // An absent name label is fine: the mutation or the API server adds it.
    if let Some(value) = labels.get(NAMESPACE_NAME_LABEL).filter(|v| *v != name) {
        new_violations.push(Violation {
            key: ViolationKey::NamespaceLabel {
                namespace: name.to_string(),
                label: NAMESPACE_NAME_LABEL.to_string(),
            },
            message: format!(
                "namespace {name}: label {NAMESPACE_NAME_LABEL}={value} must equal the namespace's name \
                 (the API server owns this label): set it to {name} or remove it"
            ),
        });
    }

    // Governance is judged on the labels the namespace will really have.
    labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    if template.governs(&labels) {
        let tier_label = &template.tier_label;
        let old_value = old
            .and_then(|o| o.metadata.labels.as_ref())
            .and_then(|l| l.get(tier_label));
        if let Some(value) = labels.get(tier_label) {
            let kept = operation == Operation::Update && old_value == Some(value);
            if !template.is_tier(value) && !kept {
                let tiers = template.tier_names().collect::<Vec<_>>().join(", ");
                new_violations.push(Violation {
                    key: ViolationKey::NamespaceLabel {
                        namespace: name.to_string(),
                        label: tier_label.clone(),
                    },
                    message: format!(
                        "namespace {name}: label {tier_label}={value} names no template tier: set it to one of \
                         {tiers}, or remove it to leave the namespace's pods to their own tier labels"
                    ),
                });
            }
        }
    }
    new_violations.sort_by(|a, b| a.key.cmp(&b.key));
    Review {
        new_violations,
        warnings: Vec::new(),
    }
}
