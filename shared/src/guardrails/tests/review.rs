//! Reviews of NetworkPolicy changes: what is new, step by step.

use serde_json::json;

use super::*;

fn update(t: &TierTemplate, s: &PolicyState, old: &NetworkPolicy, new: &NetworkPolicy) -> Review {
    review_network_policy(t, s, Operation::Update, Some(old), Some(new))
}

fn delete(t: &TierTemplate, s: &PolicyState, old: &NetworkPolicy) -> Review {
    review_network_policy(t, s, Operation::Delete, Some(old), None)
}

fn rules(review: &Review) -> Vec<RuleId> {
    let mut r: Vec<RuleId> = review.new_violations.iter().map(Violation::rule).collect();
    r.dedup();
    r
}

fn data_open(from: &[&str]) -> NetworkPolicy {
    let peers: Vec<_> = from
        .iter()
        .map(|t| json!({"podSelector": {"matchLabels": {"tier": t}}}))
        .collect();
    policy(
        "shop",
        "data-open",
        json!({"podSelector": {"matchLabels": {"tier": "data"}}, "ingress": [{"from": peers}]}),
    )
}

#[test]
fn default_deny_with_dns_as_one_object_is_admitted() {
    let t = template();
    let s = state(&[("shop", &[])], &[]);
    let review = create(&t, &s, &deny_all_with_dns("shop"));
    assert_eq!(review, Review::default());
}

#[test]
fn dns_allow_first_then_default_deny_is_admitted_step_by_step() {
    let t = template();
    let mut s = state(&[("shop", &[])], &[]);
    let dns = dns_allow("shop", "allow-dns", json!({}));
    assert_eq!(create(&t, &s, &dns).new_violations, Vec::new());
    insert(&mut s, &dns);
    assert_eq!(create(&t, &s, &deny_all("shop")).new_violations, Vec::new());
    insert(&mut s, &deny_all("shop"));
    assert_eq!(namespace_violations(&t, &s, "shop"), Vec::new());
    // And the three-tier policies on top.
    for p in three_tier("shop").iter().skip(1) {
        assert_eq!(create(&t, &s, p).new_violations, Vec::new(), "{:?}", p.metadata.name);
        insert(&mut s, p);
    }
    assert_eq!(namespace_violations(&t, &s, "shop"), Vec::new());
}

#[test]
fn default_deny_without_dns_is_rejected_with_r2() {
    let t = template();
    let s = state(&[("shop", &[])], &[]);
    let review = create(&t, &s, &deny_all("shop"));
    assert_eq!(keys(&review.new_violations), all_dns_keys());
    assert!(
        review
            .new_violations
            .iter()
            .all(|v| v.message.starts_with("policy default-deny-all would drop DNS"))
    );
}

#[test]
fn deleting_the_default_deny_is_rejected_with_r1() {
    let t = template();
    let s = state(&[("shop", &[])], &three_tier("shop"));
    let review = delete(&t, &s, &deny_all_with_dns("shop"));
    assert!(rules(&review).contains(&RuleId::R1), "{review:?}");
    assert!(
        keys(&review.new_violations).contains(&r1("shop", Group::Untiered, Direction::Ingress)),
        "{review:?}"
    );
    // Deleting a policy that only allows more is fine.
    let review = delete(&t, &s, &three_tier("shop")[3]);
    assert_eq!(review, Review::default());
}

#[test]
fn deleting_the_dns_allow_of_a_two_object_default_deny_is_rejected_with_r2() {
    let t = template();
    let dns = dns_allow("shop", "allow-dns", json!({}));
    let s = state(&[("shop", &[])], &[dns.clone(), deny_all("shop")]);
    assert_eq!(keys(&delete(&t, &s, &dns).new_violations), all_dns_keys());
}

#[test]
fn a_new_hole_is_rejected_and_a_repeated_one_is_new_for_its_policy() {
    let t = template();
    let mut s = state(&[("shop", &[])], &three_tier("shop"));
    let review = create(&t, &s, &data_open(&["frontend"]));
    assert_eq!(
        keys(&review.new_violations),
        vec![r3("data-open", Direction::Ingress, "data", peer("frontend"))]
    );
    insert(&mut s, &data_open(&["frontend"]));
    let mut second = data_open(&["frontend"]);
    second.metadata.name = Some("second-door".into());
    let review = create(&t, &s, &second);
    assert_eq!(
        keys(&review.new_violations),
        vec![r3("second-door", Direction::Ingress, "data", peer("frontend"))]
    );
}

