//! Object metadata as every reader of Kubernetes objects takes it: one rule
//! for an object whose manifest leaves out `metadata.namespace`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// The namespace of a namespaced object whose manifest names none, as
/// kubectl applies it (with no `--namespace` and no context namespace).
pub const DEFAULT_NAMESPACE: &str = "default";

/// `metadata.namespace`, or [`DEFAULT_NAMESPACE`] when it is left out.
pub fn namespace_of(metadata: &ObjectMeta) -> &str {
    metadata.namespace.as_deref().unwrap_or(DEFAULT_NAMESPACE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_namespace_is_default() {
        let mut meta = ObjectMeta::default();
        assert_eq!(namespace_of(&meta), "default");
        meta.namespace = Some("shop".into());
        assert_eq!(namespace_of(&meta), "shop");
    }
}
