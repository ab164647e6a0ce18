//! Which Rust type each manifest kind parses into, and the checks for the
//! cert-manager kinds k8s-openapi does not know.
//!
//! A typed parse alone ignores misspelled fields (the k8s-openapi types
//! skip unknown keys), so [`check_typed`] also serializes the parsed object
//! back and reports every field of the document that did not survive.

use k8s_openapi::api::admissionregistration::v1::{MutatingWebhookConfiguration, ValidatingWebhookConfiguration};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::Manifest;

/// How a kind is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindCheck {
    /// parsed into its k8s-openapi type
    Typed,
    /// a cert-manager kind, checked by [`check_cert_manager`]
    CertManager,
    /// a kustomize file, not a cluster object
    Kustomize,
}

/// Every kind a manifest under `deploy/` may have.
pub const KINDS: &[(&str, KindCheck)] = &[
    ("Namespace", KindCheck::Typed),
    ("ServiceAccount", KindCheck::Typed),
    ("ClusterRole", KindCheck::Typed),
    ("ClusterRoleBinding", KindCheck::Typed),
    ("Role", KindCheck::Typed),
    ("RoleBinding", KindCheck::Typed),
    ("Deployment", KindCheck::Typed),
    ("DaemonSet", KindCheck::Typed),
    ("Service", KindCheck::Typed),
    ("ConfigMap", KindCheck::Typed),
    ("Secret", KindCheck::Typed),
    ("Pod", KindCheck::Typed),
    ("PodDisruptionBudget", KindCheck::Typed),
    ("NetworkPolicy", KindCheck::Typed),
    ("ValidatingWebhookConfiguration", KindCheck::Typed),
    ("MutatingWebhookConfiguration", KindCheck::Typed),
    ("Issuer", KindCheck::CertManager),
    ("Certificate", KindCheck::CertManager),
    ("Kustomization", KindCheck::Kustomize),
];

/// How a manifest's kind is checked, or an error for a kind nobody expects.
pub fn kind_check(m: &Manifest) -> Result<KindCheck, String> {
    KINDS
        .iter()
        .find(|(k, _)| *k == m.kind())
        .map(|(_, c)| *c)
        .ok_or_else(|| format!("{}: kind {:?} has no type in tests/src/kinds.rs", m.locator(), m.kind()))
}

/// Parses a manifest into its type and checks that nothing was dropped.
pub fn check_typed(m: &Manifest) -> Result<(), String> {
    match m.kind() {
        "Namespace" => round_trip::<Namespace>(m),
        "ServiceAccount" => round_trip::<ServiceAccount>(m),
        "ClusterRole" => round_trip::<ClusterRole>(m),
        "ClusterRoleBinding" => round_trip::<ClusterRoleBinding>(m),
        "Role" => round_trip::<Role>(m),
        "RoleBinding" => round_trip::<RoleBinding>(m),
        "Deployment" => round_trip::<Deployment>(m),
        "DaemonSet" => round_trip::<DaemonSet>(m),
        "Service" => round_trip::<Service>(m),
        "ConfigMap" => round_trip::<ConfigMap>(m),
        "Secret" => round_trip::<Secret>(m),
        "Pod" => round_trip::<Pod>(m),
        "PodDisruptionBudget" => round_trip::<PodDisruptionBudget>(m),
        "NetworkPolicy" => round_trip::<NetworkPolicy>(m),
        "ValidatingWebhookConfiguration" => round_trip::<ValidatingWebhookConfiguration>(m),
        "MutatingWebhookConfiguration" => round_trip::<MutatingWebhookConfiguration>(m),
        other => Err(format!("{}: {other:?} is not a typed kind", m.locator())),
    }
}

fn round_trip<T: DeserializeOwned + Serialize>(m: &Manifest) -> Result<(), String> {
    let typed: T = m.to_typed()?;
    let back = serde_json::to_value(&typed).map_err(|e| format!("{}: {e}", m.locator()))?;
    let mut lost = Vec::new();
    lost_fields(&m.value, &back, String::new(), &mut lost);
    if lost.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}: fields not in the Kubernetes schema or changed by parsing: {}",
            m.locator(),
            lost.join(", ")
        ))
    }
}

/// JSON pointers of `original` whose value `back` does not have.
fn lost_fields(original: &Value, back: &Value, at: String, out: &mut Vec<String>) {
    match (original, back) {
        (Value::Object(o), Value::Object(b)) => {
            for (k, v) in o {
                match b.get(k) {
                    Some(bv) => lost_fields(v, bv, format!("{at}/{k}"), out),
                    None => out.push(format!("{at}/{k}")),
                }
            }
        }
        (Value::Array(o), Value::Array(b)) if o.len() == b.len() => {
            for (i, (v, bv)) in o.iter().zip(b).enumerate() {
                lost_fields(v, bv, format!("{at}/{i}"), out);
            }
        }
        (o, b) if o == b => {}
        (o, b) => out.push(format!("{at} ({o} became {b})")),
    }
}

