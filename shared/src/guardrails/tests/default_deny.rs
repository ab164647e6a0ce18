//! R1 and the groups it is judged on.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;

fn deny(name: &str, pod_selector: Value) -> NetworkPolicy {
    policy(
        "shop",
        name,
        json!({"podSelector": pod_selector, "policyTypes": ["Ingress", "Egress"], "egress": [dns_rule()]}),
    )
}

fn both(groups: &[Group]) -> Vec<ViolationKey> {
    let mut out: Vec<ViolationKey> = groups
        .iter()
        .flat_map(|g| Direction::BOTH.map(|d| r1("shop", g.clone(), d)))
        .collect();
    out.sort();
    out
}

fn ns_group(t: &str) -> Group {
    Group::Namespace(t.to_string())
}

#[rstest]
#[case::no_policies(&[], vec![], unlabelled_groups())]
#[case::default_deny_covers_all(&[], vec![deny("d", json!({}))], vec![])]
#[case::per_tier_denies_leave_untiered_uncovered(
    &[],
    vec![
        deny("g", json!({"matchLabels": {"tier": "gateway"}})),
        deny("f", json!({"matchLabels": {"tier": "frontend"}})),
        deny("b", json!({"matchLabels": {"tier": "backend"}})),
        deny("d", json!({"matchLabels": {"tier": "data"}})),
    ],
    vec![Group::Untiered],
)]
#[case::extra_label_does_not_cover(&[], vec![deny("x", json!({"matchLabels": {"tier": "backend", "app": "x"}}))], unlabelled_groups())]
#[case::in_covers_each_listed_tier(
    &[],
    vec![deny("x", json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": ["backend", "data"]}]}))],
    vec![tier("gateway"), tier("frontend"), Group::Untiered],
)]
#[case::not_in_covers_untiered_too(
    &[],
    vec![deny("x", json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gateway"]}]}))],
    vec![tier("gateway")],
)]
#[case::untiered_selector_covers_untiered(
    &[],
    vec![deny("x", json!({"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["gateway", "frontend", "backend", "data"]}]}))],
    vec![tier("gateway"), tier("frontend"), tier("backend"), tier("data")],
)]
#[case::tier_labelled_namespace_is_one_group(&[("tier", "data")], vec![], vec![ns_group("data")])]
#[case::tier_labelled_namespace_needs_empty_selector(
    &[("tier", "data")],
    vec![deny("x", json!({"matchLabels": {"tier": "data"}}))],
    vec![ns_group("data")],
)]
#[case::tier_labelled_namespace_with_default_deny(&[("tier", "data")], vec![deny("x", json!({}))], vec![])]
#[case::unknown_namespace_tier_is_unlabelled(&[("tier", "weird")], vec![], unlabelled_groups())]
fn groups_need_both_directions_isolated(
    #[case] namespace_labels: &[(&str, &str)],
    #[case] policies: Vec<NetworkPolicy>,
    #[case] uncovered: Vec<Group>,
) {
    let s = state(&[("shop", namespace_labels)], &policies);
    let got = namespace_violations(&template(), &s, "shop");
    assert_eq!(of_rule(&got, RuleId::R1), both(&uncovered));
}

#[rstest]
#[case::ingress_only(json!(["Ingress"]), vec![Direction::Egress])]
#[case::egress_only(json!(["Egress"]), vec![Direction::Ingress])]
#[case::defaulted_without_egress_rules(json!(null), vec![Direction::Egress])]
fn isolation_follows_policy_types(#[case] types: Value, #[case] missing: Vec<Direction>) {
    let mut spec = json!({"podSelector": {}});
    if !types.is_null() {
        spec["policyTypes"] = types;
    }
    let s = state(&[("shop", &[])], &[policy("shop", "p", spec)]);
    let got = of_rule(&namespace_violations(&template(), &s, "shop"), RuleId::R1);
    let mut want: Vec<ViolationKey> = unlabelled_groups()
        .into_iter()
        .flat_map(|g| missing.iter().map(move |d| r1("shop", g.clone(), *d)))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

#[test]
fn messages_say_what_to_add() {
    let s = state(&[("shop", &[]), ("labelled", &[("tier", "data")])], &[]);
    let t = template();
    let got = namespace_violations(&t, &s, "shop");
    let data = got
        .iter()
        .find(|v| v.key == r1("shop", tier("data"), Direction::Egress))
        .expect("R1 for data egress");
    assert_eq!(
        data.message,
        "tier data in namespace shop has no default-deny for Egress: add a policy with podSelector {} (or tier: data) and policyTypes [Ingress, Egress]"
    );
    let untiered = got
        .iter()
        .find(|v| v.key == r1("shop", Group::Untiered, Direction::Ingress))
        .expect("R1 for untiered ingress");
    assert!(
        untiered
            .message
            .starts_with("untiered pods in namespace shop has no default-deny for Ingress")
    );
    assert!(untiered.message.contains("podSelector {}"));
    let labelled = namespace_violations(&t, &s, "labelled");
    assert_eq!(
        keys(&labelled),
        vec![
            r1("labelled", ns_group("data"), Direction::Ingress),
            r1("labelled", ns_group("data"), Direction::Egress),
        ]
    );
    assert!(
        labelled[0]
            .message
            .contains("tier data in namespace labelled has no default-deny for Ingress")
    );
    assert!(labelled[0].message.contains("only an empty podSelector"));
}

#[rstest]
#[case::in_state_governed("shop", true)]
#[case::absent_from_state_governed("nowhere", true)]
#[case::absent_from_state_ungoverned("kube-public", false)]
#[case::in_state_without_name_label_ungoverned("kube-system", false)]
fn governed_namespaces_come_from_state_labels(#[case] namespace: &str, #[case] governed: bool) {
    let mut s = state(&[("shop", &[])], &[]);
    // As a manifest might give it: no name label.
    s.namespaces
        .insert("kube-system".to_string(), labels(&[("team", "platform")]));
    let got = namespace_violations(&template(), &s, namespace);
    assert_eq!(!got.is_empty(), governed, "{got:?}");
}

#[test]
fn a_template_selector_governs_by_labels() {
    let t = TierTemplate::parse("governedNamespaces: {matchLabels: {tierguard: enabled}}\n", "test").expect("template");
    let s = state(&[("on", &[("tierguard", "enabled")]), ("off", &[])], &[]);
    assert!(!namespace_violations(&t, &s, "on").is_empty());
    assert!(namespace_violations(&t, &s, "off").is_empty());
}
