//! Command-line definitions and dispatch.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use clb::error::ClbError;
use clb::progress::Progress;
use clb::pull::PullOptions;
use clb::registry::{CredentialSource, Platform, Registry, RegistryOptions};
use clb::upgrade::UpgradeRequest;
use clb::{publish, status, target::Target, upgrade};
use clb_ondisk::SlotName;

#[derive(Parser, Debug)]
#[command(
    name = "clb",
    version,
    about = "A/B over-the-air upgrades of immutable Linux hosts from OCI images of SquashFS layers",
    long_about = "clb stages signed OCI images as SquashFS layer sets into the passive slot of \
                  COS_STATE, flips the boot pointer, and lets the initrd hook boot the new slot \
                  and fall back when it fails.\n\nWithout --state-dir or --disk, clb works on the \
                  host's own COS_STATE partition, found by its filesystem label.\n\nExit codes: \
                  0 ok, 1 failure, 2 usage, 3 invalid input, 4 verification failed, 5 digest \
                  mismatch, 6 registry unreachable, 7 registry auth refused, 8 no space, 9 locked, \
                  10 not found, 11 state (nothing to roll back, corrupt state)."
)]
pub struct Cli {
    /// Work on a directory laid out like COS_STATE instead of the host's partition.
    #[arg(long, global = true, value_name = "DIR", env = "CLB_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Work offline on a disk image or block device; COS_STATE is found by label.
    #[arg(long, global = true, value_name = "IMAGE")]
    pub disk: Option<PathBuf>,
    /// Filesystem label of the state partition.
    #[arg(long, global = true, default_value = "COS_STATE", value_name = "LABEL")]
    pub state_label: String,
    /// Print one JSON document on stdout instead of human output.
    #[arg(long, global = true)]
    pub json: bool,
    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr.
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull, verify and stage an image into the passive slot; the next boot tries it.
    Upgrade(UpgradeArgs),
    /// Show the slots and the boot state.
    Status,
    /// Make the other slot active for the next boot.
    Rollback {
        /// Reboot into it right away (host only).
        #[arg(long)]
        reboot: bool,
    },
    /// Mark the booted slot good: stop counting tries (run after boot-complete.target).
    MarkGood,
    /// Mark the booted slot bad: the next boot falls back.
    MarkBad,
    /// Mount a slot's root read-only, assembled as the initrd assembles it.
    Mount {
        /// Slot to mount (default: the active one).
        #[arg(long, value_parser = parse_slot)]
        slot: Option<SlotName>,
        /// Mount point (created if missing).
        dir: PathBuf,
    },
    /// Unmount what `clb mount` mounted.
    Umount { dir: PathBuf },
    /// Drop layers no slot uses, stale cache entries and partial downloads.
    Gc,
    /// Generate a cosign key pair (password from COSIGN_PASSWORD, empty if unset).
    Keygen {
        /// Output prefix: writes PREFIX.key and PREFIX.pub.
        #[arg(long, default_value = "cosign")]
        output_key_prefix: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
    },
    /// Sign an image in a registry the way `cosign sign --key` does.
    Sign(SignArgs),
    /// Publish directories as an image: one layer per directory, bottom first.
    Push(PushArgs),
    /// Convert a container image into a native SquashFS layer set and push it.
    Convert(ConvertArgs),
    /// Lay out a blank disk (or image, --disk) and install slot a from an image.
    Deploy(DeployArgs),
    /// Factory reset: reformat COS_STATE and COS_PERSISTENT, reinstall slot a from recovery.
    Reset(ResetArgs),
    /// Build a self-deploying disk image (COS_OEM + COS_RECOVERY) for cloud VMs.
    BuildDisk(BuildDiskArgs),
    /// Build a minimal initramfs with the clb boot hook, kernel modules and busybox.
    Mkinitrd(MkinitrdArgs),
    /// Run a cloud-config stage (STAGE.before, STAGE, STAGE.after).
    RunStage(RunStageArgs),
    /// Cloud-config file tools.
    #[command(subcommand)]
    CloudConfig(CloudConfigCommand),
}

#[derive(Args, Debug, Clone)]
pub struct RegistryArgs {
    /// USER:PASSWORD for the registry (else REGISTRY_AUTH_FILE or ~/.docker/config.json).
    #[arg(long, env = "CLB_REGISTRY_CREDS", hide_env_values = true)]
    pub creds: Option<String>,
    /// Auth file in docker/containers format (default: REGISTRY_AUTH_FILE, ~/.docker/config.json).
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
    /// Extra CA certificate (PEM) to trust for registry TLS; repeatable.
    #[arg(long = "ca-file", value_name = "FILE")]
    pub ca_files: Vec<PathBuf>,
    /// Allow plain HTTP to the registry (loopback registries may always fall back to HTTP).
    #[arg(long)]
    pub insecure: bool,
    /// Platform to pick from multi-arch images, OS/ARCH[/VARIANT] (default: this host's).
    #[arg(long)]
    pub platform: Option<String>,
    /// Attempts per registry request on 5xx, timeouts and dropped connections.
    #[arg(long, default_value_t = 5)]
    pub retries: u32,
}

