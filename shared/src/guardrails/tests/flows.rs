//! R3: template flows, peers' tiers and the DNS exemption.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;

/// The namespaces every R3 case sees.
fn world(policies: &[NetworkPolicy]) -> PolicyState {
    state(
        &[
            ("shop", &[]),
            ("shop-data", &[("tier", "data")]),
            ("shop-backend", &[("tier", "backend")]),
            ("monitoring", &[]),
            ("weird", &[("tier", "weird")]),
            ("kube-system", &[]),
        ],
        policies,
    )
}

fn r3_of(policies: &[NetworkPolicy], namespace: &str) -> Vec<ViolationKey> {
    of_rule(
        &namespace_violations(&template(), &world(policies), namespace),
        RuleId::R3,
    )
}

fn ingress(name: &str, pod_selector: Value, from: Value) -> NetworkPolicy {
    policy(
        "shop",
        name,
        json!({"podSelector": pod_selector, "policyTypes": ["Ingress"], "ingress": [{"from": from}]}),
    )
}

fn egress(name: &str, pod_selector: Value, rule: Value) -> NetworkPolicy {
    policy(
        "shop",
        name,
        json!({"podSelector": pod_selector, "policyTypes": ["Egress"], "egress": [rule]}),
    )
}

fn data() -> Value {
    json!({"matchLabels": {"tier": "data"}})
}

fn pods(t: &str) -> Value {
    json!({"podSelector": {"matchLabels": {"tier": t}}})
}

fn in_namespace(name: &str, pod_selector: Value) -> Value {
    json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": name}}, "podSelector": pod_selector})
}

fn ing(p: &str, target: &str, peer: PeerTier) -> ViolationKey {
    r3(p, Direction::Ingress, target, peer)
}

fn eg(p: &str, target: &str, peer: PeerTier) -> ViolationKey {
    r3(p, Direction::Egress, target, peer)
}

fn sorted(mut keys: Vec<ViolationKey>) -> Vec<ViolationKey> {
    keys.sort();
    keys
}

