//! The partitions of a clb disk: their labels, the default layout, and laying a layout out
//! through the stage engine (one partitioning implementation for deploy, build-disk, recovery
//! and cloud-config). A leaf module: everything that needs a label or a layout comes here.

use std::path::Path;

use clb_cloud_config::{Filesystem, Layout, LayoutOptions, LayoutOutcome, Partition};

use crate::error::Result;

/// The EFI system partition GRUB boots from.
pub const ESP_LABEL: &str = "COS_GRUB";
/// First-boot configuration and OEM files.
pub const OEM_LABEL: &str = "COS_OEM";
/// The recovery slot.
pub const RECOVERY_LABEL: &str = "COS_RECOVERY";
/// Slots A and B, the layer store and the boot state.
pub const STATE_LABEL: &str = "COS_STATE";
/// Persistent paths (/home, /etc overlay, ...).
pub const PERSISTENT_LABEL: &str = "COS_PERSISTENT";

/// One partition of a layout (the stage engine's own type: one layout implementation).
pub type Part = Partition;

/// Partition sizes in MiB; 0 for the persistent partition means the rest of the disk.
#[derive(Debug, Clone, Copy)]
pub struct LayoutSizes {
    /// EFI system partition for GRUB; 0 = none.
    pub esp: u64,
    pub oem: u64,
    pub recovery: u64,
    pub state: u64,
    pub persistent: u64,
}

impl Default for LayoutSizes {
    /// Elemental's defaults.
    fn default() -> Self {
        Self {
            esp: 64,
            oem: 64,
            recovery: 4096,
            state: 8192,
            persistent: 0,
        }
    }
}

/// The default layout in disk order.
pub fn default_parts(sizes: LayoutSizes) -> Vec<Part> {
    let mut parts = Vec::new();
    if sizes.esp > 0 {
        parts.push(Part::new(ESP_LABEL, "efi", sizes.esp, Filesystem::Vfat));
    }
    parts.push(Part::new(OEM_LABEL, "oem", sizes.oem, Filesystem::Ext4));
    if sizes.recovery > 0 {
        parts.push(Part::new(
            RECOVERY_LABEL,
            "recovery",
            sizes.recovery,
            Filesystem::Ext4,
        ));
    }
    parts.push(Part::new(
        STATE_LABEL,
        "state",
        sizes.state,
        Filesystem::Ext4,
    ));
    parts.push(Part::new(
        PERSISTENT_LABEL,
        "persistent",
        sizes.persistent,
        Filesystem::Ext4,
    ));
    parts
}

/// The layout of a self-deploying image (`clb build-disk`): ESP (when `esp_mib` > 0), OEM and
/// recovery; the first boot adds state and persistent next to them.
pub fn image_parts(esp_mib: u64, oem_mib: u64, recovery_mib: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    if esp_mib > 0 {
        parts.push(Part::new(ESP_LABEL, "efi", esp_mib, Filesystem::Vfat));
    }
    parts.push(Part::new(OEM_LABEL, "oem", oem_mib, Filesystem::Ext4));
    parts.push(Part::new(
        RECOVERY_LABEL,
        "recovery",
        recovery_mib,
        Filesystem::Ext4,
    ));
    parts
}

/// Lays out `device` through the stage engine: a no-op when the layout is already there,
/// refused (nothing written) when another layout is.
pub fn apply_layout(device: &Path, parts: &[Part]) -> Result<LayoutOutcome> {
    let layout = Layout::on_device(device, parts.to_vec());
    let outcome = clb_cloud_config::apply_layout(&layout, &LayoutOptions::default())?;
    tracing::info!(%outcome, "layout");
    Ok(outcome)
}

/// The default layout on `device`.
pub fn apply_default_layout(device: &Path, sizes: LayoutSizes) -> Result<LayoutOutcome> {
    apply_layout(device, &default_parts(sizes))
}

/// The mtools image spec (`-i`) of the ESP of `disk` (an image or a whole block device), or
/// of the host's disks when `disk` is `None`; `None` when there is no ESP labelled COS_GRUB.
pub fn esp_target(disk: Option<&Path>) -> crate::error::Result<Option<String>> {
    let Some(disk) = disk else {
        return match clb_disk::host_partition_by_label(ESP_LABEL) {
            Ok(dev) => Ok(Some(dev.display().to_string())),
            Err(clb_disk::DiskError::LabelNotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        };
    };
    let part = match clb_disk::find_by_label(disk, ESP_LABEL) {
        Ok(p) => p,
        Err(clb_disk::DiskError::LabelNotFound { .. }) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    // mtools reads an image at an offset directly; a block device's partition node is used as is.
    let target = match clb_disk::PartitionDevice::open(
        disk,
        part.number,
        part.start_bytes,
        part.size_bytes,
        false,
    )
    .map_err(crate::error::ClbError::from)?
    {
        clb_disk::PartitionDevice::Node(node) => node.display().to_string(),
        clb_disk::PartitionDevice::Loop(l) => {
            drop(l);
            format!("{}@@{}", disk.display(), part.start_bytes)
        }
    };
    Ok(Some(target))
}
