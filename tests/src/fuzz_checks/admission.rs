//! `admission_review`: bytes as an AdmissionReview body, answered by the
//! webhook's handler on both endpoints and in every mode over a small fixed
//! cluster. A body is either refused as a bad request or answered with a
//! well-formed AdmissionReview response.

use std::sync::{Arc, LazyLock};

use base64::Engine as _;
use serde_json::Value;
use tierguard::manifest::{Manifest, parse_manifests};
use tierguard::template::{Mode, TierTemplate};
use tierguard_webhook::admission::{Admission, Endpoint, Outcome};
use tierguard_webhook::metrics::Verdict;
use tierguard_webhook::state::Snapshot;
use tierguard_webhook::state::files::FileState;

/// The cluster every review is judged against: a governed namespace with
/// default-deny and tier policies, a namespace per tier, DNS, and a
/// namespace being deleted.
const STATE: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: kube-system, labels: {kubernetes.io/metadata.name: kube-system}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {kubernetes.io/metadata.name: shop}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop-data, labels: {kubernetes.io/metadata.name: shop-data, tier: data}}
---
apiVersion: v1
kind: Namespace
metadata: {name: shop-backend, labels: {kubernetes.io/metadata.name: shop-backend, tier: backend}}
---
apiVersion: v1
kind: Namespace
metadata: {name: leaving, labels: {kubernetes.io/metadata.name: leaving}}
status: {phase: Terminating}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-all, namespace: shop}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  egress:
    - to:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
          podSelector: {matchLabels: {k8s-app: kube-dns}}
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: backend, namespace: shop}
spec:
  podSelector: {matchLabels: {tier: backend}}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{podSelector: {matchExpressions: [{key: tier, operator: In, values: [gateway, frontend, backend]}]}}]
      ports: [{protocol: TCP, port: 8080}]
  egress:
    - to: [{podSelector: {matchLabels: {tier: data}}}]
      ports: [{protocol: TCP, port: 5432}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: default-deny-all, namespace: shop-data}
spec:
  podSelector: {}
  policyTypes: [Ingress, Egress]
  ingress:
    - from: [{namespaceSelector: {matchLabels: {tier: backend}}}]
  egress:
    - to:
        - namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: kube-system}}
          podSelector: {matchLabels: {k8s-app: kube-dns}}
      ports: [{protocol: UDP, port: 53}, {protocol: TCP, port: 53}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: cleanup, namespace: leaving}
spec: {podSelector: {}, policyTypes: [Ingress]}
"#;

/// One template per mode, and the state they all judge against.
struct Handlers {
    templates: Vec<(Mode, Arc<TierTemplate>)>,
    state: Arc<FileState>,
}

static HANDLERS: LazyLock<Handlers> = LazyLock::new(|| {
    let mut namespaces = Vec::new();
    let mut policies = Vec::new();
    let manifests = match parse_manifests(STATE, "fuzz admission state") {
        Ok(m) => m,
        Err(e) => panic!("the fixed admission state does not parse: {e}"),
    };
    for manifest in manifests {
        match manifest {
            Manifest::Namespace(ns) => namespaces.push(ns),
            Manifest::NetworkPolicy(np) => policies.push(np),
            _ => {}
        }
    }
    let state = Arc::new(FileState::from_snapshot(Snapshot::build(&namespaces, &policies)));
    let templates = [Mode::Enforce, Mode::Warn, Mode::Audit]
        .into_iter()
        .map(|mode| {
            let mut template = TierTemplate::built_in();
            template.mode = mode;
            (mode, Arc::new(template))
        })
        .collect();
    Handlers { templates, state }
});