#[test]
fn updates_keep_their_old_violations_but_add_none() {
    let t = template();
    let mut s = state(&[("shop", &[])], &three_tier("shop"));
    let old = data_open(&["frontend"]);
    insert(&mut s, &old);
    // Same hole plus an allowed peer: admitted.
    assert_eq!(
        update(&t, &s, &old, &data_open(&["frontend", "backend"])),
        Review::default()
    );
    // Another hole: rejected, with only the new key.
    let review = update(&t, &s, &old, &data_open(&["frontend", "gateway"]));
    assert_eq!(
        keys(&review.new_violations),
        vec![r3("data-open", Direction::Ingress, "data", peer("gateway"))]
    );
    // Fixing it: admitted.
    assert_eq!(update(&t, &s, &old, &data_open(&["backend"])), Review::default());
}

#[test]
fn updates_keep_their_old_structure_problems() {
    let t = template();
    let broken = |extra: bool| {
        let mut ports = vec![json!({"port": 70000})];
        if extra {
            ports.push(json!({"protocol": "ICMP"}));
        }
        policy(
            "shop",
            "p",
            json!({"podSelector": {"matchLabels": {"tier": "backend"}}, "egress": [{"ports": ports}]}),
        )
    };
    let mut s = state(&[("shop", &[])], &three_tier("shop"));
    let review = create(&t, &s, &broken(false));
    assert_eq!(rules(&review), vec![RuleId::R4]);
    insert(&mut s, &broken(false));
    assert_eq!(update(&t, &s, &broken(false), &broken(false)), Review::default());
    let review = update(&t, &s, &broken(false), &broken(true));
    assert_eq!(
        keys(&review.new_violations),
        vec![ViolationKey::Structure {
            namespace: "shop".into(),
            policy: "p".into(),
            field: "spec.egress[0].ports[1].protocol".into()
        }]
    );
}

#[test]
fn a_namespace_out_of_line_can_be_fixed_step_by_step() {
    let t = template();
    // Holes everywhere: no default-deny, an open data policy.
    let mut s = state(&[("shop", &[])], &[data_open(&["frontend"])]);
    let steps = [deny_all_with_dns("shop"), data_open(&["backend"])];
    for step in &steps {
        let review = if s
            .policies
            .contains_key(&("shop".to_string(), step.metadata.name.clone().unwrap_or_default()))
        {
            update(&t, &s, &data_open(&["frontend"]), step)
        } else {
            create(&t, &s, step)
        };
        assert_eq!(review.new_violations, Vec::new());
        insert(&mut s, step);
    }
    assert_eq!(namespace_violations(&t, &s, "shop"), Vec::new());
}

#[test]
fn ungoverned_namespaces_admit_with_structure_warnings() {
    let t = template();
    let s = state(&[("kube-system", &[])], &[]);
    let bad = policy(
        "kube-system",
        "p",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
    );
    let review = create(&t, &s, &bad);
    assert_eq!(review.new_violations, Vec::new());
    assert_eq!(review.warnings.len(), 1);
    assert!(
        review.warnings[0]
            .contains("spec.ingress[0].from[0].ipBlock.except[0] 10.1.0.0/24 is not inside cidr 10.0.0.0/16")
    );
    // A default-deny without DNS there is not judged at all.
    assert_eq!(create(&t, &s, &deny_all("kube-system")), Review::default());
    assert_eq!(delete(&t, &s, &deny_all("kube-system")), Review::default());
}

#[test]
fn namespaces_absent_from_state_are_judged_by_name() {
    let t = template();
    let empty = PolicyState::default();
    assert_eq!(
        keys(&create(&t, &empty, &deny_all("shop")).new_violations),
        all_dns_keys()
    );
    assert_eq!(create(&t, &empty, &deny_all("kube-public")), Review::default());
}

#[test]
fn missing_objects_review_nothing() {
    let t = template();
    let s = PolicyState::default();
    assert_eq!(
        review_network_policy(&t, &s, Operation::Create, None, None),
        Review::default()
    );
    assert_eq!(
        review_network_policy(&t, &s, Operation::Delete, None, None),
        Review::default()
    );
}

#[test]
fn new_violations_are_sorted_by_key() {
    let t = template();
    let s = state(&[("shop", &[])], &[]);
    let p = policy(
        "shop",
        "wide",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [{}], "egress": [{"ports": [{"port": 0}]}]}),
    );
    let got = keys(&create(&t, &s, &p).new_violations);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    assert!(got.iter().any(|k| matches!(k, ViolationKey::Dns { .. })));
    assert!(got.iter().any(|k| matches!(k, ViolationKey::Template { .. })));
    assert!(got.iter().any(|k| matches!(k, ViolationKey::Structure { .. })));
}
