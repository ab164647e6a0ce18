//! R4: structure problems, keyed by field.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;

#[rstest]
#[case::except_outside(
    json!({"podSelector": {}, "ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
    &["spec.ingress[0].from[0]", "spec.ingress[0].from[1].ipBlock.except[0]"],
    "spec.ingress[0].from[1].ipBlock.except[0] 10.1.0.0/24 is not inside cidr 10.0.0.0/16",
)]
#[case::bad_cidr(json!({"podSelector": {}, "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}), &["spec.egress[0].to[0].ipBlock.cidr"], "not a valid CIDR")]
#[case::port_range(json!({"podSelector": {}, "egress": [{"ports": [{"port": 70000}]}]}), &["spec.egress[0].ports[0].port"], "out of range")]
#[case::end_port_without_port(json!({"podSelector": {}, "egress": [{"ports": [{"endPort": 80}]}]}), &["spec.egress[0].ports[0].endPort"], "requires a numeric port")]
#[case::end_port_below(json!({"podSelector": {}, "egress": [{"ports": [{"port": 80, "endPort": 70}]}]}), &["spec.egress[0].ports[0].endPort"], "below port 80")]
#[case::protocol(json!({"podSelector": {}, "egress": [{"ports": [{"protocol": "ICMP", "port": 1}]}]}), &["spec.egress[0].ports[0].protocol"], "not a supported protocol")]
#[case::operator(
    json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["x"]}]}}),
    &["spec.podSelector.matchExpressions[0].operator"],
    "not a valid selector operator",
)]
#[case::values(
    json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "In"}]}}),
    &["spec.podSelector.matchExpressions[0].values"],
    "must be non-empty",
)]
fn structure_problems_name_the_field(#[case] spec: Value, #[case] fields: &[&str], #[case] message: &str) {
    let s = state(&[("shop", &[])], &[policy("shop", "p", spec)]);
    let got = namespace_violations(&template(), &s, "shop");
    let want: Vec<ViolationKey> = fields
        .iter()
        .map(|f| ViolationKey::Structure {
            namespace: "shop".into(),
            policy: "p".into(),
            field: f.to_string(),
        })
        .collect();
    assert_eq!(of_rule(&got, RuleId::R4), want);
    let v = got
        .iter()
        .find(|v| v.rule() == RuleId::R4 && v.message.contains(message));
    let v = v.unwrap_or_else(|| panic!("no R4 message containing {message:?} in {got:?}"));
    assert!(
        v.message.starts_with("policy p in namespace shop: spec."),
        "{}",
        v.message
    );
}

#[test]
fn problems_of_one_field_share_a_key() {
    let spec = json!({"podSelector": {"matchLabels": {"Bad Key": "bad value"}}});
    let s = state(&[("shop", &[])], &[policy("shop", "p", spec)]);
    let got = namespace_violations(&template(), &s, "shop");
    let r4: Vec<&Violation> = got.iter().filter(|v| v.rule() == RuleId::R4).collect();
    assert_eq!(r4.len(), 1, "{r4:?}");
    assert!(r4[0].message.contains("label key"));
    assert!(r4[0].message.contains("label value"));
}

#[test]
fn a_broken_pod_selector_selects_nothing() {
    // The usable part selects nothing, so it covers no group and adds no R2/R3.
    let spec = json!({"podSelector": {"matchExpressions": [{"key": "tier", "operator": "Near", "values": ["x"]}]},
                      "policyTypes": ["Ingress", "Egress"], "ingress": [{}]});
    let s = state(&[("shop", &[])], &[policy("shop", "p", spec)]);
    let got = namespace_violations(&template(), &s, "shop");
    assert_eq!(of_rule(&got, RuleId::R1).len(), 10);
    assert_eq!(of_rule(&got, RuleId::R2), Vec::new());
    assert_eq!(of_rule(&got, RuleId::R3), Vec::new());
}
