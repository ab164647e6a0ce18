//! Rendering: a compiled [`RuleSet`] into `ipset restore` and
//! `iptables-restore` text. Pure: no I/O, the same input gives the same text.
//!
//! Chain layout (filter table; FORWARD carries routed pod traffic):
//!
//! ```text
//! FORWARD ──> TG-FORWARD
//!   1. neither address in tg-local ............ RETURN (not ours)
//!   2. ESTABLISHED,RELATED ..................... ACCEPT
//!   3. INVALID ................................. DROP
//!   4. from a node address ..................... ACCEPT (kubelet probes)
//!   5. source in tg-local ...................... TG-EGRESS   (drops on deny, returns on allow)
//!   6. destination in tg-local ................. TG-INGRESS  (drops on deny, returns on allow)
//!   7. clear the allow mark, ACCEPT
//! TG-EGRESS / TG-INGRESS: one rule per local pod address: RETURN (not isolated) or a jump
//!   to the pod's chain TG-E-<hash> / TG-I-<hash>; last rule DROP: an address in tg-local
//!   without its own rule is a pod not programmed yet (fail closed).
//! TG-E-<pod>: clear the allow mark; for each isolating policy, jump to its chain
//!   TG-P-<hash>-E and RETURN if the mark is set; else (NFLOG and) DROP.
//! TG-P-<hash>-E: one rule per (rule, peer set, port entry), each setting the allow mark.
//! ```
//!
//! Both sides are checked in sequence, so a pod-to-pod packet between two
//! local pods passes the source's egress and the destination's ingress.

use std::collections::BTreeMap;
use std::fmt::Write;

use tierguard::policy::{Direction, Protocol};

use crate::compile::{IpSet, Isolation, LocalPod, Match, PeerMatch, PolicyChain, PortSpec, RuleSet, SetEntry, SetKind};
use crate::naming::{EGRESS_CHAIN, FORWARD_CHAIN, INGRESS_CHAIN, LOCAL_SET};

/// Options every created set gets (room for every pod of a large cluster).
pub const SET_OPTIONS: &str = "family inet hashsize 1024 maxelem 1048576";

/// The packet-mark bit a policy chain sets when it allows a packet.
pub const DEFAULT_ALLOW_MARK: u32 = 0x0001_0000;

/// Rendering choices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RenderOptions {
    /// NFLOG group for dropped packets (rate-limited), if any
    pub nflog_group: Option<u16>,
    /// the allow mark bit
    pub allow_mark: u32,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions {
            nflog_group: None,
            allow_mark: DEFAULT_ALLOW_MARK,
        }
    }
}

/// A set as text.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RenderedSet {
    /// hash:ip or hash:net
    pub kind: SetKind,
    /// `add` arguments after the set name, e.g. `10.0.0.0/8` or `10.1.0.0/16 nomatch`
    pub entries: Vec<String>,
}

/// Everything a node gets: sets and chains, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// sets
    pub sets: BTreeMap<String, RenderedSet>,
    /// chains: the rule specs that follow `-A <chain> `
    pub chains: BTreeMap<String, Vec<String>>,
}

/// The rule spec FORWARD jumps to TG-FORWARD with (inserted once, outside the restore).
pub fn forward_jump() -> Vec<String> {
    ["-m", "comment", "--comment", "tierguard", "-j", FORWARD_CHAIN]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn entry_text(entry: &SetEntry) -> String {
    match entry {
        SetEntry::Ip(ip) => ip.to_string(),
        SetEntry::Net(net) => net.to_string(),
        SetEntry::NoMatch(net) => format!("{net} nomatch"),
    }
}

fn render_set(set: &IpSet) -> RenderedSet {
    RenderedSet {
        kind: set.kind,
        entries: set.entries.iter().map(entry_text).collect(),
    }
}

fn comment(text: &str) -> String {
    // Kubernetes names are [a-z0-9.-]; keep the comment within iptables' 256 bytes anyway.
    let clean: String = text.chars().filter(|c| *c != '"' && *c != '\\').take(200).collect();
    format!("-m comment --comment \"{clean}\"")
}

fn proto(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::Sctp => "sctp",
    }
}

fn port_text(port: &PortSpec) -> Option<String> {
    match *port {
        PortSpec::Any => None,
        PortSpec::Protocol(p) => Some(format!("-p {}", proto(p))),
        PortSpec::Range { protocol, start, end } => {
            let p = proto(protocol);
            Some(if start == end {
                format!("-p {p} -m {p} --dport {start}")
            } else {
                format!("-p {p} -m {p} --dport {start}:{end}")
            })
        }
    }
}

