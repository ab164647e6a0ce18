//! R2: DNS for every egress-isolated pod, and what counts as reaching it.

use rstest::rstest;
use serde_json::{Value, json};

use super::*;

fn with_egress(name: &str, pod_selector: Value, egress: Value) -> NetworkPolicy {
    policy(
        "shop",
        name,
        json!({"podSelector": pod_selector, "policyTypes": ["Egress"], "egress": egress}),
    )
}

fn dns_to(to: Value, ports: Value) -> Value {
    json!([{"to": to, "ports": ports}])
}

fn kube_dns() -> Value {
    json!([{
        "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
        "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}
    }])
}

fn both_ports() -> Value {
    json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
}

fn only(groups: &[Group], protocols: &[Protocol]) -> Vec<ViolationKey> {
    let mut out: Vec<ViolationKey> = groups
        .iter()
        .flat_map(|g| protocols.iter().map(move |p| r2("shop", g.clone(), *p)))
        .collect();
    out.sort();
    out
}

const BOTH: &[Protocol] = &[Protocol::Tcp, Protocol::Udp];

/// The R2 keys of `shop` holding `deny_all` plus `policies`.
fn missing_dns(policies: Vec<NetworkPolicy>) -> Vec<ViolationKey> {
    let mut all = vec![deny_all("shop")];
    all.extend(policies);
    let s = state(&[("shop", &[]), ("kube-system", &[])], &all);
    of_rule(&namespace_violations(&template(), &s, "shop"), RuleId::R2)
}

#[rstest]
#[case::no_dns_anywhere(vec![], all_dns_keys())]
#[case::dns_allow_as_second_object(vec![dns_allow("shop", "dns", json!({}))], vec![])]
#[case::dns_for_one_tier(
    vec![dns_allow("shop", "dns", json!({"matchLabels": {"tier": "backend"}}))],
    only(&[tier("gateway"), tier("frontend"), tier("data"), Group::Untiered], BOTH),
)]
#[case::udp_only(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP", "port": 53}])))],
    only(&unlabelled_groups(), &[Protocol::Tcp]),
)]
#[case::port_without_protocol_is_tcp(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"port": 53}])))],
    only(&unlabelled_groups(), &[Protocol::Udp]),
)]
#[case::named_ports(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}])))],
    vec![],
)]
#[case::named_ports_swapped(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP", "port": "dns-tcp"}, {"protocol": "TCP", "port": "dns"}])))],
    all_dns_keys(),
)]
#[case::end_port_range_containing_53(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP", "port": 50, "endPort": 60}, {"protocol": "TCP", "port": 50, "endPort": 60}])))],
    vec![],
)]
#[case::end_port_range_missing_53(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP", "port": 54, "endPort": 60}, {"protocol": "TCP", "port": 53}])))],
    only(&unlabelled_groups(), &[Protocol::Udp]),
)]
#[case::protocol_without_port(
    vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!([{"protocol": "UDP"}, {"protocol": "TCP"}])))],
    vec![],
)]
#[case::no_ports_allows_all(vec![with_egress("dns", json!({}), dns_to(kube_dns(), json!(null)))], vec![])]
#[case::empty_to_is_everything(vec![with_egress("dns", json!({}), json!([{"ports": both_ports()}]))], vec![])]
#[case::namespace_only_peer(
    vec![with_egress("dns", json!({}), dns_to(json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}}]), both_ports()))],
    vec![],
)]
#[case::all_namespaces_peer(
    vec![with_egress("dns", json!({}), dns_to(json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]), both_ports()))],
    vec![],
)]
#[case::pod_only_peer_is_own_namespace(
    vec![with_egress("dns", json!({}), dns_to(json!([{"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]), both_ports()))],
    all_dns_keys(),
)]
#[case::narrower_pod_selector_misses_dns_pods(
    vec![with_egress("dns", json!({}), dns_to(json!([{"namespaceSelector": {}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns", "version": "v1"}}}]), both_ports()))],
    all_dns_keys(),
)]
#[case::wrong_namespace(
    vec![with_egress("dns", json!({}), dns_to(json!([{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "shop"}}}]), both_ports()))],
    all_dns_keys(),
)]
#[case::ip_block_never_counts_without_cidrs(
    vec![with_egress("dns", json!({}), dns_to(json!([{"ipBlock": {"cidr": "0.0.0.0/0"}}]), both_ports()))],
    all_dns_keys(),
)]
#[case::egress_rules_of_an_ingress_only_policy_are_ignored(
    vec![policy("shop", "dns", json!({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [dns_rule()]}))],
    all_dns_keys(),
)]
fn dns_reach(#[case] policies: Vec<NetworkPolicy>, #[case] want: Vec<ViolationKey>) {
    assert_eq!(missing_dns(policies), want);
}