#[derive(Args, Debug)]
pub struct StageArgs {
    /// Image to stage, e.g. registry.example/os:v2.
    #[arg(
        short = 'd',
        long = "docker-image",
        visible_alias = "system",
        value_name = "IMAGE"
    )]
    pub image: Option<String>,
    /// cosign public key (PEM) to verify with; repeat for key rotation.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Skip signature verification (logged as a warning).
    #[arg(long)]
    pub no_verify: bool,
    /// Repository holding the signatures (cosign's COSIGN_REPOSITORY).
    #[arg(long, value_name = "REPO")]
    pub signature_repository: Option<String>,
    /// Boot attempts of the new slot before falling back.
    #[arg(long, value_name = "N")]
    pub max_tries: Option<u32>,
    /// Layers downloaded at once.
    #[arg(long, default_value_t = 3)]
    pub jobs: usize,
    /// SquashFS compressor for converted tar layers.
    #[arg(long, value_enum, default_value_t = CompressorArg::Zstd)]
    pub compressor: CompressorArg,
    /// Compression level (compressor default when unset).
    #[arg(long)]
    pub compression_level: Option<u32>,
    /// Cloud-config file with this system's before-/after-/post- hooks (repeatable; on a
    /// host the default sources /system/oem, /oem, /usr/local/cloud-config are used).
    #[arg(long = "cloud-config", value_name = "FILE")]
    pub hook_files: Vec<PathBuf>,
    /// Run no hooks at all (neither this system's nor those shipped in the image).
    #[arg(long)]
    pub no_hooks: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct UpgradeArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Stage the recovery slot on COS_RECOVERY (found by --recovery-label) instead of the
    /// passive slot; the boot state is not changed.
    #[arg(long)]
    pub recovery: bool,
    /// Filesystem label of the recovery partition.
    #[arg(long, default_value = "COS_RECOVERY", value_name = "LABEL")]
    pub recovery_label: String,
    /// Reboot into the new slot when staged (host only).
    #[arg(long)]
    pub reboot: bool,
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// Size of COS_OEM in MiB.
    #[arg(long, default_value_t = 64)]
    pub oem_size: u64,
    /// Size of COS_RECOVERY in MiB (0: no recovery partition).
    #[arg(long, default_value_t = 4096)]
    pub recovery_size: u64,
    /// Size of COS_STATE in MiB.
    #[arg(long, default_value_t = 8192)]
    pub state_size: u64,
    /// Size of COS_PERSISTENT in MiB (0: the rest of the disk).
    #[arg(long, default_value_t = 0)]
    pub persistent_size: u64,
    /// Recovery mode: keep COS_OEM and COS_RECOVERY, add COS_STATE and COS_PERSISTENT after
    /// them, install slot a from -d IMAGE or, without it, from the recovery slot.
    #[arg(long)]
    pub from_recovery: bool,
    /// Do not reboot after deploying from recovery on a host.
    #[arg(long)]
    pub no_reboot: bool,
}

#[derive(Args, Debug)]
pub struct BuildDiskArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    /// The image to write (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DiskFormat::Raw)]
    pub format: DiskFormat,
    /// Size of the disk (the free space after COS_RECOVERY is laid out on first boot).
    #[arg(long, default_value = "8G")]
    pub size: String,
    /// Size of COS_OEM in MiB.
    #[arg(long, default_value_t = 64)]
    pub oem_size: u64,
    /// Size of COS_RECOVERY in MiB.
    #[arg(long, default_value_t = 2048)]
    pub recovery_size: u64,
    /// User data (cloud-config) to bake into COS_OEM; a cidata config drive at first boot
    /// takes precedence.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskFormat {
    Raw,
    Qcow2,
}

