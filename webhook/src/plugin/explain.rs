//! `explain FROM TO [PROTO/PORT]`: the engine's verdict on one connection,
//! with both sides' reasons, from `Cluster::explain` (the code behind
//! `Cluster::allowed`, which the enforcer's rules are checked against): the
//! rule that allowed each side, or what of each rule did not match.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::graph::flow_permits;
use serde::Serialize;
use tierguard::cluster::Cluster;
use tierguard::engine::{Endpoint, RuleCheck, SideReasons, SideVerdict};
use tierguard::guardrails::PeerTier;
use tierguard::policy::{Direction, NamespaceScope, Peer, Policy, PolicyPort, PortHit, PortMatch, Protocol, Rule};
use tierguard::template::{FlowPeer, TierTemplate};

/// Input `explain` cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    /// FROM or TO is neither `namespace/pod` nor an IP address
    #[error("{arg} {value:?}: expected namespace/pod or an IP address")]
    Endpoint {
        /// FROM or TO
        arg: &'static str,
        /// what was given
        value: String,
    },
    /// no such pod in the state
    #[error("{arg} {value}: no such pod (pods of namespace {namespace}: {known})")]
    NoPod {
        /// FROM or TO
        arg: &'static str,
        /// what was given
        value: String,
        /// its namespace
        namespace: String,
        /// the pods there
        known: String,
    },
    /// PROTO/PORT does not parse
    #[error("port {0:?}: expected PROTO/PORT, e.g. TCP/8080 or TCP/http (TCP, UDP, SCTP)")]
    Port(String),
    /// a named port the destination does not serve
    #[error("port {value}: {to} has no container port named {name:?} for {protocol}")]
    NamedPort {
        /// what was given
        value: String,
        /// the destination
        to: String,
        /// the name
        name: String,
        /// the protocol
        protocol: Protocol,
    },
    /// no port given and the destination serves none to default to
    #[error("no PROTO/PORT given and {0} has no container ports to explain: give one, e.g. TCP/8080")]
    NoPorts(String),
}

/// FROM or TO as given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointArg {
    /// `namespace/pod`
    Pod {
        /// namespace
        namespace: String,
        /// name
        name: String,
    },
    /// an address outside the cluster (or a node)
    Address(IpAddr),
}

impl EndpointArg {
    /// Parses `namespace/pod` or an IP address.
    pub fn parse(arg: &'static str, value: &str) -> Result<EndpointArg, ExplainError> {
        if let Ok(ip) = value.parse::<IpAddr>() {
            return Ok(EndpointArg::Address(ip));
        }
        let bad = || ExplainError::Endpoint {
            arg,
            value: value.to_string(),
        };
        let (namespace, name) = value.split_once('/').ok_or_else(bad)?;
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(bad());
        }
        Ok(EndpointArg::Pod {
            namespace: namespace.to_string(),
            name: name.to_string(),
        })
    }

    fn resolve<'c>(&self, arg: &'static str, cluster: &'c Cluster) -> Result<Endpoint<'c>, ExplainError> {
        match self {
            EndpointArg::Address(ip) => Ok(Endpoint::Address(*ip)),
            EndpointArg::Pod { namespace, name } => match cluster.pod(namespace, name) {
                Some(pod) => Ok(Endpoint::Pod(pod)),
                None => {
                    let known: Vec<&str> = cluster.pods_in(namespace).map(|p| p.name.as_str()).collect();
                    Err(ExplainError::NoPod {
                        arg,
                        value: format!("{namespace}/{name}"),
                        namespace: namespace.clone(),
                        known: if known.is_empty() {
                            "none".to_string()
                        } else {
                            known.join(", ")
                        },
                    })
                }
            },
        }
    }
}

/// PROTO/PORT as given: a number or a container port's name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortArg {
    /// protocol
    pub protocol: Protocol,
    /// number or name
    pub port: PortSpec,
}

/// A port number or name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// a number
    Number(u16),
    /// a container port name, resolved on the destination pod
    Name(String),
}

