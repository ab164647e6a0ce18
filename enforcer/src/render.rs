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
//!
//! Each address family is rendered on its own: the IPv4 rule set for
//! `iptables-restore` with `family inet` sets, the IPv6 one for
//! `ip6tables-restore` with `family inet6` sets (`tg-local6`, `tg-6-<hash>`),
//! the same chain names and layout. An IPv6 rule set without any local
//! address (no local IPv6 pod, no IPv6 pod CIDR) renders no set and a
//! TG-FORWARD that only returns (nothing of it is ours), and still the
//! dispatch chains ending in the fail-closed DROP.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Weak};

use tierguard::policy::{Direction, Protocol};

use crate::naming::{EGRESS_CHAIN, FORWARD_CHAIN, INGRESS_CHAIN, local_set_name};
use crate::ruleset::{
    Family, IpSet, Isolation, LocalPod, Match, PeerMatch, PolicyChain, PortSpec, RuleSet, SetEntry, SetKind,
};

/// Options every created set gets (room for every pod of a large cluster).
pub const SET_OPTIONS: &str = "family inet hashsize 1024 maxelem 1048576";
/// [`SET_OPTIONS`] of the IPv6 sets.
pub const SET_OPTIONS6: &str = "family inet6 hashsize 1024 maxelem 1048576";

/// The create options of a set of `family`.
pub fn set_options(family: Family) -> &'static str {
    match family {
        Family::V4 => SET_OPTIONS,
        Family::V6 => SET_OPTIONS6,
    }
}

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
    /// (shared: a set rendered before and unchanged since is handed on, not copied)
    pub entries: Arc<Vec<String>>,
}

/// Everything a node gets: sets and chains, by name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Rendered {
    /// the address family (IPv4: iptables and `family inet`; IPv6: ip6tables and `family inet6`)
    pub family: Family,
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

/// Appends a `u8` in decimal, as `Display` spells it.
fn push_u8(out: &mut String, n: u8) {
    if n >= 100 {
        out.push(char::from(b'0' + n / 100));
    }
    if n >= 10 {
        out.push(char::from(b'0' + n / 10 % 10));
    }
    out.push(char::from(b'0' + n % 10));
}

/// An IPv4 address as `Display` spells it (dotted decimal), without the formatting machinery:
/// a large cluster's sets hold a million of them.
fn ipv4_text(ip: Ipv4Addr) -> String {
    let mut out = String::with_capacity(15);
    for (i, octet) in ip.octets().into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        push_u8(&mut out, octet);
    }
    out
}

fn entry_text(entry: &SetEntry) -> String {
    match entry {
        SetEntry::Ip(IpAddr::V4(ip)) => ipv4_text(*ip),
        SetEntry::Ip(ip) => ip.to_string(),
        SetEntry::Net(net) => net.to_string(),
        SetEntry::NoMatch(net) => format!("{net} nomatch"),
    }
}

fn render_set(set: &IpSet) -> RenderedSet {
    RenderedSet {
        kind: set.kind,
        entries: Arc::new(set.entries.iter().map(entry_text).collect()),
    }
}

/// What the last [`render_with`] spelled: the sets by name, with the compiled
/// members they were rendered from (a set whose members are the very same,
/// shared and unchanged since, is not spelled again), and the policy chains
/// (an equal chain is not spelled again).
///
/// It holds the members weakly: the compile may then change a peer's members
/// in place (no copy of a large set for one pod), which cuts them loose from
/// the cache, and the set is spelled again.
#[derive(Debug, Default)]
pub struct RenderCache {
    sets: HashMap<String, (Weak<BTreeSet<SetEntry>>, RenderedSet)>,
    /// policy chains as rendered last time, by name (an equal chain is not spelled again)
    chains: HashMap<String, (PolicyChain, RenderOptions, Vec<String>)>,
}

