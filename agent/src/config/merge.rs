//! Laying files over each other: each file's keys replace what earlier files said, key by key,
//! inside `periodic` and `fleet_lock` too; lists are replaced whole.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_saphyr::Location;

use super::check::Check;
use super::error::ConfigError;
use super::model::{AgentConfig, StrategyKind};
use super::partial::{PartialConfig, Setting};

impl<T> Setting<T> {
    /// `null` puts `default` back; a value goes through `check` first.
    pub(crate) fn apply<U>(
        self,
        slot: &mut U,
        default: U,
        check: impl FnOnce(T) -> Result<U, ConfigError>,
    ) -> Result<(), ConfigError> {
        match self {
            Setting::Absent => {}
            Setting::Reset => *slot = default,
            Setting::Set(v) => *slot = check(v)?,
        }
        Ok(())
    }

    /// For sections: a value is merged into what earlier files said, key by key.
    fn merge<U>(
        self,
        slot: &mut U,
        default: U,
        merge: impl FnOnce(&mut U, T) -> Result<(), ConfigError>,
    ) -> Result<(), ConfigError> {
        match self {
            Setting::Absent => {}
            Setting::Reset => *slot = default,
            Setting::Set(v) => merge(slot, v)?,
        }
        Ok(())
    }
}

pub(crate) struct Merger {
    config: AgentConfig,
    /// Where the strategy in force was chosen: a strategy that lacks its settings is reported
    /// there, since no single file may be at fault otherwise.
    strategy_at: Option<(PathBuf, Location)>,
}

impl Merger {
    pub(crate) fn new() -> Self {
        Merger {
            config: AgentConfig::default(),
            strategy_at: None,
        }
    }

    pub(crate) fn apply(&mut self, file: &Path, p: PartialConfig) -> Result<(), ConfigError> {
        let f = Check { file };
        let c = &mut self.config;
        let d = AgentConfig::default();
        p.image
            .apply(&mut c.image, d.image, |v| f.image(v).map(Some))?;
        p.verify.apply(&mut c.verify, d.verify, Ok)?;
        p.keys.apply(&mut c.keys, d.keys, |v| f.paths("keys", v))?;
        p.signature_repository
            .apply(&mut c.signature_repository, d.signature_repository, |v| {
                f.repository(v).map(Some)
            })?;
        p.auth_file.apply(&mut c.auth_file, d.auth_file, |v| {
            f.path("auth_file", v).map(Some)
        })?;
        p.insecure.apply(&mut c.insecure, d.insecure, Ok)?;
        p.ca_files
            .apply(&mut c.ca_files, d.ca_files, |v| f.paths("ca_files", v))?;
        match p.strategy {
            Setting::Absent => {}
            Setting::Reset => {
                c.strategy = d.strategy;
                self.strategy_at = None;
            }
            Setting::Set(s) => {
                c.strategy = s.value;
                self.strategy_at = Some((file.to_path_buf(), s.referenced));
            }
        }
        p.periodic
            .merge(&mut c.periodic, d.periodic, |out, v| f.periodic(out, v))?;
        p.fleet_lock
            .merge(&mut c.fleet_lock, d.fleet_lock, |out, v| {
                f.fleet_lock(out, v)
            })?;
        p.check_interval
            .apply(&mut c.check_interval, d.check_interval, |v| {
                f.duration("check_interval", v, Duration::from_secs(1))
            })?;
        p.check_jitter
            .apply(&mut c.check_jitter, d.check_jitter, |v| {
                f.duration("check_jitter", v, Duration::ZERO)
            })?;
        p.max_tries.apply(&mut c.max_tries, d.max_tries, |v| {
            f.bounded("max_tries", v, 1, 100).map(Some)
        })?;
        p.hooks.apply(&mut c.hooks, d.hooks, Ok)?;
        p.admin_group
            .apply(&mut c.admin_group, d.admin_group, |v| {
                f.text("admin_group", v).map(Some)
            })?;
        Ok(())
    }

    /// Checks that need every file: a strategy must have what it works with.
    pub(crate) fn finish(self) -> Result<AgentConfig, ConfigError> {
        let config = self.config;
        let missing = match config.strategy {
            StrategyKind::FleetLock if config.fleet_lock.base_url.is_none() => {
                Some("strategy fleet_lock needs fleet_lock.base_url, and no file sets it")
            }
            StrategyKind::Periodic if config.periodic.windows.is_empty() => Some(
                "strategy periodic needs at least one entry in periodic.windows, and no file \
                 sets one",
            ),
            _ => None,
        };
        match (missing, self.strategy_at) {
            (Some(message), Some((file, at))) => Err(ConfigError::at(&file, at, message)),
            // Only a file can choose a strategy that needs settings, so `strategy_at` is set.
            _ => Ok(config),
        }
    }
}
