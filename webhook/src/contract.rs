//! What the webhook needs from its deployment: the port and paths it serves
//! and the API resources it watches. The deployment tests check deploy/
//! against these.

use tierguard::rbac::Watched;

/// Default listen address.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:8443";
/// HTTPS port the server listens on (the Service's targetPort).
pub const PORT: u16 = 8443;
/// Validating webhook path.
pub const VALIDATE_PATH: &str = "/validate";
/// Mutating webhook path.
pub const MUTATE_PATH: &str = "/mutate";
/// Liveness.
pub const HEALTHZ_PATH: &str = "/healthz";
/// Readiness.
pub const READYZ_PATH: &str = "/readyz";
/// Prometheus metrics.
pub const METRICS_PATH: &str = "/metrics";
/// Namespace the webhook runs in.
pub const NAMESPACE: &str = "tierguard-system";
/// The webhook Service's name (its DNS names go in the serving certificate's SANs).
pub const SERVICE_NAME: &str = "tierguard-webhook";

/// Every resource the webhook lists and watches (its reflectors are built from this list).
pub const WATCHED: &[Watched] = &[
    Watched {
        group: "networking.k8s.io",
        resource: "networkpolicies",
    },
    Watched {
        group: "",
        resource: "namespaces",
    },
];

/// One permission the webhook needs beyond its reflectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Grant {
    /// API group
    pub group: &'static str,
    /// resource (plural)
    pub resource: &'static str,
    /// verbs
    pub verbs: &'static [&'static str],
    /// granted by a Role in [`NAMESPACE`] (else by a ClusterRole, in every namespace)
    pub in_own_namespace: bool,
}

/// What the background audit writes: its reports (in whichever governed
/// namespace has violations, so cluster-wide: listed by label, created and
/// updated by server-side apply, deleted when compliant) and the Lease
/// electing the one replica that writes them (in the webhook's namespace).
pub const AUDIT_GRANTS: &[Grant] = &[
    Grant {
        group: "openreports.io",
        resource: "reports",
        verbs: &["list", "create", "patch", "delete"],
        in_own_namespace: false,
    },
    Grant {
        group: "wgpolicyk8s.io",
        resource: "policyreports",
        verbs: &["list", "create", "patch", "delete"],
        in_own_namespace: false,
    },
    Grant {
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        in_own_namespace: true,
    },
];
