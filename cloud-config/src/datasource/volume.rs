//! Datasources on volumes: a NoCloud `cidata` volume, an OpenStack config drive (`config-2`),
//! Azure's provisioning CD (`ovf-env.xml`), and a plain file. Volumes are found by label with
//! `blkid` and mounted read-only under `/run/clb/datasource/` for as long as they are read.

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine;

use super::openstack;
use super::{DatasourceError, Found, MAX_USER_DATA, Probe};

/// Where volumes are mounted while they are read.
const MOUNT_BASE: &str = "/run/clb/datasource";

/// NoCloud: `user-data` and `meta-data` (YAML: `local-hostname`, `public-keys`) on a volume
/// labelled `cidata` (or `CIDATA`, as vfat labels are often written).
pub(crate) fn nocloud() -> Result<Probe, DatasourceError> {
    const P: &str = "cdrom";
    let Some(device) = find_label(P, &["cidata", "CIDATA"])? else {
        return Ok(Probe::Absent("no volume labelled cidata".to_string()));
    };
    let mounted = Mounted::new(P, &device, "cidata")?;
    let user_data = read_optional(P, &mounted.dir.join("user-data"))?;
    let mut found = Found {
        user_data: user_data.filter(|d| !d.is_empty()),
        network: read_optional(P, &mounted.dir.join("network-config"))?
            .filter(|d| !d.is_empty())
            .map(|d| ("network-config", d)),
        ..Found::default()
    };
    if let Some(meta) = read_optional(P, &mounted.dir.join("meta-data"))? {
        let text = String::from_utf8_lossy(&meta);
        let meta: serde_json::Value = if text.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_saphyr::from_str(&text).map_err(|e| DatasourceError::Garbage {
                provider: P,
                problem: format!("meta-data is not YAML: {e}"),
            })?
        };
        found.hostname = meta
            .get("local-hostname")
            .and_then(|h| h.as_str())
            .map(str::to_string);
        found.ssh_keys = match meta.get("public-keys") {
            Some(serde_json::Value::String(k)) => vec![k.trim().to_string()],
            Some(serde_json::Value::Array(keys)) => keys
                .iter()
                .filter_map(|k| k.as_str())
                .map(|k| k.trim().to_string())
                .collect(),
            _ => Vec::new(),
        };
    }
    mounted.unmount()?;
    Ok(Probe::Found(found))
}

/// OpenStack's config drive: `openstack/latest/meta_data.json` and `user_data` on a volume
/// labelled `config-2`.
pub(crate) fn config_drive() -> Result<Probe, DatasourceError> {
    const P: &str = "config-drive";
    let Some(device) = find_label(P, &["config-2", "CONFIG-2"])? else {
        return Ok(Probe::Absent("no volume labelled config-2".to_string()));
    };
    let mounted = Mounted::new(P, &device, "config-2")?;
    let latest = mounted.dir.join("openstack/latest");
    let meta = read_optional(P, &latest.join("meta_data.json"))?.ok_or_else(|| {
        DatasourceError::Garbage {
            provider: P,
            problem: "no openstack/latest/meta_data.json".to_string(),
        }
    })?;
    let garbage = |problem: String| DatasourceError::Garbage {
        provider: P,
        problem,
    };
    let meta: serde_json::Value = serde_json::from_slice(&meta)
        .map_err(|e| garbage(format!("meta_data.json is not JSON: {e}")))?;
    let mut found = openstack::meta(&meta).map_err(garbage)?;
    found.user_data = read_optional(P, &latest.join("user_data"))?.filter(|d| !d.is_empty());
    found.network = read_optional(P, &latest.join("network_data.json"))?
        .filter(|d| !d.is_empty())
        .map(|d| ("network_data.json", d));
    mounted.unmount()?;
    Ok(Probe::Found(found))
}

/// Azure's `customData`: base64 in the `CustomData` element of `ovf-env.xml` on the
/// provisioning CD (an ISO 9660 or UDF volume). None when no such volume has it.
pub(crate) fn azure_custom_data() -> Result<Option<Vec<u8>>, DatasourceError> {
    const P: &str = "azure";
    let mut devices = devices_with(P, "TYPE=udf")?;
    devices.extend(devices_with(P, "TYPE=iso9660")?);
    for device in devices {
        let mounted = Mounted::new(P, &device, "provisioning")?;
        let ovf = read_optional(P, &mounted.dir.join("ovf-env.xml"))?;
        mounted.unmount()?;
        if let Some(ovf) = ovf {
            return custom_data(&String::from_utf8_lossy(&ovf));
        }
    }
    Ok(None)
}

/// The decoded `CustomData` of an `ovf-env.xml` (whatever its namespace prefix).
fn custom_data(ovf: &str) -> Result<Option<Vec<u8>>, DatasourceError> {
    let Some(start) = ovf.find("CustomData>") else {
        return Ok(None);
    };
    let rest = &ovf[start + "CustomData>".len()..];
    let end = rest.find('<').unwrap_or(rest.len());
    let text: String = rest[..end].split_whitespace().collect();
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map(Some)
        .map_err(|e| DatasourceError::Garbage {
            provider: "azure",
            problem: format!("ovf-env.xml CustomData is not base64: {e}"),
        })
}

