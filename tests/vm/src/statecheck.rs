//! An independent reader of a mounted `COS_STATE`: the boot state in `grubenv` and the slots
//! it names, checked without clb's code (JSON and sha256 only). The power-loss tests use it
//! on every state they produce.

use std::path::Path;

use clb_testsupport::sha256_digest;
use serde_json::Value;

/// The boot state and the slots it names, read without clb.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    pub active: String,
    pub active_image: String,
    pub fallback: Option<(String, String)>,
    pub good: bool,
    pub tries: u32,
}

fn sha256_file(p: &Path) -> Result<String, String> {
    let data = std::fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
    Ok(sha256_digest(&data))
}

/// The slot `slot` on the mounted state `root` is complete: its manifest parses, every layer
/// it lists is in `layers/` with the recorded size and sha256, its boot files match.
/// Returns the image it holds.
pub fn check_slot(root: &Path, slot: &str) -> Result<String, String> {
    let path = root.join(format!("slots/{slot}.json"));
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}: {text:?}", path.display()))?;
    if m["slot"] != slot {
        return Err(format!("{} says slot {}", path.display(), m["slot"]));
    }
    let layers = m["layers"]
        .as_array()
        .ok_or_else(|| format!("{}: no layers", path.display()))?;
    if layers.is_empty() {
        return Err(format!("{}: empty layer list", path.display()));
    }
    for l in layers {
        let digest = l["digest"].as_str().unwrap_or_default();
        let hex = digest
            .strip_prefix("sha256:")
            .ok_or_else(|| format!("slot {slot}: layer digest {digest:?}"))?;
        let file = root.join(format!("layers/sha256-{hex}.squashfs"));
        let len = std::fs::metadata(&file)
            .map_err(|e| format!("slot {slot}: layer {}: {e}", file.display()))?
            .len();
        if Some(len) != l["size"].as_u64() {
            return Err(format!(
                "slot {slot}: {} is {len} bytes, manifest says {}",
                file.display(),
                l["size"]
            ));
        }
        let got = sha256_file(&file)?;
        if got != digest {
            return Err(format!("slot {slot}: {} hashes to {got}", file.display()));
        }
    }
    let boot = &m["boot"];
    if !boot.is_null() {
        for (key, name) in [("kernel", "vmlinuz"), ("initrd", "initrd")] {
            if let Some(want) = boot[key].as_str() {
                let f = root.join(format!("boot/{slot}/{name}"));
                let got = sha256_file(&f).map_err(|e| format!("slot {slot}: {e}"))?;
                if got != want {
                    return Err(format!(
                        "slot {slot}: {} hashes to {got}, manifest says {want}",
                        f.display()
                    ));
                }
            }
        }
    }
    Ok(m["image"].as_str().unwrap_or_default().to_string())
}

/// Read `grubenv` (GRUB environment block format) of the mounted state `root` and check
/// every slot it names.
pub fn inspect(root: &Path) -> Result<Seen, String> {
    let block = std::fs::read(root.join("grubenv")).map_err(|e| format!("grubenv: {e}"))?;
    if block.len() != 1024 || !block.starts_with(b"# GRUB Environment Block\n") {
        return Err(format!("grubenv is not an environment block: {block:?}"));
    }
    let text = String::from_utf8_lossy(&block);
    let get = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    let active = get("clb_active");
    let active_image = check_slot(root, &active)?;
    let fallback = match get("clb_fallback").as_str() {
        "" => None,
        f => Some((f.to_string(), check_slot(root, f)?)),
    };
    Ok(Seen {
        active,
        active_image,
        fallback,
        good: get("clb_good") == "1",
        tries: get("clb_tries").parse().unwrap_or(u32::MAX),
    })
}
