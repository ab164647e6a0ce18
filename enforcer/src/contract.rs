//! What the enforcer needs from its deployment: API resources it watches,
//! its ports and paths. The deployment tests check deploy/ against these.

use tierguard::rbac::Watched;

/// Every resource the agent lists and watches (its reflectors are built from this list).
pub const WATCHED: &[Watched] = &[
    Watched {
        group: "",
        resource: "pods",
    },
    Watched {
        group: "",
        resource: "namespaces",
    },
    Watched {
        group: "networking.k8s.io",
        resource: "networkpolicies",
    },
];

/// Port of `/healthz` and `/metrics` (host network).
pub const METRICS_PORT: u16 = 9464;
/// Liveness.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Environment variable naming this node (downward API `spec.nodeName`).
pub const NODE_NAME_ENV: &str = "NODE_NAME";
