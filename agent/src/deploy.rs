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

/// Partition sizes in MiB; 0 for the persistent partition means the rest of the disk.
#[derive(Debug, Clone, Copy)]
pub struct LayoutSizes {
    pub oem: u64,
    pub recovery: u64,
    pub state: u64,
    pub persistent: u64,
}

impl Default for LayoutSizes {
    /// Elemental's defaults.
    fn default() -> Self {
        Self {
            oem: 64,
            recovery: 4096,
            state: 8192,
            persistent: 0,
        }
    }
}

/// The default layout: (fs label, partition name, MiB) in disk order.
pub fn default_parts(sizes: LayoutSizes) -> Vec<(String, String, u64)> {
    let mut parts = vec![("COS_OEM".to_string(), "oem".to_string(), sizes.oem)];
    if sizes.recovery > 0 {
        parts.push(("COS_RECOVERY".into(), "recovery".into(), sizes.recovery));
    }
    parts.push(("COS_STATE".into(), "state".into(), sizes.state));
    parts.push((
        "COS_PERSISTENT".into(),
        "persistent".into(),
        sizes.persistent,
    ));
    parts
}

/// A layout as a cloud-config document (ext4 everywhere), so users can start from it.
pub fn layout_yaml(device: &Path, parts: &[(String, String, u64)]) -> String {
    let mut yaml = format!(
        "name: clb deploy layout\nstages:\n  clb-deploy:\n    - name: GPT layout\n      layout:\n        device:\n          path: {}\n        add_partitions:\n",
        device.display()
    );
    for (fs_label, p_label, size) in parts {
        yaml.push_str(&format!(
            "          - fsLabel: {fs_label}\n            pLabel: {p_label}\n            size: {size}\n            filesystem: ext4\n"
        ));
    }
    yaml
}

/// Lays out `device` through the stage engine (no-op when the layout is already there,
/// refused when another layout is).
pub fn apply_layout(device: &Path, parts: &[(String, String, u64)]) -> Result<()> {
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
