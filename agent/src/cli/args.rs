//! Command-line definitions: every command and flag, with the help text users see.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use clb_ondisk::SlotName;

#[derive(Parser, Debug)]
#[command(
    name = "clb",
    version,
    about = "A/B over-the-air upgrades of immutable Linux hosts from OCI images of SquashFS layers",
    long_about = "clb stages signed OCI images as SquashFS layer sets into the passive slot of \
                  COS_STATE, flips the boot pointer, and lets the initrd hook boot the new slot \
                  and fall back when it fails.\n\nWithout --state-dir or --disk, clb works on the \
                  host's own COS_STATE partition, found by its filesystem label.",
    after_long_help = exit_codes_help()
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
    /// Work standalone even when the clb daemon runs (by default clb asks the daemon to do
    /// upgrades, checks, rollbacks and marks on the state it serves, and shows its progress).
    #[arg(long, global = true)]
    pub no_daemon: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Pull, verify and stage an image into the passive slot; the next boot tries it.
    Upgrade(UpgradeArgs),
    /// Show the slots and the boot state.
    Status,
    /// Run the host agent on the system bus (clb.service): the D-Bus API dev.clb.Agent1,
    /// and update checks per /etc/clb/config.yaml.
    Daemon(DaemonArgs),
    /// Make the other slot active for the next boot.
    Rollback {
        /// Reboot into it right away (host only).
        #[arg(long)]
        reboot: bool,
    },
    /// Mark the booted slot good: refill its boot count (run after boot-complete.target).
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
    Umount {
        /// Mount point given to `clb mount`.
        dir: PathBuf,
    },
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
    /// Verify a Sigstore bundle for a file or a digest, offline, against a trusted root
    /// (the sigstore-conformance client protocol).
    VerifyBundle(VerifyBundleArgs),
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
    /// Check this boot's health: default target reached, no failed unit, health.d scripts.
    ///
    /// Run by clb-health-check.service before boot-complete.target, so only a healthy boot is
    /// marked good. On failure it does what `on_failure` in the config says: mark the slot bad
    /// and reboot into the fallback (default), only mark it bad, or nothing.
    HealthCheck {
        /// The configuration (YAML; a missing file means the defaults).
        #[arg(long, default_value = clb::health::CONFIG_FILE, value_name = "FILE")]
        config: PathBuf,
        /// Only report: never mark bad or reboot, whatever the config says.
        #[arg(long)]
        report_only: bool,
    },
    /// Read or change the kernel arguments GRUB passes on this machine (or on --disk).
    #[command(subcommand)]
    Bootloader(BootloaderCommand),
}

