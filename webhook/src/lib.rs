//! tierguard's admission webhook and offline `check`.

pub mod contract;