#[test]
fn message_names_policy_group_port_and_target() {
    let s = state(&[("shop", &[])], &[deny_all("shop")]);
    let got = namespace_violations(&template(), &s, "shop");
    let v = got
        .iter()
        .find(|v| v.key == r2("shop", tier("backend"), Protocol::Tcp))
        .expect("R2 backend TCP");
    assert!(
        v.message.starts_with(
            "policy default-deny-all would drop DNS for tier backend in namespace shop: no egress rule allows TCP/53 to kube-system/k8s-app=kube-dns"
        ),
        "{}",
        v.message
    );
    assert!(v.message.contains("UDP/53 and TCP/53"));
}

#[test]
fn partial_isolation_needs_dns_for_the_pods_it_selects() {
    let t = template();
    let partial = with_egress(
        "x-deny",
        json!({"matchLabels": {"tier": "backend", "app": "x"}}),
        json!([]),
    );
    // An empty namespace: the partial deny cuts DNS for some backend pods.
    let empty = state(&[("shop", &[])], &[]);
    let review = create(&t, &empty, &partial);
    assert_eq!(
        keys(&review.new_violations),
        only(&[tier("backend")], BOTH),
        "{:?}",
        review.new_violations
    );
    assert!(
        review.new_violations[0]
            .message
            .contains("the pods x-deny selects: app=x,tier=backend")
    );

    // A namespace-wide DNS allow selects those pods too, so they keep DNS.
    let covered = state(&[("shop", &[])], &[deny_all_with_dns("shop")]);
    assert_eq!(create(&t, &covered, &partial).new_violations, Vec::new());

    // DNS allowed for another subset of backend does not help.
    let other = state(
        &[("shop", &[])],
        &[dns_allow(
            "shop",
            "dns-y",
            json!({"matchLabels": {"tier": "backend", "app": "y"}}),
        )],
    );
    assert_eq!(
        keys(&create(&t, &other, &partial).new_violations),
        only(&[tier("backend")], BOTH)
    );

    // DNS allowed for all backend pods does.
    let backend = state(
        &[("shop", &[])],
        &[dns_allow("shop", "dns-b", json!({"matchLabels": {"tier": "backend"}}))],
    );
    assert_eq!(create(&t, &backend, &partial).new_violations, Vec::new());
}

#[test]
fn partial_isolation_spanning_groups() {
    // `app: x` may select pods of every group; each needs DNS.
    let t = template();
    let partial = with_egress("x-deny", json!({"matchLabels": {"app": "x"}}), json!([]));
    let review = create(&t, &state(&[("shop", &[])], &[]), &partial);
    assert_eq!(keys(&review.new_violations), all_dns_keys());
}

