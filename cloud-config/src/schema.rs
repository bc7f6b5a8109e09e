//! The typed schema of yip stage files (see docs/cloud-config.md for every key).
//!
//! Every struct is `#[serde(default)]` and every field accepts `null` (yip users write
//! `commands:` with nothing under it), so only type mismatches are errors. Unknown keys are
//! ignored here; `keys.rs` reports them as warnings with their line.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

/// One yip file: a name and steps per stage.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Config {
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    #[serde(deserialize_with = "de::nullable")]
    pub stages: BTreeMap<String, Vec<Step>>,
}

/// One step of a stage. Its parts run in the fixed order documented in `exec::run_step`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Step {
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    /// Shell expression; the step runs when it exits 0.
    #[serde(rename = "if", deserialize_with = "de::string")]
    pub if_: String,
    /// Hostname regular expression.
    #[serde(deserialize_with = "de::string")]
    pub node: String,
    #[serde(deserialize_with = "de::string")]
    pub only_os: String,
    #[serde(deserialize_with = "de::string")]
    pub only_os_version: String,
    #[serde(deserialize_with = "de::string")]
    pub only_arch: String,
    /// `systemd` or `openrc`: the step runs only when the root has that service manager.
    #[serde(deserialize_with = "de::string")]
    pub only_service_manager: String,
    #[serde(deserialize_with = "de::nullable")]
    pub if_files: IfFiles,
    #[serde(deserialize_with = "de::nullable")]
    pub after: Vec<After>,
    #[serde(deserialize_with = "de::nullable")]
    pub dns: Dns,
    #[serde(deserialize_with = "de::nullable")]
    pub downloads: Vec<Download>,
    #[serde(deserialize_with = "de::nullable")]
    pub directories: Vec<Directory>,
    #[serde(deserialize_with = "de::nullable")]
    pub files: Vec<File>,
    #[serde(deserialize_with = "de::strings")]
    pub commands: Vec<String>,
    #[serde(deserialize_with = "de::string")]
    pub hostname: String,
    #[serde(deserialize_with = "de::string_map")]
    pub sysctl: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::nullable")]
    pub users: BTreeMap<String, User>,
    /// passwd/shadow/group/gshadow entries to create or update (yip's `entities`).
    #[serde(deserialize_with = "de::nullable")]
    pub ensure_entities: Vec<Entity>,
    /// Entries to remove, matched by their whole line.
    #[serde(deserialize_with = "de::nullable")]
    pub delete_entities: Vec<Entity>,
    #[serde(deserialize_with = "de::nullable")]
    pub authorized_keys: BTreeMap<String, Vec<String>>,
    #[serde(deserialize_with = "de::strings")]
    pub modules: Vec<String>,
    #[serde(deserialize_with = "de::nullable")]
    pub systemctl: Systemctl,
    #[serde(deserialize_with = "de::string_map")]
    pub environment: BTreeMap<String, String>,
    /// Where `environment` is written instead of `/etc/environment`.
    #[serde(deserialize_with = "de::string")]
    pub environment_file: String,
    #[serde(deserialize_with = "de::string_map")]
    pub timesyncd: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::nullable")]
    pub datasource: Datasource,
    #[serde(deserialize_with = "de::nullable")]
    pub layout: Layout,
    /// `systemd-firstboot --KEY=VALUE` for each entry (`--KEY` for `"true"`).
    #[serde(deserialize_with = "de::string_map")]
    pub systemd_firstboot: BTreeMap<String, String>,
    #[serde(deserialize_with = "de::nullable")]
    pub packages: Packages,
    #[serde(deserialize_with = "de::nullable")]
    pub unpack_images: Vec<UnpackImage>,
    #[serde(deserialize_with = "de::nullable")]
    pub git: Git,
}

