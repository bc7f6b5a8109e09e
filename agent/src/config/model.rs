//! The agent's configuration as the daemon uses it, after every file has been merged:
//! `/etc/clb/config.yaml`, then `/etc/clb/config.d/*.yaml` in lexical order. Every field has
//! a default, so an empty (or missing) configuration is valid: check hourly, follow the active
//! slot's own image, reboot as soon as an update is staged.

use std::path::PathBuf;
use std::time::Duration;

/// When a staged update may reboot the machine (Zincati's strategies). Checking and
/// downloading follow `check_interval` whatever the strategy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyKind {
    /// Stage and reboot as soon as an update is found.
    #[default]
    Immediate,
    /// Stage at once; reboot only inside a maintenance window.
    Periodic,
    /// Stage at once; reboot only while holding a FleetLock semaphore slot.
    FleetLock,
    /// Do nothing on its own: wait for a coordinator to call the D-Bus API.
    Coordinated,
}

/// One maintenance window: on each of `days`, from `start_time` for `length_minutes`
/// (a window may run past midnight into the next day).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WindowConfig {
    /// Weekdays, `Mon` … `Sun` (full names accepted).
    pub days: Vec<String>,
    /// `HH:MM`, 24-hour clock, in the configured time zone.
    pub start_time: String,
    pub length_minutes: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct PeriodicConfig {
    /// An IANA time zone (`Europe/Berlin`), `UTC`, or `localtime` (the host's, the default).
    pub time_zone: Option<String>,
    pub windows: Vec<WindowConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct FleetLockConfig {
    /// The lock server, e.g. `http://fleetlock.example:8080` (no trailing `/v1`).
    pub base_url: Option<String>,
    /// The reboot group (`default` when unset).
    pub group: Option<String>,
    /// This host's client id (`/etc/machine-id` when unset).
    pub client_id: Option<String>,
}

/// The merged configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The image (`registry/repo:tag`) to follow; `None`: the active slot's own image.
    pub image: Option<String>,
    /// Trusted cosign public keys (with `verify` and none, every update is refused).
    pub keys: Vec<PathBuf>,
    /// Verify signatures (default true).
    pub verify: bool,
    pub signature_repository: Option<String>,
    /// Registry credentials (containers-auth.json); never logged or exported.
    pub auth_file: Option<PathBuf>,
    pub insecure: bool,
    pub ca_files: Vec<PathBuf>,
    pub strategy: StrategyKind,
    pub periodic: PeriodicConfig,
    pub fleet_lock: FleetLockConfig,
    /// How often the daemon checks for an update (default 1 h).
    pub check_interval: Duration,
    /// A random delay up to this long is added to every check, so a fleet does not hit the
    /// registry at once (default 5 min).
    pub check_jitter: Duration,
    /// Boot tries of a new slot; `None` keeps the machine's setting.
    pub max_tries: Option<u32>,
    /// Run upgrade hooks (default true).
    pub hooks: bool,
    /// Members of this group may call the mutating D-Bus methods (root always may).
    pub admin_group: Option<String>,
}

impl Default for AgentConfig {
    fn default() -> Self {
        Self {
            image: None,
            keys: Vec::new(),
            verify: true,
            signature_repository: None,
            auth_file: None,
            insecure: false,
            ca_files: Vec::new(),
            strategy: StrategyKind::Immediate,
            periodic: PeriodicConfig::default(),
            fleet_lock: FleetLockConfig::default(),
            check_interval: Duration::from_secs(3600),
            check_jitter: Duration::from_secs(300),
            max_tries: None,
            hooks: true,
            admin_group: None,
        }
    }
}
