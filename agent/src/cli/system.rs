//! Commands that lay out and install disks, build images and run cloud-config stages.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clb::error::ClbError;
use clb::progress::Progress;
use clb::upgrade;

use clb::partitions;

use super::args::*;
use super::{print_json, print_stage_report};

pub(super) async fn deploy(cli: &Cli, a: &DeployArgs) -> Result<()> {
    let host = cli.disk.is_none();
    let disk = match (&cli.disk, a.from_recovery) {
        (Some(d), _) => d.clone(),
        (None, true) => clb::recovery::disk_of_label(None, partitions::RECOVERY_LABEL)?,
        (None, false) => bail!(ClbError::Invalid(
            "clb deploy needs --disk DISK (an image or a block device), or --from-recovery".into()
        )),
    };
    if a.from_recovery {
        // Layout errors name the disk themselves.
        clb::recovery::layout_next_to_recovery(&disk, a.state_size, a.persistent_size)?;
    } else {
        let sizes = partitions::LayoutSizes {
            esp: if a.boot.bootloader == Bootloader::Efi {
                a.boot.esp_size
            } else {
                0
            },
            oem: a.oem_size,
            recovery: a.recovery_size,
            state: a.state_size,
            persistent: a.persistent_size,
        };
        partitions::apply_default_layout(&disk, sizes)?;
        match a.boot.bootloader {
            Bootloader::Efi => clb::bootloader::install_efi(&disk, &a.boot.kernel_args),
            Bootloader::Bios => clb::bootloader::install_bios(&disk, &a.boot.kernel_args),
            Bootloader::None => Ok(()),
        }
        .with_context(|| format!("installing GRUB on {}", disk.display()))?;
    }
    let (_state_disk, store) = clb::target::open_store(&disk, &cli.state_label, true)?;
    if a.from_recovery && a.stage.image.is_none() {
        let (_rec_disk, recovery) =
            clb::target::open_store(&disk, partitions::RECOVERY_LABEL, false)?;
        let m = clb::recovery::install_from_recovery(&recovery, &store)
            .context("installing slot a from recovery")?;
        if cli.json {
            print_json(
                &serde_json::json!({"slot": "a", "image": m.image, "digest": m.digest, "from": "recovery"}),
            )?;
        } else {
            println!(
                "installed {} ({}) in slot a from the recovery slot",
                m.image, m.digest
            );
        }
    } else {
        let registry = a.stage.registry.registry()?;
        let progress = Progress::new(!cli.json && !cli.quiet);
        let request = a.stage.request("install", host)?;
        let report = clb::deploy::install(&store, &registry, &request, &progress)
            .await
            .with_context(|| format!("deploying {}", request.image))?;
        let recovery = if a.recovery_size > 0 && !a.from_recovery {
            Some(install_recovery(a, &disk, &registry, request, &progress).await?)
        } else {
            None
        };
        match (&recovery, cli.json) {
            (Some(rec), true) => {
                let mut doc = serde_json::to_value(&report)?;
                doc["recovery"] = serde_json::to_value(rec)?;
                print_json(&doc)?;
            }
            (Some(rec), false) => {
                print_stage_report(cli, &report)?;
                if !cli.quiet {
                    println!(
                        "recovery slot on COS_RECOVERY: {} ({})",
                        rec.image, rec.digest
                    );
                }
            }
            (None, _) => print_stage_report(cli, &report)?,
        }
    }
    if a.from_recovery && host && !a.no_reboot {
        drop(store);
        clb::reboot::reboot().await.context("rebooting")?;
    }
    Ok(())
}

