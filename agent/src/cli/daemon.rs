//! `clb daemon`, and the commands that go through the daemon when it runs: the daemon does
//! the work and this process follows its progress, so two operations never race.

use std::collections::HashMap;

use anyhow::{Context, Result};
use clb::daemon::{self, client, ops::OpKind};
use zbus::Variant;

use super::{Cli, Command, DaemonArgs, UpgradeArgs, print_json};

pub async fn serve(cli: &Cli, a: &DaemonArgs) -> Result<()> {
    daemon::run(daemon::DaemonOptions {
        state_dir: cli.state_dir.clone(),
        state_label: cli.state_label.clone(),
        config_dir: a.config_dir.clone(),
        updates: !a.no_updates,
        booted_slot: a.booted_slot,
    })
    .await
    .context("running the clb daemon")
}

/// Runs the command through the daemon when it serves this state; `false`: do it here.
pub async fn try_through_daemon(cli: &Cli) -> Result<bool> {
    if cli.no_daemon || cli.disk.is_some() {
        return Ok(false);
    }
    let Some((kind, options, reboot_human)) = operation(&cli.command) else {
        return Ok(false);
    };
    let Some(proxy) = client::connect(cli.state_dir.as_deref()).await else {
        return Ok(false);
    };
    let bar = !cli.json && !cli.quiet && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let done = client::run(&proxy, kind, options, bar)
        .await
        .with_context(|| format!("the clb daemon's {}", kind.name()))?;
    print_result(cli, kind, &done.result, reboot_human)?;
    if kind == OpKind::Check && done.result["update_available"] == false {
        std::process::exit(i32::from(clb::error::exit::UP_TO_DATE));
    }
    Ok(true)
}

type Options = HashMap<&'static str, Variant<'static>>;

/// The daemon operation for a command, when the daemon can do it as asked. Flags it does
/// not take from callers (credentials, CAs, platform, converter settings, hook files,
/// recovery) keep the command standalone; the store lock still keeps it from racing.
fn operation(command: &Command) -> Option<(OpKind, Options, bool)> {
    let mut options = Options::new();
    match command {
        Command::Upgrade(a) => {
            if !daemon_can_stage(a) {
                return None;
            }
            let s = &a.stage;
            if let Some(image) = &s.image {
                options.insert("image", Variant::from(image.clone()));
            }
            let kind = if a.check {
                OpKind::Check
            } else if a.download_only {
                OpKind::Download
            } else if a.apply {
                OpKind::Apply
            } else {
                OpKind::Upgrade
            };
            if matches!(kind, OpKind::Download | OpKind::Upgrade) {
                if s.no_verify {
                    options.insert("verify", Variant::from(false));
                }
                if !s.keys.is_empty() {
                    let keys: Vec<String> =
                        s.keys.iter().map(|k| k.display().to_string()).collect();
                    options.insert("keys", Variant::from(keys));
                }
                if let Some(policy) = &s.policy {
                    // The daemon does not share our working directory.
                    let policy = std::path::absolute(policy).unwrap_or_else(|_| policy.clone());
                    options.insert("policy", Variant::from(policy.display().to_string()));
                }
            }
            if matches!(kind, OpKind::Upgrade | OpKind::Apply) {
                if let Some(n) = s.max_tries {
                    options.insert("max-tries", Variant::from(n));
                }
                options.insert("reboot", Variant::from(a.reboot));
            }
            if kind != OpKind::Check && s.no_hooks {
                options.insert("hooks", Variant::from(false));
            }
            if kind == OpKind::Apply {
                options.remove("image");
            }
            Some((kind, options, a.reboot))
        }
        Command::Rollback { reboot } => {
            options.insert("reboot", Variant::from(*reboot));
            Some((OpKind::Rollback, options, *reboot))
        }
        Command::MarkGood => Some((OpKind::MarkGood, options, false)),
        Command::MarkBad => Some((OpKind::MarkBad, options, false)),
        _ => None,
    }
}

fn daemon_can_stage(a: &UpgradeArgs) -> bool {
    let (s, r) = (&a.stage, &a.stage.registry);
    !a.recovery
        && s.hook_files.is_empty()
        && s.signature_repository.is_none()
        && s.jobs.is_none()
        && s.compressor.is_none()
        && s.compression_level.is_none()
        && r.creds.is_none()
        && r.authfile.is_none()
        && r.ca_files.is_empty()
        && !r.insecure
        && r.platform.is_none()
}

fn print_result(cli: &Cli, kind: OpKind, result: &serde_json::Value, reboot: bool) -> Result<()> {
    if cli.json {
        return print_json(result);
    }
    if cli.quiet {
        return Ok(());
    }
    let text = |key: &str| result[key].as_str().unwrap_or("?").to_string();
    match kind {
        OpKind::Check => {
            let state = if result["update_available"] == true {
                "update available"
            } else {
                "up to date"
            };
            println!("{}: {} ({state})", text("image"), text("digest"));
        }
        OpKind::Download if result["up_to_date"] == true => {
            println!("{} ({}) is already staged", text("image"), text("digest"))
        }
        OpKind::Download => println!(
            "downloaded and verified {} ({}): {} of {} layers fetched; `clb upgrade --apply` stages it",
            text("image"),
            text("digest"),
            result["layers_downloaded"],
            result["layers"]
        ),
        OpKind::Upgrade | OpKind::Apply if result["up_to_date"] == true => println!(
            "{} ({}) is already in slot {}",
            text("image"),
            text("digest"),
            text("slot")
        ),
        OpKind::Upgrade | OpKind::Apply => {
            for w in result["hook_warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
            println!(
                "staged {} ({}) in slot {}{}",
                text("image"),
                text("digest"),
                text("slot"),
                if reboot { "; rebooting" } else { "" }
            );
        }
        OpKind::Rollback => println!(
            "the next boot uses slot {} (was {})",
            text("to"),
            text("from")
        ),
        OpKind::MarkGood => println!("slot {} marked good", text("active")),
        OpKind::MarkBad => println!("marked bad; the next boot uses slot {}", text("active")),
    }
    Ok(())
}