#[rstest]
#[case::labels_from_state(&[("role", "dns")], json!({"role": "dns"}), true)]
#[case::state_labels_replace_the_default(&[("role", "dns")], json!({"kubernetes.io/metadata.name": "kube-system"}), true)]
#[case::label_the_state_lacks(&[], json!({"role": "dns"}), false)]
fn dns_namespace_labels_come_from_the_state(
    #[case] kube_system: &[(&str, &str)],
    #[case] selector: Value,
    #[case] reaches: bool,
) {
    let rule = dns_to(
        json!([{"namespaceSelector": {"matchLabels": selector}, "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]),
        both_ports(),
    );
    let s = state(
        &[("shop", &[]), ("kube-system", kube_system)],
        &[deny_all("shop"), with_egress("dns", json!({}), rule.clone())],
    );
    let got = of_rule(&namespace_violations(&template(), &s, "shop"), RuleId::R2);
    assert_eq!(got.is_empty(), reaches, "{got:?}");

    // Without kube-system in the state its labels are just its name.
    let mut absent = s.clone();
    absent.namespaces.remove("kube-system");
    let got = of_rule(&namespace_violations(&template(), &absent, "shop"), RuleId::R2);
    let by_name = selector.get("kubernetes.io/metadata.name").is_some();
    assert_eq!(got.is_empty(), by_name, "{got:?}");
}

#[rstest]
#[case::block_contains_cidr("169.254.0.0/16", json!([]), true)]
#[case::exact_block("169.254.20.10/32", json!([]), true)]
#[case::except_overlaps("169.254.0.0/16", json!(["169.254.20.0/24"]), false)]
#[case::except_elsewhere("169.254.0.0/16", json!(["169.254.30.0/24"]), true)]
#[case::other_address_family("::/0", json!([]), false)]
#[case::other_block("10.0.0.0/8", json!([]), false)]
fn ip_blocks_reach_dns_cidrs(#[case] cidr: &str, #[case] except: Value, #[case] reaches: bool) {
    let t = TierTemplate::parse("dns: {cidrs: [169.254.20.10/32]}\n", "test").expect("template");
    let rule = dns_to(json!([{"ipBlock": {"cidr": cidr, "except": except}}]), both_ports());
    let s = state(
        &[("shop", &[])],
        &[deny_all("shop"), with_egress("dns", json!({}), rule)],
    );
    let got = of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2);
    assert_eq!(got.is_empty(), reaches, "{got:?}");
}

#[test]
fn ip_block_wider_than_dns_cidr_entry() {
    // The DNS entry is a /24; a /32 inside it does not contain it whole.
    let t = TierTemplate::parse("dns: {cidrs: [10.96.0.0/24]}\n", "test").expect("template");
    let rule = dns_to(json!([{"ipBlock": {"cidr": "10.96.0.10/32"}}]), both_ports());
    let s = state(
        &[("shop", &[])],
        &[deny_all("shop"), with_egress("dns", json!({}), rule)],
    );
    assert_eq!(of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2).len(), 10);
}

#[test]
fn configured_ports_and_names() {
    // A port other than 53 is reached by number; the UDP name means 53 on
    // the DNS pods, which this template does not ask for.
    let t = TierTemplate::parse("dns: {ports: [UDP/5353], portNames: {UDP: mdns}}\n", "test").expect("template");
    let by_number = dns_to(kube_dns(), json!([{"protocol": "UDP", "port": 5353}]));
    let s = state(
        &[("shop", &[])],
        &[deny_all("shop"), with_egress("dns", json!({}), by_number)],
    );
    assert_eq!(of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2), Vec::new());
    let named = dns_to(kube_dns(), json!([{"protocol": "UDP", "port": "mdns"}]));
    let s = state(
        &[("shop", &[])],
        &[deny_all("shop"), with_egress("dns", json!({}), named)],
    );
    assert_eq!(of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2).len(), 5);
    let s = state(&[("shop", &[])], &[deny_all("shop")]);
    let got = namespace_violations(&t, &s, "shop");
    assert_eq!(of_rule(&got, RuleId::R2).len(), 5);
    assert!(got.iter().any(|v| v.message.contains("UDP/5353")));
}

/// A template that asks for DNS on TCP/5353 as well.
fn template_with_tcp_5353() -> TierTemplate {
    TierTemplate::parse("dns: {ports: [UDP/53, TCP/53, TCP/5353]}\n", "test").expect("template")
}

fn r2_port(group: Group, protocol: Protocol, port: u16) -> ViolationKey {
    ViolationKey::Dns {
        namespace: "shop".to_string(),
        group,
        protocol,
        port,
    }
}