impl PortArg {
    /// Parses `TCP/8080`, `udp/53` or `TCP/http`.
    pub fn parse(value: &str) -> Result<PortArg, ExplainError> {
        let bad = || ExplainError::Port(value.to_string());
        let (proto, port) = value.split_once('/').ok_or_else(bad)?;
        let protocol = Protocol::parse(&proto.to_ascii_uppercase()).ok_or_else(bad)?;
        let port = match port.parse::<u16>() {
            Ok(0) => return Err(bad()),
            Ok(n) => PortSpec::Number(n),
            Err(_) if tierguard::policy::is_port_name(port) => PortSpec::Name(port.to_string()),
            Err(_) => return Err(bad()),
        };
        Ok(PortArg { protocol, port })
    }
}

/// Why one side decided as it did.
#[derive(Clone, Debug, Serialize)]
pub struct SideExplanation {
    /// `egress` or `ingress`
    pub direction: Direction,
    /// the end this side belongs to
    pub endpoint: String,
    /// whether this side lets the connection through
    pub allowed: bool,
    /// the policies isolating the pod in this direction
    pub isolated_by: Vec<String>,
    /// the engine's verdict
    pub verdict: SideVerdict,
    /// the rule that allowed it, as text
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allowed_by: Option<String>,
    /// for each rule of the isolating policies that did not allow it, why
    pub misses: Vec<String>,
}

/// The verdict on one connection with both sides' reasons.
#[derive(Clone, Debug, Serialize)]
pub struct Explanation {
    /// the source
    pub from: String,
    /// the destination
    pub to: String,
    /// protocol
    pub protocol: Protocol,
    /// destination port
    pub port: u16,
    /// the name the port was given as (resolved on the destination)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port_name: Option<String>,
    /// whether the connection is allowed
    pub allowed: bool,
    /// the source's egress
    pub egress: SideExplanation,
    /// the destination's ingress
    pub ingress: SideExplanation,
    /// what the tier template says of this flow, when both ends have a tier
    /// (or are outside the cluster)
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<TemplateFlow>,
}

/// The template's word on a flow between two tiers.
#[derive(Clone, Debug, Serialize)]
pub struct TemplateFlow {
    /// the source's tier (`external` for an address)
    pub from: String,
    /// the destination's tier
    pub to: String,
    /// whether the template allows it (the source's `egressTo` and the destination's `ingressFrom`)
    pub allowed: bool,
    /// the text
    pub text: String,
}

/// The tier of an end: a pod's template tier (its own label, else its
/// namespace's), `external` for an address; `None` for an untiered pod.
fn tier_of(cluster: &Cluster, template: &TierTemplate, end: Endpoint<'_>) -> Option<PeerTier> {
    match end {
        Endpoint::Address(_) => Some(PeerTier::External),
        Endpoint::Pod(pod) => template
            .pod_tier(&pod.labels, &cluster.namespace_labels(&pod.namespace))
            .map(|tier| PeerTier::Tier(tier.to_string())),
    }
}

fn template_flow(
    cluster: &Cluster,
    template: &TierTemplate,
    from: Endpoint<'_>,
    to: Endpoint<'_>,
) -> Option<TemplateFlow> {
    let (a, b) = (tier_of(cluster, template, from)?, tier_of(cluster, template, to)?);
    let name = |t: &PeerTier| match t {
        PeerTier::Tier(t) => t.clone(),
        PeerTier::External | PeerTier::Untiered => "external".to_string(),
    };
    let list = |l: &[FlowPeer]| {
        if l.is_empty() {
            "nothing".to_string()
        } else {
            l.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
        }
    };
    let mut allowed = true;
    let mut parts = Vec::new();
    if let PeerTier::Tier(t) = &a
        && let Some(flows) = template.flows(t)
    {
        allowed &= flow_permits(&flows.egress_to, &b);
        parts.push(format!("{t} egress to: {}", list(&flows.egress_to)));
    }
    if let PeerTier::Tier(t) = &b
        && let Some(flows) = template.flows(t)
    {
        allowed &= flow_permits(&flows.ingress_from, &a);
        parts.push(format!("{t} ingress from: {}", list(&flows.ingress_from)));
    }
    if parts.is_empty() {
        return None;
    }
    let (from, to) = (name(&a), name(&b));
    let verdict = if allowed {
        "a template flow"
    } else {
        "not a template flow"
    };
    Some(TemplateFlow {
        text: format!("{from} -> {to} is {verdict} ({})", parts.join("; ")),
        from,
        to,
        allowed,
    })
}

