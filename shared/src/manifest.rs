//! Reading Kubernetes manifests as users keep them: multi-document YAML (or
//! JSON), `kind: List` included, into typed objects. Errors name the source,
//! the document, the object and the field.

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use serde::Deserialize;

/// One object of a kind tierguard reads.
#[derive(Clone, Debug)]
pub enum Manifest {
    /// a Namespace
    Namespace(Namespace),
    /// a Pod
    Pod(Box<Pod>),
    /// a NetworkPolicy
    NetworkPolicy(NetworkPolicy),
    /// a Node
    Node(Box<Node>),
    /// any other kind (ignored by callers)
    Other {
        /// its kind
        kind: String,
    },
}

/// A manifest document that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}: document {document}{}: {field}: {message}", .object.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
pub struct ManifestError {
    /// file name (or other label of the text)
    pub source_name: String,
    /// 1-based document number in the file
    pub document: usize,
    /// `Kind namespace/name`, when it got that far
    pub object: Option<String>,
    /// the field, e.g. `spec.ingress[0].ports[0].port`
    pub field: String,
    /// what is wrong
    pub message: String,
}

fn object_label(value: &serde_json::Value) -> Option<String> {
    let kind = value.get("kind")?.as_str()?;
    let meta = value.get("metadata");
    let name = meta.and_then(|m| m.get("name")).and_then(|n| n.as_str()).unwrap_or("?");
    Some(match meta.and_then(|m| m.get("namespace")).and_then(|n| n.as_str()) {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    })
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (
            if path == "." { "object".to_string() } else { path },
            e.inner().to_string(),
        )
    })
}

fn convert(
    value: serde_json::Value,
    source_name: &str,
    document: usize,
    out: &mut Vec<Manifest>,
) -> Result<(), ManifestError> {
    let object = object_label(&value);
    let err = |field: String, message: String| ManifestError {
        source_name: source_name.to_string(),
        document,
        object: object.clone(),
        field,
        message,
    };
    let Some(kind) = value.get("kind").and_then(|k| k.as_str()).map(str::to_string) else {
        return Err(err("kind".into(), "is missing".into()));
    };
    let manifest = match kind.as_str() {
        "Namespace" => Manifest::Namespace(typed(value).map_err(|(f, m)| err(f, m))?),
        "Pod" => Manifest::Pod(Box::new(typed(value).map_err(|(f, m)| err(f, m))?)),
        "NetworkPolicy" => Manifest::NetworkPolicy(typed(value).map_err(|(f, m)| err(f, m))?),
        "Node" => Manifest::Node(Box::new(typed(value).map_err(|(f, m)| err(f, m))?)),
        "List" | "NamespaceList" | "PodList" | "NetworkPolicyList" | "NodeList" => {
            let items = match value.get("items") {
                Some(serde_json::Value::Array(items)) => items.clone(),
                None | Some(serde_json::Value::Null) => Vec::new(),
                Some(_) => return Err(err("items".into(), "must be a list".into())),
            };
            for item in items {
                convert(item, source_name, document, out)?;
            }
            return Ok(());
        }
        _ => Manifest::Other { kind },
    };
    out.push(manifest);
    Ok(())
}

/// Parses every document of `text`, skipping empty ones.
pub fn parse_manifests(text: &str, source_name: &str) -> Result<Vec<Manifest>, ManifestError> {
    let mut out = Vec::new();
    for (i, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let document = i + 1;
        let value = serde_yaml::Value::deserialize(doc).map_err(|e| ManifestError {
            source_name: source_name.to_string(),
            document,
            object: None,
            field: e
                .location()
                .map(|l| format!("line {}", l.line()))
                .unwrap_or_else(|| "document".into()),
            message: e.to_string(),
        })?;
        if value.is_null() {
            continue;
        }
        let json: serde_json::Value = serde_json::to_value(&value).map_err(|e| ManifestError {
            source_name: source_name.to_string(),
            document,
            object: None,
            field: "document".into(),
            message: e.to_string(),
        })?;
        convert(json, source_name, document, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_document_yaml_and_lists() {
        let text = "---\napiVersion: v1\nkind: Namespace\nmetadata: {name: shop}\n---\n# comment only\n---\napiVersion: v1\nkind: List\nitems:\n- {apiVersion: v1, kind: Pod, metadata: {name: a, namespace: shop}}\n- {apiVersion: v1, kind: Service, metadata: {name: s}}\n";
        let got = parse_manifests(text, "m.yaml").unwrap_or_default();
        assert_eq!(got.len(), 3);
        assert!(matches!(got[0], Manifest::Namespace(_)));
        assert!(matches!(got[1], Manifest::Pod(_)));
        assert!(matches!(&got[2], Manifest::Other { kind } if kind == "Service"));
    }

    #[test]
    fn errors_name_file_document_object_and_field() {
        let text = "kind: Namespace\nmetadata: {name: a}\n---\nkind: NetworkPolicy\nmetadata: {name: np, namespace: shop}\nspec:\n  ingress:\n  - ports:\n    - port: [1]\n";
        let e = parse_manifests(text, "bad.yaml").err();
        let e = e.map(|e| e.to_string()).unwrap_or_default();
        assert!(
            e.starts_with("bad.yaml: document 2 (NetworkPolicy shop/np): spec.ingress[0].ports[0].port"),
            "{e}"
        );
    }

    #[test]
    fn syntax_errors_give_a_line() {
        let e = parse_manifests("kind: Pod\nmetadata: {name: [\n", "x.yaml").err();
        assert!(e.is_some_and(|e| e.field.starts_with("line ")));
    }
}
