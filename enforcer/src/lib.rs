//! tierguard's node agent: compiles NetworkPolicies for the pods of one node
//! into iptables chains and ipsets, applies them atomically, and proves them
//! on reachability cases.

pub mod commands;
pub mod conformance;
pub mod contract;
pub mod netns;
pub mod apply;
pub mod exec;
pub mod sync;
pub mod compile;
pub mod naming;
pub mod render;
pub mod load;
pub mod daemon;
