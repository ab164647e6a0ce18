//! tierguard's shared library: the NetworkPolicy model, label-selector
//! algebra, the tier template and the reachability engine. No I/O beyond
//! parsing text handed to it.

pub mod cluster;
pub mod engine;
pub mod guardrails;
pub mod journal;
pub mod labels;
pub mod manifest;
pub mod policy;
pub mod rbac;
pub mod selector;
pub mod template;

pub use cluster::{Cluster, ContainerPort, NamespaceInfo, PodInfo};
pub use engine::{Endpoint, SideVerdict, Verdict};
pub use policy::{Direction, FieldError, Policy, PolicyError, PolicyId, Protocol};
pub use selector::Selector;
pub use template::{Mode, TierTemplate};
