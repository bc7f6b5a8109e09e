//! Command-line dispatch: parse, call the library, print. Definitions live in `args`,
//! the disk and image commands in `system`, the boot health and kernel arguments in `boot`.

mod args;
mod boot;
mod daemon;
mod system;
mod verify_bundle;

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clb::error::ClbError;
use clb::progress::Progress;
use clb::pull::PullOptions;
use clb::registry::{CredentialSource, Platform, Registry, RegistryOptions};
use clb::upgrade::UpgradeRequest;
use clb::{publish, status, target::Target, upgrade};

pub use args::*;

pub fn init_logging(cli: &Cli) {
    let level = if cli.quiet {
        "error"
    } else {
        match cli.verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!(
            "{level},h2=warn,hyper=warn,reqwest=warn,rustls=warn"
        ))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

impl RegistryArgs {
    fn registry(&self) -> Result<Registry> {
        let platform = self.platform.as_deref().map(Platform::parse).transpose()?;
        Ok(Registry::new(RegistryOptions {
            credentials: CredentialSource {
                creds: self.creds.clone(),
                auth_file: self.authfile.clone(),
            },
            insecure: self.insecure,
            ca_files: self.ca_files.clone(),
            platform,
            attempts: self.retries,
        })?)
    }
}

/// The host's conversion settings, with `--compressor` / `--compression-level` laid over
/// them: another compressor without a level gets that compressor's own default level.
fn convert_options(c: Option<CompressorArg>, level: Option<u32>) -> clb_convert::ConvertOptions {
    let host = clb_convert::ConvertOptions::host();
    let compressor = match c {
        None => host.compressor,
        Some(CompressorArg::Zstd) => clb_convert::Compressor::Zstd,
        Some(CompressorArg::Gzip) => clb_convert::Compressor::Gzip,
        Some(CompressorArg::Xz) => clb_convert::Compressor::Xz,
        Some(CompressorArg::Lz4) => clb_convert::Compressor::Lz4,
    };
    let level = level.or(if compressor == host.compressor {
        host.level
    } else {
        None
    });
    clb_convert::ConvertOptions {
        compressor,
        level,
        ..host
    }
}

impl StageArgs {
    /// `action` names the hooks (`upgrade`, `install`); on a host the system's default
    /// cloud-config sources provide them, offline only `--cloud-config` files do.
    fn request(&self, action: &'static str, host: bool) -> Result<UpgradeRequest> {
        let Some(image) = self.image.clone() else {
            bail!(ClbError::Invalid("-d IMAGE is required".into()));
        };
        Ok(UpgradeRequest {
            image,
            keys: self.keys.clone(),
            verify: !self.no_verify,
            policy: self.policy.clone(),
            signature_repository: self.signature_repository.clone(),
            max_tries: self.max_tries,
            pull: PullOptions {
                jobs: self.jobs.unwrap_or(clb::pull::DEFAULT_JOBS),
                convert: convert_options(self.compressor, self.compression_level),
            },
            hooks: self.hooks(action, host),
            recovery: false,
        })
    }

    fn hooks(&self, action: &'static str, host: bool) -> clb::hooks::Hooks {
        let host_sources = if self.no_hooks {
            None
        } else if !self.hook_files.is_empty() {
            Some(clb_cloud_config::Sources::files(self.hook_files.clone()))
        } else if host {
            Some(clb_cloud_config::Sources::from_system())
        } else {
            None
        };
        clb::hooks::Hooks {
            action,
            host: host_sources,
            image: !self.no_hooks,
        }
    }
}

pub(super) fn print_stage_report(cli: &Cli, report: &clb::upgrade::UpgradeReport) -> Result<()> {
    if cli.json {
        print_json(report)?;
    } else if report.up_to_date {
        println!(
            "{} ({}) is already in slot {}",
            report.image, report.digest, report.slot
        );
    } else {
        for w in &report.hook_warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "staged {} ({}) in slot {}: {} of {} layers downloaded ({} bytes), {} bytes reused",
            report.image,
            report.digest,
            report.slot,
            report.stats.layers_downloaded,
            report.stats.layers,
            report.stats.bytes_downloaded,
            report.stats.bytes_reused
        );
    }
    Ok(())
}

pub(super) fn print_json(value: &impl serde::Serialize) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn open(cli: &Cli, writable: bool) -> Result<Target> {
    Target::open(
        cli.state_dir.as_deref(),
        cli.disk.as_deref(),
        &cli.state_label,
        writable,
    )
    .context("opening the state")
}

