use super::*;

#[test]
fn standard_cluster_matches_the_format() {
    let (nodes, cluster) = standard_cluster();
    assert_eq!(
        nodes,
        vec![NodeSpec {
            name: "node-1".into(),
            ip: IpAddr::from([10, 244, 0, 1]),
            ips: vec![IpAddr::from([10, 244, 0, 1])],
        }]
    );
    let ip = |ns: &str, name: &str| cluster.pod(ns, name).map(|p| p.ips.clone()).unwrap_or_default();
    assert_eq!(ip("x", "a"), vec![IpAddr::from([10, 244, 1, 10])]);
    assert_eq!(ip("y", "b"), vec![IpAddr::from([10, 244, 2, 11])]);
    assert_eq!(ip("z", "c"), vec![IpAddr::from([10, 244, 3, 12])]);
    let pod = cluster.pod("y", "b").expect("y/b");
    assert_eq!(pod.labels, Labels::from([("pod".to_string(), "b".to_string())]));
    assert_eq!(pod.named_port("serve-81-udp", Protocol::Udp), Some(81));
    assert_eq!(pod.named_port("serve-80-sctp", Protocol::Sctp), Some(80));
    assert_eq!(pod.named_port("serve-80-tcp", Protocol::Udp), None);
    let ns = cluster.namespace("z").expect("z");
    assert_eq!(ns.labels.get("ns").map(String::as_str), Some("z"));
    assert_eq!(
        ns.labels.get("kubernetes.io/metadata.name").map(String::as_str),
        Some("z")
    );
}

#[test]
fn steps_are_checked_against_the_state_they_meet() {
    // Deleting a policy applied in an earlier step is fine; deleting it twice is not.
    let text = r#"
name: t
steps:
- apply:
  - {apiVersion: networking.k8s.io/v1, kind: NetworkPolicy, metadata: {name: p, namespace: x}, spec: {podSelector: {}}}
- delete: [{namespace: x, name: p}]
- delete: [{namespace: x, name: p}]
"#;
    let e = parse_case(text, "t.yaml").expect_err("refused");
    assert_eq!(e.field, "steps[2].delete[0]");
    assert!(e.message.contains("no NetworkPolicy x/p"), "{e}");
}

#[test]
fn custom_clusters_are_validated() {
    let cases = [
        (
            "cluster: {namespaces: [], pods: [{namespace: q, name: a, ip: 10.0.0.1}]}",
            "cluster.pods[0].namespace",
        ),
        (
            "cluster: {namespaces: [{name: q}], pods: [{namespace: q, name: a, ip: 10.0.0.300}]}",
            "cluster.pods[0].ip",
        ),
        (
            "cluster: {namespaces: [{name: q}], pods: [{namespace: q, name: a, ip: 10.0.0.1, node: n9}]}",
            "cluster.pods[0].node",
        ),
        (
            "cluster: {namespaces: [{name: q}], pods: [{namespace: q, name: a, ip: 10.0.0.1}, {namespace: q, name: b, ip: 10.0.0.1}]}",
            "cluster.pods[1].ip",
        ),
        (
            "cluster: {namespaces: [{name: q}], pods: [{namespace: q, name: a, ip: 10.0.0.1, ports: [{port: 80, protocol: ICMP}]}]}",
            "cluster.pods[0].ports[0].protocol",
        ),
        (
            "cluster: {namespaces: [{name: q, labels: {'bad key': v}}]}",
            "cluster.namespaces[0].labels.bad key",
        ),
    ];
    for (cluster, field) in cases {
        let text = format!("name: t\n{cluster}\nsteps: []\n");
        let e = parse_case(&text, "t.yaml").err();
        assert!(
            e.as_ref().is_some_and(|e| e.field == field),
            "{cluster}: expected {field}, got {e:?}"
        );
    }
}

#[test]
fn the_initial_cluster_is_the_one_before_any_step() {
    let text = r#"
name: t
steps:
- labelPods: [{namespace: x, name: a, labels: {role: db}}]
"#;
    let case = parse_case(text, "t.yaml").expect("valid");
    assert_eq!(
        case.cluster.pod("x", "a").map(|p| p.labels.contains_key("pod")),
        Some(true)
    );
    let mut after = case.cluster.clone();
    case.steps[0].apply_to(&mut after);
    assert_eq!(after.pod("x", "a").map(|p| p.labels.contains_key("role")), Some(true));
}