#[rstest]
#[case::allowed_tier(ingress("p", data(), json!([pods("backend")])), vec![])]
#[case::forbidden_tier(ingress("p", data(), json!([pods("frontend")])), vec![ing("p", "data", peer("frontend"))])]
#[case::own_namespace_any_pod(
    ingress("p", data(), json!([{"podSelector": {}}])),
    vec![ing("p", "data", peer("gateway")), ing("p", "data", peer("frontend")), ing("p", "data", peer("data")), ing("p", "data", PeerTier::Untiered)],
)]
#[case::no_from_is_every_peer(
    policy("shop", "p", json!({"podSelector": data(), "ingress": [{}]})),
    vec![ing("p", "data", peer("gateway")), ing("p", "data", peer("frontend")), ing("p", "data", peer("data")), ing("p", "data", PeerTier::Untiered), ing("p", "data", PeerTier::External)],
)]
#[case::ip_block_is_external(ingress("p", data(), json!([{"ipBlock": {"cidr": "10.0.0.0/8"}}])), vec![ing("p", "data", PeerTier::External)])]
#[case::any_allows_external(ingress("p", json!({"matchLabels": {"tier": "gateway"}}), json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}])), vec![])]
#[case::any_allows_untiered(ingress("p", json!({"matchLabels": {"tier": "gateway"}}), json!([pods("monitoring")])), vec![])]
#[case::untiered_pod_peer(ingress("p", data(), json!([pods("monitoring")])), vec![ing("p", "data", PeerTier::Untiered)])]
#[case::ungoverned_namespace_is_untiered(
    ingress("p", data(), json!([in_namespace("kube-system", json!({"matchLabels": {"tier": "backend"}}))])),
    vec![ing("p", "data", PeerTier::Untiered)],
)]
#[case::labelled_namespace_gives_its_tier(
    ingress("p", data(), json!([in_namespace("shop-data", json!({"matchLabels": {"tier": "backend"}}))])),
    vec![ing("p", "data", peer("data"))],
)]
#[case::labelled_namespace_allowed(ingress("p", data(), json!([in_namespace("shop-backend", json!({}))])), vec![])]
#[case::unlabelled_namespace_uses_pod_labels(ingress("p", data(), json!([in_namespace("monitoring", json!({"matchLabels": {"tier": "backend"}}))])), vec![])]
// docs/guardrails.md, "Groups": a governed namespace whose tier label names no template tier
// is treated as unlabelled, and as a peer its pods are untiered, whatever
// their own labels say.
#[case::unknown_namespace_tier_peers_are_untiered(
    ingress("p", data(), json!([in_namespace("weird", json!({}))])),
    vec![ing("p", "data", PeerTier::Untiered)],
)]
#[case::unknown_namespace_tier_ignores_pod_tiers(
    ingress("p", data(), json!([in_namespace("weird", json!({"matchLabels": {"tier": "backend"}}))])),
    vec![ing("p", "data", PeerTier::Untiered)],
)]
#[case::selector_matching_no_namespace(ingress("p", data(), json!([{"namespaceSelector": {"matchLabels": {"team": "nobody"}}}])), vec![])]
#[case::all_namespaces(
    ingress("p", data(), json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"tier": "backend"}}}])),
    vec![ing("p", "data", peer("data")), ing("p", "data", PeerTier::Untiered)],
)]
#[case::empty_selector_may_select_every_tier(
    ingress("p", json!({}), json!([pods("frontend")])),
    vec![ing("p", "data", peer("frontend"))],
)]
#[case::untiered_targets_have_no_flows(ingress("p", json!({"matchLabels": {"tier": "monitoring"}}), json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}])), vec![])]
#[case::egress_to_nothing(egress("p", data(), json!({"to": [pods("backend")]})), vec![eg("p", "data", peer("backend"))])]
#[case::egress_allowed(egress("p", json!({"matchLabels": {"tier": "backend"}}), json!({"to": [pods("data")]})), vec![])]
#[case::egress_external_not_allowed(
    egress("p", json!({"matchLabels": {"tier": "backend"}}), json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]})),
    vec![eg("p", "backend", PeerTier::External)],
)]
#[case::dns_rule_exempt(egress("p", data(), dns_rule()), vec![])]
#[case::dns_port_to_any_peer_exempt(egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "UDP", "port": 53}]})), vec![])]
#[case::dns_named_ports_exempt(egress("p", data(), json!({"ports": [{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}]})), vec![])]
#[case::dns_end_port_53_exempt(egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "UDP", "port": 53, "endPort": 53}]})), vec![])]
#[case::dns_tcp_name_alone_exempt(egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "TCP", "port": "dns-tcp"}]})), vec![])]
#[case::dns_name_on_the_wrong_protocol_not_exempt(
    egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "TCP", "port": "dns"}]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::port_5353_not_dns_by_default(
    egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "TCP", "port": 5353}]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::end_port_range_not_exempt(
    egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "UDP", "port": 50, "endPort": 60}]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::mixed_ports_not_exempt(
    egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "UDP", "port": 53}, {"port": 80}]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::no_ports_not_dns(
    egress("p", data(), json!({"to": [pods("frontend")]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::sctp_53_not_dns(
    egress("p", data(), json!({"to": [pods("frontend")], "ports": [{"protocol": "SCTP", "port": 53}]})),
    vec![eg("p", "data", peer("frontend"))],
)]
#[case::exemption_is_egress_only(
    policy("shop", "p", json!({"podSelector": data(), "ingress": [{"from": [pods("frontend")], "ports": [{"protocol": "UDP", "port": 53}]}]})),
    vec![ing("p", "data", peer("frontend"))],
)]
#[case::rules_of_a_direction_not_isolated_are_ignored(
    policy("shop", "p", json!({"podSelector": data(), "policyTypes": ["Egress"], "ingress": [{"from": [pods("frontend")]}]})),
    vec![],
)]
fn peers_against_flows(#[case] p: NetworkPolicy, #[case] want: Vec<ViolationKey>) {
    assert_eq!(r3_of(&[p], "shop"), sorted(want));
}

