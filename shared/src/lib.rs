//! tierguard's shared library: the NetworkPolicy model, label-selector
//! algebra, the tier template and the reachability engine. No I/O beyond
//! parsing text handed to it, except in `input` (reading manifest files and
//! folders), which only the `fs` feature builds.

pub mod cluster;
pub mod engine;
pub mod guardrails;
#[cfg(any(test, feature = "fs"))]
pub mod input;
pub mod journal;
pub mod labels;
pub mod manifest;
pub mod meta;
pub mod policy;
pub mod rbac;
pub mod selector;
pub mod template;

pub use cluster::{Cluster, ContainerPort, NamespaceInfo, PodInfo};
pub use engine::{Endpoint, SideVerdict, Verdict};
pub use meta::DEFAULT_NAMESPACE;
pub use policy::{Direction, FieldError, Policy, PolicyError, PolicyId, Protocol};
pub use selector::Selector;
pub use template::{Mode, TierTemplate};