#[test]
fn host_network_pods_have_their_nodes_address() {
    let text = r#"
name: t
cluster:
  nodes: [{name: n1, ip: 10.244.0.1}, {name: n2, ip: 10.244.0.2}]
  namespaces: [{name: mon}]
  pods:
  - {namespace: mon, name: agent, node: n2, hostNetwork: true}
  - {namespace: mon, name: scraper, node: n1, ip: 10.244.1.10}
steps: []
"#;
    let case = parse_case(text, "t.yaml").expect("valid");
    let agent = case.cluster.pod("mon", "agent").expect("agent");
    assert!(agent.host_network);
    assert_eq!(agent.ips, vec![IpAddr::from([10, 244, 0, 2])]);
    assert!(!case.cluster.pod("mon", "scraper").expect("scraper").host_network);

    let refused = [
        // Another address than the node's.
        (
            "- {namespace: mon, name: agent, node: n1, ip: 10.244.0.9, hostNetwork: true}",
            "cluster.pods[0].ip",
        ),
        // Two on one node would serve the same ports in one namespace.
        (
            "- {namespace: mon, name: a, node: n1, hostNetwork: true}\n  - {namespace: mon, name: b, node: n1, hostNetwork: true}",
            "cluster.pods[1].hostNetwork",
        ),
        // An ordinary pod with the node's address, or with no address.
        (
            "- {namespace: mon, name: a, node: n1, ip: 10.244.0.1}",
            "cluster.pods[0].ip",
        ),
        ("- {namespace: mon, name: a, node: n1}", "cluster.pods[0].ip"),
    ];
    for (pods, field) in refused {
        let text = format!(
            "name: t\ncluster:\n  nodes: [{{name: n1, ip: 10.244.0.1}}]\n  namespaces: [{{name: mon}}]\n  pods:\n  {pods}\nsteps: []\n"
        );
        let e = parse_case(&text, "t.yaml").err();
        assert!(
            e.as_ref().is_some_and(|e| e.field == field),
            "{pods}: expected {field}, got {e:?}"
        );
    }
}

#[test]
fn dual_stack_addresses_and_ipv6_expectations() {
    let matrix = "          -   x/a x/b\n          x/a  .   .\n          x/b  .   .\n";
    let text = format!(
        "name: t\ndualStack: true\nsteps:\n- expect:\n  - probe: TCP/80\n    family: IPv6\n    matrix: |\n{matrix}"
    );
    let case = parse_case(&text, "t.yaml").expect("valid");
    let ips = |ns: &str, name: &str| case.cluster.pod(ns, name).map(|p| p.ips.clone()).unwrap_or_default();
    let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
    assert_eq!(ips("x", "a"), [ip("10.244.1.10"), ip("fd00:10:244:1::10")]);
    assert_eq!(ips("z", "c"), [ip("10.244.3.12"), ip("fd00:10:244:3::12")]);
    assert_eq!(case.nodes[0].ips, [ip("10.244.0.1"), ip("fd00:10:244::1")]);
    assert_eq!(case.steps[0].expect[0].family, AddressFamily::IPv6);

    // Without dualStack the standard pods have no IPv6 address to probe.
    let e = parse_case(&text.replace("dualStack: true\n", ""), "t.yaml").expect_err("refused");
    assert_eq!(e.field, "steps[0].expect[0].family");
    assert!(e.message.contains("x/a has no IPv6 address"), "{e}");
    let e = parse_case(&text.replace("IPv6", "IPv5"), "t.yaml").expect_err("refused");
    assert_eq!(e.field, "steps[0].expect[0].family");

    let custom = r#"
name: t
cluster:
  nodes: [{name: node-1, ips: [10.244.0.1, "fd00::1"]}]
  namespaces: [{name: q}]
  pods:
  - {namespace: q, name: a, ips: [10.0.0.1, "fd00::a"]}
  - {namespace: q, name: h, hostNetwork: true}
steps: []
"#;
    let case = parse_case(custom, "t.yaml").expect("valid");
    assert_eq!(case.cluster.pod("q", "a").map(|p| p.ips.len()), Some(2));
    assert_eq!(
        case.cluster.pod("q", "h").map(|p| p.ips.clone()),
        Some(vec![ip("10.244.0.1"), ip("fd00::1")])
    );
    for (pods, field) in [
        (
            "[{namespace: q, name: a, ips: [10.0.0.1, 10.0.0.2]}]",
            "cluster.pods[0].ips[1]",
        ),
        (
            "[{namespace: q, name: a, ip: 10.0.0.1, ips: [10.0.0.1]}]",
            "cluster.pods[0].ips",
        ),
    ] {
        let text = format!("name: t\ncluster:\n  namespaces: [{{name: q}}]\n  pods: {pods}\nsteps: []\n");
        let e = parse_case(&text, "t.yaml").err();
        assert!(e.as_ref().is_some_and(|e| e.field == field), "{pods}: {e:?}");
    }
}
