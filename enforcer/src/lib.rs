//! tierguard's node agent: compiles NetworkPolicies for the pods of one node
//! into iptables chains and ipsets, applies them atomically, and proves them
//! on reachability cases.

pub mod apply;
pub mod commands;
pub mod compile;
pub mod conformance;
pub mod conntrack;
pub mod contract;
pub mod daemon;
pub mod exec;
pub mod files;
pub mod load;
pub mod naming;
pub mod netns;
pub mod objects;
pub mod render;
pub mod ruleset;
pub mod sync;
