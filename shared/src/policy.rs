//! A NetworkPolicy in normal form: selectors parsed, defaults applied,
//! CIDRs and ports checked. Parsing reports every structural problem with
//! the field path, so the same code serves the engine (refuse bad input) and
//! the R4 guardrail (report it).

use std::fmt::{self, Display};
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::meta::namespace_of;
use crate::selector::Selector;

/// A transport protocol a NetworkPolicy port can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    /// TCP, the default.
    Tcp,
    /// UDP
    Udp,
    /// SCTP
    Sctp,
}

impl Protocol {
    /// Parses the protocol as the API spells it.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }

    /// The API spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    /// Every protocol.
    pub const ALL: [Protocol; 3] = [Protocol::Tcp, Protocol::Udp, Protocol::Sctp];
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Traffic direction, seen from the selected pod.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub enum Direction {
    /// Traffic into the selected pods.
    Ingress,
    /// Traffic out of the selected pods.
    Egress,
}

impl Direction {
    /// Both directions.
    pub const BOTH: [Direction; 2] = [Direction::Ingress, Direction::Egress];
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "Ingress",
            Direction::Egress => "Egress",
        })
    }
}

/// Which destination ports a NetworkPolicy port entry allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// No `port`: every port of the protocol.
    All,
    /// `port`, or `port`..=`endPort`.
    Range {
        /// first port
        start: u16,
        /// last port (equal to `start` without `endPort`)
        end: u16,
    },
    /// A named container port, resolved on the destination pod.
    Named(String),
}

/// One entry of a rule's `ports`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PolicyPort {
    /// The protocol (TCP when unset).
    pub protocol: Protocol,
    /// The ports.
    pub port: PortMatch,
}

/// An `ipBlock` peer.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct IpBlock {
    /// The block.
    pub cidr: IpNet,
    /// Holes in it.
    pub except: Vec<IpNet>,
}

impl IpBlock {
    /// Whether `ip` is inside the block and outside every hole.
    pub fn contains(&self, ip: &IpAddr) -> bool {
        self.cidr.contains(ip) && !self.except.iter().any(|e| e.contains(ip))
    }
}

/// Which namespaces a selector peer draws pods from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum NamespaceScope {
    /// No `namespaceSelector`: the policy's own namespace.
    Own,
    /// Namespaces whose labels the selector matches.
    Matching(Selector),
}

/// One entry of `from` / `to`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// Pods chosen by namespace and pod selectors (ANDed).
    Pods {
        /// which namespaces
        namespaces: NamespaceScope,
        /// which pods in them (`{}` when unset)
        pods: Selector,
    },
    /// Addresses.
    Block(IpBlock),
}

/// What in a rule's `ports` let a packet through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum PortHit {
    /// The rule has no ports: every port.
    AllPorts,
    /// `ports[i]`.
    Entry(usize),
}

/// One ingress or egress rule.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    /// `None` when `from`/`to` is absent or empty: every peer.
    pub peers: Option<Vec<Peer>>,
    /// Empty when `ports` is absent or empty: every port and protocol.
    pub ports: Vec<PolicyPort>,
}

impl Rule {
    /// Which part of the rule's ports allows `protocol`/`port` on a
    /// destination whose named ports `named` resolves, if any.
    pub fn port_hit(
        &self,
        protocol: Protocol,
        port: u16,
        named: &dyn Fn(&str, Protocol) -> Option<u16>,
    ) -> Option<PortHit> {
        if self.ports.is_empty() {
            return Some(PortHit::AllPorts);
        }
        self.ports
            .iter()
            .position(|p| p.allows(protocol, port, named))
            .map(PortHit::Entry)
    }
}

impl PolicyPort {
    /// Whether this entry allows `protocol`/`port`; `named` resolves a port
    /// name on the destination pod.
    pub fn allows(&self, protocol: Protocol, port: u16, named: &dyn Fn(&str, Protocol) -> Option<u16>) -> bool {
        if self.protocol != protocol {
            return false;
        }
        match &self.port {
            PortMatch::All => true,
            PortMatch::Range { start, end } => (*start..=*end).contains(&port),
            PortMatch::Named(name) => named(name, protocol) == Some(port),
        }
    }
}