/// yip's `file` provider: the user data is the file at `path` (inside the root).
pub(crate) fn file(path: Option<&Path>) -> Result<Probe, DatasourceError> {
    let Some(path) = path else {
        return Ok(Probe::Absent("no path given".to_string()));
    };
    match read_optional("file", path)? {
        Some(data) => Ok(Probe::Found(Found {
            user_data: Some(data),
            ..Found::default()
        })),
        None => Ok(Probe::Absent(format!("{} does not exist", path.display()))),
    }
}

/// The device of the first label found, None when no volume has any of them.
fn find_label(provider: &'static str, labels: &[&str]) -> Result<Option<String>, DatasourceError> {
    for label in labels {
        if let Some(device) = devices_with(provider, &format!("LABEL={label}"))?
            .into_iter()
            .next()
        {
            return Ok(Some(device));
        }
    }
    Ok(None)
}

/// The block devices whose volume has `tag` (`LABEL=cidata`, `TYPE=iso9660`). Every device of
/// `/sys/class/block` with a size is probed by name, without blkid's cache: a cached label can
/// name a device that now holds another volume, and blkid's own scan skips a disk that has
/// partitions (a loop device's stale partition entries hide its filesystem from it).
fn devices_with(provider: &'static str, tag: &str) -> Result<Vec<String>, DatasourceError> {
    let devices = block_devices().map_err(|source| DatasourceError::Io {
        provider,
        action: "list /sys/class/block".to_string(),
        source,
    })?;
    if devices.is_empty() {
        return Ok(Vec::new());
    }
    let out = clb_command::output(
        Command::new("blkid")
            .args(["-c", "/dev/null", "-o", "device", "-t", tag])
            .args(&devices),
    )
    .map_err(|source| DatasourceError::Command { provider, source })?;
    // blkid exits 2 when no device matches, and prints only the ones that do.
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// `/dev/<name>` of every block device with a non-zero size.
fn block_devices() -> std::io::Result<Vec<String>> {
    let mut devices = Vec::new();
    for entry in std::fs::read_dir("/sys/class/block")? {
        let entry = entry?;
        let size = std::fs::read_to_string(entry.path().join("size")).unwrap_or_default();
        if size.trim().parse::<u64>().unwrap_or(0) > 0 {
            // Names with `!` stand for a `/` in the device path (`cciss!c0d0`).
            let name = entry.file_name().to_string_lossy().replace('!', "/");
            devices.push(format!("/dev/{name}"));
        }
    }
    devices.sort();
    Ok(devices)
}

/// A file's bytes (at most [`MAX_USER_DATA`]), None when it does not exist.
fn read_optional(provider: &'static str, path: &Path) -> Result<Option<Vec<u8>>, DatasourceError> {
    use std::io::Read;
    let io = |action: &str| {
        let action = format!("{action} {}", path.display());
        move |source| DatasourceError::Io {
            provider,
            action,
            source,
        }
    };
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io("open")(e)),
    };
    let mut data = Vec::new();
    file.take(MAX_USER_DATA as u64 + 1)
        .read_to_end(&mut data)
        .map_err(io("read"))?;
    if data.len() > MAX_USER_DATA {
        return Err(DatasourceError::Garbage {
            provider,
            problem: format!("{} is larger than {MAX_USER_DATA} bytes", path.display()),
        });
    }
    Ok(Some(data))
}

/// A volume mounted read-only; unmounted by [`Mounted::unmount`], or on drop when reading
/// it failed.
struct Mounted {
    provider: &'static str,
    dir: PathBuf,
    mounted: bool,
}

impl Mounted {
    fn new(provider: &'static str, device: &str, name: &str) -> Result<Self, DatasourceError> {
        let dir = Path::new(MOUNT_BASE).join(name);
        std::fs::create_dir_all(&dir).map_err(|source| DatasourceError::Io {
            provider,
            action: format!("create {}", dir.display()),
            source,
        })?;
        clb_command::run(
            Command::new("mount")
                .args(["-o", "ro"])
                .arg(device)
                .arg(&dir),
        )
        .map_err(|source| DatasourceError::Command { provider, source })?;
        Ok(Mounted {
            provider,
            dir,
            mounted: true,
        })
    }

    fn unmount(mut self) -> Result<(), DatasourceError> {
        self.mounted = false;
        clb_command::run(Command::new("umount").arg(&self.dir)).map_err(|source| {
            DatasourceError::Command {
                provider: self.provider,
                source,
            }
        })?;
        Ok(())
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if self.mounted {
            // Reading failed and that error is being returned; a failed unmount is only logged.
            if let Err(e) = clb_command::run(Command::new("umount").arg(&self.dir)) {
                tracing::warn!("{}", clb_command::one_line(&e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn custom_data_is_read_from_any_namespace_prefix() {
        let ovf = "<ns1:ProvisioningSection><ns1:CustomData>\n aGVsbG8K\n</ns1:CustomData>";
        assert_eq!(custom_data(ovf).unwrap(), Some(b"hello\n".to_vec()));
        assert_eq!(custom_data("<Environment/>").unwrap(), None);
        assert!(matches!(
            custom_data("<CustomData>***</CustomData>"),
            Err(DatasourceError::Garbage { .. })
        ));
    }
}
