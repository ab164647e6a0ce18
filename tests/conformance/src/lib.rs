//! tierguard's test data plane and case runner: reachability cases
//! (docs/cases.md) on the model data plane, or on network namespaces that
//! carry the node agent's real rules.

pub mod conformance;
pub mod netns;
