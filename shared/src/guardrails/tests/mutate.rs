//! Namespace mutation: the patch, applied, gives the expected object.

use k8s_openapi::api::core::v1::Namespace;
use rstest::rstest;
use serde_json::{Value, json};

use super::*;

fn apply(doc: &Value, patch: &json_patch::Patch) -> Value {
    let mut out = doc.clone();
    json_patch::patch(&mut out, patch).expect("patch applies");
    out
}

fn mutate(t: &TierTemplate, doc: &Value) -> Mutation {
    let namespace: Namespace = serde_json::from_value(doc.clone()).expect("namespace parses");
    mutate_namespace(t, &namespace)
}

fn ns(metadata: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": metadata})
}

const NAME: &str = "kubernetes.io/metadata.name";

#[rstest]
#[case::no_labels_no_pattern(json!({"name": "shop"}), json!({NAME: "shop"}), 0)]
#[case::pattern(json!({"name": "shop-backend"}), json!({NAME: "shop-backend", "tier": "backend"}), 0)]
#[case::pattern_needs_prefix(json!({"name": "backend"}), json!({NAME: "backend"}), 0)]
#[case::empty_labels(json!({"name": "shop-data", "labels": {}}), json!({NAME: "shop-data", "tier": "data"}), 0)]
#[case::keeps_other_labels(json!({"name": "a-frontend", "labels": {"team": "x"}}), json!({"team": "x", NAME: "a-frontend", "tier": "frontend"}), 0)]
#[case::fixes_name_label(json!({"name": "shop", "labels": {NAME: "bank"}}), json!({NAME: "shop"}), 0)]
#[case::existing_tier_kept(json!({"name": "shop-data", "labels": {"tier": "backend"}}), json!({NAME: "shop-data", "tier": "backend"}), 0)]
#[case::existing_unknown_tier_kept(json!({"name": "shop-data", "labels": {"tier": "db"}}), json!({NAME: "shop-data", "tier": "db"}), 0)]
#[case::annotation_wins(
    json!({"name": "shop-data", "annotations": {"tierguard.io/tier": "gateway"}}),
    json!({NAME: "shop-data", "tier": "gateway"}),
    0,
)]
#[case::unknown_annotation_sets_nothing(
    json!({"name": "shop-data", "annotations": {"tierguard.io/tier": "db"}}),
    json!({NAME: "shop-data"}),
    1,
)]
#[case::unknown_annotation_with_tier_label_no_warning(
    json!({"name": "shop-data", "labels": {"tier": "data"}, "annotations": {"tierguard.io/tier": "db"}}),
    json!({NAME: "shop-data", "tier": "data"}),
    0,
)]
#[case::ungoverned_gets_name_label_only(
    json!({"name": "kube-system", "annotations": {"tierguard.io/tier": "data"}}),
    json!({NAME: "kube-system"}),
    0,
)]
#[case::ungoverned_unknown_annotation_no_warning(
    json!({"name": "kube-system", "annotations": {"tierguard.io/tier": "db"}}),
    json!({NAME: "kube-system"}),
    0,
)]
#[case::governed_judged_after_name_label(
    // A spoofed name label would make it look ungoverned; the real name governs.
    json!({"name": "team-data", "labels": {NAME: "kube-system"}}),
    json!({NAME: "team-data", "tier": "data"}),
    0,
)]
fn mutation_gives_expected_labels(#[case] metadata: Value, #[case] want_labels: Value, #[case] warnings: usize) {
    let t = template();
    let doc = ns(metadata);
    let mutation = mutate(&t, &doc);
    let patched = apply(&doc, &mutation.patch);
    assert_eq!(patched["metadata"]["labels"], want_labels, "{}", mutation.patch);
    assert_eq!(mutation.warnings.len(), warnings, "{:?}", mutation.warnings);
    // Everything else is untouched.
    let mut rest = patched.clone();
    let mut before = doc.clone();
    rest["metadata"].as_object_mut().map(|m| m.remove("labels"));
    before["metadata"].as_object_mut().map(|m| m.remove("labels"));
    assert_eq!(rest, before);
    // Idempotent: mutating the result changes nothing.
    let again = mutate(&t, &patched);
    assert!(again.patch.0.is_empty(), "{}", again.patch);
}

#[test]
fn patch_shape_and_escaping() {
    let t = template();
    let whole = mutate(&t, &ns(json!({"name": "shop-data"})));
    assert_eq!(
        serde_json::to_value(&whole.patch).expect("json"),
        json!([{"op": "add", "path": "/metadata/labels", "value": {NAME: "shop-data", "tier": "data"}}])
    );
    let keys = mutate(
        &t,
        &ns(json!({"name": "shop-data", "labels": {NAME: "x", "team": "a"}})),
    );
    assert_eq!(
        serde_json::to_value(&keys.patch).expect("json"),
        json!([
            {"op": "replace", "path": "/metadata/labels/kubernetes.io~1metadata.name", "value": "shop-data"},
            {"op": "add", "path": "/metadata/labels/tier", "value": "data"},
        ])
    );
    let nothing = mutate(&t, &ns(json!({"name": "shop", "labels": {NAME: "shop"}})));
    assert!(nothing.patch.0.is_empty());
}

#[test]
fn tier_label_keys_with_slash_and_tilde_are_escaped() {
    let t = TierTemplate::parse("tierLabel: example.com/tier~x\n", "test");
    // `~` is not valid in a label key; the template refuses it, so use a `/` key.
    assert!(t.is_err());
    let t = TierTemplate::parse("tierLabel: example.com/tier\n", "test").expect("template");
    let doc = ns(json!({"name": "shop-data", "labels": {NAME: "shop-data"}}));
    let mutation = mutate(&t, &doc);
    assert_eq!(
        serde_json::to_value(&mutation.patch).expect("json"),
        json!([{"op": "add", "path": "/metadata/labels/example.com~1tier", "value": "data"}])
    );
    assert_eq!(
        apply(&doc, &mutation.patch)["metadata"]["labels"]["example.com/tier"],
        "data"
    );
}

#[test]
fn unknown_annotation_warning_names_it() {
    let m = mutate(
        &template(),
        &ns(json!({"name": "shop", "annotations": {"tierguard.io/tier": "db"}})),
    );
    assert!(m.warnings[0].contains("tierguard.io/tier=db"), "{:?}", m.warnings);
    assert!(m.warnings[0].contains("namespace shop"));
}
