//! What a component reads from the API server, declared next to the code
//! that watches it, so the deployed RBAC can be checked against it.

/// One API resource a component lists and watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Watched {
    /// API group ("" for core)
    pub group: &'static str,
    /// resource (plural), e.g. `networkpolicies`
    pub resource: &'static str,
}

/// The verbs a reflector needs.
pub const REFLECTOR_VERBS: [&str; 2] = ["list", "watch"];
