//! A release carries its kernel and initrd in `/boot`. Staging copies them out of the layer
//! stack (mounted read-only exactly as the initrd will assemble it, so whiteouts and
//! symlinks resolve as at boot) to `boot/<slot>/` on the state partition, where GRUB finds
//! them; an upgrade can thus change the kernel and a rollback restores it.

use std::path::{Component, Path, PathBuf};

use clb_ondisk::{BootFiles, SlotName};

use crate::error::{ClbError, Result};
use crate::pull::sha256_file;
use crate::store::StateStore;

/// Boot files found in a new image, copied into `tmp/` until the slot is committed.
#[derive(Debug)]
pub struct StagedBoot {
    kernel: PathBuf,
    initrd: Option<PathBuf>,
    files: BootFiles,
}

/// Copies the kernel (and initrd) of the image mounted at `root` into the store's `tmp/`.
/// `None` when the image has no `/boot/vmlinuz*`.
pub fn extract(store: &StateStore, root: &Path) -> Result<Option<StagedBoot>> {
    let Some((kernel, version)) = find(root, &["vmlinuz", "bzImage"])? else {
        return Ok(None);
    };
    let initrd = match &version {
        Some(v) => find_exact(
            root,
            &[format!("initrd.img-{v}"), format!("initramfs-{v}.img")],
        )?,
        None => None,
    }
    // Otherwise only an unversioned name (usually a symlink): never another kernel's initrd.
    .or(find_exact(
        root,
        &[
            "initrd.img".to_string(),
            "initrd".to_string(),
            "initramfs.img".to_string(),
        ],
    )?);
    let tmp = store.layout().tmp_dir();
    let staged_kernel = tmp.join("next.vmlinuz");
    let kernel_digest = copy(&kernel, &staged_kernel)?;
    let (staged_initrd, initrd_digest) = match initrd {
        Some(p) => {
            let to = tmp.join("next.initrd");
            let d = copy(&p, &to)?;
            (Some(to), Some(d))
        }
        None => (None, None),
    };
    tracing::info!(kernel = %kernel.display(), version = ?version, "kernel found in the image");
    Ok(Some(StagedBoot {
        kernel: staged_kernel,
        initrd: staged_initrd,
        files: BootFiles {
            kernel_version: version,
            kernel: kernel_digest,
            initrd: initrd_digest,
        },
    }))
}

/// Moves staged boot files to `boot/<slot>/` (or clears it when the image has none). Called
/// once the slot is no longer anybody's fallback, right before its manifest is written.
pub fn commit(
    store: &StateStore,
    slot: SlotName,
    staged: Option<StagedBoot>,
) -> Result<Option<BootFiles>> {
    let dir = store.layout().boot_dir(slot);
    let Some(staged) = staged else {
        if dir.exists() {
            std::fs::remove_dir_all(&dir)
                .map_err(ClbError::io(format!("removing {}", dir.display())))?;
        }
        return Ok(None);
    };
    std::fs::create_dir_all(&dir).map_err(ClbError::io(format!("creating {}", dir.display())))?;
    clb_ondisk::atomic::rename_durable(&staged.kernel, &dir.join("vmlinuz")).map_err(
        ClbError::io(format!("installing the kernel in {}", dir.display())),
    )?;
    match &staged.initrd {
        Some(p) => clb_ondisk::atomic::rename_durable(p, &dir.join("initrd")).map_err(
            ClbError::io(format!("installing the initrd in {}", dir.display())),
        )?,
        None => {
            let _ = std::fs::remove_file(dir.join("initrd"));
        }
    }
    Ok(Some(staged.files))
}

fn copy(from: &Path, to: &Path) -> Result<String> {
    std::fs::copy(from, to).map_err(ClbError::io(format!("copying {}", from.display())))?;
    std::fs::File::open(to)
        .and_then(|f| f.sync_all())
        .map_err(ClbError::io(format!("syncing {}", to.display())))?;
    sha256_file(to)
}

/// The newest `/boot/<prefix>-<version>` (or plain `/boot/<prefix>`) inside `root`.
fn find(root: &Path, prefixes: &[&str]) -> Result<Option<(PathBuf, Option<String>)>> {
    let boot = root.join("boot");
    let Ok(entries) = std::fs::read_dir(&boot) else {
        return Ok(None);
    };
    let mut found: Vec<(String, Option<String>)> = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        for p in prefixes {
            if name == *p {
                found.push((name.clone(), None));
            } else if let Some(v) = name.strip_prefix(&format!("{p}-")) {
                found.push((name.clone(), Some(v.to_string())));
            }
        }
    }
    // Versioned names sort after the plain one; the highest version wins.
    found.sort_by(|a, b| a.1.cmp(&b.1));
    for (name, version) in found.into_iter().rev() {
        if let Some(path) = resolve_in_root(root, &Path::new("boot").join(&name))? {
            let version = version.or_else(|| {
                // A plain /boot/vmlinuz symlink names the versioned file.
                path.file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.split_once('-').map(|(_, v)| v.to_string()))
            });
            return Ok(Some((path, version)));
        }
    }
    Ok(None)
}

fn find_exact(root: &Path, names: &[String]) -> Result<Option<PathBuf>> {
    for n in names {
        if let Some(p) = resolve_in_root(root, &Path::new("boot").join(n))? {
            return Ok(Some(p));
        }
    }
    Ok(None)
}

/// Follows symlinks as if `root` were `/` (absolute targets stay inside it); `None` when the
/// path does not lead to a regular file.
fn resolve_in_root(root: &Path, rel: &Path) -> Result<Option<PathBuf>> {
    let mut current = rel.to_path_buf();
    for _ in 0..16 {
        let full = root.join(&current);
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(_) => return Ok(None),
        };
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&full)
                .map_err(ClbError::io(format!("reading {}", full.display())))?;
            let base = if target.is_absolute() {
                PathBuf::new()
            } else {
                current.parent().map(Path::to_path_buf).unwrap_or_default()
            };
            current = normalize(&base.join(target));
            continue;
        }
        return Ok(meta.is_file().then_some(full));
    }
    Ok(None)
}

/// Lexical normalisation that never climbs above the root.
fn normalize(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}
