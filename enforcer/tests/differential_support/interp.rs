//! A small netfilter interpreter for what the enforcer renders: the `ipset
//! restore` script and the `iptables-restore` script of one node, evaluated
//! for one packet the way the kernel would walk FORWARD.
//!
//! It knows exactly the constructs listed below and panics on anything else,
//! so a rendering change that introduces a new construct cannot slip past
//! the differential test unevaluated.
//!
//! - sets: `create NAME hash:ip|hash:net family inet hashsize N maxelem N [-exist]`,
//!   `flush NAME`, `add NAME ENTRY [nomatch]` (hash:net: the most specific entry
//!   containing the address decides; `nomatch` there means no match; /0 is refused
//!   as the kernel does).
//! - rules: `-s`/`-d` (with `!`), `-p` (with `!`), `-m set [!] --match-set NAME src|dst`,
//!   `-m tcp|udp|sctp [!] --dport A[:B]`, `-m multiport [!] --dports A[:B],...`,
//!   `-m mark [!] --mark V[/M]`, `-m conntrack [!] --ctstate LIST` (every packet is NEW),
//!   `-m comment --comment TEXT`, `-m limit --limit R --limit-burst N` (always matches);
//!   targets ACCEPT, DROP, RETURN, user chains (`-j`, `-g`), `MARK --set-xmark V/M` /
//!   `--set-mark V[/M]`, `NFLOG --nflog-group N [--nflog-prefix P]` (non-terminating).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// A packet as the FORWARD hook sees it (the first packet of a flow: NEW).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// 6, 17 or 132
    pub proto: u8,
    pub dport: u16,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum SetKind {
    HashIp,
    HashNet,
}

#[derive(Clone, Debug)]
struct Set {
    kind: SetKind,
    /// (network, nomatch)
    entries: BTreeMap<Ipv4Net, bool>,
}