#[derive(Subcommand, Debug)]
pub enum BootloaderCommand {
    /// Show the kernel arguments, where they are stored and the whole command line GRUB builds.
    Show,
    /// Replace the kernel arguments ("" clears them).
    SetArgs {
        /// All the arguments as one string, e.g. "console=ttyS0,115200 quiet".
        args: String,
    },
    /// Add kernel arguments; one whose key is already there replaces it.
    AddArgs {
        /// Arguments to add, e.g. console=ttyS0,115200 quiet.
        #[arg(required = true)]
        args: Vec<String>,
    },
    /// Remove kernel arguments: KEY removes every KEY or KEY=..., KEY=VALUE only that one.
    RemoveArgs {
        /// Arguments (or bare keys) to remove.
        #[arg(required = true)]
        args: Vec<String>,
    },
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
    /// Attempts per registry request on 5xx, timeouts, stalls and dropped connections.
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
    /// cosign public key (PEM) to verify with; repeat for key rotation. Any one of them
    /// must have signed (a `.sig` signature or a cosign v3 bundle); replaces the policy.
    #[arg(long = "key", value_name = "FILE")]
    pub keys: Vec<PathBuf>,
    /// Trust policy (YAML) saying which signers each registry or repository needs
    /// [default: /etc/clb/policy.yaml]; `--key` replaces it. See docs/signatures.md.
    #[arg(long, value_name = "FILE")]
    pub policy: Option<PathBuf>,
    /// Skip signature verification (logged as a warning); overrides `--key` and `--policy`.
    #[arg(long)]
    pub no_verify: bool,
    /// Repository holding the signatures (cosign's COSIGN_REPOSITORY).
    #[arg(long, value_name = "REPO")]
    pub signature_repository: Option<String>,
    /// Boots in a row a slot gets without `mark-good` before it falls back (a new release's
    /// trial and a good slot's allowance alike). Default: the machine's setting, 3 on a new one.
    #[arg(long, value_name = "N")]
    pub max_tries: Option<u32>,
    /// Layers downloaded at once [default: 3] (converted at once: no more than CPUs). A
    /// value other than the default makes the CLI stage by itself, not through the daemon.
    #[arg(long, value_name = "N")]
    pub jobs: Option<usize>,
    /// SquashFS compressor for the tar layers this host converts [default: zstd]. The
    /// default was chosen by measurement (docs/performance.md, "Host codec"); a compressor
    /// or level other than the default makes the CLI stage by itself, not through the daemon.
    /// lz4 layers mount, but unsquashfs 4.5.1 cannot read them (docs/conversion.md).
    #[arg(long, value_enum)]
    pub compressor: Option<CompressorArg>,
    /// Compression level [default: 1 for zstd, the compressor's own default for the others;
    /// for lz4 any level above 0 selects its high-compression mode].
    #[arg(long, value_name = "N")]
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
    /// Only check: is the registry's digest for -d IMAGE (default: the image of the active
    /// slot) different from the active slot's? Exit 0 when an update is available, 14 when
    /// not. Reads only; stages nothing.
    #[arg(long, conflicts_with_all = ["reboot", "recovery"])]
    pub check: bool,
    /// Fetch and verify -d IMAGE into the store now, stage nothing: no slot and no boot
    /// pointer changes. `--apply` stages it later without the network.
    #[arg(long, conflicts_with_all = ["reboot", "recovery", "check"])]
    pub download_only: bool,
    /// Stage what `--download-only` fetched, with no network; fails clearly when nothing
    /// was downloaded or a layer is missing from the store.
    #[arg(long, conflicts_with_all = ["recovery", "check", "download_only"])]
    pub apply: bool,
}

#[derive(Args, Debug)]
pub struct DaemonArgs {
    /// Directory with config.yaml and config.d/.
    #[arg(long, default_value = "/etc/clb", value_name = "DIR")]
    pub config_dir: PathBuf,
    /// Serve the API only: no update checks of its own, whatever the strategy.
    #[arg(long)]
    pub no_updates: bool,
    /// For tests and simulations, with --state-dir only: report this slot as the one running
    /// (a state directory has no booted slot), as if the machine had booted it: `a`, `b`,
    /// `recovery`, or `active` for the slot the boot state names active when the daemon
    /// starts (a reboot into what was staged).
    #[arg(long, value_name = "SLOT", value_parser = parse_simulated_boot)]
    pub booted_slot: Option<clb::daemon::SimulatedBoot>,
}

fn parse_simulated_boot(s: &str) -> Result<clb::daemon::SimulatedBoot, String> {
    if s == "active" {
        return Ok(clb::daemon::SimulatedBoot::Active);
    }
    SlotName::parse(s)
        .map(clb::daemon::SimulatedBoot::Slot)
        .ok_or_else(|| format!("unknown slot {s:?} (a, b, recovery or active)"))
}