pub async fn run(cli: Cli) -> Result<()> {
    if daemon::try_through_daemon(&cli).await? {
        return Ok(());
    }
    match &cli.command {
        Command::Daemon(a) => daemon::serve(&cli, a).await?,
        Command::Upgrade(a) if a.download_only => {
            let target = open(&cli, true)?;
            let registry = a.stage.registry.registry()?;
            let progress = Progress::new(!cli.json && !cli.quiet);
            let request = a.stage.request("upgrade", target.is_host())?;
            let report = clb::download::download(target.store(), &registry, &request, &progress)
                .await
                .with_context(|| format!("downloading {}", request.image))?;
            if cli.json {
                print_json(&report)?;
            } else if report.up_to_date {
                println!("{} ({}) is already staged", report.image, report.digest);
            } else {
                println!(
                    "downloaded and verified {} ({}): {} of {} layers fetched; `clb upgrade --apply` stages it",
                    report.image,
                    report.digest,
                    report.stats.layers_downloaded,
                    report.stats.layers
                );
            }
        }
        Command::Upgrade(a) if a.apply => {
            let target = open(&cli, true)?;
            if a.reboot && !target.is_host() {
                bail!(ClbError::Invalid(
                    "--reboot only works on a host, not with --state-dir or --disk".into()
                ));
            }
            let progress = Progress::new(!cli.json && !cli.quiet);
            let hooks = a.stage.hooks("upgrade", target.is_host());
            let opts = clb::apply::ApplyOptions {
                hooks,
                max_tries: a.stage.max_tries,
                recovery: false,
                before_hooks: true,
            };
            let report = clb::apply::apply(target.store(), &opts, target.booted(), &progress)
                .await
                .context("applying the download")?;
            print_stage_report(&cli, &report)?;
            if a.reboot {
                drop(target);
                clb::reboot::reboot().await.context("rebooting")?;
            }
        }
        Command::Upgrade(a) if a.check => {
            let target = open(&cli, false)?;
            let registry = a.stage.registry.registry()?;
            // On a host, the channel is the one the daemon follows (config.yaml's `image`).
            let configured = || {
                clb::config::load(std::path::Path::new(clb::config::DEFAULT_DIR))
                    .ok()
                    .and_then(|l| l.config.image)
            };
            let image = a
                .stage
                .image
                .clone()
                .or_else(|| target.is_host().then(configured).flatten());
            let report =
                clb::check::check(target.store(), &registry, image.as_deref(), target.booted())
                    .await
                    .context("checking for an update")?;
            if cli.json {
                print_json(&report)?;
            } else if !cli.quiet {
                let state = if report.update_available {
                    "update available"
                } else {
                    "up to date"
                };
                println!("{}: {} ({state})", report.image, report.digest);
            }
            if !report.update_available {
                drop(target);
                std::process::exit(i32::from(clb::error::exit::UP_TO_DATE));
            }
        }
        Command::Upgrade(a) => {
            let label = if a.recovery {
                &a.recovery_label
            } else {
                &cli.state_label
            };
            let target = Target::open(cli.state_dir.as_deref(), cli.disk.as_deref(), label, true)
                .context("opening the state")?;
            if a.reboot && !target.is_host() {
                bail!(ClbError::Invalid(
                    "--reboot only works on a host, not with --state-dir or --disk".into()
                ));
            }
            let registry = a.stage.registry.registry()?;
            let progress = Progress::new(!cli.json && !cli.quiet);
            let mut request = a.stage.request("upgrade", target.is_host())?;
            request.recovery = a.recovery;
            let report = upgrade::upgrade(
                target.store(),
                &registry,
                &request,
                target.booted(),
                &progress,
            )
            .await
            .with_context(|| format!("upgrading to {}", request.image))?;
            print_stage_report(&cli, &report)?;
            if a.reboot && !report.up_to_date {
                drop(target);
                clb::reboot::reboot().await.context("rebooting")?;
            }
        }
        Command::Deploy(a) => system::deploy(&cli, a).await?,
        Command::BuildDisk(a) => system::build_disk(&cli, a).await?,
        Command::Reset(a) => system::reset(&cli, a).await?,
        Command::Mkinitrd(a) => system::mkinitrd(&cli, a)?,
        Command::RunStage(a) => system::run_stage(&cli, a)?,
        Command::CloudConfig(CloudConfigCommand::Validate { files }) => {
            system::validate(&cli, files)?
        }
        Command::HealthCheck {
            config,
            report_only,
        } => boot::health_check(&cli, config, *report_only).await?,
        Command::Bootloader(cmd) => boot::bootloader(&cli, cmd)?,
        Command::Status => {
            let target = open(&cli, false)?;
            let s = status::status(target.store(), target.booted())?;
            if cli.json {
                print_json(&s)?;
            } else {
                print!("{}", s.human());
            }
        }
        Command::Rollback { reboot } => {
            let target = open(&cli, true)?;
            if *reboot && !target.is_host() {
                bail!(ClbError::Invalid("--reboot only works on a host".into()));
            }
            let (from, to) = upgrade::rollback(target.store()).context("rolling back")?;
            if cli.json {
                print_json(&serde_json::json!({"from": from, "to": to}))?;
            } else {
                println!("the next boot uses slot {to} (was {from})");
            }
            if *reboot {
                drop(target);
                clb::reboot::reboot().await.context("rebooting")?;
            }
        }
        Command::MarkGood | Command::MarkBad => {
            let good = matches!(cli.command, Command::MarkGood);
            let target = open(&cli, true)?;
            let state = upgrade::mark(target.store(), target.booted(), good)
                .with_context(|| if good { "marking good" } else { "marking bad" })?;
            if cli.json {
                print_json(&serde_json::json!({"active": state.active, "good": state.good}))?;
            } else if good {
                println!("slot {} marked good", state.active);
            } else {
                println!("marked bad; the next boot uses slot {}", state.active);
            }
        }
        Command::Mount { slot, dir } => {
            if cli.disk.is_some() {
                // The layers live on the image's state partition, which clb only keeps
                // mounted for the length of one command.
                bail!(ClbError::Invalid(
                    "clb mount needs --state-dir or the host's COS_STATE; mount the image's \
                     COS_STATE first and pass it as --state-dir"
                        .into()
                ));
            }
            let target = open(&cli, false)?;
            publish::mount_slot(target.store(), *slot, dir).context("mounting the slot")?;
            println!("mounted at {}", dir.display());
        }
        Command::Umount { dir } => {
            clb_disk::unmount_stack(dir)
                .map_err(ClbError::from)
                .with_context(|| format!("unmounting {}", dir.display()))?;
        }
        Command::Gc => {
            let target = open(&cli, true)?;
            let store = target.store();
            let _lock = store.lock()?;
            let report = store.gc().context("collecting garbage")?;
            if cli.json {
                print_json(&report)?;
            } else {
                println!(
                    "removed {} layers, {} cache entries, {} partial downloads; freed {} bytes",
                    report.removed_layers.len(),
                    report.removed_cache_entries,
                    report.removed_partials,
                    report.freed_bytes
                );
            }
        }
        Command::Keygen {
            output_key_prefix,
            force,
        } => {
            let (key, public) =
                publish::keygen(output_key_prefix, *force).context("generating keys")?;
            println!(
                "private key: {}\npublic key:  {}",
                key.display(),
                public.display()
            );
        }
        Command::Sign(a) => {
            let registry = a.registry.registry()?;
            let digest = publish::sign(
                &registry,
                &a.image,
                &a.key,
                a.signature_repository.as_deref(),
                match a.format {
                    SignFormat::Bundle => publish::SignatureFormat::Bundle,
                    SignFormat::Sig => publish::SignatureFormat::Sig,
                },
            )
            .await
            .with_context(|| format!("signing {}", a.image))?;
            if cli.json {
                print_json(&serde_json::json!({"image": a.image, "signed_digest": digest}))?;
            } else {
                println!("signed {} ({digest})", a.image);
            }
        }
        Command::VerifyBundle(a) => {
            let verified = verify_bundle::run(a)?;
            if cli.json {
                print_json(&serde_json::json!({
                    "verified": true,
                    "identity": verified.identity,
                    "issuer": verified.issuer,
                    "integrated_time": verified.integrated_time,
                }))?;
            } else {
                match (&verified.identity, &verified.issuer) {
                    (Some(id), Some(iss)) => println!("verified: signed by {id} ({iss})"),
                    _ => println!("verified: signed with the given key"),
                }
            }
        }
        Command::Push(a) => {
            let (dirs, image) = a.args.split_at(a.args.len() - 1);
            let dirs: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
            let registry = a.registry.registry()?;
            let format = match a.format {
                LayerFormatArg::Tar => publish::LayerFormat::TarGzip,
                LayerFormatArg::Squashfs => publish::LayerFormat::Squashfs,
            };
            let digest = publish::push_dirs(&registry, &dirs, &image[0], format)
                .await
                .with_context(|| format!("pushing {}", image[0]))?;
            if cli.json {
                print_json(&serde_json::json!({"image": image[0], "digest": digest}))?;
            } else {
                println!("pushed {} ({digest})", image[0]);
            }
        }
        Command::Convert(a) => {
            let registry = a.registry.registry()?;
            let digest = publish::convert_image(&registry, &a.source, &a.destination, a.merged)
                .await
                .with_context(|| format!("converting {} to {}", a.source, a.destination))?;
            if cli.json {
                print_json(&serde_json::json!({"image": a.destination, "digest": digest}))?;
            } else {
                println!("pushed {} ({digest})", a.destination);
            }
        }
    }
    Ok(())
}
