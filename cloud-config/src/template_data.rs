//! The data yip renders templates against, for the target root.
//!
//! - Commands, `if`, file contents, entities and environment values see `.Values`: system
//!   information shaped like the JSON of github.com/zcalusic/sysinfo, which yip uses
//!   (`node`, `os`, `kernel`, `product`, `board`, `chassis`, `bios`, `cpu`, `memory`; empty
//!   fields left out, as its `omitempty` tags do).
//! - Hostnames see `.UUID` (a new v4 UUID), `.Random` (32 characters of `[0-9a-z]`),
//!   `.MachineID` (the root's machine id) and `.ProtectedID` (HMAC-SHA256 of "yip" keyed with
//!   the machine id, hex, as github.com/denisbrodbeck/machineid computes it for yip).

use std::io::Read;
use std::path::Path;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// Trimmed content of a file, empty when it cannot be read.
fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// An object of the non-empty `fields`.
fn object(fields: &[(&str, String)]) -> Value {
    let map: Map<String, Value> = fields
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.to_string(), Value::String(v.clone())))
        .collect();
    Value::Object(map)
}

/// The root's machine id (`/etc/machine-id`, else `/var/lib/dbus/machine-id`).
pub(crate) fn machine_id(root: &Path) -> String {
    let id = read(root.join("etc/machine-id"));
    if id.is_empty() {
        read(root.join("var/lib/dbus/machine-id"))
    } else {
        id
    }
}

/// The first value of `key` in /proc/cpuinfo.
fn cpuinfo(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

fn go_arch(machine: &str) -> &str {
    match machine {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "i686" | "i386" => "386",
        other => other,
    }
}

/// `{"Values": <system information>}` for the root.
pub(crate) fn values(root: &Path) -> Value {
    let os = crate::target::read_os_release(root);
    let get = |k: &str| {
        os.iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let machine = std::env::consts::ARCH.to_string();
    let dmi = |f: &str| read(format!("/sys/class/dmi/id/{f}"));
    let cpu = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let threads = cpu.lines().filter(|l| l.starts_with("processor")).count();
    let mem_kib: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let timezone = std::fs::read_link(root.join("etc/localtime"))
        .ok()
        .and_then(|p| {
            let p = p.to_string_lossy().into_owned();
            p.split_once("zoneinfo/").map(|(_, z)| z.to_string())
        })
        .unwrap_or_else(|| read(root.join("etc/timezone")));
    let hostname = crate::target::current_hostname(root);
    let mut cpu_obj = object(&[
        ("vendor", cpuinfo(&cpu, "vendor_id")),
        ("model", cpuinfo(&cpu, "model name")),
    ]);
    if threads > 0
        && let Value::Object(m) = &mut cpu_obj
    {
        m.insert("threads".into(), json!(threads));
    }
    let mut memory = Map::new();
    if mem_kib > 0 {
        memory.insert("size".into(), json!(mem_kib / 1024));
    }
    json!({
        "Values": {
            "sysinfo": {"version": "clb"},
            "node": object(&[
                ("hostname", hostname),
                ("machineid", machine_id(root)),
                ("timezone", timezone),
            ]),
            "os": object(&[
                ("name", get("PRETTY_NAME")),
                ("vendor", get("ID")),
                ("version", get("VERSION_ID")),
                ("release", get("VERSION")),
                ("architecture", go_arch(&machine).to_string()),
            ]),
            "kernel": object(&[
                ("release", read("/proc/sys/kernel/osrelease")),
                ("version", read("/proc/sys/kernel/version")),
                ("architecture", machine.clone()),
            ]),
            "product": object(&[
                ("name", dmi("product_name")),
                ("vendor", dmi("sys_vendor")),
                ("version", dmi("product_version")),
                ("serial", dmi("product_serial")),
                ("uuid", dmi("product_uuid")),
                ("sku", dmi("product_sku")),
            ]),
            "board": object(&[
                ("name", dmi("board_name")),
                ("vendor", dmi("board_vendor")),
                ("version", dmi("board_version")),
                ("serial", dmi("board_serial")),
                ("assettag", dmi("board_asset_tag")),
            ]),
            "chassis": object(&[
                ("vendor", dmi("chassis_vendor")),
                ("version", dmi("chassis_version")),
                ("serial", dmi("chassis_serial")),
                ("assettag", dmi("chassis_asset_tag")),
            ]),
            "bios": object(&[
                ("vendor", dmi("bios_vendor")),
                ("version", dmi("bios_version")),
                ("date", dmi("bios_date")),
            ]),
            "cpu": cpu_obj,
            "memory": Value::Object(memory),
        }
    })
}

/// `n` random bytes from the kernel (zeros if it cannot be read: the values are names, not
/// secrets).
fn random_bytes(n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    if let Ok(mut f) = std::fs::File::open("/dev/urandom") {
        let _ = f.read_exact(&mut buf);
    }
    buf
}

/// HMAC-SHA256 (RFC 2104) of `message` with `key`.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    const BLOCK: usize = 64;
    let mut k = [0u8; BLOCK];
    if key.len() > BLOCK {
        k[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        k[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| k.iter().map(|b| b ^ byte).collect::<Vec<u8>>();
    let inner = Sha256::new()
        .chain_update(pad(0x36))
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c))
        .chain_update(inner)
        .finalize()
        .into()
}

/// `{UUID, Random, MachineID, ProtectedID}` for rendering a hostname.
pub(crate) fn hostname_data(root: &Path) -> Value {
    const LETTERS: &[u8] = b"1234567890abcdefghijklmnopqrstuvwxyz";
    let random: String = random_bytes(32)
        .iter()
        .map(|b| char::from(LETTERS[usize::from(*b) % LETTERS.len()]))
        .collect();
    let id = machine_id(root);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&random_bytes(16));
    let uuid = uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string();
    json!({
        "UUID": uuid,
        "Random": random,
        "MachineID": id,
        "ProtectedID": hex::encode(hmac_sha256(id.as_bytes(), b"yip")),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 4231 test case 2.
    #[test]
    fn hmac_matches_rfc_4231() {
        assert_eq!(
            hex::encode(hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn the_data_reads_the_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/machine-id"), "0123456789abcdef\n").unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "ID=testos\nPRETTY_NAME=\"Test OS 1\"\nVERSION_ID=\"1\"\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "node-1\n").unwrap();
        let v = values(dir.path());
        assert_eq!(v["Values"]["node"]["hostname"], "node-1");
        assert_eq!(v["Values"]["node"]["machineid"], "0123456789abcdef");
        assert_eq!(v["Values"]["os"]["vendor"], "testos");
        assert_eq!(v["Values"]["os"]["name"], "Test OS 1");
        let h = hostname_data(dir.path());
        assert_eq!(h["MachineID"], "0123456789abcdef");
        assert_eq!(h["Random"].as_str().unwrap().len(), 32);
        assert_eq!(h["UUID"].as_str().unwrap().len(), 36);
        assert_eq!(
            h["ProtectedID"],
            hex::encode(hmac_sha256(b"0123456789abcdef", b"yip"))
        );
    }
}