impl RenderCache {
    /// `set` as text: as rendered last time under `name` if its members are the
    /// same, else as rendered in this pass for other sets with the same members
    /// (`shared`), else spelled now.
    fn set(
        &mut self,
        name: &str,
        set: &IpSet,
        shared: &mut HashMap<(SetKind, *const BTreeSet<SetEntry>), RenderedSet>,
    ) -> RenderedSet {
        if let Some((members, rendered)) = self.sets.get(name)
            && members
                .upgrade()
                .is_some_and(|members| Arc::ptr_eq(&members, &set.entries))
            && rendered.kind == set.kind
        {
            return rendered.clone();
        }
        let rendered = shared
            .entry((set.kind, Arc::as_ptr(&set.entries)))
            .or_insert_with(|| render_set(set))
            .clone();
        self.sets
            .insert(name.to_string(), (Arc::downgrade(&set.entries), rendered.clone()));
        rendered
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

fn dispatch(pods: &[LocalPod], direction: Direction, family: Family) -> Vec<String> {
    let host = family.host_prefix();
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
            rules.push(format!("{flag} {ip}/{host} {target}"));
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
    render_with(rules, options, &mut RenderCache::default())
}

/// [`render`], reusing the sets of `cache` whose members have not changed
/// (the same shared members as when they were rendered) and keeping the new
/// ones there.
pub fn render_with(rules: &RuleSet, options: &RenderOptions, cache: &mut RenderCache) -> Rendered {
    let family = rules.family;
    let host = family.host_prefix();
    let local_set = local_set_name(family);
    let mut out = Rendered {
        family,
        ..Rendered::default()
    };
    let nothing_local = rules.local_pods.iter().all(|p| p.ips.is_empty()) && rules.local_cidrs.is_empty();
    if family == Family::V6 && nothing_local {
        // No local IPv6 address: no packet is ours, no set is needed (keep it cheap).
        out.chains.insert(
            FORWARD_CHAIN.to_string(),
            vec![format!("{} -j RETURN", comment("no local pod address"))],
        );
        out.chains
            .insert(EGRESS_CHAIN.to_string(), dispatch(&[], Direction::Egress, family));
        out.chains
            .insert(INGRESS_CHAIN.to_string(), dispatch(&[], Direction::Ingress, family));
        return out;
    }
    let mut local = Vec::new();
    for pod in &rules.local_pods {
        local.extend(pod.ips.iter().map(|ip| format!("{ip}/{host}")));
    }
    local.extend(rules.local_cidrs.iter().map(ToString::to_string));
    out.sets.insert(
        local_set.to_string(),
        RenderedSet {
            kind: SetKind::HashNet,
            entries: Arc::new(local),
        },
    );
    let mut shared = HashMap::new();
    for (name, set) in &rules.sets {
        out.sets.insert(name.clone(), cache.set(name, set, &mut shared));
    }
    cache.sets.retain(|name, _| rules.sets.contains_key(name));

    let mark = options.allow_mark;
    let mut forward = vec![
        format!("-m set ! --match-set {local_set} src -m set ! --match-set {local_set} dst -j RETURN"),
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT".to_string(),
        "-m conntrack --ctstate INVALID -j DROP".to_string(),
    ];
    for ip in &rules.node_addresses {
        forward.push(format!("-s {ip}/{host} {} -j ACCEPT", comment("from this node")));
    }
    forward.push(format!("-m set --match-set {local_set} src -j {EGRESS_CHAIN}"));
    forward.push(format!("-m set --match-set {local_set} dst -j {INGRESS_CHAIN}"));
    forward.push(format!("-j MARK --set-xmark 0x0/{mark:#x}"));
    forward.push("-j ACCEPT".to_string());
    out.chains.insert(FORWARD_CHAIN.to_string(), forward);
    out.chains.insert(
        EGRESS_CHAIN.to_string(),
        dispatch(&rules.local_pods, Direction::Egress, family),
    );
    out.chains.insert(
        INGRESS_CHAIN.to_string(),
        dispatch(&rules.local_pods, Direction::Ingress, family),
    );
    for pod in &rules.local_pods {
        for (direction, side) in [(Direction::Ingress, &pod.ingress), (Direction::Egress, &pod.egress)] {
            if let Some((name, chain)) = pod_chain(pod, direction, side, options) {
                out.chains.insert(name, chain);
            }
        }
    }
    for (name, chain) in &rules.policies {
        let lines = match cache.chains.get(name) {
            Some((cached, with, lines)) if cached == chain && with == options => lines.clone(),
            _ => {
                let lines: Vec<String> = chain.matches.iter().map(|m| match_rule(chain, m, options)).collect();
                cache
                    .chains
                    .insert(name.clone(), (chain.clone(), *options, lines.clone()));
                lines
            }
        };
        out.chains.insert(name.clone(), lines);
    }
    cache.chains.retain(|name, _| rules.policies.contains_key(name));
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
            let _ = writeln!(
                out,
                "create {name} {} {} -exist",
                set.kind.as_str(),
                set_options(self.family)
            );
            let _ = writeln!(out, "flush {name}");
            for entry in set.entries.iter() {
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

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::compile::{NodeView, compile_family};
    use crate::naming::{LOCAL_SET, LOCAL_SET6, is_owned_set, set_family};

    fn view(case: &str) -> (tierguard::Cluster, NodeView) {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(case);
        let (cluster, addresses) = match crate::load::load(&[dir], "node-a") {
            Ok(x) => x,
            Err(e) => panic!("{e}"),
        };
        let node = NodeView {
            name: "node-a".into(),
            addresses,
            pod_cidrs: Vec::new(),
        };
        (cluster, node)
    }

    fn rendered(case: &str, family: Family) -> Rendered {
        let (cluster, node) = view(case);
        render(&compile_family(&cluster, &node, family), &RenderOptions::default())
    }

    #[test]
    fn dual_stack_renders_an_ipv6_rule_set_with_inet6_sets() {
        let v6 = rendered("dualstack", Family::V6);
        assert_eq!(v6.family, Family::V6);
        let sets = v6.ipset_script();
        // Every set is an IPv6 one, created with family inet6; no IPv4 address leaks in.
        assert!(!v6.sets.is_empty());
        for name in v6.sets.keys() {
            assert!(is_owned_set(name) && set_family(name) == Family::V6, "{name}");
            assert!(name.len() <= crate::naming::MAX_SET_LEN, "{name}");
        }
        for line in sets.lines().filter(|l| l.starts_with("create ")) {
            assert!(line.contains(" family inet6 "), "{line}");
        }
        assert!(!sets.contains("10.0.") && !sets.contains("family inet "), "{sets}");
        let local = &v6.sets[LOCAL_SET6];
        assert_eq!(*local.entries, ["fd00:0:0:1::3/128", "fd00:0:0:1::2/128"]);
        // ipBlock with except: hash:net with a nomatch hole; ::/0 split in two halves.
        let nets: Vec<&RenderedSet> = v6.sets.values().filter(|s| s.kind == SetKind::HashNet).collect();
        assert!(
            nets.iter()
                .any(|s| *s.entries == ["fd00:0:0:9::/64", "fd00:0:0:9:1::/80 nomatch"]),
            "{sets}"
        );
        assert!(nets.iter().any(|s| *s.entries == ["::/1", "8000::/1"]), "{sets}");

        let rules = v6.iptables_script();
        assert!(rules.starts_with("*filter\n") && rules.ends_with("COMMIT\n"), "{rules}");
        let forward = &v6.chains[FORWARD_CHAIN];
        assert_eq!(
            forward[0],
            "-m set ! --match-set tg-local6 src -m set ! --match-set tg-local6 dst -j RETURN"
        );
        assert_eq!(forward[1], "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT");
        assert_eq!(forward[2], "-m conntrack --ctstate INVALID -j DROP");
        assert!(forward[3].starts_with("-s fd00:0:0:ff::10/128 "), "{rules}");
        let ingress = &v6.chains[INGRESS_CHAIN];
        assert!(ingress[0].starts_with("-d fd00:0:0:1::3/128 -g TG-I-"), "{rules}");
        assert_eq!(ingress[1], "-d fd00:0:0:1::2/128 -j RETURN");
        assert!(ingress[2].ends_with("-j DROP"), "{rules}");
        // The IPv4-only pod (and its IPv4-only policy) is not in the IPv6 rule set.
        assert!(!rules.contains("shop/legacy") && !rules.contains("v4-only"), "{rules}");
        assert!(!rules.contains("10.0.") && !rules.contains("/32"), "{rules}");
        // The same policy chains and pod chains as IPv4 for the dual-stack pods.
        let v4 = rendered("dualstack", Family::V4);
        for chain in v6.chains.keys() {
            assert!(v4.chains.contains_key(chain), "{chain}");
        }
        assert!(
            v4.ipset_script()
                .lines()
                .all(|l| !l.starts_with("create ") || l.contains("family inet "))
        );
        assert!(!v4.iptables_script().contains("fd00:"), "{}", v4.iptables_script());
        assert!(v4.sets.contains_key(LOCAL_SET) && !v4.sets.contains_key(LOCAL_SET6));
    }

    #[test]
    fn an_ipblock_never_matches_the_other_family() {
        let (cluster, node) = view("dualstack");
        for family in Family::BOTH {
            let rules = compile_family(&cluster, &node, family);
            for set in rules.sets.values() {
                for entry in set.entries.iter() {
                    let ok = match entry {
                        SetEntry::Ip(ip) => family.has_addr(ip),
                        SetEntry::Net(net) | SetEntry::NoMatch(net) => family.has_net(net),
                    };
                    assert!(ok, "{family}: {entry:?} in {}", set.about);
                }
            }
        }
        // The legacy pod's only policy allows 10.0.0.0/8: in IPv6 the api policy's chain keeps
        // only its IPv6 block and selector matches.
        let v6 = rendered("dualstack", Family::V6);
        let api: Vec<&String> = v6
            .chains
            .iter()
            .filter(|(n, _)| n.ends_with("-I"))
            .flat_map(|(_, r)| r)
            .collect();
        assert_eq!(api.len(), 2, "{api:?}");
    }

    #[test]
    fn ipv4_text_is_display() {
        for n in [
            0u32,
            1,
            9,
            10,
            99,
            100,
            199,
            255,
            0x0a00_0001,
            0xc0a8_6407,
            0xffff_ffff,
            0x6463_0a09,
        ] {
            let ip = Ipv4Addr::from(n);
            assert_eq!(ipv4_text(ip), ip.to_string());
        }
        for octet in 0..=255u8 {
            let ip = Ipv4Addr::new(octet, 255 - octet, octet / 3, octet.wrapping_mul(7));
            assert_eq!(ipv4_text(ip), ip.to_string());
        }
    }

    #[test]
    fn ipv4_only_cluster_gets_a_cheap_empty_ipv6_rule_set() {
        let v6 = rendered("basic", Family::V6);
        assert!(v6.sets.is_empty(), "{:?}", v6.sets);
        assert_eq!(v6.ipset_script(), "");
        assert_eq!(
            v6.chains.keys().map(String::as_str).collect::<Vec<_>>(),
            [EGRESS_CHAIN, FORWARD_CHAIN, INGRESS_CHAIN]
        );
        assert_eq!(v6.chains[FORWARD_CHAIN].len(), 1);
        assert!(v6.chains[FORWARD_CHAIN][0].ends_with("-j RETURN"));
        assert!(v6.chains[EGRESS_CHAIN][0].ends_with("-j DROP"));
    }
}