/// The ports to explain: the one given (a name resolved on the destination),
/// else every container port of the destination pod.
pub fn ports_to_explain(
    cluster: &Cluster,
    to: &EndpointArg,
    port: Option<&PortArg>,
) -> Result<Vec<(Protocol, u16, Option<String>)>, ExplainError> {
    let destination = to.resolve("TO", cluster)?;
    match port {
        Some(PortArg {
            protocol,
            port: PortSpec::Number(n),
        }) => Ok(vec![(*protocol, *n, None)]),
        Some(PortArg {
            protocol,
            port: PortSpec::Name(name),
        }) => {
            let resolved = match destination {
                Endpoint::Pod(pod) if !pod.host_network => pod.named_port(name, *protocol),
                _ => None,
            };
            match resolved {
                Some(n) => Ok(vec![(*protocol, n, Some(name.clone()))]),
                None => Err(ExplainError::NamedPort {
                    value: format!("{protocol}/{name}"),
                    to: destination.to_string(),
                    name: name.clone(),
                    protocol: *protocol,
                }),
            }
        }
        None => {
            let ports: Vec<_> = match destination {
                Endpoint::Pod(pod) => pod.ports.iter().map(|p| (p.protocol, p.port, p.name.clone())).collect(),
                Endpoint::Address(_) => Vec::new(),
            };
            if ports.is_empty() {
                return Err(ExplainError::NoPorts(destination.to_string()));
            }
            Ok(ports)
        }
    }
}

/// Explains `protocol`/`port` from `from` to `to`: the engine's
/// [`Cluster::explain`], put into words.
pub fn explain(
    cluster: &Cluster,
    template: &TierTemplate,
    from: &EndpointArg,
    to: &EndpointArg,
    protocol: Protocol,
    port: u16,
    port_name: Option<String>,
) -> Result<Explanation, ExplainError> {
    let source = from.resolve("FROM", cluster)?;
    let destination = to.resolve("TO", cluster)?;
    let why = cluster.explain(source, destination, protocol, port);
    let context = Context {
        cluster,
        destination,
        protocol,
        port,
    };
    Ok(Explanation {
        from: source.to_string(),
        to: destination.to_string(),
        protocol,
        port,
        port_name,
        allowed: why.verdict.allowed(),
        egress: context.side(Direction::Egress, source, destination, why.verdict.egress, &why.egress),
        ingress: context.side(
            Direction::Ingress,
            destination,
            source,
            why.verdict.ingress,
            &why.ingress,
        ),
        template: template_flow(cluster, template, source, destination),
    })
}

struct Context<'c> {
    cluster: &'c Cluster,
    destination: Endpoint<'c>,
    protocol: Protocol,
    port: u16,
}

