//! R2: every egress-isolated pod must reach DNS on every configured port,
//! through rules of policies that select all of those pods (docs/guardrails.md,
//! "R2 DNS").

use super::context::Context;
use super::facts::{PolicyFacts, Wanted};
use super::groups::GroupScope;
use super::types::{Violation, ViolationKey};

/// The `wanted` R2 violations of a namespace holding `policies` (in name
/// order; the first policy that drops DNS for a group and port names the
/// violation), onto `out`.
pub(crate) fn dns_violations(
    ctx: &Context<'_>,
    namespace: &str,
    groups: &[GroupScope],
    policies: &[&PolicyFacts<'_>],
    wanted: &Wanted<'_>,
    out: &mut Vec<Violation>,
) {
    let ports = &ctx.dns.ports;
    for p in policies {
        for scope in &p.egress_scopes {
            // The reach is what every policy selecting all of the pods adds,
            // in any order. `p` itself is one (it selects its own pods), and
            // usually brings the DNS rule, so it goes first.
            let mut reach = p.dns_reach.clone();
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
                // Coverage of the whole group is precomputed, and settles a
                // part too: a policy covering the group selects all of the
                // part, and one that may select no pod of the group selects
                // none of the (non-empty) part. Otherwise the implication decides.
                let selects_all = if q.covers[scope.group] {
                    true
                } else if scope.whole_group || !q.may_select[scope.group] {
                    false
                } else {
                    groups[scope.group]
                        .selector
                        .and_implies(&p.policy().pod_selector, &q.policy().pod_selector)
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
                let key = ViolationKey::Dns {
                    namespace: namespace.to_string(),
                    group: group.clone(),
                    protocol,
                    port,
                };
                wanted.push(out, key, || {
                    let pods = if scope.whole_group {
                        group.describe()
                    } else {
                        let part = groups[scope.group].selector.and(&p.policy().pod_selector);
                        format!("{} (the pods {} selects: {part})", group.describe(), p.name)
                    };
                    let all_ports = ports
                        .iter()
                        .map(|(proto, port)| format!("{proto}/{port}"))
                        .collect::<Vec<_>>()
                        .join(" and ");
                    format!(
                        "policy {} would drop DNS for {pods} in namespace {namespace}: no egress rule allows \
                         {protocol}/{port} to {}{}; add an egress rule to {} on {all_ports} in {} or in another \
                         policy that selects all of these pods",
                        p.name,
                        ctx.dns.description,
                        ctx.dns.by_number_hint(protocol, port),
                        ctx.dns.description,
                        p.name
                    )
                });
            }
        }
    }
}
