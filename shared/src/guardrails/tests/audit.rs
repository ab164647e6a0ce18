//! `audit_state`: violations of governed namespaces, and the structure
//! problems of ungoverned ones as warnings.

use serde_json::json;

use super::*;

fn broken(namespace: &str) -> NetworkPolicy {
    policy(
        namespace,
        "broken",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
    )
}

#[test]
fn structure_problems_of_ungoverned_namespaces_are_warnings() {
    let t = template();
    // kube-public is only known through its policy.
    let s = state(&[], &[broken("kube-public")]);
    let audit = audit_state(&t, &s);
    assert!(audit.passes());
    assert_eq!(audit.violations, BTreeMap::new());
    assert_eq!(
        audit.warnings.keys().cloned().collect::<Vec<_>>(),
        vec!["kube-public".to_string()]
    );
    let warnings = &audit.warnings["kube-public"];
    assert_eq!(
        keys(warnings),
        vec![ViolationKey::Structure {
            namespace: "kube-public".into(),
            policy: "broken".into(),
            field: "spec.egress[0].to[0].ipBlock.cidr".into(),
        }]
    );
    assert!(
        warnings[0]
            .message
            .starts_with("policy broken in namespace kube-public: spec.egress[0].to[0].ipBlock.cidr"),
        "{}",
        warnings[0].message
    );
    // The webhook warns with the same message when the policy is created.
    assert_eq!(
        create(&t, &state(&[], &[]), &broken("kube-public")).warnings,
        vec![warnings[0].message.clone()]
    );
}

#[test]
fn ungoverned_namespaces_get_no_other_rule() {
    // A default-deny without DNS and a wide-open ingress: fine outside the template.
    let t = template();
    let open = policy("kube-system", "open", json!({"podSelector": {}, "ingress": [{}]}));
    let s = state(&[("kube-system", &[])], &[deny_all("kube-system"), open]);
    assert_eq!(audit_state(&t, &s), StateAudit::default());
}

#[test]
fn violations_and_warnings_together() {
    let t = template();
    let s = state(
        &[("shop", &[]), ("kube-public", &[])],
        &[broken("shop"), broken("kube-public"), deny_all_with_dns("shop")],
    );
    let audit = audit_state(&t, &s);
    assert!(!audit.passes());
    // The violations are exactly state_violations; the same problem in a
    // governed namespace is a violation there.
    assert_eq!(audit.violations, state_violations(&t, &s));
    assert_eq!(
        of_rule(&audit.violations["shop"], RuleId::R4),
        vec![ViolationKey::Structure {
            namespace: "shop".into(),
            policy: "broken".into(),
            field: "spec.egress[0].to[0].ipBlock.cidr".into(),
        }]
    );
    assert_eq!(
        audit.warnings.keys().cloned().collect::<Vec<_>>(),
        vec!["kube-public".to_string()]
    );
    assert!(audit.warnings["kube-public"].iter().all(|w| w.rule() == RuleId::R4));
    // A prepared state gives the same audit.
    assert_eq!(PreparedState::new(s.clone()).audit_state(&t), audit);
}

#[test]
fn empty_state_passes() {
    assert_eq!(audit_state(&template(), &PolicyState::default()), StateAudit::default());
}
