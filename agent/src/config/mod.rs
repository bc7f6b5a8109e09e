//! `/etc/clb/config.yaml` and its drop-ins: what the daemon follows.
//!
//! [`load`] reads `config.yaml`, then `config.d/*.yaml` in byte order of their names; each file
//! sets some keys and later files win, key by key (`docs/daemon.md`, "Configuration"). Unknown
//! keys are warnings; anything else wrong refuses the whole configuration, and
//! [`ConfigHolder`] then keeps the last one that loaded.

mod check;
mod error;
mod files;
mod merge;
pub mod model;
mod parse;
mod partial;
mod tree;
mod values;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, ConfigWarning};
pub use model::{AgentConfig, FleetLockConfig, PeriodicConfig, StrategyKind, WindowConfig};

/// Where the daemon looks unless told otherwise.
pub const DEFAULT_DIR: &str = "/etc/clb";

/// A configuration that loaded, with where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub config: AgentConfig,
    /// The files read, in the order they were applied (none: all defaults).
    pub files: Vec<PathBuf>,
    /// Unknown keys, in file order; the daemon logs them.
    pub warnings: Vec<ConfigWarning>,
}

/// Reads and merges the configuration under `dir` (normally [`DEFAULT_DIR`]). A missing
/// `config.yaml` or `config.d` is fine; with neither, the result is [`AgentConfig::default`].
pub fn load(dir: &Path) -> Result<Loaded, ConfigError> {
    let files = files::config_files(dir)?;
    let mut merger = merge::Merger::new();
    let mut warnings = Vec::new();
    for file in &files {
        let text = files::read(file)?;
        let (partial, mut found) = parse::parse(file, &text)?;
        warnings.append(&mut found);
        merger.apply(file, partial)?;
    }
    Ok(Loaded {
        config: merger.finish()?,
        files,
        warnings,
    })
}

/// The configuration in force. A reload that fails changes nothing, so a typo saved in
/// `/etc/clb` does not take the daemon's settings away.
#[derive(Debug, Clone)]
pub struct ConfigHolder {
    dir: PathBuf,
    current: Loaded,
}

impl ConfigHolder {
    /// Loads `dir` for the first time; there is no earlier configuration to fall back on, so
    /// the caller decides what an error means (see [`ConfigHolder::with_defaults`]).
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        let dir = dir.into();
        let current = load(&dir)?;
        Ok(ConfigHolder { dir, current })
    }

    /// Starts from the defaults without reading anything, e.g. after [`ConfigHolder::open`]
    /// failed and the daemon runs on until the file is fixed and reloaded.
    pub fn with_defaults(dir: impl Into<PathBuf>) -> Self {
        ConfigHolder {
            dir: dir.into(),
            current: Loaded {
                config: AgentConfig::default(),
                files: Vec::new(),
                warnings: Vec::new(),
            },
        }
    }

    /// Re-reads the directory. On success the new configuration replaces the current one and
    /// is returned; on error the current one stays, untouched.
    pub fn reload(&mut self) -> Result<&Loaded, ConfigError> {
        self.current = load(&self.dir)?;
        Ok(&self.current)
    }

    pub fn current(&self) -> &Loaded {
        &self.current
    }

    pub fn config(&self) -> &AgentConfig {
        &self.current.config
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}
