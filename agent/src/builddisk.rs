//! `clb build-disk`: a self-deploying image for cloud VMs. It holds `COS_OEM` (with a
//! first-boot cloud-config) and `COS_RECOVERY` (the recovery slot, installed through the
//! verified staging path). On first boot in recovery mode the cloud-config copies the user
//! data from a config drive or the cloud's metadata service into `/oem`, lays out `COS_STATE` and `COS_PERSISTENT` in the free
//! space and installs slot `a` from the recovery slot (`clb deploy --from-recovery`).

use std::path::Path;

use crate::error::{ClbError, Result};

/// The first-boot configuration written to `COS_OEM/90_clb_first_boot.yaml`; `STATE_MIB` is
/// replaced with the size of COS_STATE to create (COS_PERSISTENT takes the rest). The user data
/// of a config drive or the cloud wins over the one baked in with `--user-data`; on a machine
/// with neither a drive nor a metadata service, the datasource step fails (logged) and the
/// baked one is used.
const FIRST_BOOT_YAML: &str = r#"name: clb first boot
stages:
  boot:
    - name: user data from a config drive or the cloud's metadata service
      if: '[ -f /run/clb/recovery_mode ] && [ ! -f /oem/99_userdata.yaml ]'
      datasource:
        providers: [cdrom, config-drive, aws, gcp, azure, openstack, hetzner, digitalocean]
        path: /oem
        userdata_name: 99_userdata.yaml
    - name: user data baked into the image
      if: '[ -f /run/clb/recovery_mode ] && [ ! -f /oem/99_userdata.yaml ] && [ -f /oem/user-data ]'
      commands:
        - cp /oem/user-data /oem/99_userdata.yaml
    - name: deploy from recovery on first boot
      if: '[ -f /run/clb/recovery_mode ] && ! blkid -L COS_STATE >/dev/null 2>&1'
      commands:
        - clb deploy --from-recovery --state-size STATE_MIB
"#;

/// The first-boot configuration for a COS_STATE of `state_mib` MiB.
pub fn first_boot_yaml(state_mib: u64) -> String {
    FIRST_BOOT_YAML.replace("STATE_MIB", &state_mib.to_string())
}

/// Writes the first-boot configuration (and optional user data) into a mounted COS_OEM.
pub fn write_oem(oem: &Path, user_data: Option<&Path>, state_mib: u64) -> Result<()> {
    clb_ondisk::atomic::write_atomic(
        &oem.join("90_clb_first_boot.yaml"),
        first_boot_yaml(state_mib).as_bytes(),
    )
    .map_err(ClbError::io("writing the first-boot config"))?;
    if let Some(u) = user_data {
        let bytes = std::fs::read(u).map_err(ClbError::io(format!("reading {}", u.display())))?;
        clb_ondisk::atomic::write_atomic(&oem.join("user-data"), &bytes)
            .map_err(ClbError::io("writing user data"))?;
    }
    Ok(())
}

/// Creates the sparse image file (refusing to overwrite an existing one).
pub fn create_image(path: &Path, size_bytes: u64) -> Result<()> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(ClbError::io(format!("creating {}", path.display())))?;
    f.set_len(size_bytes)
        .map_err(ClbError::io(format!("sizing {}", path.display())))
}

/// `8G`, `512M`, `1024` (MiB) → bytes.
pub fn parse_size(text: &str) -> Result<u64> {
    let t = text.trim();
    let (num, mult) = match t.chars().last() {
        Some('G' | 'g') => (&t[..t.len() - 1], 1u64 << 30),
        Some('M' | 'm') => (&t[..t.len() - 1], 1 << 20),
        Some('T' | 't') => (&t[..t.len() - 1], 1 << 40),
        _ => (t, 1 << 20),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| ClbError::Invalid(format!("size {text:?}: expected e.g. 8G, 512M")))
}

/// Converts the raw image to qcow2 with `qemu-img`.
pub fn to_qcow2(raw: &Path, out: &Path) -> Result<()> {
    clb_command::run(
        std::process::Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(raw)
            .arg(out),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("8G").unwrap(), 8 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("100").unwrap(), 100 << 20);
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn first_boot_config_is_valid_cloud_config() {
        let yaml = first_boot_yaml(512);
        assert!(yaml.contains("clb deploy --from-recovery --state-size 512"));
        let parsed = clb_cloud_config::parse_str("first-boot", &yaml).unwrap();
        assert!(parsed.warnings.is_empty(), "{:?}", parsed.warnings);
    }
}