/// Fields a cert-manager `spec` may have, by kind (the ones this project uses
/// or might; anything else is most likely a typo).
const CERT_MANAGER_SPEC_FIELDS: &[(&str, &[&str])] = &[
    ("Issuer", &["selfSigned", "ca", "acme", "vault", "venafi"]),
    (
        "Certificate",
        &[
            "secretName",
            "issuerRef",
            "commonName",
            "dnsNames",
            "ipAddresses",
            "uris",
            "emailAddresses",
            "isCA",
            "duration",
            "renewBefore",
            "usages",
            "privateKey",
            "subject",
            "secretTemplate",
            "revisionHistoryLimit",
        ],
    ),
];

/// Key usages cert-manager accepts.
const CERT_MANAGER_USAGES: &[&str] = &[
    "signing",
    "digital signature",
    "content commitment",
    "key encipherment",
    "key agreement",
    "data encipherment",
    "cert sign",
    "crl sign",
    "encipher only",
    "decipher only",
    "any",
    "server auth",
    "client auth",
    "code signing",
    "email protection",
    "s/mime",
    "ipsec end system",
    "ipsec tunnel",
    "ipsec user",
    "timestamping",
    "ocsp signing",
    "microsoft sgc",
    "netscape sgc",
];

/// Checks an Issuer or Certificate: apiVersion, known spec fields, and the
/// fields cert-manager requires.
pub fn check_cert_manager(m: &Manifest) -> Result<(), String> {
    let loc = m.locator();
    if m.api_version() != "cert-manager.io/v1" {
        return Err(format!(
            "{loc}: apiVersion {:?}, want cert-manager.io/v1",
            m.api_version()
        ));
    }
    if m.name().is_empty() {
        return Err(format!("{loc}: metadata.name is missing"));
    }
    let spec = m
        .value
        .get("spec")
        .and_then(Value::as_object)
        .ok_or_else(|| format!("{loc}: spec is missing"))?;
    let allowed = CERT_MANAGER_SPEC_FIELDS
        .iter()
        .find(|(k, _)| *k == m.kind())
        .map(|(_, f)| *f)
        .ok_or_else(|| format!("{loc}: {} is not a cert-manager kind", m.kind()))?;
    if let Some(unknown) = spec.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("{loc}: spec.{unknown} is not a {} field", m.kind()));
    }
    let text = |key: &str| spec.get(key).and_then(Value::as_str).filter(|s| !s.is_empty());
    match m.kind() {
        "Issuer" => {
            let kinds: Vec<&String> = spec.keys().collect();
            if kinds.len() != 1 {
                return Err(format!(
                    "{loc}: an Issuer needs exactly one issuer type, found {kinds:?}"
                ));
            }
            if let Some(ca) = spec.get("ca")
                && ca.get("secretName").and_then(Value::as_str).is_none()
            {
                return Err(format!("{loc}: spec.ca.secretName is required"));
            }
            if let Some(s) = spec.get("selfSigned")
                && !s.is_object()
            {
                return Err(format!("{loc}: spec.selfSigned must be an object"));
            }
        }
        _ => {
            if text("secretName").is_none() {
                return Err(format!("{loc}: spec.secretName is required"));
            }
            let issuer = spec
                .get("issuerRef")
                .ok_or_else(|| format!("{loc}: spec.issuerRef is required"))?;
            if issuer.get("name").and_then(Value::as_str).is_none() {
                return Err(format!("{loc}: spec.issuerRef.name is required"));
            }
            match issuer.get("kind").and_then(Value::as_str) {
                None | Some("Issuer" | "ClusterIssuer") => {}
                Some(other) => return Err(format!("{loc}: spec.issuerRef.kind {other:?}")),
            }
            let has_subject = ["commonName", "dnsNames", "ipAddresses", "uris", "emailAddresses"]
                .iter()
                .any(|k| spec.contains_key(*k));
            if !has_subject {
                return Err(format!(
                    "{loc}: a Certificate needs commonName, dnsNames, ipAddresses, uris or emailAddresses"
                ));
            }
            if let Some(v) = spec.get("isCA")
                && !v.is_boolean()
            {
                return Err(format!("{loc}: spec.isCA must be a boolean"));
            }
            for key in ["dnsNames", "usages", "ipAddresses"] {
                if let Some(v) = spec.get(key) {
                    let ok = v.as_array().is_some_and(|a| a.iter().all(|x| x.as_str().is_some()));
                    if !ok {
                        return Err(format!("{loc}: spec.{key} must be a list of strings"));
                    }
                }
            }
            for usage in spec
                .get("usages")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if !CERT_MANAGER_USAGES.contains(&usage) {
                    return Err(format!("{loc}: unknown usage {usage:?}"));
                }
            }
            for key in ["duration", "renewBefore"] {
                if let Some(v) = spec.get(key)
                    && !v.as_str().is_some_and(is_go_duration)
                {
                    return Err(format!("{loc}: spec.{key} {v} is not a duration like 2160h"));
                }
            }
        }
    }
    Ok(())
}

/// A Go `time.Duration` string made of hours, minutes and seconds (`2160h`, `1h30m`).
pub fn is_go_duration(s: &str) -> bool {
    let mut rest = s;
    if rest.is_empty() {
        return false;
    }
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return false;
        }
        rest = &rest[digits..];
        let unit = rest.chars().take_while(char::is_ascii_alphabetic).count();
        if !matches!(&rest[..unit], "h" | "m" | "s") {
            return false;
        }
        rest = &rest[unit..];
    }
    true
}