#[derive(Args, Debug)]
pub struct DeployArgs {
    #[command(flatten)]
    pub stage: StageArgs,
    #[command(flatten)]
    pub boot: BootloaderArgs,
    /// Size of COS_OEM in MiB.
    #[arg(long, default_value_t = 64)]
    pub oem_size: u64,
    /// Size of COS_RECOVERY in MiB (0: no recovery partition). It is filled with the
    /// recovery slot: --recovery-image, or the image deployed to slot a.
    #[arg(long, default_value_t = 4096)]
    pub recovery_size: u64,
    /// Image for the recovery slot on COS_RECOVERY (default: the -d IMAGE of slot a).
    #[arg(long, value_name = "IMAGE")]
    pub recovery_image: Option<String>,
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
    #[command(flatten)]
    pub boot: BootloaderArgs,
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
    /// Size of COS_STATE in MiB, laid out on first boot (COS_PERSISTENT takes the rest of
    /// the disk then, whatever its size).
    #[arg(long, default_value_t = 8192)]
    pub state_size: u64,
    /// User data (cloud-config) to bake into COS_OEM; a cidata config drive at first boot
    /// takes precedence.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct BootloaderArgs {
    /// Bootloader to install: GRUB for x86-64 EFI in an ESP labelled COS_GRUB, GRUB for BIOS
    /// (core in the gap before the first partition, config on COS_OEM), or none (boot the
    /// kernel some other way: direct kernel boot, PXE).
    #[arg(long, value_enum, default_value_t = Bootloader::Efi)]
    pub bootloader: Bootloader,
    /// Size of the ESP in MiB (with --bootloader efi).
    #[arg(long, default_value_t = 64)]
    pub esp_size: u64,
    /// Kernel arguments GRUB adds on this machine (e.g. "console=ttyS0"); change them later
    /// with `clb bootloader`. GRUB passes root=clb boot=clb itself, whatever the initrd.
    #[arg(long, default_value = "", value_name = "ARGS")]
    pub kernel_args: String,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bootloader {
    Efi,
    Bios,
    None,
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
    /// IP:PORT of the cloud metadata service `datasource:` steps ask, instead of
    /// 169.254.169.254:80 (for tests, or a cloud that relays the service elsewhere).
    #[arg(long, value_name = "IP:PORT", env = "CLB_METADATA_ENDPOINT")]
    pub metadata_endpoint: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum CloudConfigCommand {
    /// Check files: errors with file:line:column, unknown keys as warnings.
    Validate {
        /// Cloud-config files to check (yip stages or `#cloud-config` user data).
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
    /// `bundle`: a Sigstore bundle attached as an OCI referrer, as cosign v3 writes it; `sig`:
    /// cosign's legacy `sha256-<hex>.sig` tag, for verifiers that know only that.
    #[arg(long, value_enum, default_value_t = SignFormat::Bundle)]
    pub format: SignFormat,
    #[command(flatten)]
    pub registry: RegistryArgs,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignFormat {
    Bundle,
    Sig,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("signer").required(true).args(["key", "certificate_identity", "certificate_identity_regexp"])))]
pub struct VerifyBundleArgs {
    /// Use the embedded Sigstore staging trusted root instead of the production one.
    #[arg(long)]
    pub staging: bool,
    /// The Sigstore bundle (JSON, v0.1 to v0.3).
    #[arg(long, value_name = "FILE")]
    pub bundle: PathBuf,
    /// The signer's identity (certificate SAN), exactly.
    #[arg(long, value_name = "IDENTITY", requires = "issuer")]
    pub certificate_identity: Option<String>,
    /// The signer's identity as a regular expression (unanchored, as cosign matches).
    #[arg(
        long,
        value_name = "REGEX",
        conflicts_with = "certificate_identity",
        requires = "issuer"
    )]
    pub certificate_identity_regexp: Option<String>,
    /// The OIDC issuer of the signer's certificate, exactly.
    #[arg(long, value_name = "URL", group = "issuer")]
    pub certificate_oidc_issuer: Option<String>,
    /// The OIDC issuer as a regular expression.
    #[arg(
        long,
        value_name = "REGEX",
        group = "issuer",
        conflicts_with = "certificate_oidc_issuer"
    )]
    pub certificate_oidc_issuer_regexp: Option<String>,
    /// Verify with this PEM public key instead of a certificate identity.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["certificate_identity", "certificate_identity_regexp", "certificate_oidc_issuer", "certificate_oidc_issuer_regexp"])]
    pub key: Option<PathBuf>,
    /// Sigstore trusted root (trusted_root.json); default /etc/clb/trusted_root.json when it
    /// exists, else the production root embedded in clb.
    #[arg(long, value_name = "FILE")]
    pub trusted_root: Option<PathBuf>,
    /// The signed file, or its digest as sha256:<64 hex> (when that is not a file's path).
    #[arg(value_name = "FILE_OR_DIGEST")]
    pub file_or_digest: String,
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

/// The exit-code section of `clb --help`, from the same table as the man page and docs/cli.md.
pub fn exit_codes_help() -> String {
    let mut out = String::from("Exit codes:\n");
    for c in clb::error::exit::TABLE {
        out.push_str(&format!("  {:>2}  {}\n", c.code, c.meaning));
        // On a line of their own: clap wraps a long line at the indentation it starts with.
        // Backticks are markdown for docs/cli.md; a terminal shows them literally.
        if !c.examples.is_empty() {
            out.push_str(&format!("        {}\n", c.examples.replace('`', "")));
        }
    }
    out
}

pub(super) fn parse_slot(s: &str) -> Result<SlotName, String> {
    SlotName::parse(s).ok_or_else(|| format!("unknown slot {s:?} (a, b or recovery)"))
}
