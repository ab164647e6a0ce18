use super::*;

fn np(json: serde_json::Value) -> NetworkPolicy {
    serde_json::from_value(json).unwrap_or_default()
}

fn errors(spec: serde_json::Value) -> Vec<FieldError> {
    let p = np(serde_json::json!({"metadata": {"name": "p", "namespace": "shop"}, "spec": spec}));
    Policy::from_k8s_lenient(&p).errors
}

#[test]
fn policy_types_default_like_the_api_server() {
    let cases = [
        (serde_json::json!({"podSelector": {}}), (true, false)),
        (serde_json::json!({"podSelector": {}, "egress": [{}]}), (true, true)),
        (serde_json::json!({"podSelector": {}, "egress": []}), (true, false)),
        (serde_json::json!({"podSelector": {}, "policyTypes": []}), (true, false)),
        (
            serde_json::json!({"podSelector": {}, "policyTypes": ["Egress"]}),
            (false, true),
        ),
        (
            serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}),
            (true, true),
        ),
        (
            serde_json::json!({"podSelector": {}, "policyTypes": ["Ingress"], "egress": [{}]}),
            (true, false),
        ),
    ];
    for (spec, want) in cases {
        let p = Policy::from_k8s(&np(
            serde_json::json!({"metadata": {"name": "p", "namespace": "x"}, "spec": spec.clone()}),
        ));
        let got = p.map(|p| (p.isolates_ingress, p.isolates_egress)).ok();
        assert_eq!(got, Some(want), "{spec}");
    }
}

#[test]
fn structure_errors_name_the_field() {
    let cases = [
        (
            serde_json::json!({"ingress": [{"from": [{}, {"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.1.0.0/24"]}}]}]}),
            "spec.ingress[0].from[1].ipBlock.except[0]",
            "10.1.0.0/24 is not inside cidr 10.0.0.0/16",
        ),
        // Kubernetes wants a strictly longer prefix, host bits in the cidr notwithstanding.
        (
            serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.244.1.13/24", "except": ["10.244.1.0/24"]}}]}]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "is not inside cidr",
        ),
        (
            serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/16", "except": ["10.0.0.0/16"]}}]}]}),
            "spec.ingress[0].from[0].ipBlock.except[0]",
            "is not inside cidr",
        ),
        (
            serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/33"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a valid CIDR",
        ),
        (
            serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.1"}}]}]}),
            "spec.ingress[0].from[0].ipBlock.cidr",
            "not a valid CIDR",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": 70000}]}]}),
            "spec.egress[0].ports[0].port",
            "out of range",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": 0}]}]}),
            "spec.egress[0].ports[0].port",
            "out of range",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"endPort": 90}]}]}),
            "spec.egress[0].ports[0].endPort",
            "requires a numeric port",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": "http", "endPort": 90}]}]}),
            "spec.egress[0].ports[0].endPort",
            "requires a numeric port",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": 90, "endPort": 80}]}]}),
            "spec.egress[0].ports[0].endPort",
            "below port 90",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": 53, "protocol": "ICMP"}]}]}),
            "spec.egress[0].ports[0].protocol",
            "not a supported protocol",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": 53, "protocol": "tcp"}]}]}),
            "spec.egress[0].ports[0].protocol",
            "not a supported protocol",
        ),
        (
            serde_json::json!({"egress": [{"ports": [{"port": "Not_A_Name"}]}]}),
            "spec.egress[0].ports[0].port",
            "not a valid port name",
        ),
        (
            serde_json::json!({"podSelector": {"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["b"]}]}}),
            "spec.podSelector.matchExpressions[0].operator",
            "not a valid selector operator",
        ),
        (
            serde_json::json!({"ingress": [{"from": [{"namespaceSelector": {"matchExpressions": [{"key": "a", "operator": "In"}]}}]}]}),
            "spec.ingress[0].from[0].namespaceSelector.matchExpressions[0].values",
            "non-empty",
        ),
        (
            serde_json::json!({"ingress": [{"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}, "podSelector": {}}]}]}),
            "spec.ingress[0].from[0]",
            "may not combine",
        ),
        (
            serde_json::json!({"policyTypes": ["Ingres"]}),
            "spec.policyTypes[0]",
            "not a policy type",
        ),
    ];
    for (spec, field, message) in cases {
        let errs = errors(spec.clone());
        assert!(
            errs.iter().any(|e| e.field == field && e.message.contains(message)),
            "{spec}: expected {field}: {message}, got {errs:?}"
        );
    }
}

#[test]
fn broken_rules_are_dropped_so_enforcement_fails_closed() {
    let p = np(
        serde_json::json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {
        "podSelector": {},
        "ingress": [{"ports": [{"port": 99999}]}, {"from": [{"podSelector": {}}]}]}}),
    );
    let lenient = Policy::from_k8s_lenient(&p);
    assert_eq!(lenient.errors.len(), 1);
    // The broken rule would have meant "every port" had the bad port been ignored.
    assert_eq!(lenient.policy.ingress.len(), 1);
    assert!(lenient.policy.ingress[0].peers.is_some());
    assert!(Policy::from_k8s(&p).is_err());
}

#[test]
fn ports_and_protocols() {
    let p = np(
        serde_json::json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {
        "podSelector": {},
        "ingress": [{"ports": [{"port": 80}, {"protocol": "UDP", "port": 1000, "endPort": 2000}, {"port": "http"}, {"protocol": "SCTP"}]}]}}),
    );
    let policy = Policy::from_k8s(&p).unwrap_or_else(|e| panic!("{e}"));
    let rule = &policy.ingress[0];
    let named = |n: &str, proto: Protocol| (n == "http" && proto == Protocol::Tcp).then_some(8080);
    assert_eq!(rule.port_hit(Protocol::Tcp, 80, &named), Some(PortHit::Entry(0)));
    assert_eq!(rule.port_hit(Protocol::Udp, 80, &named), None);
    assert_eq!(rule.port_hit(Protocol::Udp, 2000, &named), Some(PortHit::Entry(1)));
    assert_eq!(rule.port_hit(Protocol::Udp, 2001, &named), None);
    assert_eq!(rule.port_hit(Protocol::Tcp, 8080, &named), Some(PortHit::Entry(2)));
    assert_eq!(rule.port_hit(Protocol::Sctp, 1, &named), Some(PortHit::Entry(3)));
}

#[test]
fn ipv6_blocks() {
    let p = np(
        serde_json::json!({"metadata": {"name": "p", "namespace": "x"}, "spec": {
        "ingress": [{"from": [{"ipBlock": {"cidr": "fd00::/64", "except": ["fd00::/120"]}}]}]}}),
    );
    let policy = Policy::from_k8s(&p).unwrap_or_else(|e| panic!("{e}"));
    let Some(Peer::Block(b)) = policy.ingress[0].peers.as_ref().and_then(|p| p.first()) else {
        panic!("expected an ipBlock peer");
    };
    assert!(b.contains(&"fd00::1:0".parse().unwrap_or(std::net::IpAddr::from([0u8; 4]))));
    assert!(!b.contains(&"fd00::ff".parse().unwrap_or(std::net::IpAddr::from([0u8; 4]))));
    assert!(!b.contains(&"10.0.0.1".parse().unwrap_or(std::net::IpAddr::from([0u8; 4]))));
}
