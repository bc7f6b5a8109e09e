//! What can go wrong while deciding when to reboot.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum StrategyError {
    #[error("periodic strategy: unknown weekday {day:?} (Mon … Sun or the full name)")]
    InvalidDay { day: String },
    #[error("periodic strategy: a window has no days")]
    NoDays,
    #[error("periodic strategy: start_time {value:?} is not HH:MM (00:00 … 23:59)")]
    InvalidStartTime { value: String },
    #[error("periodic strategy: length_minutes {minutes} is outside 1 … 10080 (one week)")]
    InvalidLength { minutes: u32 },
    #[error("periodic strategy: no maintenance windows configured, so it could never reboot")]
    NoWindows,
    #[error("unknown time zone {name:?} (not in the system's or the bundled time zone database)")]
    UnknownTimeZone { name: String },
    #[error("fleet_lock strategy: fleet_lock.base_url is not set")]
    MissingBaseUrl,
    #[error("fleet_lock strategy: base_url {url:?}: {reason}")]
    InvalidBaseUrl { url: String, reason: String },
    #[error("fleet_lock strategy: group {group:?} must match ^[a-zA-Z0-9.-]+$")]
    InvalidGroup { group: String },
    #[error("fleet_lock strategy: client_id {id:?} must be non-empty printable text")]
    InvalidClientId { id: String },
    /// The machine id the default client id derives from is missing or malformed.
    #[error("cannot derive the FleetLock client id from {}: {reason}", path.display())]
    MachineId { path: PathBuf, reason: String },
    #[error("cannot set up the FleetLock HTTP client: {0}")]
    HttpClient(String),
    /// The server answered, with anything but 200: the lock is not ours (or not released).
    #[error("FleetLock server refused {url}: HTTP {status}: {reason}")]
    Refused {
        url: String,
        status: u16,
        /// The protocol's error `kind` (e.g. `failed_lock_semaphore_full`), when the server
        /// sent a protocol error body.
        kind: Option<String>,
        reason: String,
    },
    #[error("FleetLock server unreachable at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("cancelled while waiting for permission to reboot")]
    Cancelled,
}

impl StrategyError {
    /// True when the configuration is at fault (a bad window, zone, URL, group or id), as
    /// opposed to the host, the network or the lock server.
    pub fn is_config(&self) -> bool {
        use StrategyError as E;
        matches!(
            self,
            E::InvalidDay { .. }
                | E::NoDays
                | E::InvalidStartTime { .. }
                | E::InvalidLength { .. }
                | E::NoWindows
                | E::UnknownTimeZone { .. }
                | E::MissingBaseUrl
                | E::InvalidBaseUrl { .. }
                | E::InvalidGroup { .. }
                | E::InvalidClientId { .. }
        )
    }
}