/// One `ensure_entities`/`delete_entities` item: an entity (a YAML document with a `kind`:
/// `user`, `shadow`, `group` or `gshadow`) and the file it goes to (default by kind).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Entity {
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    #[serde(deserialize_with = "de::string")]
    pub entity: String,
}

/// Packages through the root's package manager (apt-get, dnf, zypper, apk, pacman).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Packages {
    #[serde(deserialize_with = "de::strings")]
    pub install: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub remove: Vec<String>,
    pub refresh: bool,
    pub upgrade: bool,
}

impl Packages {
    pub fn is_empty(&self) -> bool {
        self.install.is_empty() && self.remove.is_empty() && !self.refresh && !self.upgrade
    }
}

/// yip's `unpack_images` item (not supported by clb: see docs/cloud-config.md).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct UnpackImage {
    #[serde(deserialize_with = "de::string")]
    pub source: String,
    #[serde(deserialize_with = "de::string")]
    pub target: String,
    #[serde(deserialize_with = "de::string")]
    pub platform: String,
}

/// A git repository checked out at `path` (cloned, or fetched and reset when it exists).
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Git {
    #[serde(deserialize_with = "de::string")]
    pub url: String,
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    #[serde(deserialize_with = "de::string")]
    pub branch: String,
    pub branch_only: bool,
    #[serde(deserialize_with = "de::nullable")]
    pub auth: GitAuth,
}

impl Git {
    pub fn is_empty(&self) -> bool {
        self.url.is_empty()
    }
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct GitAuth {
    #[serde(deserialize_with = "de::string")]
    pub username: String,
    #[serde(deserialize_with = "de::string")]
    pub password: String,
    /// An SSH private key (PEM text).
    #[serde(deserialize_with = "de::string")]
    pub private_key: String,
    /// Skip TLS certificate checks (and SSH host key checks).
    pub insecure: bool,
    #[serde(deserialize_with = "de::string")]
    pub public_key: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct IfFiles {
    #[serde(deserialize_with = "de::strings")]
    pub any: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub all: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub none: Vec<String>,
}

impl IfFiles {
    pub fn is_empty(&self) -> bool {
        self.any.is_empty() && self.all.is_empty() && self.none.is_empty()
    }
}

/// `after: [{name: other-step}]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct After {
    #[serde(deserialize_with = "de::string")]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Dns {
    #[serde(deserialize_with = "de::strings")]
    pub nameservers: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub search: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub options: Vec<String>,
    /// Default `/etc/resolv.conf`.
    #[serde(deserialize_with = "de::string")]
    pub path: String,
}

impl Dns {
    pub fn is_empty(&self) -> bool {
        self.nameservers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }
}

/// Ownership and mode shared by files, directories and downloads.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Attrs {
    pub permissions: Option<u32>,
    pub owner: Option<String>,
    pub group: Option<String>,
    pub owner_string: Option<String>,
}

