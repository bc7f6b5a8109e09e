//! Where things live on `COS_STATE`. One struct owns every path so the agent, the initrd
//! hook and the docs cannot drift apart.
//!
//! ```text
//! grubenv                         boot state (GRUB environment block, 1024 bytes)
//! slots/{a,b,recovery}.json       slot manifests
//! slots/download.json             a verified download waiting for `clb upgrade --apply`
//! layers/sha256-<hex>.squashfs    content-addressed layer store (digest of the SquashFS file)
//! sources/sha256-<hex>            conversion cache: source layer digest -> SquashFS digest
//! boot/{a,b,recovery}/vmlinuz     the slot's kernel (and `initrd`), from the image's /boot
//! tmp/                            partial downloads and conversions (resumable, never booted)
//! clb.lock                        advisory lock held by a running upgrade/gc
//! ```

use std::path::{Path, PathBuf};

use crate::slot::SlotName;

/// File name of the boot state inside the state root.
pub const BOOTSTATE_FILE: &str = "grubenv";

#[derive(Debug, Clone)]
pub struct StateLayout {
    root: PathBuf,
}

impl StateLayout {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }
    pub fn root(&self) -> &Path {
        &self.root
    }
    pub fn bootstate(&self) -> PathBuf {
        self.root.join(BOOTSTATE_FILE)
    }
    pub fn slots_dir(&self) -> PathBuf {
        self.root.join("slots")
    }
    pub fn slot_manifest(&self, slot: SlotName) -> PathBuf {
        self.slots_dir().join(format!("{}.json", slot.as_str()))
    }
    /// The downloaded-but-not-staged image (`clb upgrade --download-only`); its layers are
    /// kept by garbage collection like a slot's.
    pub fn download_record(&self) -> PathBuf {
        self.slots_dir().join("download.json")
    }
    pub fn layers_dir(&self) -> PathBuf {
        self.root.join("layers")
    }
    /// Path of a stored layer. `digest` is `algo:hex`.
    pub fn layer(&self, digest: &str) -> PathBuf {
        self.layers_dir()
            .join(format!("{}.squashfs", digest_file_name(digest)))
    }
    pub fn sources_dir(&self) -> PathBuf {
        self.root.join("sources")
    }
    /// Conversion cache entry for a source (OCI) layer digest.
    pub fn source_entry(&self, source_digest: &str) -> PathBuf {
        self.sources_dir().join(digest_file_name(source_digest))
    }
    /// Kernel and initrd of a slot, at fixed paths a GRUB config can name:
    /// `boot/<slot>/vmlinuz`, `boot/<slot>/initrd`.
    pub fn boot_dir(&self, slot: SlotName) -> PathBuf {
        self.root.join("boot").join(slot.as_str())
    }
    pub fn tmp_dir(&self) -> PathBuf {
        self.root.join("tmp")
    }
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("clb.lock")
    }
}

/// `sha256:abc` -> `sha256-abc`: colons are awkward in file names (and on vfat).
pub fn digest_file_name(digest: &str) -> String {
    digest.replace(':', "-")
}

/// Inverse of [`digest_file_name`] for names produced by it.
pub fn digest_from_file_name(name: &str) -> Option<String> {
    let (algo, hex) = name.split_once('-')?;
    if algo.is_empty() || hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    Some(format!("{algo}:{hex}"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn digest_names_round_trip() {
        let d = "sha256:00ff";
        assert_eq!(digest_file_name(d), "sha256-00ff");
        assert_eq!(digest_from_file_name("sha256-00ff").unwrap(), d);
        assert!(digest_from_file_name("sha256-zz").is_none());
        let l = StateLayout::new("/s");
        assert_eq!(l.layer(d), PathBuf::from("/s/layers/sha256-00ff.squashfs"));
    }
}
