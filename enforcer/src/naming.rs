//! Names of chains and sets: a stable hash of what they stand for (namespace,
//! name, direction, rule), never a timestamp, so a restarted enforcer finds
//! its own chains again. Chains stay within iptables' 28 characters, sets
//! within ipset's 31.

use sha2::{Digest, Sha256};
use tierguard::policy::{Direction, PolicyId};

use crate::ruleset::Family;

/// Prefix of every chain the enforcer owns.
pub const CHAIN_PREFIX: &str = "TG-";
/// Prefix of every set the enforcer owns.
pub const SET_PREFIX: &str = "tg-";
/// Prefix of the scratch sets earlier versions built before a `swap`
/// (a restarted enforcer destroys any it finds).
pub const TMP_SET_PREFIX: &str = "tg-tmp-";
/// Suffix of a set's second name. A changed set is built under the name its
/// rules do not use and the rules are switched to it in the same restore that
/// rewrites them, so a set in force is never changed (see `apply`).
pub const B_SIDE_SUFFIX: &str = "-b";
/// The chain FORWARD jumps to.
pub const FORWARD_CHAIN: &str = "TG-FORWARD";
/// Dispatch by source address to the per-pod egress chains.
pub const EGRESS_CHAIN: &str = "TG-EGRESS";
/// Dispatch by destination address to the per-pod ingress chains.
pub const INGRESS_CHAIN: &str = "TG-INGRESS";
/// Every local pod address (hash:net, so local pod CIDRs fit too).
pub const LOCAL_SET: &str = "tg-local";
/// Every local pod IPv6 address (`family inet6`).
pub const LOCAL_SET6: &str = "tg-local6";
/// Prefix of the IPv6 sets (`family inet6`) built from a key: `tg-6-<20 hex>`.
/// IPv4 sets are `tg-<20 hex>`; hex has no `-`, so the two never collide.
pub const SET6_PREFIX: &str = "tg-6-";
/// iptables' limit on a chain name (`XT_EXTENSION_MAXNAMELEN` - 1).
pub const MAX_CHAIN_LEN: usize = 28;
/// ipset's limit on a set name (`IPSET_MAXNAMELEN` - 1).
pub const MAX_SET_LEN: usize = 31;

fn digest(key: &str, hex_chars: usize) -> String {
    let hash = Sha256::digest(key.as_bytes());
    let mut out = String::with_capacity(hex_chars);
    for byte in hash.iter() {
        out.push_str(&format!("{byte:02x}"));
        if out.len() >= hex_chars {
            break;
        }
    }
    out.truncate(hex_chars);
    out
}

fn letter(direction: Direction) -> char {
    match direction {
        Direction::Ingress => 'I',
        Direction::Egress => 'E',
    }
}

/// The chain of a policy's rules in one direction, shared by every local pod it selects:
/// `TG-P-<12 hex>-I` / `-E` (19 characters).
pub fn policy_chain_name(policy: &PolicyId, direction: Direction) -> String {
    let hash = digest(&format!("policy\0{}\0{}", policy.namespace, policy.name), 12);
    format!("TG-P-{hash}-{}", letter(direction))
}

/// A local pod's chain for one direction: `TG-I-<16 hex>` / `TG-E-<16 hex>` (21 characters).
pub fn pod_chain_name(namespace: &str, name: &str, direction: Direction) -> String {
    let hash = digest(&format!("pod\0{namespace}\0{name}"), 16);
    format!("TG-{}-{hash}", letter(direction))
}

/// A set named by what it holds (`key` describes it fully: policy, direction,
/// rule, peer, port): `tg-<20 hex>` (23 characters).
pub fn set_name(key: &str) -> String {
    format!("{SET_PREFIX}{}", digest(key, 20))
}

/// A set of `family` named by what it holds: `tg-<20 hex>` (IPv4, as [`set_name`])
/// or `tg-6-<20 hex>` (IPv6, 25 characters).
pub fn family_set_name(family: Family, key: &str) -> String {
    match family {
        Family::V4 => set_name(key),
        Family::V6 => format!("{SET6_PREFIX}{}", digest(key, 20)),
    }
}

/// The set of every local pod address of `family`.
pub fn local_set_name(family: Family) -> &'static str {
    match family {
        Family::V4 => LOCAL_SET,
        Family::V6 => LOCAL_SET6,
    }
}

/// The family of one of the enforcer's sets, by its name (scratch names included).
pub fn set_family(name: &str) -> Family {
    let rest = name
        .strip_prefix(TMP_SET_PREFIX)
        .or_else(|| name.strip_prefix(SET_PREFIX))
        .unwrap_or(name);
    if rest.starts_with("6-") || rest.starts_with("local6") {
        Family::V6
    } else {
        Family::V4
    }
}

/// The scratch name a set is built under before it is swapped in (at most 27 characters).
pub fn tmp_set_name(name: &str) -> String {
    format!("{TMP_SET_PREFIX}{}", name.strip_prefix(SET_PREFIX).unwrap_or(name))
}