/// Bytes as an AdmissionReview body; see the module doc.
pub fn admission_review(data: &[u8]) {
    let Handlers { templates, state } = &*HANDLERS;
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_time().build() {
        Ok(r) => r,
        Err(e) => panic!("no tokio runtime for the admission handler: {e}"),
    };
    for (mode, template) in templates {
        for endpoint in [Endpoint::Validate, Endpoint::Mutate] {
            // a fresh handler per input: an admitted change would otherwise
            // stay in the handler's overlay and make the next input's verdict
            // depend on the order the fuzzer ran them in
            let state: Arc<dyn tierguard_webhook::state::StateSource> = state.clone();
            let admission = Admission::new(template.clone(), state);
            match runtime.block_on(admission.handle(endpoint, data)) {
                Err(e) => {
                    let _ = e.to_string();
                }
                Ok(outcome) => check_answer(data, *mode, endpoint, &outcome),
            }
        }
    }
}

fn check_answer(body: &[u8], mode: Mode, endpoint: Endpoint, outcome: &Outcome) {
    let what = format!("{endpoint:?} in mode {mode:?}");
    let request: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => panic!("{what}: answered a body that is not JSON ({e})"),
    };
    let text = match serde_json::to_string(&outcome.response) {
        Ok(t) => t,
        Err(e) => panic!("{what}: the answer cannot be written as JSON: {e}"),
    };
    let answer: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => panic!("{what}: the answer does not read back as JSON ({e}): {text}"),
    };
    assert_eq!(
        answer.get("apiVersion").and_then(Value::as_str),
        Some("admission.k8s.io/v1"),
        "{what}: {text}"
    );
    assert_eq!(
        answer.get("kind").and_then(Value::as_str),
        Some("AdmissionReview"),
        "{what}: {text}"
    );
    let response = &answer["response"];
    assert_eq!(
        response.get("uid"),
        request.pointer("/request/uid"),
        "{what}: the answer must echo the request's uid: {text}"
    );
    let Some(allowed) = response.get("allowed").and_then(Value::as_bool) else {
        panic!("{what}: response.allowed is not set: {text}");
    };
    let refused = matches!(outcome.verdict, Verdict::Denied | Verdict::Invalid);
    assert_eq!(
        allowed, !refused,
        "{what}: verdict {:?} but allowed={allowed}",
        outcome.verdict
    );
    if mode != Mode::Enforce {
        assert_ne!(outcome.verdict, Verdict::Denied, "{what}: only enforce mode denies");
    }
    if !allowed {
        let code = response.pointer("/status/code").and_then(Value::as_u64);
        assert!(
            matches!(code, Some(400 | 403)),
            "{what}: a refusal carries 400 or 403: {text}"
        );
    }
    match response.get("patch") {
        None => assert_ne!(outcome.verdict, Verdict::Patched, "{what}: patched without a patch"),
        Some(patch) => {
            assert_eq!(endpoint, Endpoint::Mutate, "{what}: only /mutate patches: {text}");
            check_patch(&what, &request, patch, &text);
        }
    }
}

/// The patch must decode as a JSONPatch that applies to the object the API
/// server sent and leaves the namespace labelled with its own name.
fn check_patch(what: &str, request: &Value, patch: &Value, text: &str) {
    let Some(encoded) = patch.as_str() else {
        panic!("{what}: response.patch is not a base64 string: {text}");
    };
    let bytes = match base64::engine::general_purpose::STANDARD.decode(encoded) {
        Ok(b) => b,
        Err(e) => panic!("{what}: response.patch is not base64 ({e}): {text}"),
    };
    let operations: json_patch::Patch = match serde_json::from_slice(&bytes) {
        Ok(p) => p,
        Err(e) => panic!("{what}: response.patch is not a JSONPatch ({e}): {text}"),
    };
    let mut object = request.pointer("/request/object").cloned().unwrap_or(Value::Null);
    if let Err(e) = json_patch::patch(&mut object, &operations) {
        panic!("{what}: the patch does not apply to request.object ({e}): patch {operations:?}, object {object}");
    }
    if let Some(name) = object.pointer("/metadata/name").and_then(Value::as_str)
        && !name.is_empty()
    {
        let labels = object.pointer("/metadata/labels");
        assert_eq!(
            labels.and_then(|l| l.get(tierguard::labels::NAMESPACE_NAME_LABEL)),
            Some(&Value::String(name.to_string())),
            "{what}: the patched namespace must carry its name label: {object}"
        );
    }
}
