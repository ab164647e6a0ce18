use super::*;

#[test]
fn built_in_is_the_three_tier_template() {
    let t = TierTemplate::built_in();
    assert_eq!(t.tier_label, "tier");
    assert_eq!(
        t.tier_names().collect::<Vec<_>>(),
        ["gateway", "frontend", "backend", "data"]
    );
    let backend = t.flows("backend").map(|f| f.egress_to.clone()).unwrap_or_default();
    assert_eq!(
        backend,
        [FlowPeer::Tier("backend".into()), FlowPeer::Tier("data".into())]
    );
    assert_eq!(t.dns.ports, [(Protocol::Udp, 53), (Protocol::Tcp, 53)]);
    assert_eq!(
        t.dns.port_names.get(&Protocol::Tcp).map(String::as_str),
        Some("dns-tcp")
    );
    assert_eq!(t.mode, Mode::Enforce);
    let ns = |n: &str| Labels::from([("kubernetes.io/metadata.name".to_string(), n.to_string())]);
    assert!(t.governs(&ns("shop")));
    assert!(!t.governs(&ns("kube-system")));
    assert!(!t.governs(&ns("tierguard-system")));
    assert_eq!(t.tier_for_namespace_name("shop-backend"), Some("backend"));
    assert_eq!(t.tier_for_namespace_name("backend"), None);
}

#[test]
fn omitted_keys_take_built_in_values() {
    let t = TierTemplate::parse("mode: warn\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.mode, Mode::Warn);
    assert_eq!(t.tiers.len(), 4);
    let t = TierTemplate::parse("dns: {cidrs: [169.254.20.10/32]}\n", "t.yaml").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.dns.namespace, "kube-system");
    assert_eq!(t.dns.ports.len(), 2);
    assert_eq!(t.dns.cidrs.len(), 1);
}

#[test]
fn the_source_name_only_labels_errors() {
    // A user's template that happens to carry the built-in's label still
    // gets the built-in values for the keys it omits.
    let t = TierTemplate::parse("mode: warn\n", "built-in template").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(t.mode, Mode::Warn);
    assert_eq!(t.tier_names().count(), 4);
    assert_eq!(t.dns.ports, TierTemplate::built_in().dns.ports);
    let e = TierTemplate::parse("tiers: {}\n", "built-in template").err();
    assert_eq!(
        e.map(|e| e.to_string()),
        Some("built-in template line 1: tiers: must name at least one tier".into())
    );
}

#[test]
fn errors_point_at_the_line_and_field() {
    let cases: [(&str, usize, &str); 5] = [
        (
            "tiers:\n  web: {ingressFrom: [any], egressTo: [db]}\n",
            2,
            "tiers.web.egressTo[0]",
        ),
        (
            "mode: enforce\ntiers:\n  web:\n    ingressFrom: [any]\n    egressTo:\n      - web\n      - databse\n",
            7,
            "tiers.web.egressTo[1]",
        ),
        (
            "governedNamespaces:\n  matchExpressions: [{key: a, operator: Is, values: [x]}]\n",
            1,
            "governedNamespaces.matchExpressions[0].operator",
        ),
        ("mode: strict\n", 1, "template"),
        ("dns:\n  ports: [UDP/53, TCP53]\n", 2, "dns.ports[1]"),
    ];
    for (text, line, field) in cases {
        match TierTemplate::parse(text, "t.yaml") {
            Ok(_) => panic!("{text:?} should be refused"),
            Err(e) => {
                assert_eq!(e.line, Some(line), "{e}");
                assert_eq!(e.field, field, "{e}");
                assert!(e.to_string().starts_with(&format!("t.yaml line {line}: ")), "{e}");
            }
        }
    }
}

#[test]
fn reserved_and_unknown_tiers_are_refused() {
    assert!(TierTemplate::parse("tiers:\n  any: {}\n", "t").is_err());
    // found by the template fuzzer: a tagged key and a plain one name the same tier
    let e = TierTemplate::parse("tiers:\n ! a: {}\n a: {}\n", "t").err();
    assert!(
        e.as_ref()
            .is_some_and(|e| e.field == "tiers.a" && e.to_string().contains("appears twice")),
        "{e:?}"
    );
    assert!(TierTemplate::parse("namespaceTiers: [{pattern: '*-x', tier: nope}]\n", "t").is_err());
    assert!(TierTemplate::parse("unknownKey: 1\n", "t").is_err());
}

#[test]
fn globs() {
    let cases = [
        ("*-backend", "shop-backend", true),
        ("*-backend", "-backend", true),
        ("*-backend", "backend", false),
        ("*-backend", "shop-backend-2", false),
        ("shop-*", "shop-", true),
        ("a*b*c", "abc", true),
        ("a*b*c", "axxbyyc", true),
        ("a*b*c", "acb", false),
        ("exact", "exact", true),
        ("ex.ct", "exact", false),
        ("*", "", true),
        ("a*a", "a", false),
    ];
    for (p, t, want) in cases {
        assert_eq!(glob_matches(p, t), want, "{p} ~ {t}");
    }
}

#[test]
fn a_pod_tier_is_its_own_label_else_its_namespace_label() {
    let t = TierTemplate::built_in();
    let labels = |tier: &str| Labels::from([("tier".to_string(), tier.to_string())]);
    assert_eq!(t.pod_tier(&labels("data"), &labels("backend")), Some("data"));
    // not a tier of the template: the namespace's label decides
    assert_eq!(t.pod_tier(&labels("mainframe"), &labels("backend")), Some("backend"));
    assert_eq!(t.pod_tier(&Labels::new(), &labels("frontend")), Some("frontend"));
    assert_eq!(t.pod_tier(&Labels::new(), &labels("mainframe")), None);
}
