//! A slot's root: its SquashFS layers stacked with a read-only overlayfs, the way the initrd
//! assembles it. This is what `clb mount --slot a DIR` shows and `clb umount DIR` removes.
//!
//! Layout: each layer is mounted read-only at `<run>/layers/<key>/<n>` (0 = bottom), where
//! `<key>` is a stable hash of the canonical target path; the overlay goes on the target.
//! A persisted stack is recorded in `<run>/mounts/<key>.json` so a later process can unmount it.

use std::path::{Path, PathBuf};

use rustix::mount::MountFlags;
use serde::{Deserialize, Serialize};

use crate::error::{DiskError, Result};
use crate::loopdev::{LoopDevice, RELEASE_TIMEOUT, wait_released};
use crate::mount::{Mount, mountinfo, unmount, unmount_or_detach};
use crate::state::RUN_DIR;

/// A mounted layer stack. Unmounted on drop unless [`StackMount::persist`] is called.
#[derive(Debug)]
pub struct StackMount {
    run_dir: PathBuf,
    target: PathBuf,
    layer_root: PathBuf,
    /// Bottom to top.
    layer_dirs: Vec<PathBuf>,
    sources: Vec<PathBuf>,
    /// (loop device, backing file) per layer, auto-clearing on unmount.
    loops: Vec<(PathBuf, PathBuf)>,
    top: Option<Mount>,
    layers: Vec<Mount>,
}

/// What `persist` writes, and `unmount_stack` reads.
#[derive(Debug, Serialize, Deserialize)]
struct StackRecord {
    target: PathBuf,
    layer_root: PathBuf,
    /// Bottom to top.
    layer_dirs: Vec<PathBuf>,
    /// The SquashFS files, bottom to top (for `clb status`-style listings).
    sources: Vec<PathBuf>,
    /// (loop device, canonical backing file) per layer, to wait for their release.
    #[serde(default)]
    loops: Vec<(PathBuf, PathBuf)>,
}

/// Mount `layers` (SquashFS files, bottom first) read-only as one tree on `target`, using
/// /run/clb for the private layer mounts.
pub fn mount_layer_stack(layers_bottom_to_top: &[PathBuf], target: &Path) -> Result<StackMount> {
    mount_layer_stack_in(Path::new(RUN_DIR), layers_bottom_to_top, target)
}

/// [`mount_layer_stack`] with another directory than /run/clb (tests, unusual hosts).
pub fn mount_layer_stack_in(
    run_dir: &Path,
    layers_bottom_to_top: &[PathBuf],
    target: &Path,
) -> Result<StackMount> {
    if layers_bottom_to_top.is_empty() {
        return Err(DiskError::Invalid("a slot needs at least one layer".into()));
    }
    let target = std::fs::canonicalize(target)
        .map_err(|e| DiskError::io(format!("mount target {}", target.display()), e))?;
    let key = target_key(&target);
    let record = record_path(run_dir, &key);
    if record.exists() {
        return Err(DiskError::Busy { target });
    }
    let layer_root = run_dir.join("layers").join(&key);
    clean_stale(&layer_root);

    let mut stack = StackMount {
        run_dir: run_dir.to_path_buf(),
        target: target.clone(),
        layer_root: layer_root.clone(),
        layer_dirs: Vec::new(),
        sources: layers_bottom_to_top.to_vec(),
        loops: Vec::new(),
        top: None,
        layers: Vec::new(),
    };
    // From here on, an error drops `stack`, which unmounts whatever was mounted so far.
    for (n, file) in layers_bottom_to_top.iter().enumerate() {
        let dir = layer_root.join(n.to_string());
        std::fs::create_dir_all(&dir)
            .map_err(|e| DiskError::io(format!("create {}", dir.display()), e))?;
        stack.layer_dirs.push(dir.clone());
        let lo = LoopDevice::attach(file, 0, None, true)?;
        let m = Mount::new(lo.path(), &dir, "squashfs", MountFlags::RDONLY, None)?;
        // The mount now holds the loop device; detaching marks it auto-clear, so unmounting
        // the layer (maybe from another process, after `persist`) frees it.
        stack.layers.push(m);
        stack.loops.push(lo.detach_when_unused()?);
    }

    let top = if stack.layer_dirs.len() == 1 {
        // A read-only overlayfs without an upper dir needs two lower dirs on older kernels;
        // with one layer a read-only bind mount shows exactly the same tree.
        Mount::bind(&stack.layer_dirs[0], &target, true)?
    } else {
        let lowers: Vec<String> = stack
            .layer_dirs
            .iter()
            .rev() // overlayfs lists the top layer first
            .map(|d| d.display().to_string())
            .collect();
        let data = format!("lowerdir={}", lowers.join(":"));
        Mount::new(
            Path::new("clb-slot"),
            &target,
            "overlay",
            MountFlags::RDONLY,
            Some(&data),
        )?
    };
    stack.top = Some(top);
    Ok(stack)
}

impl StackMount {
    /// The mounted root.
    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Where each layer is mounted, bottom first.
    pub fn layer_dirs(&self) -> &[PathBuf] {
        &self.layer_dirs
    }

