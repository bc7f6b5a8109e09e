//! `/etc/clb/config.yaml` and its drop-ins: what the daemon follows.

pub mod model;

pub use model::{AgentConfig, FleetLockConfig, PeriodicConfig, StrategyKind, WindowConfig};