macro_rules! impl_attrs {
    ($($t:ty),*) => {$(
        impl $t {
            pub fn attrs(&self) -> Attrs {
                Attrs {
                    permissions: self.permissions,
                    owner: self.owner.clone(),
                    group: self.group.clone(),
                    owner_string: self.owner_string.clone(),
                }
            }
        }
    )*};
}
impl_attrs!(Directory, File, Download);

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Directory {
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    /// Octal like yip/Go YAML: `0644` and `0o644` are octal, `420` is decimal.
    #[serde(deserialize_with = "de::mode")]
    pub permissions: Option<u32>,
    /// User name or numeric id, resolved against the root's `/etc/passwd`.
    #[serde(deserialize_with = "de::opt_string")]
    pub owner: Option<String>,
    /// Group name or numeric id, resolved against the root's `/etc/group`.
    #[serde(deserialize_with = "de::opt_string")]
    pub group: Option<String>,
    /// yip's `ownerstring: "user:group"` (names), used when `owner`/`group` are unset. The
    /// documented spelling `owner_string` is read too (Go yip ignores it: see the docs).
    #[serde(alias = "ownerstring", deserialize_with = "de::opt_string")]
    pub owner_string: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct File {
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    #[serde(deserialize_with = "de::string")]
    pub content: String,
    /// `b64`/`base64`, `gz`/`gzip`, `gz+b64`/`gzip+base64`, or empty for plain text.
    #[serde(deserialize_with = "de::string")]
    pub encoding: String,
    /// Octal like yip/Go YAML: `0644` and `0o644` are octal, `420` is decimal.
    #[serde(deserialize_with = "de::mode")]
    pub permissions: Option<u32>,
    /// User name or numeric id, resolved against the root's `/etc/passwd`.
    #[serde(deserialize_with = "de::opt_string")]
    pub owner: Option<String>,
    /// Group name or numeric id, resolved against the root's `/etc/group`.
    #[serde(deserialize_with = "de::opt_string")]
    pub group: Option<String>,
    /// yip's `ownerstring: "user:group"` (names), used when `owner`/`group` are unset. The
    /// documented spelling `owner_string` is read too (Go yip ignores it: see the docs).
    #[serde(alias = "ownerstring", deserialize_with = "de::opt_string")]
    pub owner_string: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Download {
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    #[serde(deserialize_with = "de::string")]
    pub url: String,
    /// Seconds; 0 = 60.
    pub timeout: u64,
    /// Octal like yip/Go YAML: `0644` and `0o644` are octal, `420` is decimal.
    #[serde(deserialize_with = "de::mode")]
    pub permissions: Option<u32>,
    /// User name or numeric id, resolved against the root's `/etc/passwd`.
    #[serde(deserialize_with = "de::opt_string")]
    pub owner: Option<String>,
    /// Group name or numeric id, resolved against the root's `/etc/group`.
    #[serde(deserialize_with = "de::opt_string")]
    pub group: Option<String>,
    /// yip's `ownerstring: "user:group"` (names), used when `owner`/`group` are unset. The
    /// documented spelling `owner_string` is read too (Go yip ignores it: see the docs).
    #[serde(alias = "ownerstring", deserialize_with = "de::opt_string")]
    pub owner_string: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct User {
    /// Crypt hash (`$6$…`, `$y$…`, …) written as is, or plaintext hashed with SHA-512 crypt.
    #[serde(deserialize_with = "de::string")]
    pub passwd: String,
    pub lock_passwd: bool,
    #[serde(deserialize_with = "de::strings")]
    pub ssh_authorized_keys: Vec<String>,
    /// Supplementary groups (list, or a comma-separated string like cloud-init).
    #[serde(deserialize_with = "de::groups")]
    pub groups: Vec<String>,
    #[serde(deserialize_with = "de::string")]
    pub primary_group: String,
    #[serde(deserialize_with = "de::string")]
    pub shell: String,
    #[serde(deserialize_with = "de::string")]
    pub homedir: String,
    #[serde(deserialize_with = "de::opt_u32")]
    pub uid: Option<u32>,
    #[serde(deserialize_with = "de::string")]
    pub gecos: String,
    pub no_create_home: bool,
    /// System account: ids allocated below 1000.
    pub system: bool,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Systemctl {
    #[serde(deserialize_with = "de::strings")]
    pub enable: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub disable: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub start: Vec<String>,
    #[serde(deserialize_with = "de::strings")]
    pub mask: Vec<String>,
    #[serde(deserialize_with = "de::nullable")]
    pub overrides: Vec<Override>,
}

impl Systemctl {
    pub fn is_empty(&self) -> bool {
        self.enable.is_empty()
            && self.disable.is_empty()
            && self.start.is_empty()
            && self.mask.is_empty()
            && self.overrides.is_empty()
    }
}

/// A drop-in `/etc/systemd/system/<service>.d/<name>`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Override {
    #[serde(deserialize_with = "de::string")]
    pub service: String,
    /// File name of the drop-in; default `override-clb.conf`.
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    #[serde(deserialize_with = "de::string")]
    pub content: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Datasource {
    #[serde(deserialize_with = "de::strings")]
    pub providers: Vec<String>,
    /// Where the user data is written (default `/run/config`); for the `file` provider, the
    /// file to read.
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    /// The name of the user data file when it is a cloud-config (default `userdata.yaml`).
    #[serde(deserialize_with = "de::string")]
    pub userdata_name: String,
}

impl Datasource {
    pub fn is_empty(&self) -> bool {
        self.providers.is_empty() && self.path.is_empty()
    }
}

/// A disk layout (the `layout:` key): the disk, the partition to grow, the partitions to add.
/// See [`crate::apply_layout`].
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Layout {
    #[serde(deserialize_with = "de::nullable")]
    pub device: Option<Device>,
    #[serde(deserialize_with = "de::nullable")]
    pub expand_partition: Option<Expand>,
    #[serde(deserialize_with = "de::nullable")]
    pub add_partitions: Vec<Partition>,
}

impl Layout {
    /// `partitions` added to the disk at `device` (a whole disk, a partition node meaning its
    /// disk, or an image file).
    pub fn on_device(device: &std::path::Path, partitions: Vec<Partition>) -> Layout {
        Layout {
            device: Some(Device {
                path: device.display().to_string(),
                ..Device::default()
            }),
            expand_partition: None,
            add_partitions: partitions,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.device.is_none() && self.expand_partition.is_none() && self.add_partitions.is_empty()
    }
}

/// The disk: the one holding the filesystem labelled `label`, or the device at `path`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Device {
    #[serde(deserialize_with = "de::string")]
    pub label: String,
    /// A device path, or `script://COMMAND ARGS`: the command's trimmed output is the path.
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    /// Write a new, empty GPT on the disk at `path` first (when it has no partition table).
    pub init_disk: bool,
    /// With `init_disk`: the name the disk GUID is derived from (default `YIP_DISK`).
    #[serde(deserialize_with = "de::string")]
    pub disk_name: String,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Expand {
    /// New size of the last partition in MiB; 0 = all the free space.
    pub size: u64,
}

/// A partition of `add_partitions`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default)]
pub struct Partition {
    /// Filesystem label; how the partition is found again on a re-run.
    #[serde(rename = "fsLabel", deserialize_with = "de::string")]
    pub fs_label: String,
    /// MiB; 0 = the rest of the disk.
    pub size: u64,
    /// GPT partition name; empty: the `fs_label`.
    #[serde(rename = "pLabel", deserialize_with = "de::string")]
    pub p_label: String,
    pub filesystem: Filesystem,
}

impl Partition {
    /// `size_mib` 0 takes the rest of the disk (last partition only).
    pub fn new(fs_label: &str, p_label: &str, size_mib: u64, filesystem: Filesystem) -> Self {
        Partition {
            fs_label: fs_label.to_string(),
            size: size_mib,
            p_label: p_label.to_string(),
            filesystem,
        }
    }
}

/// A filesystem `layout` makes. In config files yip's spellings are accepted too, in any case:
/// `fat`/`fat32` for vfat, `none` for noformat; empty or null means ext4.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Filesystem {
    #[default]
    Ext4,
    Ext3,
    Ext2,
    Xfs,
    Vfat,
    Swap,
    Btrfs,
    /// The partition is created but not formatted.
    NoFormat,
}

impl Filesystem {
    /// The name clb uses, as blkid reports the filesystem.
    pub fn name(self) -> &'static str {
        match self {
            Filesystem::Ext4 => "ext4",
            Filesystem::Ext3 => "ext3",
            Filesystem::Ext2 => "ext2",
            Filesystem::Xfs => "xfs",
            Filesystem::Vfat => "vfat",
            Filesystem::Swap => "swap",
            Filesystem::Btrfs => "btrfs",
            Filesystem::NoFormat => "noformat",
        }
    }

    /// The filesystem a config file names, with yip's spellings; None when unknown.
    pub fn from_name(name: &str) -> Option<Filesystem> {
        Some(match name.to_ascii_lowercase().as_str() {
            "" | "ext4" => Filesystem::Ext4,
            "ext3" => Filesystem::Ext3,
            "ext2" => Filesystem::Ext2,
            "xfs" => Filesystem::Xfs,
            "vfat" | "fat" | "fat32" => Filesystem::Vfat,
            "swap" => Filesystem::Swap,
            "btrfs" => Filesystem::Btrfs,
            "noformat" | "none" => Filesystem::NoFormat,
            _ => return None,
        })
    }

    /// The longest filesystem label `mkfs` accepts, in bytes.
    pub fn label_limit(self) -> usize {
        match self {
            Filesystem::Xfs => 12,
            Filesystem::Vfat => 11,
            Filesystem::Btrfs => 255,
            _ => 16,
        }
    }
}

impl std::fmt::Display for Filesystem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Filesystem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = de::string(d)?;
        Filesystem::from_name(&name).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown filesystem {name:?}: ext4, ext3, ext2, xfs, vfat, swap, btrfs or noformat"
            ))
        })
    }
}