fn dir_word(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn match_rule(chain: &PolicyChain, m: &Match, options: &RenderOptions) -> String {
    // The peer is the source for ingress and the destination for egress.
    let peer_dir = match chain.direction {
        Direction::Ingress => "src",
        Direction::Egress => "dst",
    };
    let mut parts = Vec::new();
    if let PeerMatch::Set(set) = &m.peer {
        parts.push(format!("-m set --match-set {set} {peer_dir}"));
    }
    if let Some(local) = &m.local_destinations {
        parts.push(format!("-m set --match-set {local} dst"));
    }
    parts.extend(port_text(&m.port));
    parts.push(comment(&format!(
        "{} {}[{}]",
        chain.policy,
        dir_word(chain.direction),
        m.rule
    )));
    let mark = options.allow_mark;
    parts.push(format!("-j MARK --set-xmark {mark:#x}/{mark:#x}"));
    parts.join(" ")
}

fn pod_chain(
    pod: &LocalPod,
    direction: Direction,
    side: &Isolation,
    options: &RenderOptions,
) -> Option<(String, Vec<String>)> {
    let Isolation::Isolated {
        chain,
        policies,
        isolated_by: _,
    } = side
    else {
        return None;
    };
    let mark = options.allow_mark;
    let mut rules = Vec::new();
    if !policies.is_empty() {
        rules.push(format!("-j MARK --set-xmark 0x0/{mark:#x}"));
    }
    for policy in policies {
        rules.push(format!("-j {policy}"));
        rules.push(format!("-m mark --mark {mark:#x}/{mark:#x} -j RETURN"));
    }
    let who = format!("{}/{} {}", pod.namespace, pod.name, dir_word(direction));
    if let Some(group) = options.nflog_group {
        let prefix: String = format!("TG drop {who}").chars().take(60).collect();
        rules.push(format!(
            "-m limit --limit 10/min --limit-burst 10 -j NFLOG --nflog-group {group} --nflog-prefix \"{prefix}\""
        ));
    }
    rules.push(format!("{} -j DROP", comment(&format!("{who} denied"))));
    Some((chain.clone(), rules))
}

fn dispatch(pods: &[LocalPod], direction: Direction) -> Vec<String> {
    let flag = match direction {
        Direction::Ingress => "-d",
        Direction::Egress => "-s",
    };
    let mut rules = Vec::new();
    for pod in pods {
        let side = match direction {
            Direction::Ingress => &pod.ingress,
            Direction::Egress => &pod.egress,
        };
        // goto, not jump: when the pod chain allows and RETURNs, control must go
        // back to TG-FORWARD, not fall through to the fail-closed DROP below.
        let target = match side {
            Isolation::Open => "-j RETURN".to_string(),
            Isolation::Isolated { chain, .. } => format!("-g {chain}"),
        };
        for ip in &pod.ips {
            rules.push(format!("{flag} {ip}/32 {target}"));
        }
    }
    rules.push(format!(
        "{} -j DROP",
        comment("fail closed: local address not programmed")
    ));
    rules
}

/// Renders a rule set.
pub fn render(rules: &RuleSet, options: &RenderOptions) -> Rendered {
    let mut out = Rendered::default();
    let mut local = RenderedSet {
        kind: SetKind::HashNet,
        entries: Vec::new(),
    };
    for pod in &rules.local_pods {
        local.entries.extend(pod.ips.iter().map(|ip| format!("{ip}/32")));
    }
    local.entries.extend(rules.local_cidrs.iter().map(ToString::to_string));
    out.sets.insert(LOCAL_SET.to_string(), local);
    for (name, set) in &rules.sets {
        out.sets.insert(name.clone(), render_set(set));
    }

    let mark = options.allow_mark;
    let mut forward = vec![
        format!("-m set ! --match-set {LOCAL_SET} src -m set ! --match-set {LOCAL_SET} dst -j RETURN"),
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-m conntrack --ctstate INVALID -j DROP".to_string(),
    ];
    for ip in &rules.node_addresses {
        forward.push(format!("-s {ip}/32 {} -j ACCEPT", comment("from this node")));
    }
    forward.push(format!("-m set --match-set {LOCAL_SET} src -j {EGRESS_CHAIN}"));
    forward.push(format!("-m set --match-set {LOCAL_SET} dst -j {INGRESS_CHAIN}"));
    forward.push(format!("-j MARK --set-xmark 0x0/{mark:#x}"));
    forward.push("-j ACCEPT".to_string());
    out.chains.insert(FORWARD_CHAIN.to_string(), forward);
    out.chains
        .insert(EGRESS_CHAIN.to_string(), dispatch(&rules.local_pods, Direction::Egress));
    out.chains.insert(
        INGRESS_CHAIN.to_string(),
        dispatch(&rules.local_pods, Direction::Ingress),
    );
    for pod in &rules.local_pods {
        for (direction, side) in [(Direction::Ingress, &pod.ingress), (Direction::Egress, &pod.egress)] {
            if let Some((name, chain)) = pod_chain(pod, direction, side, options) {
                out.chains.insert(name, chain);
            }
        }
    }
    for (name, chain) in &rules.policies {
        let lines = chain.matches.iter().map(|m| match_rule(chain, m, options)).collect();
        out.chains.insert(name.clone(), lines);
    }
    out
}

impl Rendered {
    /// Number of rules.
    pub fn rule_count(&self) -> usize {
        self.chains.values().map(Vec::len).sum()
    }

    /// The ipset script that creates every set from scratch (`create -exist`, `flush`, `add`).
    pub fn ipset_script(&self) -> String {
        let mut out = String::new();
        for (name, set) in &self.sets {
            let _ = writeln!(out, "create {name} {} {SET_OPTIONS} -exist", set.kind.as_str());
            let _ = writeln!(out, "flush {name}");
            for entry in &set.entries {
                let _ = writeln!(out, "add {name} {entry}");
            }
        }
        out
    }

    /// The iptables-restore script (for `--noflush`) that declares and fills every chain.
    pub fn iptables_script(&self) -> String {
        let mut out = String::from("*filter\n");
        let _ = writeln!(
            out,
            "# inserted once, outside the restore: -I FORWARD {}",
            forward_jump().join(" ")
        );
        for name in self.chains.keys() {
            let _ = writeln!(out, ":{name} - [0:0]");
        }
        for (name, rules) in &self.chains {
            for rule in rules {
                let _ = writeln!(out, "-A {name} {rule}");
            }
        }
        out.push_str("COMMIT\n");
        out
    }
}