#[test]
fn tier_labelled_namespace_targets_its_tier() {
    let p = policy(
        "shop-data",
        "p",
        json!({"podSelector": {"matchLabels": {"app": "x"}}, "ingress": [{"from": [{"podSelector": {}}]}]}),
    );
    let got = r3_of(&[p], "shop-data");
    assert_eq!(
        got,
        vec![ViolationKey::Template {
            namespace: "shop-data".into(),
            policy: "p".into(),
            direction: Direction::Ingress,
            tier: "data".into(),
            peer: peer("data"),
        }]
    );
}

#[test]
fn message_names_policy_flow_and_field() {
    let p = ingress("data-open", data(), json!([pods("backend"), pods("frontend")]));
    let got = namespace_violations(&template(), &world(&[p]), "shop");
    let v = got.iter().find(|v| v.rule() == RuleId::R3).expect("R3");
    assert!(
        v.message.starts_with(
            "policy data-open lets tier frontend reach tier data (template allows data ingress from: backend)"
        ),
        "{}",
        v.message
    );
    assert!(v.message.contains("namespace shop"));
    assert!(v.message.contains("spec.ingress[0].from[1]"), "{}", v.message);

    let e = egress("data-out", data(), json!({"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}));
    let got = namespace_violations(&template(), &world(&[e]), "shop");
    let v = got.iter().find(|v| v.rule() == RuleId::R3).expect("R3");
    assert!(
        v.message.starts_with("policy data-out lets tier data reach external addresses (ipBlock) (template allows data egress to: nothing)"),
        "{}",
        v.message
    );
    assert!(v.message.contains("spec.egress[0].to[0]"));
}

#[test]
fn keys_include_the_policy() {
    let a = ingress("a", data(), json!([pods("frontend")]));
    let b = ingress("b", data(), json!([pods("frontend")]));
    assert_eq!(
        r3_of(&[a, b], "shop"),
        vec![ing("a", "data", peer("frontend")), ing("b", "data", peer("frontend"))]
    );
}

#[test]
fn broken_rules_are_skipped_and_fields_keep_spec_indices() {
    let p = policy(
        "shop",
        "p",
        json!({"podSelector": data(), "ingress": [
            {"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]},
            {"from": [pods("frontend")]}
        ]}),
    );
    let got = namespace_violations(&template(), &world(&[p]), "shop");
    assert_eq!(of_rule(&got, RuleId::R3), vec![ing("p", "data", peer("frontend"))]);
    let v = got.iter().find(|v| v.rule() == RuleId::R3).expect("R3");
    assert!(v.message.contains("spec.ingress[1].from[0]"), "{}", v.message);
    assert_eq!(of_rule(&got, RuleId::R4).len(), 1);
}

#[test]
fn namespaces_known_only_through_policies_are_peers() {
    // `check` over manifests may see a namespace only through its policies.
    let p = ingress(
        "p",
        data(),
        json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "elsewhere"}}}]),
    );
    let other = policy("elsewhere", "x", json!({"podSelector": {}}));
    let mut s = world(&[p]);
    insert(&mut s, &other);
    let got = of_rule(&namespace_violations(&template(), &s, "shop"), RuleId::R3);
    assert_eq!(got.len(), 4, "{got:?}");
}

