//! Golden AdmissionReview responses: the exact JSON for an allow, a deny and
//! a patch. Regenerate deliberately with `UPDATE_GOLDEN=1 cargo test -p
//! tierguard-webhook --test golden` and review the diff.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Harness, Req, fixtures, yaml};

fn check_golden(name: &str, got: &Value) {
    let path = fixtures().join("golden").join(format!("{name}.json"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(got).unwrap() + "\n").unwrap();
        return;
    }
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (create it with UPDATE_GOLDEN=1)", path.display()));
    let want: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        got,
        &want,
        "{} differs; got:\n{}",
        path.display(),
        serde_json::to_string_pretty(got).unwrap()
    );
}

#[tokio::test]
async fn golden_responses() {
    let h = Harness::start(None).await;
    let allow = Req::create(
        "NetworkPolicy",
        yaml(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend-admin, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {tier: frontend}}}], ports: [{port: 9090}]}]
",
        ),
    )
    .uid("8f1c1e4e-0000-4000-8000-000000000001");
    let deny = Req::create(
        "NetworkPolicy",
        yaml(
            "apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: data-open, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: data}}
  policyTypes: [Ingress]
  ingress: [{from: [{podSelector: {matchLabels: {tier: frontend}}}], ports: [{port: 5432}]}]
",
        ),
    )
    .uid("8f1c1e4e-0000-4000-8000-000000000002");
    let patch = Req::create(
        "Namespace",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "payments-backend"}}),
    )
    .uid("8f1c1e4e-0000-4000-8000-000000000003");
    check_golden("allow", &h.post("/validate", &allow.review()).await);
    check_golden("deny", &h.post("/validate", &deny.review()).await);
    let patched = h.post("/mutate", &patch.review()).await;
    check_golden("patch", &patched);
    // the same patch, decoded, so a reviewer can read it in a diff
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(patched["response"]["patch"].as_str().unwrap_or_default())
        .unwrap();
    check_golden("patch.decoded", &serde_json::from_slice(&bytes).unwrap());
    h.stop().await;
}