/// Fills COS_RECOVERY with the recovery slot: `--recovery-image`, or the image just deployed
/// (so a fresh machine can always boot recovery and reset). Hooks ran for slot a already.
async fn install_recovery(
    a: &DeployArgs,
    disk: &std::path::Path,
    registry: &clb::registry::Registry,
    mut request: clb::upgrade::UpgradeRequest,
    progress: &Progress,
) -> Result<clb::upgrade::UpgradeReport> {
    if let Some(image) = &a.recovery_image {
        request.image = image.clone();
    }
    request.recovery = true;
    request.hooks.host = None;
    request.hooks.image = false;
    let (_rec_disk, recovery) = clb::target::open_store(disk, partitions::RECOVERY_LABEL, true)?;
    upgrade::upgrade(&recovery, registry, &request, None, progress)
        .await
        .with_context(|| format!("installing the recovery slot from {}", request.image))
}

pub(super) async fn build_disk(cli: &Cli, a: &BuildDiskArgs) -> Result<()> {
    let size = clb::builddisk::parse_size(&a.size)?;
    let raw = match a.format {
        DiskFormat::Raw => a.out.clone(),
        DiskFormat::Qcow2 => a.out.with_extension("raw.tmp"),
    };
    clb::builddisk::create_image(&raw, size)?;
    let result = async {
        let esp = if a.boot.bootloader == Bootloader::Efi {
            a.boot.esp_size
        } else {
            0
        };
        let parts = partitions::image_parts(esp, a.oem_size, a.recovery_size);
        partitions::apply_layout(&raw, &parts)?;
        match a.boot.bootloader {
            Bootloader::Efi => clb::bootloader::install_efi(&raw, &a.boot.kernel_args)?,
            Bootloader::Bios => clb::bootloader::install_bios(&raw, &a.boot.kernel_args)?,
            Bootloader::None => {}
        }
        {
            let (_oem_disk, oem) = clb::target::open_store(&raw, partitions::OEM_LABEL, true)?;
            clb::builddisk::write_oem(oem.root(), a.user_data.as_deref(), a.state_size)?;
        }
        let (_rec_disk, recovery) =
            clb::target::open_store(&raw, partitions::RECOVERY_LABEL, true)?;
        let registry = a.stage.registry.registry()?;
        let progress = Progress::new(!cli.json && !cli.quiet);
        let mut request = a.stage.request("install", false)?;
        request.recovery = true;
        let report = upgrade::upgrade(&recovery, &registry, &request, None, &progress).await?;
        drop(recovery);
        if a.format == DiskFormat::Qcow2 {
            clb::builddisk::to_qcow2(&raw, &a.out)?;
        }
        Ok::<_, anyhow::Error>(report)
    }
    .await;
    if a.format == DiskFormat::Qcow2 || result.is_err() {
        let _ = std::fs::remove_file(&raw);
    }
    let report = result.with_context(|| format!("building {}", a.out.display()))?;
    if cli.json {
        print_json(&serde_json::json!({"out": a.out, "recovery": report}))?;
    } else {
        println!(
            "wrote {} with the recovery slot {} ({})",
            a.out.display(),
            report.image,
            report.digest
        );
    }
    Ok(())
}

pub(super) async fn reset(cli: &Cli, a: &ResetArgs) -> Result<()> {
    let host = cli.disk.is_none();
    let disk = clb::recovery::disk_of_label(cli.disk.as_deref(), &cli.state_label)?;
    let hook_sources = if !a.hook_files.is_empty() {
        Some(clb_cloud_config::Sources::files(a.hook_files.clone()))
    } else if host {
        Some(clb_cloud_config::Sources::from_system())
    } else {
        None
    };
    let hooks = clb::hooks::Hooks {
        action: "reset",
        host: hook_sources,
        image: false,
    };
    hooks.before().context("before-reset")?;
    clb::recovery::reformat(&disk, partitions::PERSISTENT_LABEL)
        .context("wiping COS_PERSISTENT")?;
    clb::recovery::reformat(&disk, &cli.state_label).context("wiping COS_STATE")?;
    let (_state_disk, store) = clb::target::open_store(&disk, &cli.state_label, true)?;
    let (_rec_disk, recovery) = clb::target::open_store(&disk, partitions::RECOVERY_LABEL, false)?;
    let m = clb::recovery::install_from_recovery(&recovery, &store)
        .context("reinstalling slot a from recovery")?;
    for w in hooks.after() {
        eprintln!("warning: {w}");
    }
    if cli.json {
        print_json(&serde_json::json!({"slot": "a", "image": m.image, "digest": m.digest}))?;
    } else {
        println!(
            "reset: persistent data wiped, slot a reinstalled from recovery ({})",
            m.image
        );
    }
    if host && !a.no_reboot {
        drop(store);
        clb::reboot::reboot().await.context("rebooting")?;
    }
    Ok(())
}