/// A `#cloud-config` file: the cloud-init keys clb understands, plus yip's `name`/`stages`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct CloudInit {
    #[serde(deserialize_with = "de::string")]
    pub name: String,
    #[serde(deserialize_with = "de::nullable")]
    pub stages: BTreeMap<String, Vec<Step>>,
    #[serde(deserialize_with = "de::strings")]
    pub runcmd: Vec<String>,
    #[serde(deserialize_with = "de::nullable")]
    pub write_files: Vec<WriteFile>,
    #[serde(deserialize_with = "de::nullable")]
    pub users: Vec<CloudUser>,
    #[serde(deserialize_with = "de::strings")]
    pub ssh_authorized_keys: Vec<String>,
    #[serde(deserialize_with = "de::string")]
    pub hostname: String,
    #[serde(deserialize_with = "de::nullable")]
    pub growpart: Option<GrowPart>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct WriteFile {
    #[serde(deserialize_with = "de::string")]
    pub path: String,
    #[serde(deserialize_with = "de::string")]
    pub content: String,
    #[serde(deserialize_with = "de::string")]
    pub encoding: String,
    #[serde(deserialize_with = "de::mode")]
    pub permissions: Option<u32>,
    /// `user:group` or `user`.
    #[serde(deserialize_with = "de::string")]
    pub owner: String,
}