fn named_dns_ports() -> Value {
    json!([{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns-tcp"}])
}

#[test]
fn named_port_reaches_53_only() {
    // `dns-tcp` is 53 on the DNS pods: it does not open TCP/5353.
    let t = template_with_tcp_5353();
    let s = state(
        &[("shop", &[]), ("kube-system", &[])],
        &[
            deny_all("shop"),
            with_egress("dns", json!({}), dns_to(kube_dns(), named_dns_ports())),
        ],
    );
    let got = namespace_violations(&t, &s, "shop");
    let mut want: Vec<ViolationKey> = unlabelled_groups()
        .into_iter()
        .map(|g| r2_port(g, Protocol::Tcp, 5353))
        .collect();
    want.sort();
    assert_eq!(of_rule(&got, RuleId::R2), want);
    // The message says why the name does not help.
    let needle = "no egress rule allows TCP/5353 to kube-system/k8s-app=kube-dns (the named port dns-tcp means 53 on \
                  the DNS pods: allow TCP/5353 by number)";
    assert!(
        got.iter()
            .filter(|v| v.rule() == RuleId::R2)
            .all(|v| v.message.contains(needle)),
        "{got:?}"
    );

    // Adding TCP/5353 by number closes the gap.
    let mut ports = named_dns_ports();
    ports
        .as_array_mut()
        .expect("array")
        .push(json!({"protocol": "TCP", "port": 5353}));
    let s = state(
        &[("shop", &[]), ("kube-system", &[])],
        &[
            deny_all("shop"),
            with_egress("dns", json!({}), dns_to(kube_dns(), ports)),
        ],
    );
    assert_eq!(of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2), Vec::new());
}

#[test]
fn dropping_the_numbered_port_is_a_new_violation() {
    // The named ports stay; the change removes TCP/5353 by number.
    let t = template_with_tcp_5353();
    let mut ports = named_dns_ports();
    ports
        .as_array_mut()
        .expect("array")
        .push(json!({"protocol": "TCP", "port": 5353}));
    let before = with_egress("dns", json!({}), dns_to(kube_dns(), ports));
    let after = with_egress("dns", json!({}), dns_to(kube_dns(), named_dns_ports()));
    let s = state(
        &[("shop", &[]), ("kube-system", &[])],
        &[deny_all("shop"), before.clone()],
    );
    assert_eq!(namespace_violations(&t, &s, "shop"), Vec::new());
    let review = review_network_policy(&t, &s, Operation::Update, Some(&before), Some(&after));
    let mut want: Vec<ViolationKey> = unlabelled_groups()
        .into_iter()
        .map(|g| r2_port(g, Protocol::Tcp, 5353))
        .collect();
    want.sort();
    assert_eq!(keys(&review.new_violations), want);
}

#[rstest]
#[case::template_names(json!([{"protocol": "UDP", "port": "domain"}, {"protocol": "TCP", "port": "domain-tcp"}]), vec![])]
#[case::coredns_names_mean_nothing_here(named_dns_ports(), all_dns_keys())]
#[case::name_on_the_other_protocol(
    json!([{"protocol": "TCP", "port": "domain"}, {"protocol": "UDP", "port": "domain-tcp"}]),
    all_dns_keys(),
)]
#[case::one_name_one_number(
    json!([{"protocol": "UDP", "port": "domain"}, {"protocol": "TCP", "port": 53}]),
    vec![],
)]
fn other_port_names(#[case] ports: Value, #[case] want: Vec<ViolationKey>) {
    let t = TierTemplate::parse("dns: {portNames: {UDP: domain, TCP: domain-tcp}}\n", "test").expect("template");
    let s = state(
        &[("shop", &[]), ("kube-system", &[])],
        &[
            deny_all("shop"),
            with_egress("dns", json!({}), dns_to(kube_dns(), ports)),
        ],
    );
    assert_eq!(of_rule(&namespace_violations(&t, &s, "shop"), RuleId::R2), want);
}

#[rstest]
#[case::udp_name_on_tcp(json!([{"protocol": "UDP", "port": "dns"}, {"protocol": "TCP", "port": "dns"}]), Protocol::Tcp)]
#[case::tcp_name_on_udp(json!([{"protocol": "UDP", "port": "dns-tcp"}, {"protocol": "TCP", "port": "dns-tcp"}]), Protocol::Udp)]
#[case::name_without_protocol_is_tcp(json!([{"protocol": "UDP", "port": "dns"}, {"port": "dns"}]), Protocol::Tcp)]
fn dns_name_on_the_wrong_protocol_reaches_nothing(#[case] ports: Value, #[case] missing: Protocol) {
    assert_eq!(
        missing_dns(vec![with_egress("dns", json!({}), dns_to(kube_dns(), ports))]),
        only(&unlabelled_groups(), &[missing])
    );
}

#[test]
fn dns_namespace_itself_may_use_pod_only_peers() {
    // A policy in kube-system's place: the DNS namespace made governed for the test.
    let t = TierTemplate::parse("dns: {namespace: dns-ns}\n", "test").expect("template");
    let rule = dns_to(
        json!([{"podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}]),
        both_ports(),
    );
    let deny = policy(
        "dns-ns",
        "deny",
        json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
    );
    let allow = policy(
        "dns-ns",
        "dns",
        json!({"podSelector": {}, "policyTypes": ["Egress"], "egress": rule}),
    );
    let s = state(&[("dns-ns", &[])], &[deny, allow]);
    assert_eq!(of_rule(&namespace_violations(&t, &s, "dns-ns"), RuleId::R2), Vec::new());
}