/// Identifies a policy: namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct PolicyId {
    /// namespace
    pub namespace: String,
    /// name
    pub name: String,
}

impl fmt::Display for PolicyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// A NetworkPolicy in normal form.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Policy {
    /// namespace and name
    pub id: PolicyId,
    /// `spec.podSelector` (`{}` when unset)
    pub pod_selector: Selector,
    /// Isolates the selected pods for ingress (policyTypes, defaulted).
    pub isolates_ingress: bool,
    /// Isolates the selected pods for egress (policyTypes, defaulted).
    pub isolates_egress: bool,
    /// `spec.ingress`
    pub ingress: Vec<Rule>,
    /// `spec.egress`
    pub egress: Vec<Rule>,
}

impl Policy {
    /// Whether the policy isolates its pods in `direction`.
    pub fn isolates(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.isolates_ingress,
            Direction::Egress => self.isolates_egress,
        }
    }

    /// The rules for `direction`.
    pub fn rules(&self, direction: Direction) -> &[Rule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}

/// A structural problem in a NetworkPolicy, with the field path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error, serde::Serialize)]
#[error("{field} {message}")]
pub struct FieldError {
    /// Path from the object root, e.g. `spec.ingress[0].from[1].ipBlock.except[0]`.
    pub field: String,
    /// What is wrong, starting with the offending value where there is one.
    pub message: String,
}

/// Every structural problem found in one NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("NetworkPolicy {policy}: {}", .errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct PolicyError {
    /// The policy.
    pub policy: PolicyId,
    /// Its problems.
    pub errors: Vec<FieldError>,
}

/// Parse result that keeps going after errors: the policy with every broken
/// rule dropped (a dropped rule allows nothing, so enforcement fails closed;
/// a broken pod selector selects nothing) plus the list of problems.
#[derive(Clone, Debug)]
pub struct LenientPolicy {
    /// The usable part.
    pub policy: Policy,
    /// What was wrong.
    pub errors: Vec<FieldError>,
}

impl Policy {
    /// Parses a NetworkPolicy, refusing it when anything is structurally wrong.
    pub fn from_k8s(np: &NetworkPolicy) -> Result<Policy, PolicyError> {
        let LenientPolicy { policy, errors } = Policy::from_k8s_lenient(np);
        if errors.is_empty() {
            Ok(policy)
        } else {
            Err(PolicyError {
                policy: policy.id,
                errors,
            })
        }
    }

    /// Parses a NetworkPolicy, collecting every structural problem.
    pub fn from_k8s_lenient(np: &NetworkPolicy) -> LenientPolicy {
        let mut errors = Vec::new();
        let id = PolicyId {
            namespace: namespace_of(&np.metadata).to_string(),
            name: np.metadata.name.clone().unwrap_or_default(),
        };
        if id.name.is_empty() {
            errors.push(FieldError {
                field: "metadata.name".into(),
                message: "is required".into(),
            });
        }
        // Borrowed, not cloned: parsing reads the spec and copies only what it keeps.
        let no_spec;
        let spec = match &np.spec {
            Some(spec) => spec,
            None => {
                no_spec = NetworkPolicySpec::default();
                &no_spec
            }
        };
        let pod_selector = match &spec.pod_selector {
            None => Selector::everything(),
            Some(ls) => selector(ls, &"spec.podSelector", &mut errors).unwrap_or_else(Selector::nothing),
        };
        let ingress: Vec<Rule> = spec
            .ingress
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                rule(
                    r.from.as_deref(),
                    r.ports.as_deref(),
                    &format_args!("spec.ingress[{i}]"),
                    "from",
                    &mut errors,
                )
            })
            .collect();
        let egress: Vec<Rule> = spec
            .egress
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, r)| {
                rule(
                    r.to.as_deref(),
                    r.ports.as_deref(),
                    &format_args!("spec.egress[{i}]"),
                    "to",
                    &mut errors,
                )
            })
            .collect();
        let (isolates_ingress, isolates_egress) = match spec.policy_types.as_deref() {
            // The API server's defaulting: Ingress always, Egress when there are egress rules.
            None | Some([]) => (true, spec.egress.as_ref().is_some_and(|e| !e.is_empty())),
            Some(types) => {
                let mut ing = false;
                let mut eg = false;
                for (i, t) in types.iter().enumerate() {
                    match t.as_str() {
                        "Ingress" => ing = true,
                        "Egress" => eg = true,
                        other => errors.push(FieldError {
                            field: format!("spec.policyTypes[{i}]"),
                            message: format!("{other:?} is not a policy type (Ingress, Egress)"),
                        }),
                    }
                }
                (ing, eg)
            }
        };
        LenientPolicy {
            policy: Policy {
                id,
                pod_selector,
                isolates_ingress,
                isolates_egress,
                ingress,
                egress,
            },
            errors,
        }
    }
}