/// A cloud-init `users:` entry; the literal string `default` is accepted and ignored.
#[derive(Debug, Clone, Default)]
pub(crate) struct CloudUser {
    pub name: String,
    pub user: User,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
struct CloudUserFields {
    #[serde(deserialize_with = "de::string")]
    name: String,
    #[serde(flatten)]
    user: User,
    /// cloud-init's name for `passwd` when plaintext.
    #[serde(deserialize_with = "de::string")]
    plain_text_passwd: String,
    #[serde(deserialize_with = "de::string")]
    hashed_passwd: String,
}

impl<'de> Deserialize<'de> for CloudUser {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = CloudUser;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a user mapping or \"default\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<CloudUser, E> {
                if v == "default" {
                    Ok(CloudUser::default())
                } else {
                    Err(E::custom(format!(
                        "user entry must be a mapping or \"default\", not {v:?}"
                    )))
                }
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, a: A) -> Result<CloudUser, A::Error> {
                let f =
                    CloudUserFields::deserialize(serde::de::value::MapAccessDeserializer::new(a))?;
                let mut user = f.user;
                if user.passwd.is_empty() {
                    user.passwd = if f.hashed_passwd.is_empty() {
                        f.plain_text_passwd
                    } else {
                        f.hashed_passwd
                    };
                }
                Ok(CloudUser { name: f.name, user })
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub(crate) struct GrowPart {
    #[serde(deserialize_with = "de::string")]
    pub mode: String,
    #[serde(deserialize_with = "de::strings")]
    pub devices: Vec<String>,
}

/// Field deserializers: nulls become defaults, scalars become their source text.
pub(crate) mod de {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer};

    /// A scalar read as its text: YAML `1`, `true`, `0644` all stay as written. serde-saphyr
    /// hands plain scalars to `deserialize_string` verbatim, so `0644` keeps its leading zero.
    struct Scalar(String);

    impl<'de> Deserialize<'de> for Scalar {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl serde::de::Visitor<'_> for V {
                type Value = Scalar;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a scalar")
                }
                fn visit_str<E>(self, v: &str) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_string<E>(self, v: String) -> Result<Scalar, E> {
                    Ok(Scalar(v))
                }
                fn visit_bool<E>(self, v: bool) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_i64<E>(self, v: i64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_u64<E>(self, v: u64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
                fn visit_f64<E>(self, v: f64) -> Result<Scalar, E> {
                    Ok(Scalar(v.to_string()))
                }
            }
            d.deserialize_string(V)
        }
    }

