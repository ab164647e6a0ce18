//! The end-to-end harness against a real control plane: kube-apiserver,
//! kube-controller-manager and etcd built from their Go modules
//! (`tests/controlplane/`), run as local processes in a network namespace
//! of their own; tierguard's webhook and one node agent per node run
//! beside them as their own ServiceAccounts; pods are network namespaces.
//! The scenario is `tests/tests/e2e_controlplane.rs`.

pub mod controlplane;
pub mod fabric;
pub mod kubeconfig;
pub mod kubectl;
pub mod netns;
pub mod pki;
pub mod process;
pub mod secret_volume;