// Field paths are `Display` values, formatted only when a problem is reported:
// most policies have none, and parsing should not pay for the strings.

fn selector(ls: &LabelSelector, field: &dyn Display, errors: &mut Vec<FieldError>) -> Option<Selector> {
    match Selector::from_k8s(ls) {
        Ok(s) => Some(s),
        Err(errs) => {
            errors.extend(errs.into_iter().map(|e| FieldError {
                field: format!("{field}.{}", e.field),
                message: e.message,
            }));
            None
        }
    }
}

fn rule(
    peers: Option<&[NetworkPolicyPeer]>,
    ports: Option<&[NetworkPolicyPort]>,
    base: &dyn Display,
    peers_key: &str,
    errors: &mut Vec<FieldError>,
) -> Option<Rule> {
    let before = errors.len();
    let peers: Option<Vec<Peer>> = match peers {
        None | Some([]) => None,
        Some(list) => Some(
            list.iter()
                .enumerate()
                .filter_map(|(i, p)| peer(p, &format_args!("{base}.{peers_key}[{i}]"), errors))
                .collect(),
        ),
    };
    let ports: Vec<PolicyPort> = ports
        .unwrap_or_default()
        .iter()
        .enumerate()
        .filter_map(|(i, p)| port(p, &format_args!("{base}.ports[{i}]"), errors))
        .collect();
    (errors.len() == before).then_some(Rule { peers, ports })
}

fn peer(p: &NetworkPolicyPeer, field: &dyn Display, errors: &mut Vec<FieldError>) -> Option<Peer> {
    match (&p.ip_block, &p.namespace_selector, &p.pod_selector) {
        (Some(block), None, None) => ip_block(block, &format_args!("{field}.ipBlock"), errors).map(Peer::Block),
        (Some(_), _, _) => {
            errors.push(FieldError {
                field: field.to_string(),
                message: "may not combine ipBlock with namespaceSelector or podSelector".into(),
            });
            None
        }
        (None, None, None) => {
            errors.push(FieldError {
                field: field.to_string(),
                message: "must specify one of podSelector, namespaceSelector or ipBlock".into(),
            });
            None
        }
        (None, ns, pods) => {
            let namespaces = match ns {
                None => Some(NamespaceScope::Own),
                Some(ls) => {
                    selector(ls, &format_args!("{field}.namespaceSelector"), errors).map(NamespaceScope::Matching)
                }
            };
            let pods = match pods {
                None => Some(Selector::everything()),
                Some(ls) => selector(ls, &format_args!("{field}.podSelector"), errors),
            };
            Some(Peer::Pods {
                namespaces: namespaces?,
                pods: pods?,
            })
        }
    }
}

fn parse_cidr(text: &str, field: &dyn Display, errors: &mut Vec<FieldError>) -> Option<IpNet> {
    match text.parse::<IpNet>() {
        Ok(net) => Some(net),
        Err(_) => {
            // A bare address is not a CIDR for the API server either.
            errors.push(FieldError {
                field: field.to_string(),
                message: format!("{text:?} is not a valid CIDR (e.g. 10.0.0.0/16 or fd00::/64)"),
            });
            None
        }
    }
}

