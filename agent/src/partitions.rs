//! The partitions of a clb disk: their labels, the default layout, and laying a layout out
//! through the stage engine (one partitioning implementation for deploy, build-disk, recovery
//! and cloud-config). A leaf module: everything that needs a label or a layout comes here.

use std::path::Path;

use crate::error::{ClbError, Result};

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

/// One partition of a layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Filesystem label (how clb finds it).
    pub fs_label: String,
    /// GPT partition name.
    pub part_name: String,
    /// Size in MiB; 0 = the rest of the disk.
    pub size_mib: u64,
    /// ext4, xfs, vfat, swap or noformat.
    pub filesystem: String,
}

impl Part {
    pub fn new(fs_label: &str, part_name: &str, size_mib: u64, filesystem: &str) -> Self {
        Self {
            fs_label: fs_label.to_string(),
            part_name: part_name.to_string(),
            size_mib,
            filesystem: filesystem.to_string(),
        }
    }
}

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
        parts.push(Part::new(ESP_LABEL, "efi", sizes.esp, "vfat"));
    }
    parts.push(Part::new(OEM_LABEL, "oem", sizes.oem, "ext4"));
    if sizes.recovery > 0 {
        parts.push(Part::new(RECOVERY_LABEL, "recovery", sizes.recovery, "ext4"));
    }
    parts.push(Part::new(STATE_LABEL, "state", sizes.state, "ext4"));
    parts.push(Part::new(PERSISTENT_LABEL, "persistent", sizes.persistent, "ext4"));
    parts
}

/// The layout of a self-deploying image (`clb build-disk`): ESP (when `esp_mib` > 0), OEM and
/// recovery; the first boot adds state and persistent next to them.
pub fn image_parts(esp_mib: u64, oem_mib: u64, recovery_mib: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    if esp_mib > 0 {
        parts.push(Part::new(ESP_LABEL, "efi", esp_mib, "vfat"));
    }
    parts.push(Part::new(OEM_LABEL, "oem", oem_mib, "ext4"));
    parts.push(Part::new(RECOVERY_LABEL, "recovery", recovery_mib, "ext4"));
    parts
}

/// A layout as a cloud-config document, so users can start from it.
pub fn layout_yaml(device: &Path, parts: &[Part]) -> String {
    let mut yaml = format!(
        "name: clb deploy layout\nstages:\n  clb-deploy:\n    - name: GPT layout\n      layout:\n        device:\n          path: {}\n        add_partitions:\n",
        device.display()
    );
    for p in parts {
        yaml.push_str(&format!(
            "          - fsLabel: {}\n            pLabel: {}\n            size: {}\n            filesystem: {}\n",
            p.fs_label, p.part_name, p.size_mib, p.filesystem
        ));
    }
    yaml
}

/// Lays out `device` through the stage engine (no-op when the layout is already there,
/// refused when another layout is).
pub fn apply_layout(device: &Path, parts: &[Part]) -> Result<()> {
    let work = tempfile::tempdir().map_err(ClbError::io("creating a temp directory"))?;
    let file = work.path().join("layout.yaml");
    std::fs::write(&file, layout_yaml(device, parts))
        .map_err(ClbError::io("writing the layout"))?;
    let report = clb_cloud_config::run_stage(
        "clb-deploy",
        &clb_cloud_config::Sources::files([file]),
        &clb_cloud_config::Options {
            strict: true,
            ..Default::default()
        },
    );
    if !report.success() {
        let why: Vec<String> = report
            .failed_steps()
            .map(|s| format!("{}: {:?}", s.name, s.outcome))
            .chain(report.errors.iter().map(|d| d.to_string()))
            .collect();
        return Err(ClbError::Invalid(format!(
            "laying out {}: {}",
            device.display(),
            why.join("; ")
        )));
    }
    Ok(())
}

/// The default layout on `device`.
pub fn apply_default_layout(device: &Path, sizes: LayoutSizes) -> Result<()> {
    apply_layout(device, &default_parts(sizes))
}