    pub fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
    where
        D: Deserializer<'de>,
        T: Deserialize<'de> + Default,
    {
        Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
    }

    pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
        Ok(Option::<Scalar>::deserialize(d)?
            .map(|s| s.0)
            .unwrap_or_default())
    }

    pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
        Ok(Option::<Scalar>::deserialize(d)?
            .map(|s| s.0)
            .filter(|s| !s.is_empty()))
    }

    pub fn strings<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        Ok(Option::<Vec<Option<Scalar>>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .map(|s| s.0)
            .collect())
    }

    pub fn string_map<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, String>, D::Error> {
        Ok(Option::<BTreeMap<String, Option<Scalar>>>::deserialize(d)?
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.map(|s| s.0).unwrap_or_default()))
            .collect())
    }

    /// Groups as a list or a comma-separated string.
    pub fn groups<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<String>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a list of groups or a comma-separated string")
            }
            fn visit_str<E>(self, v: &str) -> Result<Vec<String>, E> {
                Ok(v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect())
            }
            fn visit_unit<E>(self) -> Result<Vec<String>, E> {
                Ok(Vec::new())
            }
            fn visit_none<E>(self) -> Result<Vec<String>, E> {
                Ok(Vec::new())
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<String>, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = a.next_element::<Scalar>()? {
                    out.push(s.0);
                }
                Ok(out)
            }
        }
        d.deserialize_any(V)
    }

    pub fn opt_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        use serde::de::Error;
        match Option::<Scalar>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.0.is_empty() => Ok(None),
            Some(s) => {
                s.0.parse()
                    .map(Some)
                    .map_err(|_| D::Error::custom(format!("expected a number, found {:?}", s.0)))
            }
        }
    }

    /// File modes the way yip (Go YAML 1.1) reads them: a leading `0` or `0o` means octal,
    /// anything else is decimal (`420` = `0644`).
    pub fn mode<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
        use serde::de::Error;
        let Some(s) = Option::<Scalar>::deserialize(d)? else {
            return Ok(None);
        };
        let text = s.0.trim().to_string();
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = if let Some(oct) = text.strip_prefix("0o").or_else(|| text.strip_prefix("0O"))
        {
            u32::from_str_radix(oct, 8)
        } else if text.len() > 1 && text.starts_with('0') {
            u32::from_str_radix(&text[1..], 8)
        } else {
            text.parse::<u32>()
        };
        match parsed {
            Ok(m) if m <= 0o7777 => Ok(Some(m)),
            _ => Err(D::Error::custom(format!(
                "invalid permissions {text:?}: expected an octal mode like 0644"
            ))),
        }
    }
}
