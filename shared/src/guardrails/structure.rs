//! R4: structural problems of one policy, as reported by the lenient parser.

use crate::policy::FieldError;

use super::types::{Violation, ViolationKey};

/// One violation per field; several problems in the same field share it.
pub(crate) fn structure_violations(namespace: &str, policy: &str, errors: &[FieldError]) -> Vec<Violation> {
    let mut fields: Vec<(&str, Vec<&str>)> = Vec::new();
    for error in errors {
        match fields.iter_mut().find(|(f, _)| *f == error.field) {
            Some((_, messages)) => messages.push(&error.message),
            None => fields.push((&error.field, vec![&error.message])),
        }
    }
    fields
        .into_iter()
        .map(|(field, messages)| Violation {
            key: ViolationKey::Structure {
                namespace: namespace.to_string(),
                policy: policy.to_string(),
                field: field.to_string(),
            },
            message: format!(
                "policy {policy} in namespace {namespace}: {field} {}: fix this field (until then tierguard \
                 treats the broken rule as allowing nothing, and a broken podSelector as selecting nothing)",
                messages.join("; ")
            ),
        })
        .collect()
}
