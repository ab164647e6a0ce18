//! tierguard's node agent: compiles NetworkPolicies for the pods of one node
//! into iptables chains and ipsets, and applies them atomically.

pub mod apply;
pub mod commands;
pub mod compile;
pub mod conntrack;
pub mod contract;
pub mod daemon;
pub mod exec;
pub mod incremental;
pub mod load;
pub mod naming;
pub mod objects;
pub mod render;
pub mod ruleset;
pub mod sync;
