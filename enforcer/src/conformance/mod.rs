//! Reachability cases (../shared/conformance/FORMAT.md): parsing, the model
//! data plane and the runner.

pub mod dataplane;
