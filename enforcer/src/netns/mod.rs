//! The `netns` data plane: pods as Linux network namespaces behind a node
//! namespace that carries the enforcer's real rules.
