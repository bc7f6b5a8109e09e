//! The state store on `COS_STATE` (or a directory laid out like it): locking, the
//! content-addressed layer store, the conversion cache, slot manifests, the boot state and
//! garbage collection. Every change goes through a temp file and a durable rename.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use clb_ondisk::atomic::{rename_durable, sync_dir, write_atomic};
use clb_ondisk::layout::digest_from_file_name;
use clb_ondisk::{BootState, SlotManifest, SlotName, StateLayout};

use crate::error::{ClbError, Result};

/// Cheap to clone (a path layout), so blocking work can take its own copy to another thread.
#[derive(Clone)]
pub struct StateStore {
    layout: StateLayout,
}

/// Held while an operation changes the store; released on drop (and by the kernel if the
/// process dies, so a crash never leaves a stale lock behind).
pub struct StoreLock {
    _dir: fs::File,
}

#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct GcReport {
    pub removed_layers: Vec<String>,
    pub removed_cache_entries: usize,
    pub removed_partials: usize,
    pub freed_bytes: u64,
}

impl StateStore {
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        let meta = fs::metadata(&root).map_err(ClbError::io(format!(
            "opening state directory {}",
            root.display()
        )))?;
        if !meta.is_dir() {
            return Err(ClbError::Invalid(format!(
                "{} is not a directory",
                root.display()
            )));
        }
        Ok(Self {
            layout: StateLayout::new(root),
        })
    }

    pub fn layout(&self) -> &StateLayout {
        &self.layout
    }

    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// Takes the store lock without waiting: a second upgrade fails at once. The lock is a
    /// flock on the state directory itself, so taking it writes nothing to the store.
    pub fn lock(&self) -> Result<StoreLock> {
        let dir = fs::File::open(self.root())
            .map_err(ClbError::io(format!("opening {}", self.root().display())))?;
        match rustix::fs::flock(
            dir.as_fd(),
            rustix::fs::FlockOperation::NonBlockingLockExclusive,
        ) {
            Ok(()) => Ok(StoreLock { _dir: dir }),
            Err(rustix::io::Errno::WOULDBLOCK) => Err(ClbError::Locked {
                path: self.root().to_path_buf(),
            }),
            Err(e) => Err(ClbError::io(format!("locking {}", self.root().display()))(
                e.into(),
            )),
        }
    }

    /// Like [`Self::lock`], but waits up to `timeout` for another operation to finish.
    pub fn lock_waiting(&self, timeout: std::time::Duration) -> Result<StoreLock> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.lock() {
                Err(ClbError::Locked { .. }) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    /// Creates the store's directories (only once an operation is sure to write); returns
    /// the ones it created so that a failed operation can take them away again.
    pub fn ensure_dirs(&self) -> Result<Vec<PathBuf>> {
        let mut created = Vec::new();
        for dir in [
            self.layout.layers_dir(),
            self.layout.slots_dir(),
            self.layout.sources_dir(),
            self.layout.tmp_dir(),
        ] {
            if !dir.is_dir() {
                fs::create_dir_all(&dir)
                    .map_err(ClbError::io(format!("creating {}", dir.display())))?;
                created.push(dir.clone());
                if let Some(parent) = dir.parent() {
                    sync_dir(parent).map_err(ClbError::io("syncing state directory"))?;
                }
            }
        }
        Ok(created)
    }

    /// Undoes [`Self::ensure_dirs`] for directories that are still empty.
    pub fn remove_empty_dirs(&self, dirs: &[PathBuf]) {
        for dir in dirs {
            let _ = fs::remove_dir(dir);
        }
        let _ = sync_dir(self.root());
    }

    pub fn read_bootstate(&self) -> Result<Option<BootState>> {
        let path = self.layout.bootstate();
        match fs::read(&path) {
            Ok(bytes) => BootState::parse(&bytes)
                .map(Some)
                .map_err(|e| ClbError::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClbError::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn write_bootstate(&self, state: &BootState) -> Result<()> {
        let block = state
            .to_block()
            .map_err(|e| ClbError::State(e.to_string()))?;
        let path = self.layout.bootstate();
        write_atomic(&path, &block).map_err(ClbError::io(format!("writing {}", path.display())))
    }

    pub fn read_slot(&self, slot: SlotName) -> Result<Option<SlotManifest>> {
        let path = self.layout.slot_manifest(slot);
        match fs::read(&path) {
            Ok(bytes) => SlotManifest::from_json(&bytes)
                .map(Some)
                .map_err(|e| ClbError::State(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ClbError::io(format!("reading {}", path.display()))(e)),
        }
    }

    pub fn write_slot(&self, manifest: &SlotManifest) -> Result<()> {
        let path = self.layout.slot_manifest(manifest.slot);
        write_atomic(&path, &manifest.to_json())
            .map_err(ClbError::io(format!("writing {}", path.display())))
    }

    pub fn has_layer(&self, digest: &str) -> bool {
        self.layout.layer(digest).is_file()
    }

    /// The stored layer a source blob was converted to, if both the cache entry and the
    /// layer are still there.
    pub fn cached_conversion(&self, source_digest: &str) -> Option<String> {
        let entry = fs::read_to_string(self.layout.source_entry(source_digest)).ok()?;
        let digest = entry.trim().to_string();
        self.has_layer(&digest).then_some(digest)
    }

    pub fn record_conversion(&self, source_digest: &str, layer_digest: &str) -> Result<()> {
        let path = self.layout.source_entry(source_digest);
        write_atomic(&path, format!("{layer_digest}\n").as_bytes())
            .map_err(ClbError::io(format!("writing {}", path.display())))
    }

    /// Moves a finished, digest-checked SquashFS file into the store.
    pub fn install_layer(&self, finished: &Path, digest: &str) -> Result<PathBuf> {
        let target = self.layout.layer(digest);
        rename_durable(finished, &target)
            .map_err(ClbError::io(format!("storing layer {}", target.display())))?;
        Ok(target)
    }

    /// Bytes free for us on the store's filesystem.
    pub fn available_bytes(&self) -> Result<u64> {
        let st = rustix::fs::statvfs(self.root())
            .map_err(|e| ClbError::io(format!("statvfs {}", self.root().display()))(e.into()))?;
        Ok(st.f_bavail.saturating_mul(st.f_frsize))
    }

    pub fn slots(&self) -> Result<Vec<SlotManifest>> {
        let mut out = Vec::new();
        for slot in SlotName::ALL {
            if let Some(m) = self.read_slot(slot)? {
                out.push(m);
            }
        }
        Ok(out)
    }

    /// Drops layers no slot and no pending download uses, conversion cache entries pointing
    /// at them, and partial downloads. Callers hold the lock.
    pub fn gc(&self) -> Result<GcReport> {
        let mut used: BTreeSet<String> = self
            .slots()?
            .iter()
            .flat_map(|m| m.layer_digests().map(str::to_string).collect::<Vec<_>>())
            .collect();
        if let Some(download) = self.read_download()? {
            used.extend(download.layers.into_iter().map(|l| l.digest));
        }
        let mut report = GcReport::default();
        for entry in read_dir_names(&self.layout.layers_dir())? {
            let Some(stem) = entry.strip_suffix(".squashfs") else {
                continue;
            };
            let Some(digest) = digest_from_file_name(stem) else {
                continue;
            };
            if !used.contains(&digest) {
                let path = self.layout.layer(&digest);
                report.freed_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
                remove(&path)?;
                report.removed_layers.push(digest);
            }
        }
        for entry in read_dir_names(&self.layout.sources_dir())? {
            let path = self.layout.sources_dir().join(&entry);
            let points_at = fs::read_to_string(&path).unwrap_or_default();
            if !self.has_layer(points_at.trim()) {
                remove(&path)?;
                report.removed_cache_entries += 1;
            }
        }
        for entry in read_dir_names(&self.layout.tmp_dir())? {
            let path = self.layout.tmp_dir().join(&entry);
            report.freed_bytes += fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            remove(&path)?;
            report.removed_partials += 1;
        }
        for dir in [
            self.layout.layers_dir(),
            self.layout.sources_dir(),
            self.layout.tmp_dir(),
        ] {
            if dir.is_dir() {
                sync_dir(&dir).map_err(ClbError::io(format!("syncing {}", dir.display())))?;
            }
        }
        Ok(report)
    }
}

fn read_dir_names(dir: &Path) -> Result<Vec<String>> {
    let rd = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClbError::io(format!("listing {}", dir.display()))(e)),
    };
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(ClbError::io(format!("listing {}", dir.display())))?;
        if let Some(name) = entry.file_name().to_str() {
            names.push(name.to_string());
        }
    }
    names.sort();
    Ok(names)
}

fn remove(path: &Path) -> Result<()> {
    let result = if path.is_dir() {
        fs::remove_dir_all(path)
    } else {
        fs::remove_file(path)
    };
    result.map_err(ClbError::io(format!("removing {}", path.display())))
}

/// What the store's directories held before an operation, so that a failed one can remove
/// exactly what it added (unreferenced layers, cache entries, partial files, new dirs).
pub struct Snapshot {
    entries: Vec<(PathBuf, Option<BTreeSet<std::ffi::OsString>>)>,
    root: PathBuf,
}

impl StateStore {
    pub fn snapshot(&self) -> Snapshot {
        let l = &self.layout;
        let entries = [l.layers_dir(), l.sources_dir(), l.tmp_dir(), l.slots_dir()]
            .into_iter()
            .map(|dir| {
                let names = fs::read_dir(&dir)
                    .ok()
                    .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect());
                (dir, names)
            })
            .collect();
        Snapshot {
            entries,
            root: self.root().to_path_buf(),
        }
    }
}

impl Snapshot {
    /// Removes files that appeared since the snapshot, and directories that did not exist.
    /// Only for files no slot manifest or boot state references yet.
    pub fn undo(&self) {
        for (dir, names) in &self.entries {
            let Ok(rd) = fs::read_dir(dir) else {
                continue;
            };
            for entry in rd.flatten() {
                let known = names
                    .as_ref()
                    .is_some_and(|n| n.contains(&entry.file_name()));
                if !known {
                    tracing::debug!(path = %entry.path().display(), "removing what the failed operation added");
                    let _ = fs::remove_file(entry.path());
                }
            }
            if names.is_none() {
                let _ = fs::remove_dir(dir);
            } else {
                let _ = sync_dir(dir);
            }
        }
        let _ = sync_dir(&self.root);
    }
}