    /// Leave the stack mounted after this process exits; [`unmount_stack`] removes it.
    /// Returns the record file.
    pub fn persist(mut self) -> Result<PathBuf> {
        let rec = StackRecord {
            target: self.target.clone(),
            layer_root: self.layer_root.clone(),
            layer_dirs: self.layer_dirs.clone(),
            sources: self.sources.clone(),
            loops: self.loops.clone(),
        };
        let path = record_path(&self.run_dir, &target_key(&self.target));
        let dir = self.run_dir.join("mounts");
        std::fs::create_dir_all(&dir)
            .map_err(|e| DiskError::io(format!("create {}", dir.display()), e))?;
        let json = serde_json::to_vec_pretty(&rec)
            .map_err(|e| DiskError::Invalid(format!("encode stack record: {e}")))?;
        // Write then rename: a half-written record would make `clb umount` fail.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, json)
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| DiskError::io(format!("write {}", path.display()), e))?;
        // Only now that the record exists, let go of the guards.
        if let Some(top) = self.top.take() {
            top.leave_mounted();
        }
        for m in self.layers.drain(..) {
            m.leave_mounted();
        }
        self.layer_dirs.clear(); // nothing left for Drop to clean
        self.loops.clear();
        Ok(path)
    }

    /// Unmount now, reporting a busy target instead of detaching it lazily.
    pub fn unmount(mut self) -> Result<()> {
        if let Some(top) = self.top.take() {
            top.unmount()?;
        }
        Ok(()) // Drop unmounts the layers and removes the directories
    }
}

impl Drop for StackMount {
    fn drop(&mut self) {
        // Overlay first, then layers top to bottom.
        drop(self.top.take());
        while let Some(m) = self.layers.pop() {
            drop(m);
        }
        for d in self.layer_dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
        if !self.layer_dirs.is_empty() {
            let _ = std::fs::remove_dir(&self.layer_root);
        }
        for (dev, file) in &self.loops {
            wait_released(dev, file, RELEASE_TIMEOUT);
        }
    }
}

/// Unmount a persisted stack on `target` (what `clb umount DIR` does).
pub fn unmount_stack(target: &Path) -> Result<()> {
    unmount_stack_in(Path::new(RUN_DIR), target)
}

/// [`unmount_stack`] with another directory than /run/clb.
pub fn unmount_stack_in(run_dir: &Path, target: &Path) -> Result<()> {
    let canon = std::fs::canonicalize(target).unwrap_or_else(|_| target.to_path_buf());
    let path = record_path(run_dir, &target_key(&canon));
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(DiskError::NotMounted { target: canon });
        }
        Err(e) => return Err(DiskError::io(format!("read {}", path.display()), e)),
    };
    let rec: StackRecord = serde_json::from_slice(&text)
        .map_err(|e| DiskError::Invalid(format!("stack record {}: {e}", path.display())))?;

    // The overlay: if it is busy, stop here and keep the record so the user can retry.
    match unmount(&rec.target) {
        Ok(()) | Err(DiskError::NotMounted { .. }) => {}
        Err(e) => return Err(e),
    }
    // Nothing but the overlay used the layers, so these only fail if someone entered the
    // private directories; detach lazily then rather than leave half a stack behind.
    for d in rec.layer_dirs.iter().rev() {
        match unmount(d) {
            Ok(()) | Err(DiskError::NotMounted { .. }) => {}
            Err(DiskError::Busy { .. }) => unmount_or_detach(d),
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_dir(d);
    }
    let _ = std::fs::remove_dir(&rec.layer_root);
    for (dev, file) in &rec.loops {
        wait_released(dev, file, RELEASE_TIMEOUT);
    }
    std::fs::remove_file(&path).map_err(|e| DiskError::io(format!("remove {}", path.display()), e))
}

fn record_path(run_dir: &Path, key: &str) -> PathBuf {
    run_dir.join("mounts").join(format!("{key}.json"))
}

/// Remove leftovers of a crashed mount of the same target (mounts under `layer_root`).
fn clean_stale(layer_root: &Path) {
    if !layer_root.exists() {
        return;
    }
    if let Ok(all) = mountinfo() {
        let mut stale: Vec<PathBuf> = all
            .into_iter()
            .map(|m| m.mount_point)
            .filter(|p| p.starts_with(layer_root))
            .collect();
        stale.sort();
        for p in stale.iter().rev() {
            tracing::warn!(dir = %p.display(), "unmounting stale layer mount");
            unmount_or_detach(p);
        }
    }
    if let Ok(entries) = std::fs::read_dir(layer_root) {
        for e in entries.flatten() {
            let _ = std::fs::remove_dir(e.path());
        }
    }
}

/// A stable short name for a target path: 64-bit FNV-1a, hex. Stable across builds (unlike
/// std's `DefaultHasher`), so a newer `clb` can unmount what an older one mounted.
fn target_key(target: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in target.as_os_str().as_bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn key_is_stable() {
        // Fixed value: changing the hash would orphan stacks mounted by an older clb.
        assert_eq!(target_key(Path::new("")), "cbf29ce484222325");
        assert_eq!(
            target_key(Path::new("/mnt/a")),
            target_key(Path::new("/mnt/a"))
        );
        assert_ne!(
            target_key(Path::new("/mnt/a")),
            target_key(Path::new("/mnt/b"))
        );
    }
}