#[derive(Args, Debug)]
pub struct ResetArgs {
    /// Do not reboot afterwards (host only).
    #[arg(long)]
    pub no_reboot: bool,
    /// Cloud-config file with before-reset/after-reset hooks (host: the default sources).
    #[arg(long = "cloud-config", value_name = "FILE")]
    pub hook_files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct MkinitrdArgs {
    /// Kernel modules directory (/lib/modules/VERSION); none for a kernel with everything built in.
    #[arg(long, value_name = "DIR")]
    pub modules_dir: Option<PathBuf>,
    /// The initramfs to write.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// The static clb-initrd binary to install as /init.
    #[arg(long, value_name = "FILE", default_value = "/usr/lib/clb/clb-initrd")]
    pub init: PathBuf,
    /// Extra modules (comma separated), on top of the defaults.
    #[arg(long, value_delimiter = ',', value_name = "M1,M2")]
    pub add_modules: Vec<String>,
    /// A file listing modules, one per line.
    #[arg(long, value_name = "FILE")]
    pub modules_list: Option<PathBuf>,
    /// Static busybox to include (found automatically when unset).
    #[arg(long, value_name = "FILE")]
    pub busybox: Option<PathBuf>,
    /// Leave busybox out.
    #[arg(long)]
    pub no_busybox: bool,
    /// Compression of the archive.
    #[arg(long, value_enum, default_value_t = InitrdCompression::Gzip)]
    pub compression: InitrdCompression,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum InitrdCompression {
    Gzip,
    Zstd,
    None,
}

#[derive(Args, Debug)]
pub struct RunStageArgs {
    /// Stage to run (with its .before and .after), e.g. boot, fs, network, after-upgrade.
    pub stage: String,
    /// Tree the steps apply to.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,
    /// Stop at the first failed step (and refuse malformed sources).
    #[arg(long)]
    pub strict: bool,
    /// Show what would be done, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Read these files instead of /system/oem, /oem and /usr/local/cloud-config.
    #[arg(long = "cloud-config", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Kernel command line to read clb.setup=/cos.setup= from (default: /proc/cmdline when --root is /).
    #[arg(long)]
    pub cmdline: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CloudConfigCommand {
    /// Check files: errors with file:line:column, unknown keys as warnings.
    Validate {
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Args, Debug)]
pub struct SignArgs {
    /// Encrypted cosign private key (password from COSIGN_PASSWORD).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Image to sign (its digest is resolved and signed).
    pub image: String,
    /// Repository to store the signature in (default: the image's).
    #[arg(long, value_name = "REPO")]
    pub signature_repository: Option<String>,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Directories, bottom layer first, then the image reference.
    #[arg(required = true, num_args = 2.., value_name = "DIR... IMAGE")]
    pub args: Vec<String>,
    /// Layer format: tar+gzip (any OCI tool reads it) or native SquashFS.
    #[arg(long, value_enum, default_value_t = LayerFormatArg::Tar)]
    pub format: LayerFormatArg,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(Args, Debug)]
pub struct ConvertArgs {
    /// Source image (any OCI/Docker image).
    pub source: String,
    /// Destination image reference for the SquashFS layer set.
    pub destination: String,
    /// Flatten all layers into one (CoLaBoot's "merged" mode) instead of one per layer.
    #[arg(long)]
    pub merged: bool,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum CompressorArg {
    Zstd,
    Gzip,
    Xz,
    Lz4,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
pub enum LayerFormatArg {
    Tar,
    Squashfs,
}

fn parse_slot(s: &str) -> Result<SlotName, String> {
    SlotName::parse(s).ok_or_else(|| format!("unknown slot {s:?} (a, b or recovery)"))
}

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

fn convert_options(c: CompressorArg, level: Option<u32>) -> clb_convert::ConvertOptions {
    let compressor = match c {
        CompressorArg::Zstd => clb_convert::Compressor::Zstd,
        CompressorArg::Gzip => clb_convert::Compressor::Gzip,
        CompressorArg::Xz => clb_convert::Compressor::Xz,
        CompressorArg::Lz4 => clb_convert::Compressor::Lz4,
    };
    clb_convert::ConvertOptions {
        compressor,
        level,
        ..Default::default()
    }
}

impl StageArgs {
    /// `action` names the hooks (`upgrade`, `install`); on a host the system's default
    /// cloud-config sources provide them, offline only `--cloud-config` files do.
    fn request(&self, action: &'static str, host: bool) -> Result<UpgradeRequest> {
        let Some(image) = self.image.clone() else {
            bail!(ClbError::Invalid("-d IMAGE is required".into()));
        };
        let host_sources = if self.no_hooks {
            None
        } else if !self.hook_files.is_empty() {
            Some(clb_cloud_config::Sources::files(self.hook_files.clone()))
        } else if host {
            Some(clb_cloud_config::Sources::from_system())
        } else {
            None
        };
        Ok(UpgradeRequest {
            image,
            keys: self.keys.clone(),
            verify: !self.no_verify,
            signature_repository: self.signature_repository.clone(),
            max_tries: self.max_tries,
            pull: PullOptions {
                jobs: self.jobs,
                convert: convert_options(self.compressor, self.compression_level),
            },
            hooks: clb::hooks::Hooks {
                action,
                host: host_sources,
                image: !self.no_hooks,
            },
            recovery: false,
        })
    }
}

fn print_stage_report(cli: &Cli, report: &clb::upgrade::UpgradeReport) -> Result<()> {
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

fn print_json(value: &impl serde::Serialize) -> Result<()> {
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
    match &cli.command {
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
        Command::Deploy(a) => {
            let host = cli.disk.is_none();
            let disk = match (&cli.disk, a.from_recovery) {
                (Some(d), _) => d.clone(),
                (None, true) => clb::recovery::disk_of_label(None, "COS_RECOVERY")?,
                (None, false) => bail!(ClbError::Invalid(
                    "clb deploy needs --disk DISK (an image or a block device), or --from-recovery"
                        .into()
                )),
            };
            if a.from_recovery {
                clb::recovery::layout_next_to_recovery(&disk, a.state_size, a.persistent_size)
                    .with_context(|| format!("laying out {}", disk.display()))?;
            } else {
                let sizes = clb::deploy::LayoutSizes {
                    oem: a.oem_size,
                    recovery: a.recovery_size,
                    state: a.state_size,
                    persistent: a.persistent_size,
                };
                clb::deploy::apply_default_layout(&disk, sizes)
                    .with_context(|| format!("laying out {}", disk.display()))?;
            }
            let (_state_disk, store) = clb::recovery::open_store(&disk, &cli.state_label, true)?;
            if a.from_recovery && a.stage.image.is_none() {
                let (_rec_disk, recovery) =
                    clb::recovery::open_store(&disk, "COS_RECOVERY", false)?;
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
                print_stage_report(&cli, &report)?;
            }
            if a.from_recovery && host && !a.no_reboot {
                drop(store);
                clb::reboot::reboot().await.context("rebooting")?;
            }
        }
        Command::BuildDisk(a) => {
            let size = clb::builddisk::parse_size(&a.size)?;
            let raw = match a.format {
                DiskFormat::Raw => a.out.clone(),
                DiskFormat::Qcow2 => a.out.with_extension("raw.tmp"),
            };
            clb::builddisk::create_image(&raw, size)?;
            let result = async {
                let parts = vec![
                    ("COS_OEM".to_string(), "oem".to_string(), a.oem_size),
                    (
                        "COS_RECOVERY".to_string(),
                        "recovery".to_string(),
                        a.recovery_size,
                    ),
                ];
                clb::deploy::apply_layout(&raw, &parts)?;
                {
                    let (_oem_disk, oem) = clb::recovery::open_store(&raw, "COS_OEM", true)?;
                    clb::builddisk::write_oem(oem.root(), a.user_data.as_deref())?;
                }
                let (_rec_disk, recovery) = clb::recovery::open_store(&raw, "COS_RECOVERY", true)?;
                let registry = a.stage.registry.registry()?;
                let progress = Progress::new(!cli.json && !cli.quiet);
                let mut request = a.stage.request("install", false)?;
                request.recovery = true;
                let report =
                    upgrade::upgrade(&recovery, &registry, &request, None, &progress).await?;
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
        }
        Command::Reset(a) => {
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
            clb::recovery::reformat(&disk, "COS_PERSISTENT").context("wiping COS_PERSISTENT")?;
            clb::recovery::reformat(&disk, &cli.state_label).context("wiping COS_STATE")?;
            let (_state_disk, store) = clb::recovery::open_store(&disk, &cli.state_label, true)?;
            let (_rec_disk, recovery) = clb::recovery::open_store(&disk, "COS_RECOVERY", false)?;
            let m = clb::recovery::install_from_recovery(&recovery, &store)
                .context("reinstalling slot a from recovery")?;
            for w in hooks.after() {
                eprintln!("warning: {w}");
            }
            if cli.json {
                print_json(
                    &serde_json::json!({"slot": "a", "image": m.image, "digest": m.digest}),
                )?;
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
        }
        Command::Mkinitrd(a) => {
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
        }
        Command::RunStage(a) => {
            let mut sources = if a.files.is_empty() {
                clb_cloud_config::Sources::default()
            } else {
                clb_cloud_config::Sources::files(a.files.clone())
            };
            match (&a.cmdline, a.root == std::path::Path::new("/")) {
                (Some(c), _) => sources = sources.with_cmdline(c.clone()),
                (None, true) if a.files.is_empty() => {
                    sources = clb_cloud_config::Sources::from_system()
                }
                _ => {}
            }
            let options = clb_cloud_config::Options {
                root: a.root.clone(),
                strict: a.strict,
                dry_run: a.dry_run,
                hostname: None,
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
        }
        Command::CloudConfig(CloudConfigCommand::Validate { files }) => {
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
        }
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
                .map_err(clb::target::disk_error)
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
            )
            .await
            .with_context(|| format!("signing {}", a.image))?;
            if cli.json {
                print_json(&serde_json::json!({"image": a.image, "signed_digest": digest}))?;
            } else {
                println!("signed {} ({digest})", a.image);
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