/// The other of a set's two names: `tg-X` <-> `tg-X-b` (at most 27 characters).
pub fn other_side_name(name: &str) -> String {
    match name.strip_suffix(B_SIDE_SUFFIX) {
        Some(a_side) => a_side.to_string(),
        None => format!("{name}{B_SIDE_SUFFIX}"),
    }
}

/// The name a set is rendered under (its A name), from either of its two names.
/// Rendered names never end in `-b`: the hashes are hex, the fixed names are words.
pub fn rendered_set_name(name: &str) -> &str {
    name.strip_suffix(B_SIDE_SUFFIX).unwrap_or(name)
}

/// Whether a chain name is the enforcer's.
pub fn is_owned_chain(name: &str) -> bool {
    name.starts_with(CHAIN_PREFIX)
}

/// Whether a set name is the enforcer's.
pub fn is_owned_set(name: &str) -> bool {
    name.starts_with(SET_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(namespace: &str, name: &str) -> PolicyId {
        PolicyId {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    #[test]
    fn names_fit_the_kernel_limits_and_are_stable() {
        let long = "x".repeat(253);
        let ns = "n".repeat(63);
        for direction in Direction::BOTH {
            let p = policy_chain_name(&id(&ns, &long), direction);
            assert!(p.len() <= MAX_CHAIN_LEN, "{p}");
            assert_eq!(p, policy_chain_name(&id(&ns, &long), direction));
            let c = pod_chain_name(&ns, &long, direction);
            assert!(c.len() <= MAX_CHAIN_LEN, "{c}");
            assert!(is_owned_chain(&p) && is_owned_chain(&c));
        }
        let s = set_name(&format!("{ns}/{long}/ingress/0/peer/3"));
        assert!(s.len() <= MAX_SET_LEN && tmp_set_name(&s).len() <= MAX_SET_LEN, "{s}");
        assert!(is_owned_set(&s) && is_owned_set(&tmp_set_name(&s)));
        assert!(!s.starts_with(TMP_SET_PREFIX));
        let s6 = family_set_name(Family::V6, &format!("{ns}/{long}/ingress/0/peer/3"));
        assert!(
            s6.len() <= MAX_SET_LEN && tmp_set_name(&s6).len() <= MAX_SET_LEN,
            "{s6}"
        );
        assert!(is_owned_set(&s6) && is_owned_set(&tmp_set_name(&s6)) && s6 != s);
        assert_eq!(family_set_name(Family::V4, "k"), set_name("k"));
        for (name, family) in [
            (s.clone(), Family::V4),
            (tmp_set_name(&s), Family::V4),
            (LOCAL_SET.to_string(), Family::V4),
            (tmp_set_name(LOCAL_SET), Family::V4),
            (s6.clone(), Family::V6),
            (tmp_set_name(&s6), Family::V6),
            (LOCAL_SET6.to_string(), Family::V6),
            (tmp_set_name(LOCAL_SET6), Family::V6),
            (other_side_name(&s), Family::V4),
            (other_side_name(LOCAL_SET), Family::V4),
            (other_side_name(&s6), Family::V6),
            (other_side_name(LOCAL_SET6), Family::V6),
        ] {
            assert_eq!(set_family(&name), family, "{name}");
        }
        for name in [s.as_str(), s6.as_str(), LOCAL_SET, LOCAL_SET6] {
            let b = other_side_name(name);
            assert!(b.len() <= MAX_SET_LEN && is_owned_set(&b) && b != name, "{b}");
            assert_eq!(other_side_name(&b), name);
            assert_eq!((rendered_set_name(&b), rendered_set_name(name)), (name, name));
        }
        for fixed in [FORWARD_CHAIN, EGRESS_CHAIN, INGRESS_CHAIN] {
            assert!(fixed.len() <= MAX_CHAIN_LEN && is_owned_chain(fixed));
        }
        // Pinned values: a change here renames every chain on every node.
        assert_eq!(
            policy_chain_name(&id("shop", "default-deny"), Direction::Ingress).len(),
            19
        );
        assert_eq!(
            policy_chain_name(&id("shop", "default-deny"), Direction::Ingress),
            policy_chain_name(&id("shop", "default-deny"), Direction::Egress).replace("-E", "-I")
        );
    }

    #[test]
    fn different_objects_get_different_names() {
        let mut seen = std::collections::BTreeSet::new();
        for ns in ["a", "b", "a-b"] {
            for name in ["x", "y", "b-x"] {
                assert!(seen.insert(policy_chain_name(&id(ns, name), Direction::Ingress)));
                assert!(seen.insert(pod_chain_name(ns, name, Direction::Ingress)));
                assert!(seen.insert(set_name(&format!("{ns}/{name}"))));
            }
        }
        // The separator keeps "a"+"b-x" and "a-b"+"x" apart.
        assert_ne!(
            pod_chain_name("a", "b-x", Direction::Egress),
            pod_chain_name("a-b", "x", Direction::Egress)
        );
    }
}
