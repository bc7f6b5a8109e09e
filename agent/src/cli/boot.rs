//! Commands about this machine's boot: its health and its kernel arguments.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clb::error::ClbError;
use clb::health::{self, HealthConfig, HealthReport, OnFailure};
use clb::kernelargs::{self, GRUB_FIXED_ARGS};
use clb::upgrade;

use super::args::{BootloaderCommand, Cli};
use super::{open, print_json};

pub(super) async fn health_check(cli: &Cli, config: &Path, report_only: bool) -> Result<()> {
    let cfg = HealthConfig::load(config).context("reading the health-check configuration")?;
    let checks = cfg.clone();
    let report = tokio::task::spawn_blocking(move || health::run_checks(&checks))
        .await
        .map_err(ClbError::from)?
        .context("running the health checks")?;
    if cli.json {
        print_json(&report)?;
    } else if !cli.quiet {
        for c in &report.checks {
            println!(
                "{} {}: {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.name,
                c.detail
            );
        }
    }
    if report.healthy {
        return Ok(());
    }
    let summary = summary(&report);
    tracing::error!(failed = %summary, "health check failed");
    if !report_only && cfg.on_failure != OnFailure::Nothing {
        act_on_failure(cli, cfg.on_failure).await?;
    }
    bail!(ClbError::Unhealthy(summary))
}

fn summary(report: &HealthReport) -> String {
    report
        .failures()
        .iter()
        .map(|c| format!("{} ({})", c.name, c.detail))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Marks the booted slot bad and, with `Reboot`, reboots into the fallback. Off a slot boot
/// (recovery, netboot, not booted by clb) or without a fallback there is nothing better to
/// boot: the failure is only reported.
async fn act_on_failure(cli: &Cli, on_failure: OnFailure) -> Result<()> {
    let target = open(cli, true)?;
    let Some(booted) = target.booted().filter(|_| target.is_host()) else {
        tracing::warn!("not a slot boot of clb: nothing to mark bad");
        return Ok(());
    };
    match upgrade::mark(target.store(), Some(booted), false) {
        Ok(state) => {
            tracing::warn!(failed = %booted, next = %state.active, "slot marked bad");
            eprintln!(
                "clb: slot {booted} marked bad; the next boot uses slot {}",
                state.active
            );
        }
        Err(ClbError::BootState(e)) => {
            // No fallback: rebooting would only spend the remaining boots on the same slot.
            tracing::warn!(error = %e, "not marking bad");
            eprintln!("clb: slot {booted} is unhealthy and {e}: staying up, not marked good");
            return Ok(());
        }
        Err(e) => return Err(e).context("marking the slot bad"),
    }
    if on_failure == OnFailure::Reboot {
        drop(target);
        clb::reboot::reboot().await.context("rebooting")?;
    }
    Ok(())
}

pub(super) fn bootloader(cli: &Cli, cmd: &BootloaderCommand) -> Result<()> {
    if cli.state_dir.is_some() {
        bail!(ClbError::Invalid(
            "clb bootloader works on the host's disks or --disk, not --state-dir".into()
        ));
    }
    let (location, _mounted) =
        kernelargs::locate(cli.disk.as_deref()).context("finding the bootloader")?;
    let current = kernelargs::read(&location).context("reading the kernel arguments")?;
    let new = match cmd {
        BootloaderCommand::Show => None,
        BootloaderCommand::SetArgs { args } => {
            Some(args.split_whitespace().collect::<Vec<_>>().join(" "))
        }
        BootloaderCommand::AddArgs { args } => Some(kernelargs::add_args(&current, args)),
        BootloaderCommand::RemoveArgs { args } => Some(kernelargs::remove_args(&current, args)),
    };
    if let Some(new) = &new {
        kernelargs::write(&location, new).context("writing the kernel arguments")?;
    }
    let args = new.unwrap_or(current);
    if cli.json {
        print_json(&serde_json::json!({
            "bootloader": location,
            "stored_in": location.describe(),
            "kernel_args": args,
            "command_line": format!("{GRUB_FIXED_ARGS} {args}").trim_end(),
        }))?;
    } else if !cli.quiet {
        println!("kernel arguments: {args}");
        println!("stored in:        {}", location.describe());
        println!(
            "GRUB boots with:  clb.slot=<slot> {}",
            format!("{GRUB_FIXED_ARGS} {args}").trim_end()
        );
    }
    Ok(())
}