impl Context<'_> {
    fn named(&self, name: &str, protocol: Protocol) -> Option<u16> {
        match self.destination {
            Endpoint::Pod(d) if !d.host_network => d.named_port(name, protocol),
            _ => None,
        }
    }

    fn side(
        &self,
        direction: Direction,
        this: Endpoint<'_>,
        other: Endpoint<'_>,
        verdict: SideVerdict,
        reasons: &SideReasons,
    ) -> SideExplanation {
        let named = |name: &str, proto: Protocol| self.named(name, proto);
        let allowed_by = match &verdict {
            SideVerdict::Allowed {
                policy,
                rule,
                peer,
                port: hit,
            } => self.cluster.policy(policy).map(|p| {
                let rule_value = p.rules(direction).get(*rule);
                let peer_text = match (peer, rule_value.and_then(|r| r.peers.as_ref())) {
                    (Some(i), Some(peers)) => format!(
                        "{}[{i}] ({})",
                        peers_key(direction),
                        peers
                            .get(*i)
                            .map(|peer| describe_peer(peer, &p.id.namespace))
                            .unwrap_or_default()
                    ),
                    _ => format!("{} (every peer)", peers_key(direction)),
                };
                let port_text = match (hit, rule_value) {
                    (PortHit::Entry(i), Some(r)) => format!(
                        "ports[{i}] ({})",
                        r.ports.get(*i).map(|pp| describe_port(pp, &named)).unwrap_or_default()
                    ),
                    _ => "ports (every port)".to_string(),
                };
                format!("{} {}[{rule}] {peer_text} {port_text}", p.id, section(direction))
            }),
            _ => None,
        };
        // Why no rule allowed it: every rule the engine looked at, and the
        // isolating policies without rules in this direction.
        let mut misses = Vec::new();
        if matches!(verdict, SideVerdict::Denied { .. }) {
            for id in &reasons.isolated_by {
                let Some(policy) = self.cluster.policy(id) else {
                    continue;
                };
                if policy.rules(direction).is_empty() {
                    misses.push(format!("{id} has no {} rules: it allows nothing", section(direction)));
                }
                for check in reasons.rules.iter().filter(|c| &c.policy == id) {
                    if let Some(rule) = policy.rules(direction).get(check.rule) {
                        misses.push(format!(
                            "{id} {}[{}]: {}",
                            section(direction),
                            check.rule,
                            self.miss(policy, rule, check, direction, other)
                        ));
                    }
                }
            }
        }
        SideExplanation {
            direction,
            endpoint: this.to_string(),
            allowed: verdict.is_allowed(),
            isolated_by: reasons.isolated_by.iter().map(ToString::to_string).collect(),
            verdict,
            allowed_by,
            misses,
        }
    }

    /// What of `rule` did not match, from the engine's check of it.
    fn miss(
        &self,
        policy: &Policy,
        rule: &Rule,
        check: &RuleCheck,
        direction: Direction,
        other: Endpoint<'_>,
    ) -> String {
        let named = |name: &str, proto: Protocol| self.named(name, proto);
        let peers_text = || match &rule.peers {
            None => "every peer".to_string(),
            Some(peers) => peers
                .iter()
                .map(|p| describe_peer(p, &policy.id.namespace))
                .collect::<Vec<_>>()
                .join("; "),
        };
        let ports_text = || {
            rule.ports
                .iter()
                .map(|p| describe_port(p, &named))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let who = match direction {
            Direction::Egress => "to",
            Direction::Ingress => "from",
        };
        let (protocol, port) = (self.protocol, self.port);
        match (check.peer.is_some(), check.port.is_some()) {
            (false, false) => format!(
                "{other} is not {who} {} and {protocol}/{port} is not in {}",
                peers_text(),
                ports_text()
            ),
            (false, true) => format!("{other} is not {who} {}", peers_text()),
            (true, false) => format!("{protocol}/{port} is not in {}", ports_text()),
            (true, true) => "matches".to_string(),
        }
    }
}

fn section(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn peers_key(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "from",
        Direction::Egress => "to",
    }
}

/// A peer in words: `pods tier=data in namespace shop`, `ipBlock 10.0.0.0/8 except 10.1.0.0/16`.
pub fn describe_peer(peer: &Peer, policy_namespace: &str) -> String {
    match peer {
        Peer::Pods { namespaces, pods } => {
            let pods = if pods.is_everything() {
                "every pod".to_string()
            } else {
                format!("pods {pods}")
            };
            match namespaces {
                NamespaceScope::Own => format!("{pods} in namespace {policy_namespace}"),
                NamespaceScope::Matching(sel) if sel.is_everything() => format!("{pods} in every namespace"),
                NamespaceScope::Matching(sel) => format!("{pods} in namespaces {sel}"),
            }
        }
        Peer::Block(block) => {
            let mut text = format!("ipBlock {}", block.cidr);
            if !block.except.is_empty() {
                let except: Vec<String> = block.except.iter().map(ToString::to_string).collect();
                let _ = write!(text, " except {}", except.join(", "));
            }
            text
        }
    }
}

