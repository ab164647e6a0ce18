//! Namespace mutation (docs/namespaces.md): the name label and the tier label.

use json_patch::jsonptr::PointerBuf;
use json_patch::{AddOperation, Patch, PatchOperation, ReplaceOperation};
use k8s_openapi::api::core::v1::Namespace;

use crate::labels::{Labels, NAMESPACE_NAME_LABEL};
use crate::template::TierTemplate;

use super::types::Mutation;

/// The annotation that asks for a tier explicitly.
pub const TIER_ANNOTATION: &str = "tierguard.io/tier";

/// The labels the namespace should have, and any warning.
fn desired_labels(template: &TierTemplate, namespace: &Namespace) -> (Labels, Vec<String>) {
    let name = namespace.metadata.name.as_deref().unwrap_or_default();
    let mut labels = namespace.metadata.labels.clone().unwrap_or_default();
    let mut warnings = Vec::new();
    if !name.is_empty() {
        labels.insert(NAMESPACE_NAME_LABEL.to_string(), name.to_string());
    }
    let tier_label = &template.tier_label;
    // An existing tier label is never overwritten, whatever its value.
    if !template.governs(&labels) || labels.contains_key(tier_label) {
        return (labels, warnings);
    }
    let annotation = namespace
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(TIER_ANNOTATION));
    let tier = match annotation {
        Some(asked) if template.is_tier(asked) => Some(asked.as_str()),
        Some(asked) => {
            // An explicit wish that cannot be met is not silently replaced by a pattern.
            let tiers = template.tier_names().collect::<Vec<_>>().join(", ");
            warnings.push(format!(
                "namespace {name}: annotation {TIER_ANNOTATION}={asked} names no template tier ({tiers}); \
                 no {tier_label} label was set: fix the annotation or set the label"
            ));
            None
        }
        None => template.tier_for_namespace_name(name),
    };
    if let Some(tier) = tier {
        labels.insert(tier_label.clone(), tier.to_string());
    }
    (labels, warnings)
}

/// `/metadata/labels/<key>`, with `/` and `~` escaped by the pointer's tokens.
fn label_path(key: &str) -> PointerBuf {
    PointerBuf::from_tokens(["metadata", "labels", key])
}

/// See [`super::mutate_namespace`].
pub(crate) fn mutate_namespace(template: &TierTemplate, namespace: &Namespace) -> Mutation {
    let (desired, warnings) = desired_labels(template, namespace);
    let mut operations = Vec::new();
    match &namespace.metadata.labels {
        None if desired.is_empty() => {}
        // Adding a key under a missing map would fail, so the whole map goes in at once.
        None => operations.push(PatchOperation::Add(AddOperation {
            path: PointerBuf::from_tokens(["metadata", "labels"]),
            value: serde_json::Value::Object(
                desired
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
        })),
        Some(current) => {
            for (key, value) in &desired {
                match current.get(key) {
                    Some(v) if v == value => {}
                    Some(_) => operations.push(PatchOperation::Replace(ReplaceOperation {
                        path: label_path(key),
                        value: serde_json::Value::String(value.clone()),
                    })),
                    None => operations.push(PatchOperation::Add(AddOperation {
                        path: label_path(key),
                        value: serde_json::Value::String(value.clone()),
                    })),
                }
            }
        }
    }
    Mutation {
        patch: Patch(operations),
        warnings,
    }
}
