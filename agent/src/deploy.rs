//! `clb deploy`: a blank disk (or image) becomes a clb host. The default GPT layout is written
//! by the stage engine's `layout` step (one partitioning implementation for deploy and
//! cloud-config), then slot `a` is installed through the same verified staging path as an
//! upgrade and the boot state is set.

use std::path::Path;

use crate::error::{ClbError, Result};
use crate::progress::Progress;
use crate::registry::Registry;
use crate::store::StateStore;
use crate::upgrade::{self, UpgradeReport, UpgradeRequest};

/// One partition of a layout: filesystem label, GPT name, MiB (0 = the rest), filesystem.
pub type Part = (String, String, u64, String);

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
    let p = |l: &str, n: &str, size: u64, fs: &str| {
        (l.to_string(), n.to_string(), size, fs.to_string())
    };
    let mut parts = Vec::new();
    if sizes.esp > 0 {
        parts.push(p(crate::bootloader::ESP_LABEL, "efi", sizes.esp, "vfat"));
    }
    parts.push(p("COS_OEM", "oem", sizes.oem, "ext4"));
    if sizes.recovery > 0 {
        parts.push(p("COS_RECOVERY", "recovery", sizes.recovery, "ext4"));
    }
    parts.push(p("COS_STATE", "state", sizes.state, "ext4"));
    parts.push(p("COS_PERSISTENT", "persistent", sizes.persistent, "ext4"));
    parts
}

/// A layout as a cloud-config document, so users can start from it.
pub fn layout_yaml(device: &Path, parts: &[Part]) -> String {
    let mut yaml = format!(
        "name: clb deploy layout\nstages:\n  clb-deploy:\n    - name: GPT layout\n      layout:\n        device:\n          path: {}\n        add_partitions:\n",
        device.display()
    );
    for (fs_label, p_label, size, fs) in parts {
        yaml.push_str(&format!(
            "          - fsLabel: {fs_label}\n            pLabel: {p_label}\n            size: {size}\n            filesystem: {fs}\n"
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

/// Installs slot `a` into an empty state; refuses a state that already holds a system.
pub async fn install(
    store: &StateStore,
    registry: &Registry,
    req: &UpgradeRequest,
    progress: &Progress,
) -> Result<UpgradeReport> {
    if store.read_bootstate()?.is_some() {
        return Err(ClbError::State(format!(
            "{} already holds a system; use clb upgrade",
            store.root().display()
        )));
    }
    upgrade::upgrade(store, registry, req, None, progress).await
}