impl Set {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        match self.kind {
            SetKind::HashIp => self.entries.contains_key(&Ipv4Net::new(ip, 32).unwrap()),
            SetKind::HashNet => {
                // The most specific entry that contains the address decides.
                for len in (1..=32u8).rev() {
                    let key = Ipv4Net::new(ip, len).unwrap().trunc();
                    if let Some(nomatch) = self.entries.get(&key) {
                        return !nomatch;
                    }
                }
                false
            }
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Dir {
    Src,
    Dst,
}

#[derive(Clone, Debug)]
enum Cond {
    Addr {
        dir: Dir,
        net: Ipv4Net,
        neg: bool,
    },
    Proto {
        proto: u8,
        neg: bool,
    },
    Set {
        name: String,
        dir: Dir,
        neg: bool,
    },
    DPorts {
        ranges: Vec<(u16, u16)>,
        neg: bool,
    },
    Mark {
        value: u32,
        mask: u32,
        neg: bool,
    },
    /// whether the state list holds NEW (every packet here is NEW)
    CtNew {
        holds_new: bool,
        neg: bool,
    },
}

#[derive(Clone, Debug)]
enum Target {
    Accept,
    Drop,
    Return,
    Jump(String),
    Goto(String),
    /// mark = (mark & !mask) ^ value
    Xmark {
        value: u32,
        mask: u32,
    },
    /// non-terminating, no effect on the verdict (NFLOG)
    Log,
}

#[derive(Clone, Debug)]
struct Rule {
    conds: Vec<Cond>,
    target: Target,
    text: String,
}

/// One node's rendered state.
#[derive(Clone, Debug)]
pub struct Node {
    sets: BTreeMap<String, Set>,
    chains: BTreeMap<String, Vec<Rule>>,
    /// built-in chains and their policies
    policies: BTreeMap<String, bool>,
}

fn bad(what: &str, line: &str) -> ! {
    panic!("interpreter: unknown or invalid construct ({what}) in: {line}")
}

/// Splits a rule line like a shell would (double quotes group words).
fn words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut in_word = false;
    let mut quoted = false;
    for c in line.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            ' ' | '\t' if !quoted => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            '\\' | '\'' => bad("escape or single quote", line),
            c => {
                cur.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        bad("unterminated quote", line);
    }
    if in_word {
        out.push(cur);
    }
    out
}

fn parse_u32(text: &str, line: &str) -> u32 {
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.unwrap_or_else(|_| bad("number", line))
}

fn parse_net(text: &str, line: &str) -> Ipv4Net {
    if text.contains('/') {
        let net: Ipv4Net = text.parse().unwrap_or_else(|_| bad("address", line));
        net.trunc()
    } else {
        let ip: Ipv4Addr = text.parse().unwrap_or_else(|_| bad("address", line));
        Ipv4Net::new(ip, 32).unwrap()
    }
}

fn parse_ports(text: &str, multi: bool, line: &str) -> Vec<(u16, u16)> {
    let items: Vec<&str> = if multi { text.split(',').collect() } else { vec![text] };
    if multi && items.len() > 15 {
        bad("multiport with more than 15 ports", line);
    }
    items
        .iter()
        .map(|item| {
            let (a, b) = item.split_once(':').unwrap_or((item, item));
            let a: u16 = a.parse().unwrap_or_else(|_| bad("port", line));
            let b: u16 = b.parse().unwrap_or_else(|_| bad("port", line));
            if a > b {
                bad("port range upside down", line);
            }
            (a, b)
        })
        .collect()
}

fn proto_number(name: &str, line: &str) -> u8 {
    match name {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        _ => bad("protocol", line),
    }
}

fn value_mask(text: &str, line: &str) -> (u32, u32) {
    match text.split_once('/') {
        Some((v, m)) => (parse_u32(v, line), parse_u32(m, line)),
        None => (parse_u32(text, line), u32::MAX),
    }
}

fn parse_rule(spec: &str, declared: &dyn Fn(&str) -> bool) -> Rule {
    let w = words(spec);
    let mut i = 0;
    let mut conds = Vec::new();
    let mut modules: Vec<String> = Vec::new();
    let mut proto: Option<(u8, bool)> = None;
    let mut target: Option<Target> = None;
    let next = |i: &mut usize| -> String {
        *i += 1;
        w.get(*i - 1).cloned().unwrap_or_else(|| bad("missing argument", spec))
    };
    let mut neg = false;
    while i < w.len() {
        let tok = next(&mut i);
        if tok == "!" {
            if neg {
                bad("double negation", spec);
            }
            neg = true;
            continue;
        }
        let this_neg = std::mem::take(&mut neg);
        let module_loaded = |m: &str| modules.iter().any(|x| x == m);
        match tok.as_str() {
            "-m" => {
                if this_neg {
                    bad("negated -m", spec);
                }
                let m = next(&mut i);
                match m.as_str() {
                    "set" | "conntrack" | "comment" | "mark" | "multiport" | "limit" => {}
                    "tcp" | "udp" | "sctp" => {
                        // The kernel refuses a protocol match without the same `-p`.
                        if proto != Some((proto_number(&m, spec), false)) {
                            bad("-m tcp/udp/sctp without the same -p", spec);
                        }
                    }
                    _ => bad("match module", spec),
                }
                modules.push(m);
            }
            "-s" | "-d" => {
                let dir = if tok == "-s" { Dir::Src } else { Dir::Dst };
                conds.push(Cond::Addr {
                    dir,
                    net: parse_net(&next(&mut i), spec),
                    neg: this_neg,
                });
            }
            "-p" => {
                if proto.is_some() {
                    bad("second -p", spec);
                }
                let p = proto_number(&next(&mut i), spec);
                proto = Some((p, this_neg));
                conds.push(Cond::Proto {
                    proto: p,
                    neg: this_neg,
                });
            }
            "--match-set" if module_loaded("set") => {
                let name = next(&mut i);
                let dir = match next(&mut i).as_str() {
                    "src" => Dir::Src,
                    "dst" => Dir::Dst,
                    _ => bad("set direction", spec),
                };
                conds.push(Cond::Set {
                    name,
                    dir,
                    neg: this_neg,
                });
            }
            "--dport" | "--destination-port"
                if module_loaded("tcp") || module_loaded("udp") || module_loaded("sctp") =>
            {
                conds.push(Cond::DPorts {
                    ranges: parse_ports(&next(&mut i), false, spec),
                    neg: this_neg,
                });
            }
            "--dports" | "--destination-ports" if module_loaded("multiport") => {
                if !matches!(proto, Some((6 | 17 | 132, false))) {
                    bad("multiport without -p tcp/udp/sctp", spec);
                }
                conds.push(Cond::DPorts {
                    ranges: parse_ports(&next(&mut i), true, spec),
                    neg: this_neg,
                });
            }
            "--mark" if module_loaded("mark") => {
                let (value, mask) = value_mask(&next(&mut i), spec);
                conds.push(Cond::Mark {
                    value,
                    mask,
                    neg: this_neg,
                });
            }
            "--ctstate" if module_loaded("conntrack") => {
                let list = next(&mut i);
                let mut holds_new = false;
                for state in list.split(',') {
                    match state {
                        "NEW" => holds_new = true,
                        "ESTABLISHED" | "RELATED" | "INVALID" | "UNTRACKED" | "SNAT" | "DNAT" => {}
                        _ => bad("conntrack state", spec),
                    }
                }
                conds.push(Cond::CtNew {
                    holds_new,
                    neg: this_neg,
                });
            }
            "--comment" if module_loaded("comment") => {
                if this_neg {
                    bad("negated comment", spec);
                }
                let text = next(&mut i);
                if text.len() > 255 {
                    bad("comment longer than 255 bytes", spec);
                }
            }
            "--limit" | "--limit-burst" if module_loaded("limit") => {
                if this_neg {
                    bad("negated limit", spec);
                }
                let _ = next(&mut i);
            }
            "-j" | "-g" => {
                if this_neg || target.is_some() {
                    bad("target", spec);
                }
                let name = next(&mut i);
                let t = match (tok.as_str(), name.as_str()) {
                    ("-j", "ACCEPT") => Target::Accept,
                    ("-j", "DROP") => Target::Drop,
                    ("-j", "RETURN") => Target::Return,
                    ("-j", "MARK") => {
                        let opt = next(&mut i);
                        let (value, mask) = value_mask(&next(&mut i), spec);
                        match opt.as_str() {
                            "--set-xmark" => Target::Xmark { value, mask },
                            // --set-mark V/M is (mark & ~M) | V, the same as xmark with V inside M
                            "--set-mark" if value & !mask == 0 => Target::Xmark { value, mask },
                            _ => bad("MARK option", spec),
                        }
                    }
                    ("-j", "NFLOG") => {
                        while i < w.len() && w[i].starts_with("--nflog-") {
                            let opt = next(&mut i);
                            match opt.as_str() {
                                "--nflog-group" | "--nflog-prefix" | "--nflog-threshold" | "--nflog-size" => {
                                    let arg = next(&mut i);
                                    if opt == "--nflog-prefix" && arg.len() > 64 {
                                        bad("nflog prefix longer than 64", spec);
                                    }
                                }
                                _ => bad("NFLOG option", spec),
                            }
                        }
                        Target::Log
                    }
                    (kind, chain) => {
                        if chain.starts_with('-') || !declared(chain) {
                            bad("target chain not declared", spec);
                        }
                        if kind == "-j" {
                            Target::Jump(chain.to_string())
                        } else {
                            Target::Goto(chain.to_string())
                        }
                    }
                };
                target = Some(t);
            }
            _ => bad("option", spec),
        }
    }
    if neg {
        bad("trailing !", spec);
    }
    Rule {
        conds,
        // A rule without a target only counts packets.
        target: target.unwrap_or(Target::Log),
        text: spec.to_string(),
    }
}

impl Node {
    /// Reads one node's ipset and iptables-restore scripts (FORWARD is built in with
    /// policy ACCEPT and first jumps with `forward_jump`).
    pub fn parse(ipset_script: &str, iptables_script: &str, forward_jump: &str) -> Node {
        let mut sets: BTreeMap<String, Set> = BTreeMap::new();
        for line in ipset_script.lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            match w.as_slice() {
                [] => {}
                ["create", name, kind, rest @ ..] => {
                    let kind = match *kind {
                        "hash:ip" => SetKind::HashIp,
                        "hash:net" => SetKind::HashNet,
                        _ => bad("set type", line),
                    };
                    let mut rest = rest.to_vec();
                    let exist = rest.last() == Some(&"-exist");
                    if exist {
                        rest.pop();
                    }
                    if rest.len() % 2 != 0 {
                        bad("set options", line);
                    }
                    for pair in rest.chunks(2) {
                        match pair {
                            ["family", "inet"] => {}
                            ["hashsize" | "maxelem", n] if n.parse::<u32>().is_ok() => {}
                            _ => bad("set option", line),
                        }
                    }
                    if name.len() > 31 {
                        bad("set name longer than 31", line);
                    }
                    match sets.get(*name) {
                        Some(existing) if existing.kind != kind => bad("set recreated with another type", line),
                        Some(_) if exist => {}
                        Some(_) => bad("set created twice without -exist", line),
                        None => {
                            sets.insert(
                                name.to_string(),
                                Set {
                                    kind,
                                    entries: BTreeMap::new(),
                                },
                            );
                        }
                    }
                }
                ["flush", name] => match sets.get_mut(*name) {
                    Some(s) => s.entries.clear(),
                    None => bad("flush of an unknown set", line),
                },
                ["add", name, entry, flags @ ..] => {
                    let set = sets
                        .get_mut(*name)
                        .unwrap_or_else(|| bad("add to an unknown set", line));
                    let nomatch = match flags {
                        [] => false,
                        ["nomatch"] if set.kind == SetKind::HashNet => true,
                        _ => bad("entry flags", line),
                    };
                    let net = parse_net(entry, line);
                    match set.kind {
                        SetKind::HashIp if net.prefix_len() != 32 => bad("hash:ip entry with a prefix", line),
                        SetKind::HashNet if net.prefix_len() == 0 => bad("hash:net refuses /0", line),
                        _ => {}
                    }
                    if set.entries.insert(net, nomatch).is_some() {
                        bad("element added twice (ipset restore fails)", line);
                    }
                }
                _ => bad("ipset command", line),
            }
        }

