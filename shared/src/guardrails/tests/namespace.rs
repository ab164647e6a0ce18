//! Namespace validation.

use k8s_openapi::api::core::v1::Namespace;
use rstest::rstest;
use serde_json::{Value, json};

use super::*;

fn ns(name: &str, labels: Value) -> Namespace {
    serde_json::from_value(
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}),
    )
    .expect("namespace parses")
}

const NAME: &str = "kubernetes.io/metadata.name";

#[rstest]
#[case::no_labels(Operation::Create, None, ns("shop", json!(null)), &[])]
#[case::name_label_matches(Operation::Create, None, ns("shop", json!({NAME: "shop"})), &[])]
#[case::name_label_differs(Operation::Create, None, ns("shop", json!({NAME: "bank"})), &[NAME])]
#[case::name_label_differs_on_update(Operation::Update, Some(ns("shop", json!({NAME: "bank"}))), ns("shop", json!({NAME: "bank"})), &[NAME])]
#[case::known_tier(Operation::Create, None, ns("shop", json!({"tier": "data"})), &[])]
#[case::unknown_tier(Operation::Create, None, ns("shop", json!({"tier": "db"})), &["tier"])]
#[case::unknown_tier_added_on_update(Operation::Update, Some(ns("shop", json!({}))), ns("shop", json!({"tier": "db"})), &["tier"])]
#[case::unknown_tier_changed_on_update(Operation::Update, Some(ns("shop", json!({"tier": "dbx"}))), ns("shop", json!({"tier": "db"})), &["tier"])]
#[case::unknown_tier_kept_on_update(Operation::Update, Some(ns("shop", json!({"tier": "db"}))), ns("shop", json!({"tier": "db"})), &[])]
#[case::ungoverned_unknown_tier(Operation::Create, None, ns("kube-system", json!({"tier": "db"})), &[])]
#[case::ungoverned_name_label_differs(Operation::Create, None, ns("kube-system", json!({NAME: "shop"})), &[NAME])]
#[case::both(Operation::Create, None, ns("shop", json!({NAME: "x", "tier": "db"})), &[NAME, "tier"])]
#[case::delete(Operation::Delete, None, ns("shop", json!({"tier": "db"})), &[])]
fn namespace_labels(
    #[case] operation: Operation,
    #[case] old: Option<Namespace>,
    #[case] new: Namespace,
    #[case] bad_labels: &[&str],
) {
    let review = review_namespace(&template(), operation, old.as_ref(), &new);
    let name = new.metadata.name.clone().unwrap_or_default();
    let want: Vec<ViolationKey> = bad_labels
        .iter()
        .map(|l| ViolationKey::NamespaceLabel {
            namespace: name.clone(),
            label: l.to_string(),
        })
        .collect();
    assert_eq!(keys(&review.new_violations), want);
    assert!(review.new_violations.iter().all(|v| v.rule() == RuleId::Namespace));
}

#[test]
fn messages_say_what_is_wrong() {
    let t = template();
    let review = review_namespace(
        &t,
        Operation::Create,
        None,
        &ns("shop", json!({NAME: "bank", "tier": "db"})),
    );
    assert!(
        review.new_violations[0]
            .message
            .contains("kubernetes.io/metadata.name=bank")
    );
    assert!(review.new_violations[0].message.contains("namespace shop"));
    assert!(
        review.new_violations[1]
            .message
            .contains("tier=db names no template tier")
    );
    assert!(
        review.new_violations[1]
            .message
            .contains("gateway, frontend, backend, data")
    );
}
