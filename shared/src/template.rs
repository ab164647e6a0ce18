//! The tier template: which tiers exist, who may talk to whom, what DNS is,
//! which namespaces are governed and how namespaces get their tier.

use std::collections::BTreeMap;
use std::fmt;

use ipnet::IpNet;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::labels::{self, Labels};
use crate::policy::Protocol;
use crate::selector::{Operator, Selector};

/// The built-in template, the seeds' three-tier architecture.
pub const BUILT_IN: &str = include_str!("template/default.yaml");

/// A peer a template flow allows.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FlowPeer {
    /// Every peer, external ones and untiered ones included.
    Any,
    /// ipBlock peers.
    External,
    /// Pods of a tier.
    Tier(String),
}

impl FlowPeer {
    fn parse(s: &str) -> FlowPeer {
        match s {
            "any" => FlowPeer::Any,
            "external" => FlowPeer::External,
            t => FlowPeer::Tier(t.to_string()),
        }
    }
}

impl fmt::Display for FlowPeer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FlowPeer::Any => f.write_str("any"),
            FlowPeer::External => f.write_str("external"),
            FlowPeer::Tier(t) => f.write_str(t),
        }
    }
}

/// Who a tier may accept traffic from and send traffic to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TierFlows {
    /// `ingressFrom`
    pub ingress_from: Vec<FlowPeer>,
    /// `egressTo`
    pub egress_to: Vec<FlowPeer>,
}

/// What "DNS works" means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSpec {
    /// namespace of the DNS pods
    pub namespace: String,
    /// labels every DNS pod carries
    pub pod_labels: Labels,
    /// the ports DNS must be reachable on
    pub ports: Vec<(Protocol, u16)>,
    /// named ports that mean 53 on the DNS pods, by protocol
    pub port_names: BTreeMap<Protocol, String>,
    /// addresses that serve DNS outside the DNS pods (node-local DNS)
    pub cidrs: Vec<IpNet>,
}

/// What the validating webhook does with violations.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Reject.
    Enforce,
    /// Admit with warnings.
    Warn,
    /// Admit silently; log and count.
    Audit,
}

/// How the mutating webhook derives a namespace's tier from its name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceTierPattern {
    /// shell glob: `*` is any run of characters, everything else literal
    pub pattern: String,
    /// the tier it gives
    pub tier: String,
}

impl NamespaceTierPattern {
    /// Whether `name` matches the glob.
    pub fn matches(&self, name: &str) -> bool {
        glob_matches(&self.pattern, name)
    }
}

