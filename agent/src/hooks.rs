//! Action hooks (yip's `before-upgrade`, `after-upgrade-chroot`, `after-upgrade`,
//! `post-upgrade`, and the same for `install`) run by `clb upgrade` and `clb deploy`.
//!
//! - `before-<action>` runs from the running system's sources; a failing step aborts before
//!   anything is written.
//! - `after-<action>-chroot` runs from the sources shipped *inside the new image*, chrooted in
//!   it (the image's layers under a throw-away tmpfs upper layer), before the boot pointer
//!   flips; a failing step aborts and the store is left as it was.
//! - `after-<action>` and `post-<action>` run from the running system's sources once the new
//!   slot is staged; their failures are reported, the staged slot stays.

use std::path::{Path, PathBuf};

use clb_cloud_config::{Options, Report, Sources};

use crate::error::{ClbError, Result};

#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// `upgrade` or `install`.
    pub action: &'static str,
    /// Where the running system's hooks come from; `None` runs none.
    pub host: Option<Sources>,
    /// Run the hooks the new image ships (`after-<action>-chroot`).
    pub image: bool,
}

impl Hooks {
    pub fn none() -> Self {
        Self::default()
    }

    /// `before-<action>`: any failed step is an error.
    pub fn before(&self) -> Result<()> {
        let Some(sources) = &self.host else {
            return Ok(());
        };
        let stage = format!("before-{}", self.action);
        check(&stage, run(&stage, sources, Path::new("/")))
    }

    /// `after-<action>` then `post-<action>`: failures come back as warnings.
    pub fn after(&self) -> Vec<String> {
        let Some(sources) = &self.host else {
            return Vec::new();
        };
        let mut warnings = Vec::new();
        for phase in ["after", "post"] {
            let stage = format!("{phase}-{}", self.action);
            if let Err(e) = check(&stage, run(&stage, sources, Path::new("/"))) {
                tracing::warn!(error = %e, "hook failed after staging");
                warnings.push(e.to_string());
            }
        }
        warnings
    }

    /// `after-<action>-chroot` inside the new image mounted (read-only) at `image_root`.
    pub fn in_image(&self, image_root: &Path) -> Result<()> {
        if !self.image {
            return Ok(());
        }
        let stage = format!("after-{}-chroot", self.action);
        let scratch = tempfile::Builder::new()
            .prefix("clb-hook-")
            .tempdir()
            .map_err(ClbError::io("creating a hook root"))?;
        let root = scratch.path().join("root");
        let tmpfs = scratch.path().join("rw");
        for d in [&tmpfs, &root] {
            std::fs::create_dir(d).map_err(ClbError::io("creating a hook root"))?;
        }
        // Writes of the hook land in a tmpfs and are thrown away: the image stays as signed.
        let rw = clb_disk::Mount::new(
            Path::new("tmpfs"),
            &tmpfs,
            "tmpfs",
            clb_disk::MountFlags::empty(),
            Some("mode=0755"),
        )
        .map_err(ClbError::from)?;
        let (upper, work) = (tmpfs.join("upper"), tmpfs.join("work"));
        for d in [&upper, &work] {
            std::fs::create_dir(d).map_err(ClbError::io("creating a hook root"))?;
        }
        // Hooks expect a writable /tmp even when the image has none.
        let tmp = upper.join("tmp");
        std::fs::create_dir(&tmp).map_err(ClbError::io("creating a hook root"))?;
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o1777))
            .map_err(ClbError::io("creating a hook root"))?;
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            image_root.display(),
            upper.display(),
            work.display()
        );
        let overlay = clb_disk::Mount::new(
            Path::new("overlay"),
            &root,
            "overlay",
            clb_disk::MountFlags::empty(),
            Some(&data),
        )
        .map_err(ClbError::from)?;
        let result = check(&stage, run(&stage, &Sources::default(), &root));
        drop(overlay);
        drop(rw);
        result
    }
}

fn run(stage: &str, sources: &Sources, root: &Path) -> Report {
    let report = clb_cloud_config::run_stage(
        stage,
        sources,
        &Options {
            root: PathBuf::from(root),
            ..Default::default()
        },
    );
    for step in &report.steps {
        tracing::info!(stage = %step.stage, step = %step.name, file = %step.file, outcome = %step.outcome, "hook");
    }
    report
}

fn check(stage: &str, report: Report) -> Result<()> {
    if report.success() {
        return Ok(());
    }
    let mut why: Vec<String> = report
        .failed_steps()
        .map(|s| format!("{} ({}): {}", s.name, s.file, s.outcome))
        .collect();
    why.extend(report.errors.iter().map(|d| d.to_string()));
    Err(ClbError::Hook(format!("{stage}: {}", why.join("; "))))
}
