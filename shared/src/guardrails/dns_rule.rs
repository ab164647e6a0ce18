//! R2: every egress-isolated pod must reach DNS on every configured port,
//! through rules of policies that select all of those pods (DESIGN 3.1,
//! "Partial isolation").

use super::context::Context;
use super::evaluate::PolicyFacts;
use super::groups::GroupScope;
use super::{Violation, ViolationKey};

/// R2 violations of a namespace holding `policies` (in name order; the first
/// policy that drops DNS for a group and port names the violation).
pub(crate) fn dns_violations(
    ctx: &Context<'_>,
    namespace: &str,
    groups: &[GroupScope],
    policies: &[&PolicyFacts],
) -> Vec<Violation> {
    let ports = &ctx.dns.ports;
    let mut out = Vec::new();
    for p in policies {
        for scope in &p.egress_scopes {
            let mut reach = vec![false; ports.len()];
            for q in policies {
                if reach.iter().all(|r| *r) {
                    break;
                }
                // Only a policy that adds a port is worth the implication test.
                let adds = q
                    .dns_reach
                    .iter()
                    .zip(&reach)
                    .any(|(q_reaches, have)| *q_reaches && !*have);
                if !adds {
                    continue;
                }
                // Coverage of the whole group is precomputed; a part needs the implication.
                let selects_all = if scope.whole_group {
                    q.covers[scope.group]
                } else {
                    scope.pods.implies(&q.policy.pod_selector)
                };
                if selects_all {
                    for (acc, r) in reach.iter_mut().zip(&q.dns_reach) {
                        *acc |= *r;
                    }
                }
            }
            let group = &groups[scope.group].group;
            for (&(protocol, port), reached) in ports.iter().zip(&reach) {
                if *reached {
                    continue;
                }
                let pods = if scope.whole_group {
                    group.describe()
                } else {
                    format!("{} (the pods {} selects: {})", group.describe(), p.name, scope.pods)
                };
                let all_ports = ports
                    .iter()
                    .map(|(proto, port)| format!("{proto}/{port}"))
                    .collect::<Vec<_>>()
                    .join(" and ");
                out.push(Violation {
                    key: ViolationKey::Dns {
                        namespace: namespace.to_string(),
                        group: group.clone(),
                        protocol,
                        port,
                    },
                    message: format!(
                        "policy {} would drop DNS for {pods} in namespace {namespace}: no egress rule allows \
                         {protocol}/{port} to {}; add an egress rule to {} on {all_ports} in {} or in another \
                         policy that selects all of these pods",
                        p.name, ctx.dns.description, ctx.dns.description, p.name
                    ),
                });
            }
        }
    }
    out
}