#[test]
fn custom_flows_external_and_any() {
    let t = TierTemplate::parse(
        "tiers:\n  web: {ingressFrom: [external], egressTo: [any]}\n  db: {ingressFrom: [web], egressTo: []}\n",
        "test",
    )
    .expect("template");
    let web = json!({"matchLabels": {"tier": "web"}});
    let cases = [
        (
            ingress("p", web.clone(), json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}])),
            vec![],
        ),
        (
            ingress("p", web.clone(), json!([pods("db")])),
            vec![ing("p", "web", peer("db"))],
        ),
        (
            ingress("p", web.clone(), json!([pods("other")])),
            vec![ing("p", "web", PeerTier::Untiered)],
        ),
        (egress("p", web.clone(), json!({})), vec![]),
    ];
    for (p, want) in cases {
        let s = state(&[("shop", &[])], std::slice::from_ref(&p));
        assert_eq!(
            of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R3),
            want,
            "{p:?}"
        );
    }
}

#[test]
fn own_namespace_with_an_unknown_tier_label_has_untiered_peers() {
    // `weird` is governed and labelled tier=weird: its groups are the
    // unlabelled ones, and its pods as peers are untiered.
    let p = policy(
        "weird",
        "data-from-backend",
        json!({"podSelector": data(), "policyTypes": ["Ingress"], "ingress": [{"from": [pods("backend")]}]}),
    );
    let got = of_rule(&namespace_violations(&template(), &world(&[p]), "weird"), RuleId::R3);
    let want = vec![ViolationKey::Template {
        namespace: "weird".into(),
        policy: "data-from-backend".into(),
        direction: Direction::Ingress,
        tier: "data".into(),
        peer: PeerTier::Untiered,
    }];
    assert_eq!(got, want);
}

/// R3 of one egress rule of a data policy under a template given as text.
fn r3_under(template_text: &str, ports: Value) -> Vec<ViolationKey> {
    let t = TierTemplate::parse(template_text, "test").expect("template");
    let p = egress("p", data(), json!({"to": [pods("frontend")], "ports": ports}));
    of_rule(&namespace_violations(&t, &world(&[p]), "shop"), RuleId::R3)
}

#[rstest]
#[case::extra_port_by_number(json!([{"protocol": "TCP", "port": 5353}]), true)]
#[case::named_port_is_53(json!([{"protocol": "TCP", "port": "dns-tcp"}]), true)]
#[case::every_configured_port(json!([{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": 53}, {"protocol": "TCP", "port": 5353}]), true)]
#[case::extra_port_on_the_other_protocol(json!([{"protocol": "UDP", "port": 5353}]), false)]
#[case::range_between_the_ports(json!([{"protocol": "TCP", "port": 53, "endPort": 5353}]), false)]
fn dns_exemption_follows_configured_ports(#[case] ports: Value, #[case] exempt: bool) {
    let got = r3_under("dns: {ports: [UDP/53, TCP/53, TCP/5353]}\n", ports);
    let want = if exempt {
        vec![]
    } else {
        vec![eg("p", "data", peer("frontend"))]
    };
    assert_eq!(got, want);
}

#[rstest]
#[case::template_names(json!([{"protocol": "UDP", "port": "domain"}, {"protocol": "TCP", "port": "domain-tcp"}]), true)]
#[case::coredns_name_is_not_dns_here(json!([{"protocol": "UDP", "port": "dns"}]), false)]
#[case::template_name_on_the_wrong_protocol(json!([{"protocol": "TCP", "port": "domain"}]), false)]
fn dns_exemption_follows_configured_names(#[case] ports: Value, #[case] exempt: bool) {
    let got = r3_under("dns: {portNames: {UDP: domain, TCP: domain-tcp}}\n", ports);
    let want = if exempt {
        vec![]
    } else {
        vec![eg("p", "data", peer("frontend"))]
    };
    assert_eq!(got, want);
}

#[test]
fn dns_name_for_a_port_the_template_does_not_ask_for_is_not_dns() {
    // The name still means 53 on the DNS pods, and 53 is not a DNS port here.
    let got = r3_under(
        "dns: {ports: [UDP/5353], portNames: {UDP: mdns}}\n",
        json!([{"protocol": "UDP", "port": "mdns"}]),
    );
    assert_eq!(got, vec![eg("p", "data", peer("frontend"))]);
}