/// Shell-glob match where only `*` is special.
pub fn glob_matches(pattern: &str, text: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return pattern == text;
    };
    if parts.len() == 1 {
        return pattern == text;
    }
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(i) => rest = &rest[i + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The tier template.
#[derive(Clone, Debug)]
pub struct TierTemplate {
    /// label key naming a tier, on pods or on namespaces
    pub tier_label: String,
    /// tiers in the order the template lists them
    pub tiers: Vec<(String, TierFlows)>,
    /// DNS
    pub dns: DnsSpec,
    /// which namespaces are governed
    pub governed_namespaces: Selector,
    /// the governed selector as written
    pub governed_namespaces_source: LabelSelector,
    /// namespace name patterns, first match wins
    pub namespace_tiers: Vec<NamespaceTierPattern>,
    /// enforce, warn or audit
    pub mode: Mode,
}

/// A template that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{source_name}{}: {field}: {message}", .line.map(|l| format!(" line {l}")).unwrap_or_default())]
pub struct TemplateError {
    /// file or ConfigMap key the template came from
    pub source_name: String,
    /// 1-based line, when known
    pub line: Option<usize>,
    /// the field, e.g. `tiers.data.egressTo[1]`
    pub field: String,
    /// what is wrong
    pub message: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTemplate {
    tier_label: Option<String>,
    tiers: Option<serde_yaml::Mapping>,
    dns: Option<RawDns>,
    governed_namespaces: Option<LabelSelector>,
    namespace_tiers: Option<Vec<RawPattern>>,
    mode: Option<Mode>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawFlows {
    #[serde(default)]
    ingress_from: Vec<String>,
    #[serde(default)]
    egress_to: Vec<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawDns {
    namespace: Option<String>,
    pod_labels: Option<Labels>,
    ports: Option<Vec<String>>,
    port_names: Option<BTreeMap<String, String>>,
    cidrs: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPattern {
    pattern: String,
    tier: String,
}

/// Finds the 1-based line of the first line at or after `from` that contains `needle`.
fn find_line(text: &str, from: usize, needle: &str) -> Option<usize> {
    text.lines()
        .enumerate()
        .skip(from.saturating_sub(1))
        .find(|(_, l)| l.contains(needle))
        .map(|(i, _)| i + 1)
}

/// Line of a top-level key (or its first mention).
fn key_line(text: &str, key: &str) -> Option<usize> {
    find_line(text, 1, &format!("{key}:"))
}

impl TierTemplate {
    /// The built-in template.
    pub fn built_in() -> TierTemplate {
        // The built-in text is part of the binary and covered by tests.
        #[allow(clippy::expect_used)]
        TierTemplate::parse_over(BUILT_IN, "built-in template", None).expect("built-in template is valid")
    }

    /// Parses a template; keys it omits take the built-in values.
    pub fn parse(text: &str, source_name: &str) -> Result<TierTemplate, TemplateError> {
        TierTemplate::parse_over(text, source_name, Some(&TierTemplate::built_in()))
    }

    /// Parses a template whose omitted keys take their values from `base`;
    /// without a base (the built-in text itself, which has nothing under it)
    /// they take the fallbacks written here. The base is passed explicitly so
    /// that no template is told apart by its `source_name`, which only labels
    /// errors.
    fn parse_over(text: &str, source_name: &str, base: Option<&TierTemplate>) -> Result<TierTemplate, TemplateError> {
        let err = |line: Option<usize>, field: &str, message: String| TemplateError {
            source_name: source_name.to_string(),
            line,
            field: field.to_string(),
            message,
        };
        let raw: RawTemplate = if text.trim().is_empty() {
            serde_yaml::from_str("{}")
        } else {
            serde_yaml::from_str(text)
        }
        .map_err(|e| err(e.location().map(|l| l.line()), "template", e.to_string()))?;
        let tier_label = match raw.tier_label {
            Some(t) => {
                labels::validate_key(&t).map_err(|m| err(key_line(text, "tierLabel"), "tierLabel", m))?;
                t
            }
            None => base.map(|b| b.tier_label.clone()).unwrap_or_else(|| "tier".into()),
        };

        let tiers = match raw.tiers {
            Some(map) => parse_tiers(&map, text, &err)?,
            None => base.map(|b| b.tiers.clone()).unwrap_or_default(),
        };
        if tiers.is_empty() {
            return Err(err(
                key_line(text, "tiers"),
                "tiers",
                "must name at least one tier".into(),
            ));
        }

        let dns = parse_dns(raw.dns, base.map(|b| &b.dns), text, &err)?;

        let (governed_namespaces, governed_namespaces_source) = match raw.governed_namespaces {
            Some(ls) => {
                let sel = Selector::from_k8s(&ls).map_err(|errs| {
                    let first = errs
                        .first()
                        .map(|e| (e.field.clone(), e.message.clone()))
                        .unwrap_or_default();
                    err(
                        key_line(text, "governedNamespaces"),
                        &format!("governedNamespaces.{}", first.0),
                        first.1,
                    )
                })?;
                (sel, ls)
            }
            None => match base {
                Some(b) => (b.governed_namespaces.clone(), b.governed_namespaces_source.clone()),
                None => (Selector::everything(), LabelSelector::default()),
            },
        };

        let tier_names: Vec<&str> = tiers.iter().map(|(n, _)| n.as_str()).collect();
        let namespace_tiers = match raw.namespace_tiers {
            Some(list) => {
                let mut out = Vec::new();
                for (i, p) in list.into_iter().enumerate() {
                    if !tier_names.contains(&p.tier.as_str()) {
                        return Err(err(
                            find_line(text, key_line(text, "namespaceTiers").unwrap_or(1), &p.tier),
                            &format!("namespaceTiers[{i}].tier"),
                            format!(
                                "{:?} is not a tier of this template (tiers: {})",
                                p.tier,
                                tier_names.join(", ")
                            ),
                        ));
                    }
                    out.push(NamespaceTierPattern {
                        pattern: p.pattern,
                        tier: p.tier,
                    });
                }
                out
            }
            None => base
                .map(|b| {
                    b.namespace_tiers
                        .iter()
                        .filter(|p| tier_names.contains(&p.tier.as_str()))
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        };

        Ok(TierTemplate {
            tier_label,
            tiers,
            dns,
            governed_namespaces,
            governed_namespaces_source,
            namespace_tiers,
            mode: raw.mode.or(base.map(|b| b.mode)).unwrap_or(Mode::Enforce),
        })
    }

    /// Names of the tiers, in template order.
    pub fn tier_names(&self) -> impl Iterator<Item = &str> {
        self.tiers.iter().map(|(n, _)| n.as_str())
    }

    /// Whether `name` is a tier of this template.
    pub fn is_tier(&self, name: &str) -> bool {
        self.tiers.iter().any(|(n, _)| n == name)
    }

    /// The tier of a pod: its own tier label when that names a tier, else its
    /// namespace's; `None` when neither does.
    pub fn pod_tier<'l>(&self, pod_labels: &'l Labels, namespace_labels: &'l Labels) -> Option<&'l str> {
        let named = |labels: &'l Labels| {
            labels
                .get(&self.tier_label)
                .map(String::as_str)
                .filter(|t| self.is_tier(t))
        };
        named(pod_labels).or_else(|| named(namespace_labels))
    }

    /// The flows of a tier.
    pub fn flows(&self, tier: &str) -> Option<&TierFlows> {
        self.tiers.iter().find(|(n, _)| n == tier).map(|(_, f)| f)
    }

    /// Whether a namespace with these labels is governed.
    pub fn governs(&self, namespace_labels: &Labels) -> bool {
        self.governed_namespaces.matches(namespace_labels)
    }

    /// The selector of pods labelled with tier `tier`.
    pub fn tier_selector(&self, tier: &str) -> Selector {
        Selector::requirement(&self.tier_label, Operator::In, &[tier.to_string()])
    }

    /// The selector of pods whose tier label is absent or names no template tier.
    pub fn untiered_selector(&self) -> Selector {
        let names: Vec<String> = self.tier_names().map(str::to_string).collect();
        Selector::requirement(&self.tier_label, Operator::NotIn, &names)
    }

    /// The tier a namespace name gets from `namespaceTiers`, first match wins.
    pub fn tier_for_namespace_name(&self, name: &str) -> Option<&str> {
        self.namespace_tiers
            .iter()
            .find(|p| p.matches(name))
            .map(|p| p.tier.as_str())
    }
}

type ErrFn<'a> = dyn Fn(Option<usize>, &str, String) -> TemplateError + 'a;

fn parse_tiers(
    map: &serde_yaml::Mapping,
    text: &str,
    err: &ErrFn<'_>,
) -> Result<Vec<(String, TierFlows)>, TemplateError> {
    let tiers_line = key_line(text, "tiers").unwrap_or(1);
    let mut raw = Vec::new();
    for (k, v) in map {
        let Some(name) = k.as_str() else {
            return Err(err(
                Some(tiers_line),
                "tiers",
                format!("tier names must be strings, got {k:?}"),
            ));
        };
        let line = find_line(text, tiers_line, &format!("{name}:"));
        let field = format!("tiers.{name}");
        if name == "any" || name == "external" {
            return Err(err(
                line,
                &field,
                format!("{name:?} is reserved and cannot name a tier"),
            ));
        }
        labels::validate_value(name)
            .and_then(|_| {
                if name.is_empty() {
                    Err("tier name must not be empty".into())
                } else {
                    Ok(())
                }
            })
            .map_err(|m| err(line, &field, m))?;
        // YAML rejects a repeated key only when both are written alike: a
        // tagged `! web` and a plain `web` reach us as the same name twice
        if raw
            .iter()
            .any(|(n, _, _): &(String, RawFlows, Option<usize>)| n == name)
        {
            return Err(err(line, &field, format!("tier {name:?} appears twice")));
        }
        let flows: RawFlows = serde_yaml::from_value(v.clone()).map_err(|e| err(line, &field, e.to_string()))?;
        raw.push((name.to_string(), flows, line));
    }
    let names: Vec<String> = raw.iter().map(|(n, _, _)| n.clone()).collect();
    let mut out = Vec::new();
    for (name, flows, line) in raw {
        let check = |list: &[String], key: &str| -> Result<Vec<FlowPeer>, TemplateError> {
            list.iter()
                .enumerate()
                .map(|(i, peer)| {
                    let p = FlowPeer::parse(peer);
                    match &p {
                        FlowPeer::Tier(t) if !names.contains(t) => Err(err(
                            find_line(text, line.unwrap_or(tiers_line), peer),
                            &format!("tiers.{name}.{key}[{i}]"),
                            format!(
                                "{peer:?} is not a tier of this template (tiers: {}; or any, external)",
                                names.join(", ")
                            ),
                        )),
                        _ => Ok(p),
                    }
                })
                .collect()
        };
        let ingress_from = check(&flows.ingress_from, "ingressFrom")?;
        let egress_to = check(&flows.egress_to, "egressTo")?;
        out.push((
            name,
            TierFlows {
                ingress_from,
                egress_to,
            },
        ));
    }
    Ok(out)
}

fn parse_dns(
    raw: Option<RawDns>,
    base: Option<&DnsSpec>,
    text: &str,
    err: &ErrFn<'_>,
) -> Result<DnsSpec, TemplateError> {
    let dns_line = key_line(text, "dns");
    let raw = raw.unwrap_or(RawDns {
        namespace: None,
        pod_labels: None,
        ports: None,
        port_names: None,
        cidrs: None,
    });
    let ports = match raw.ports {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, p)| {
                parse_proto_port(p).ok_or_else(|| {
                    err(
                        find_line(text, dns_line.unwrap_or(1), p),
                        &format!("dns.ports[{i}]"),
                        format!("{p:?} is not PROTOCOL/PORT (e.g. UDP/53, TCP/53)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => base.map(|b| b.ports.clone()).unwrap_or_default(),
    };
    let port_names = match raw.port_names {
        Some(map) => map
            .into_iter()
            .map(|(proto, name)| {
                Protocol::parse(&proto).map(|p| (p, name)).ok_or_else(|| {
                    err(
                        find_line(text, dns_line.unwrap_or(1), &proto),
                        &format!("dns.portNames.{proto}"),
                        format!("{proto:?} is not a protocol (TCP, UDP, SCTP)"),
                    )
                })
            })
            .collect::<Result<BTreeMap<_, _>, _>>()?,
        None => base.map(|b| b.port_names.clone()).unwrap_or_default(),
    };
    let cidrs = match raw.cidrs {
        Some(list) => list
            .iter()
            .enumerate()
            .map(|(i, c)| {
                c.parse::<IpNet>().map_err(|_| {
                    err(
                        find_line(text, dns_line.unwrap_or(1), c),
                        &format!("dns.cidrs[{i}]"),
                        format!("{c:?} is not a CIDR (e.g. 169.254.20.10/32)"),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => base.map(|b| b.cidrs.clone()).unwrap_or_default(),
    };
    let pod_labels = match raw.pod_labels {
        Some(l) => {
            for (k, v) in &l {
                labels::validate_key(k)
                    .and_then(|_| labels::validate_value(v))
                    .map_err(|m| {
                        err(
                            find_line(text, dns_line.unwrap_or(1), k),
                            &format!("dns.podLabels.{k}"),
                            m,
                        )
                    })?;
            }
            l
        }
        None => base.map(|b| b.pod_labels.clone()).unwrap_or_default(),
    };
    Ok(DnsSpec {
        namespace: raw
            .namespace
            .or_else(|| base.map(|b| b.namespace.clone()))
            .unwrap_or_else(|| "kube-system".into()),
        pod_labels,
        ports,
        port_names,
        cidrs,
    })
}

/// Parses `UDP/53`.
pub fn parse_proto_port(s: &str) -> Option<(Protocol, u16)> {
    let (proto, port) = s.split_once('/')?;
    let port: u16 = port.parse().ok()?;
    (port > 0).then_some(())?;
    Some((Protocol::parse(proto)?, port))
}

#[cfg(test)]
mod tests;
