//! Helpers shared by the netns tests (each needs root, iproute2, iptables, ipset, conntrack).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod faults;

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::NetworkPolicy;
use tierguard::Cluster;
use tierguard::cluster::{ContainerPort, NamespaceInfo, PodInfo};
use tierguard::policy::Protocol;
use tierguard_conformance::conformance::dataplane::Probe;

/// Isolates every pod of y for ingress, admitting only pods of x on TCP 80.
pub const Y_FROM_X_80: &str = r#"
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: y-from-x-80, namespace: y}
spec:
  podSelector: {}
  policyTypes: [Ingress]
  ingress:
  - from: [{namespaceSelector: {matchLabels: {ns: x}}}]
    ports: [{port: 80}]
"#;

/// Whether the netns tests can run here. In CI (`CI=true`) they must: panics
/// there; elsewhere prints why they are skipped.
pub fn netns_available(test: &str) -> bool {
    match tierguard_conformance::netns::preflight() {
        Ok(()) => true,
        Err(e) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{test}: the netns tests must run in CI, but: {e}");
            }
            eprintln!("{test}: skipped: {e}");
            false
        }
    }
}

/// Namespaces x and y, pods `<ns>/<name>` at the given IPs, all serving TCP and UDP 80 and 81.
pub fn small_cluster(pods: &[(&str, &str, &str)]) -> Cluster {
    let mut cluster = Cluster::new();
    for (ns, _, _) in pods {
        let labels = BTreeMap::from([("ns".to_string(), ns.to_string())]);
        cluster.upsert_namespace(NamespaceInfo::new(ns, labels));
    }
    for (ns, name, ip) in pods {
        let mut ports = Vec::new();
        for port in [80u16, 81] {
            for protocol in [Protocol::Tcp, Protocol::Udp] {
                ports.push(ContainerPort {
                    name: Some(format!("serve-{port}-{}", protocol.as_str().to_lowercase())),
                    port,
                    protocol,
                });
            }
        }
        cluster.upsert_pod(PodInfo {
            namespace: ns.to_string(),
            name: name.to_string(),
            labels: BTreeMap::from([("pod".to_string(), name.to_string())]),
            ips: vec![ip.parse::<IpAddr>().unwrap()],
            node: Some("node-1".into()),
            ports,
            host_network: false,
        });
    }
    cluster
}

/// A NetworkPolicy from YAML.
pub fn policy(yaml: &str) -> NetworkPolicy {
    serde_yaml::from_str(yaml).unwrap()
}

/// Every ordered pair of distinct pods, for each (protocol, port).
pub fn all_pairs(cluster: &Cluster, kinds: &[(Protocol, u16)]) -> Vec<Probe> {
    let keys: Vec<String> = cluster.pods().map(|p| p.key()).collect();
    let mut probes = Vec::new();
    for &(protocol, port) in kinds {
        for from in &keys {
            for to in &keys {
                if from != to {
                    probes.push(Probe {
                        from: from.clone(),
                        to: to.clone(),
                        protocol,
                        port,
                    });
                }
            }
        }
    }
    probes
}

/// Whether the engine allows `probe` in `cluster`.
pub fn model_allows(cluster: &Cluster, probe: &Probe) -> bool {
    let (fns, fname) = probe.from.split_once('/').unwrap();
    let (tns, tname) = probe.to.split_once('/').unwrap();
    let from = cluster.pod(fns, fname).unwrap();
    let to = cluster.pod(tns, tname).unwrap();
    cluster
        .allowed(
            tierguard::engine::Endpoint::Pod(from),
            tierguard::engine::Endpoint::Pod(to),
            probe.protocol,
            probe.port,
        )
        .allowed()
}

/// Namespaces named `prefix*` under /run/netns.
pub fn namespaces_with_prefix(prefix: &str) -> Vec<String> {
    std::fs::read_dir("/run/netns")
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// `iptables-save -t filter` and `ipset list` of a namespace, for failure messages.
pub fn node_tables(netns: &str) -> String {
    use tierguard_enforcer::exec::Executor;
    let exec = tierguard_conformance::netns::NetnsExecutor::new(netns);
    let save = exec.run("iptables-save", &["-t".into(), "filter".into()], None);
    let sets = exec.run("ipset", &["list".into()], None);
    format!("== {netns} iptables-save\n{save:?}\n== ipset list\n{sets:?}")
}
