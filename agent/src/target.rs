//! Where the state lives for this run: a directory (`--state-dir`), a disk image or block
//! device (`--disk`, partitions found by label through offset loop devices), or the host's
//! own `COS_STATE` partition found by label.

use std::path::{Path, PathBuf};

use clb_disk::StateDisk;
use clb_ondisk::SlotName;

use crate::error::{ClbError, Result};
use crate::store::StateStore;

/// Where the initrd hook records the slot it booted.
pub const BOOTED_SLOT_FILE: &str = "/run/clb/booted_slot";
/// Written by `clb mark-good` on a host once this boot is committed: the daemon acts on its
/// own only after that, never during a boot whose health is not yet known. (`good` in the
/// boot state says the slot was committed once, not that this boot was.)
pub const BOOT_COMMITTED_FILE: &str = "/run/clb/boot_committed";
/// Where the host's `COS_STATE` is mounted when clb has to mount it itself.
pub const HOST_STATE_MOUNT: &str = "/run/clb/state";

pub enum Target {
    /// `booted`: only what `clb daemon --booted-slot` simulates (tests); otherwise `None`.
    Dir {
        store: StateStore,
        booted: Option<SlotName>,
    },
    Disk {
        store: StateStore,
        _disk: StateDisk,
    },
    Host {
        store: StateStore,
        booted: Option<SlotName>,
        _disk: Option<StateDisk>,
    },
}

impl Target {
    pub fn open(
        state_dir: Option<&Path>,
        disk: Option<&Path>,
        label: &str,
        writable: bool,
    ) -> Result<Self> {
        match (state_dir, disk) {
            (Some(_), Some(_)) => Err(ClbError::Invalid(
                "--state-dir and --disk exclude each other".into(),
            )),
            (Some(dir), None) => Ok(Target::Dir {
                store: StateStore::open(dir)?,
                booted: None,
            }),
            (None, Some(disk)) => {
                let d = match StateDisk::open(disk, label, writable) {
                    Ok(d) => d,
                    // After a crash (a guest that panicked) ext4 refuses a read-only mount
                    // until its journal is replayed, which a read-write mount does.
                    Err(e) if !writable => {
                        tracing::debug!(error = %e, "read-only open failed, retrying read-write");
                        StateDisk::open(disk, label, true).map_err(ClbError::from)?
                    }
                    Err(e) => return Err(e.into()),
                };
                Ok(Target::Disk {
                    store: StateStore::open(d.path())?,
                    _disk: d,
                })
            }
            (None, None) => Self::open_host(label, writable),
        }
    }

    fn open_host(label: &str, writable: bool) -> Result<Self> {
        let dev = clb_disk::host_partition_by_label(label).map_err(ClbError::from)?;
        let booted = booted_slot();
        if let Some(mounted) = clb_disk::find_mounted(&dev) {
            return Ok(Target::Host {
                store: StateStore::open(mounted)?,
                booted,
                _disk: None,
            });
        }
        let d = StateDisk::open_device(&dev, writable).map_err(ClbError::from)?;
        Ok(Target::Host {
            store: StateStore::open(d.path())?,
            booted,
            _disk: Some(d),
        })
    }

    pub fn store(&self) -> &StateStore {
        match self {
            Target::Dir { store: s, .. }
            | Target::Disk { store: s, .. }
            | Target::Host { store: s, .. } => s,
        }
    }

    /// The slot running now: only known on a host booted by clb (or simulated on a state
    /// directory, see [`Target::simulate_booted`]).
    pub fn booted(&self) -> Option<SlotName> {
        match self {
            Target::Host { booted, .. } | Target::Dir { booted, .. } => *booted,
            Target::Disk { .. } => None,
        }
    }

    /// Pretends `slot` is the slot running now, on a state directory only (`clb daemon
    /// --booted-slot`, for tests and simulations); a host or a disk keeps what it has.
    pub fn simulate_booted(mut self, slot: Option<SlotName>) -> Self {
        if let Target::Dir { booted, .. } = &mut self {
            *booted = slot;
        }
        self
    }

    pub fn is_host(&self) -> bool {
        matches!(self, Target::Host { .. })
    }
}

/// The initrd hook writes the booted slot to `/run/clb/booted_slot`; the kernel command line
/// (`clb.slot=`) is the fallback when the hook was not ours.
pub fn booted_slot() -> Option<SlotName> {
    if let Ok(text) = std::fs::read_to_string(BOOTED_SLOT_FILE)
        && let Some(slot) = SlotName::parse(text.trim())
    {
        return Some(slot);
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").ok()?;
    cmdline
        .split_whitespace()
        .find_map(|w| w.strip_prefix("clb.slot="))
        .and_then(SlotName::parse)
}

/// This boot was committed by `clb mark-good`.
pub fn boot_committed() -> bool {
    Path::new(BOOT_COMMITTED_FILE).exists()
}

/// Records that this boot is committed (see [`BOOT_COMMITTED_FILE`]); `/run` is a tmpfs, so
/// the record goes with the boot.
pub fn record_boot_committed() {
    let path = Path::new(BOOT_COMMITTED_FILE);
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(path, b"1\n"));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "could not record the committed boot");
    }
}

pub fn default_mount_dir() -> PathBuf {
    PathBuf::from(HOST_STATE_MOUNT)
}

/// Opens a labelled partition of `disk` as a store.
pub fn open_store(disk: &Path, label: &str, writable: bool) -> Result<(StateDisk, StateStore)> {
    let d = StateDisk::open(disk, label, writable).map_err(ClbError::from)?;
    let store = StateStore::open(d.path())?;
    Ok((d, store))
}