/// A port entry in words, a named port with what it resolves to on the destination.
pub fn describe_port(port: &PolicyPort, named: &dyn Fn(&str, Protocol) -> Option<u16>) -> String {
    let protocol = port.protocol;
    match &port.port {
        PortMatch::All => format!("every {protocol} port"),
        PortMatch::Range { start, end } if start == end => format!("{protocol}/{start}"),
        PortMatch::Range { start, end } => format!("{protocol}/{start}-{end}"),
        PortMatch::Named(name) => match named(name, protocol) {
            Some(n) => format!("{protocol}/{name} = {n} on the destination"),
            None => format!("{protocol}/{name}, not a port of the destination"),
        },
    }
}

fn describe_side(out: &mut String, side: &SideExplanation) {
    let verdict = if side.allowed { "allowed" } else { "denied" };
    let _ = writeln!(out, "{} of {}: {verdict}", section(side.direction), side.endpoint);
    match &side.verdict {
        SideVerdict::SamePod => {
            let _ = writeln!(out, "  a pod always reaches itself");
        }
        SideVerdict::NotAPod => {
            let _ = writeln!(out, "  not a pod of the cluster: no policy applies on this side");
        }
        SideVerdict::HostNetwork => {
            let _ = writeln!(
                out,
                "  a host-network pod: its traffic is its node's, which no policy isolates"
            );
        }
        SideVerdict::OwnNode => {
            let _ = writeln!(
                out,
                "  the other end is a host-network pod on this pod's node: always allowed"
            );
        }
        SideVerdict::NotIsolated => {
            let _ = writeln!(
                out,
                "  not isolated: no policy selects it for {}",
                section(side.direction)
            );
        }
        SideVerdict::Allowed { .. } => {
            let _ = writeln!(out, "  isolated by {}", side.isolated_by.join(", "));
            if let Some(by) = &side.allowed_by {
                let _ = writeln!(out, "  allowed by {by}");
            }
        }
        SideVerdict::Denied { .. } => {
            let _ = writeln!(out, "  isolated by {}", side.isolated_by.join(", "));
            let _ = writeln!(out, "  no rule of these policies allows it:");
            for miss in &side.misses {
                let _ = writeln!(out, "    {miss}");
            }
        }
    }
}

/// The explanation for a person.
pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let port = match &e.port_name {
        Some(name) => format!("{}/{} ({name})", e.protocol, e.port),
        None => format!("{}/{}", e.protocol, e.port),
    };
    let verdict = if e.allowed { "allowed" } else { "denied" };
    let _ = writeln!(out, "{} -> {} {port}: {verdict}", e.from, e.to);
    describe_side(&mut out, &e.egress);
    describe_side(&mut out, &e.ingress);
    if let Some(flow) = &e.template {
        let _ = writeln!(out, "template: {}", flow.text);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_ports_parse_or_say_why_not() {
        assert_eq!(
            EndpointArg::parse("FROM", "shop/web"),
            Ok(EndpointArg::Pod {
                namespace: "shop".into(),
                name: "web".into()
            })
        );
        assert_eq!(
            EndpointArg::parse("TO", "fd00::1"),
            Ok(EndpointArg::Address(
                "fd00::1".parse().unwrap_or(IpAddr::from([0, 0, 0, 0]))
            ))
        );
        for bad in ["shop", "/web", "shop/", "a/b/c", "10.0.0.300"] {
            assert!(EndpointArg::parse("FROM", bad).is_err(), "{bad}");
        }
        assert_eq!(
            PortArg::parse("tcp/8080"),
            Ok(PortArg {
                protocol: Protocol::Tcp,
                port: PortSpec::Number(8080)
            })
        );
        assert_eq!(
            PortArg::parse("UDP/dns"),
            Ok(PortArg {
                protocol: Protocol::Udp,
                port: PortSpec::Name("dns".into())
            })
        );
        for bad in [
            "8080",
            "TCP/0",
            "ICMP/1",
            "TCP/",
            "TCP/a b",
            "TCP/70000",
            "TCP/Http",
            "TCP/-dns",
        ] {
            assert!(PortArg::parse(bad).is_err(), "{bad}");
        }
    }
}