        let mut declared: Vec<String> = vec!["FORWARD".into()];
        let mut lines: Vec<(String, String)> = Vec::new();
        let mut in_table = false;
        let mut committed = false;
        for line in iptables_script.lines() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if committed {
                bad("text after COMMIT", line);
            }
            if line == "*filter" {
                in_table = true;
                continue;
            }
            if !in_table {
                bad("rule outside *filter", line);
            }
            if line == "COMMIT" {
                committed = true;
                continue;
            }
            if let Some(decl) = line.strip_prefix(':') {
                let w: Vec<&str> = decl.split_whitespace().collect();
                match w.as_slice() {
                    [name, "-", "[0:0]"] if !name.starts_with('-') && name.len() <= 28 => {
                        if declared.iter().any(|d| d == name) {
                            bad("chain declared twice", line);
                        }
                        declared.push(name.to_string());
                    }
                    _ => bad("chain declaration", line),
                }
                continue;
            }
            match line.strip_prefix("-A ").and_then(|r| r.split_once(' ')) {
                Some((chain, spec)) => lines.push((chain.to_string(), spec.to_string())),
                None => bad("restore command", line),
            }
        }
        if !committed {
            bad("no COMMIT", iptables_script);
        }
        let is_declared = |c: &str| declared.iter().any(|d| d == c);
        let mut chains: BTreeMap<String, Vec<Rule>> = declared.iter().map(|d| (d.clone(), Vec::new())).collect();
        // FORWARD itself is not in the restore (`--noflush`): it only holds the jump.
        chains
            .get_mut("FORWARD")
            .unwrap()
            .push(parse_rule(forward_jump, &is_declared));
        for (chain, spec) in lines {
            if chain == "FORWARD" || !is_declared(&chain) {
                bad("rule appended to an undeclared chain", &spec);
            }
            let rule = parse_rule(&spec, &is_declared);
            for cond in &rule.conds {
                if let Cond::Set { name, .. } = cond
                    && !sets.contains_key(name)
                {
                    bad("match on a set the ipset script does not create", &spec);
                }
            }
            chains.get_mut(&chain).unwrap().push(rule);
        }
        Node {
            sets,
            chains,
            policies: BTreeMap::from([("FORWARD".to_string(), true)]),
        }
    }

    /// Whether the set `name` holds `ip`.
    pub fn set_contains(&self, name: &str, ip: Ipv4Addr) -> bool {
        self.sets[name].contains(ip)
    }

    fn matches(&self, cond: &Cond, p: &Packet, mark: u32) -> bool {
        let (hit, neg) = match cond {
            Cond::Addr { dir, net, neg } => {
                let ip = if *dir == Dir::Src { p.src } else { p.dst };
                (net.contains(&ip), *neg)
            }
            Cond::Proto { proto, neg } => (p.proto == *proto, *neg),
            Cond::Set { name, dir, neg } => {
                let ip = if *dir == Dir::Src { p.src } else { p.dst };
                (self.set_contains(name, ip), *neg)
            }
            Cond::DPorts { ranges, neg } => (ranges.iter().any(|(a, b)| (*a..=*b).contains(&p.dport)), *neg),
            Cond::Mark { value, mask, neg } => (mark & mask == *value, *neg),
            Cond::CtNew { holds_new, neg } => (*holds_new, *neg),
        };
        hit != neg
    }

    /// Walks FORWARD for `p` (mark 0 on entry); `Ok(accepted)`, plus the rules that decided.
    pub fn forward(&self, p: &Packet) -> (bool, Vec<String>) {
        let mut trace = Vec::new();
        let mut mark = 0u32;
        // return addresses; the current frame is (chain, index)
        let mut stack: Vec<(String, usize)> = Vec::new();
        let mut chain = "FORWARD".to_string();
        let mut index = 0usize;
        let mut steps = 0usize;
        loop {
            steps += 1;
            assert!(steps < 100_000, "interpreter: runaway walk\n{}", trace.join("\n"));
            let rules = &self.chains[&chain];
            let Some(rule) = rules.get(index) else {
                // End of chain: a built-in chain's policy, or an implicit RETURN.
                if let Some(policy) = self.policies.get(&chain) {
                    trace.push(format!("{chain}: policy"));
                    return (*policy, trace);
                }
                match stack.pop() {
                    Some((c, i)) => {
                        chain = c;
                        index = i;
                        continue;
                    }
                    None => panic!("interpreter: fell off the base chain {chain}"),
                }
            };
            index += 1;
            if !rule.conds.iter().all(|c| self.matches(c, p, mark)) {
                continue;
            }
            trace.push(format!("-A {chain} {}", rule.text));
            match &rule.target {
                Target::Accept => return (true, trace),
                Target::Drop => return (false, trace),
                Target::Log => {}
                Target::Xmark { value, mask } => mark = (mark & !mask) ^ value,
                Target::Return => {
                    if let Some(policy) = self.policies.get(&chain) {
                        return (*policy, trace);
                    }
                    match stack.pop() {
                        Some((c, i)) => {
                            chain = c;
                            index = i;
                        }
                        None => panic!("interpreter: RETURN with an empty stack"),
                    }
                }
                Target::Jump(to) => {
                    assert!(stack.len() < 64, "interpreter: jump depth");
                    stack.push((chain.clone(), index));
                    chain = to.clone();
                    index = 0;
                }
                Target::Goto(to) => {
                    // The caller's return address stays on the stack: when `to`
                    // returns, control goes back to whoever called this chain.
                    chain = to.clone();
                    index = 0;
                }
            }
        }
    }
}