fn ip_block(block: &IPBlock, field: &dyn Display, errors: &mut Vec<FieldError>) -> Option<IpBlock> {
    let cidr = parse_cidr(&block.cidr, &format_args!("{field}.cidr"), errors)?;
    let mut except = Vec::new();
    let mut ok = true;
    for (i, e) in block.except.iter().flatten().enumerate() {
        let f = format_args!("{field}.except[{i}]");
        match parse_cidr(e, &f, errors) {
            Some(net) => {
                // The API server wants each except a strict subset of the cidr:
                // inside it and with a longer prefix (host bits do not count).
                let inside = net.prefix_len() > cidr.prefix_len() && cidr.contains(&net);
                if !inside {
                    errors.push(FieldError {
                        field: f.to_string(),
                        message: format!("{e} is not inside cidr {}", block.cidr),
                    });
                    ok = false;
                } else {
                    except.push(net);
                }
            }
            None => ok = false,
        }
    }
    ok.then_some(IpBlock { cidr, except })
}

/// Whether `name` is a valid IANA service name, the syntax of a named port.
pub fn is_port_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && name.chars().any(|c| c.is_ascii_lowercase())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

fn port(p: &NetworkPolicyPort, field: &dyn Display, errors: &mut Vec<FieldError>) -> Option<PolicyPort> {
    let before = errors.len();
    let protocol = match p.protocol.as_deref() {
        None => Protocol::Tcp,
        Some(s) => Protocol::parse(s).unwrap_or_else(|| {
            errors.push(FieldError {
                field: format!("{field}.protocol"),
                message: format!("{s:?} is not a supported protocol (TCP, UDP, SCTP)"),
            });
            Protocol::Tcp
        }),
    };
    let port = match (&p.port, p.end_port) {
        (None, None) => PortMatch::All,
        (None, Some(end)) => {
            errors.push(FieldError {
                field: format!("{field}.endPort"),
                message: format!("{end} requires a numeric port"),
            });
            PortMatch::All
        }
        (Some(IntOrString::String(name)), end) => {
            if let Some(end) = end {
                errors.push(FieldError {
                    field: format!("{field}.endPort"),
                    message: format!("{end} requires a numeric port, not the named port {name:?}"),
                });
            }
            if !is_port_name(name) {
                errors.push(FieldError {
                    field: format!("{field}.port"),
                    message: format!(
                        "{name:?} is not a valid port name (1-15 lower-case letters, digits and '-', at least one letter)"
                    ),
                });
            }
            PortMatch::Named(name.clone())
        }
        (Some(IntOrString::Int(n)), end) => numeric(i64::from(*n), end, field, errors),
    };
    (errors.len() == before).then_some(PolicyPort { protocol, port })
}

fn numeric(n: i64, end: Option<i32>, field: &dyn Display, errors: &mut Vec<FieldError>) -> PortMatch {
    let Ok(start) = u16::try_from(n)
        .map_err(|_| ())
        .and_then(|p| if p == 0 { Err(()) } else { Ok(p) })
    else {
        errors.push(FieldError {
            field: format!("{field}.port"),
            message: format!("{n} is out of range (1-65535)"),
        });
        return PortMatch::All;
    };
    let end = match end {
        None => start,
        Some(e) => match u16::try_from(e) {
            Ok(e) if e >= start => e,
            Ok(e) => {
                errors.push(FieldError {
                    field: format!("{field}.endPort"),
                    message: format!("{e} is below port {start}"),
                });
                start
            }
            Err(_) => {
                errors.push(FieldError {
                    field: format!("{field}.endPort"),
                    message: format!("{e} is out of range (1-65535)"),
                });
                start
            }
        },
    };
    PortMatch::Range { start, end }
}

#[cfg(test)]
mod tests;