pub(super) fn mkinitrd(cli: &Cli, a: &MkinitrdArgs) -> Result<()> {
    let mut opts = clb_mkinitrd::MkinitrdOptions::new(&a.init, &a.out);
    opts.modules_dir = a.modules_dir.clone();
    opts.add_modules(&a.add_modules);
    if let Some(list) = &a.modules_list {
        opts.add_modules_from_file(list)
            .context("reading the modules list")?;
    }
    if a.no_busybox {
        opts.busybox = None;
    } else if let Some(b) = &a.busybox {
        opts.busybox = Some(b.clone());
    }
    opts.compression = match a.compression {
        InitrdCompression::Gzip => clb_mkinitrd::Compression::Gzip,
        InitrdCompression::Zstd => clb_mkinitrd::Compression::Zstd,
        InitrdCompression::None => clb_mkinitrd::Compression::None,
    };
    let stats = clb_mkinitrd::build(&opts)
        .map_err(|e| ClbError::Invalid(e.to_string()))
        .with_context(|| format!("building {}", a.out.display()))?;
    if cli.json {
        print_json(&serde_json::json!({
            "output": a.out, "modules": stats.modules, "entries": stats.entries,
            "compressed_bytes": stats.compressed_bytes,
        }))?;
    } else {
        println!(
            "wrote {} ({} bytes, {} modules: {})",
            a.out.display(),
            stats.compressed_bytes,
            stats.modules.len(),
            stats.modules.join(" ")
        );
    }
    Ok(())
}

pub(super) fn run_stage(cli: &Cli, a: &RunStageArgs) -> Result<()> {
    let mut sources = if a.files.is_empty() {
        clb_cloud_config::Sources::default()
    } else {
        clb_cloud_config::Sources::files(a.files.clone())
    };
    match (&a.cmdline, a.root == std::path::Path::new("/")) {
        (Some(c), _) => sources = sources.with_cmdline(c.clone()),
        (None, true) if a.files.is_empty() => sources = clb_cloud_config::Sources::from_system(),
        _ => {}
    }
    let options = clb_cloud_config::Options {
        root: a.root.clone(),
        strict: a.strict,
        dry_run: a.dry_run,
        hostname: None,
        metadata_endpoint: a.metadata_endpoint.clone(),
    };
    let report = clb_cloud_config::run_stage(&a.stage, &sources, &options);
    if cli.json {
        println!("{}", report.to_json());
    } else {
        for step in &report.steps {
            println!(
                "{} [{}] {}: {:?}",
                step.file, step.stage, step.name, step.outcome
            );
            for action in &step.actions {
                println!("    {action}");
            }
        }
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
    }
    for e in &report.errors {
        eprintln!("clb: error: {e}");
    }
    if !report.success() {
        let failed = report.failed_steps().count();
        bail!(ClbError::Invalid(format!(
            "stage {}: {failed} step(s) failed, {} source error(s)",
            a.stage,
            report.errors.len()
        )));
    }
    Ok(())
}

pub(super) fn validate(cli: &Cli, files: &[PathBuf]) -> Result<()> {
    let mut bad = 0;
    for f in files {
        match clb_cloud_config::validate_file(f) {
            Ok(warnings) => {
                for w in &warnings {
                    eprintln!("warning: {w}");
                }
                if !cli.quiet {
                    println!("{}: ok", f.display());
                }
            }
            Err(d) => {
                eprintln!("{d}");
                bad += 1;
            }
        }
    }
    if bad > 0 {
        bail!(ClbError::Invalid(format!("{bad} file(s) invalid")));
    }
    Ok(())
}
