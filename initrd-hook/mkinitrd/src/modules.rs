//! Kernel module lookup and dependency resolution, from `modules.dep` when the directory has
//! one, else from each module's own `.modinfo` section (`depends=`, `softdep=pre:`), which is
//! what an unpacked kernel package offers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::MkinitrdError;

/// One module to put into the initramfs, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name (`virtio_blk`), dashes normalised to underscores.
    pub name: String,
    /// The file under the modules directory (possibly compressed).
    pub path: PathBuf,
    /// Path relative to the modules directory with the compression suffix removed
    /// (`kernel/drivers/block/virtio_blk.ko`).
    pub rel_ko: PathBuf,
}

/// Module name of a file name: `virtio-blk.ko.xz` → `virtio_blk`.
pub fn module_name(file_name: &str) -> Option<String> {
    let stem = ["ko", "ko.xz", "ko.zst", "ko.gz"]
        .iter()
        .find_map(|ext| file_name.strip_suffix(&format!(".{ext}")))?;
    Some(stem.replace('-', "_"))
}

fn normalise(name: &str) -> String {
    name.trim().replace('-', "_")
}

/// The contents of a module file, decompressed (`.ko.zst` and `.ko.gz` in-process, `.ko.xz`
/// with the `xz` tool, which avoids linking liblzma for a rare case).
pub fn read_module(path: &Path) -> Result<Vec<u8>, MkinitrdError> {
    let io = |e| MkinitrdError::Io(format!("read {}", path.display()), e);
    let name = path.to_string_lossy();
    if name.ends_with(".ko.zst") {
        let f = std::fs::File::open(path).map_err(io)?;
        zstd::stream::decode_all(f).map_err(io)
    } else if name.ends_with(".ko.gz") {
        let f = std::fs::File::open(path).map_err(io)?;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(f)
            .read_to_end(&mut out)
            .map_err(io)?;
        Ok(out)
    } else if name.ends_with(".ko.xz") {
        Ok(clb_command::run_output(Command::new("xz").arg("-dc").arg(path))?.stdout)
    } else {
        std::fs::read(path).map_err(io)
    }
}

/// The `key=value` strings of an ELF64 module's `.modinfo` section.
pub fn modinfo(elf: &[u8]) -> Result<Vec<(String, String)>, String> {
    let section = elf_section(elf, ".modinfo")?.unwrap_or(&[]);
    Ok(section
        .split(|&b| b == 0)
        .filter_map(|entry| {
            let s = std::str::from_utf8(entry).ok()?;
            let (k, v) = s.split_once('=')?;
            Some((k.to_string(), v.to_string()))
        })
        .collect())
}

fn rd_u16(b: &[u8], at: usize) -> Result<u16, String> {
    b.get(at..at + 2)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| "truncated ELF".to_string())
}
fn rd_u32(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| "truncated ELF".to_string())
}
fn rd_u64(b: &[u8], at: usize) -> Result<usize, String> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| "truncated ELF".to_string())
}

fn check_elf64_le(elf: &[u8]) -> Result<(), String> {
    if elf.get(0..4) != Some(b"\x7fELF") {
        return Err("not an ELF file".into());
    }
    if elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        return Err("not a little-endian ELF64 file".into());
    }
    Ok(())
}

/// A named section of a little-endian ELF64 file.
fn elf_section<'a>(elf: &'a [u8], want: &str) -> Result<Option<&'a [u8]>, String> {
    check_elf64_le(elf)?;
    let shoff = rd_u64(elf, 0x28)?;
    let shentsize = usize::from(rd_u16(elf, 0x3A)?);
    let shnum = usize::from(rd_u16(elf, 0x3C)?);
    let shstrndx = usize::from(rd_u16(elf, 0x3E)?);
    let sh = |i: usize| -> Result<(u32, usize, usize), String> {
        let base = shoff + i * shentsize;
        Ok((
            rd_u32(elf, base)?,
            rd_u64(elf, base + 0x18)?,
            rd_u64(elf, base + 0x20)?,
        ))
    };
    let (_, str_off, str_size) = sh(shstrndx)?;
    let strtab = elf
        .get(str_off..str_off + str_size)
        .ok_or("bad section name table")?;
    for i in 0..shnum {
        let (name_off, off, size) = sh(i)?;
        let name_off = usize::try_from(name_off).map_err(|_| "bad ELF")?;
        let name = strtab
            .get(name_off..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .unwrap_or(&[]);
        if name == want.as_bytes() {
            return elf
                .get(off..off + size)
                .map(Some)
                .ok_or_else(|| format!("section {want} out of bounds"));
        }
    }
    Ok(None)
}

/// Whether an ELF executable is statically linked (has no `PT_INTERP` program header).
pub fn elf_is_static(elf: &[u8]) -> Result<bool, String> {
    check_elf64_le(elf)?;
    let phoff = rd_u64(elf, 0x20)?;
    let phentsize = usize::from(rd_u16(elf, 0x36)?);
    let phnum = usize::from(rd_u16(elf, 0x38)?);
    for i in 0..phnum {
        if rd_u32(elf, phoff + i * phentsize)? == 3 {
            return Ok(false); // PT_INTERP
        }
    }
    Ok(true)
}

/// Everything known about a modules directory.
pub struct ModuleIndex {
    dir: PathBuf,
    /// name → file
    files: BTreeMap<String, PathBuf>,
    builtin: BTreeSet<String>,
    /// name → dependencies, from modules.dep (None: read .modinfo)
    dep_file: Option<HashMap<String, Vec<String>>>,
    aliases: Option<Vec<(String, String)>>,
}

impl ModuleIndex {
    pub fn open(dir: &Path) -> Result<Self, MkinitrdError> {
        if !dir.is_dir() {
            return Err(MkinitrdError::Module(format!(
                "modules directory {} does not exist",
                dir.display()
            )));
        }
        let mut files = BTreeMap::new();
        walk(dir, &mut files)?;
        let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.rsplit('/').next().and_then(module_name))
            .collect();
        let dep_file = match std::fs::read_to_string(dir.join("modules.dep")) {
            Ok(text) => Some(parse_modules_dep(&text)),
            Err(_) => None,
        };
        Ok(ModuleIndex {
            dir: dir.to_path_buf(),
            files,
            builtin,
            dep_file,
            aliases: None,
        })
    }

    pub fn uses_modules_dep(&self) -> bool {
        self.dep_file.is_some()
    }

    /// (hard dependencies, soft pre-dependencies) of a module.
    fn deps(&self, name: &str, path: &Path) -> Result<(Vec<String>, Vec<String>), MkinitrdError> {
        let info = modinfo(&read_module(path)?)
            .map_err(|e| MkinitrdError::Module(format!("{}: {e}", path.display())))?;
        let mut soft = Vec::new();
        for (k, v) in &info {
            if k == "softdep" {
                // "pre: a b post: c"
                let mut pre = false;
                for w in v.split_whitespace() {
                    match w {
                        "pre:" => pre = true,
                        "post:" => pre = false,
                        m if pre => soft.push(m.to_string()),
                        _ => {}
                    }
                }
            }
        }
        let hard = match &self.dep_file {
            Some(deps) => deps.get(name).cloned().unwrap_or_default(),
            None => info
                .iter()
                .filter(|(k, _)| k == "depends")
                .flat_map(|(_, v)| v.split(',').filter(|s| !s.is_empty()).map(normalise))
                .collect(),
        };
        Ok((hard, soft))
    }

    /// A soft dependency names a module or an alias (`crypto-crc32c`).
    fn resolve_soft(&mut self, name: &str) -> Result<Option<String>, MkinitrdError> {
        let n = normalise(name);
        if self.files.contains_key(&n) {
            return Ok(Some(n));
        }
        if self.aliases.is_none() {
            self.aliases = Some(self.load_aliases()?);
        }
        Ok(self.aliases.as_ref().and_then(|all| {
            all.iter()
                .find(|(alias, _)| alias == name)
                .map(|(_, m)| m.clone())
        }))
    }

    fn load_aliases(&self) -> Result<Vec<(String, String)>, MkinitrdError> {
        if let Ok(text) = std::fs::read_to_string(self.dir.join("modules.alias")) {
            return Ok(text
                .lines()
                .filter_map(|l| {
                    let mut w = l.split_whitespace();
                    (w.next() == Some("alias")).then_some(())?;
                    Some((w.next()?.to_string(), normalise(w.next()?)))
                })
                .collect());
        }
        // No index: read every module's own aliases (~1 s for a distribution kernel).
        let mut out = Vec::new();
        for (name, path) in &self.files {
            let Ok(bytes) = read_module(path) else {
                continue;
            };
            for (k, v) in modinfo(&bytes).unwrap_or_default() {
                if k == "alias" {
                    out.push((v, name.clone()));
                }
            }
        }
        Ok(out)
    }

    /// `names` and everything they need, dependencies first. Built-in modules are skipped;
    /// an unknown module is an error; an unresolvable soft dependency is only logged.
    pub fn resolve(&mut self, names: &[String]) -> Result<Vec<ModuleFile>, MkinitrdError> {
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for n in names {
            self.visit(&normalise(n), true, &mut Vec::new(), &mut done, &mut order)?;
        }
        Ok(order)
    }

    fn visit(
        &mut self,
        name: &str,
        required: bool,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<(), MkinitrdError> {
        if done.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            return Err(MkinitrdError::Module(format!(
                "module dependency cycle: {} -> {name}",
                stack.join(" -> ")
            )));
        }
        let Some(path) = self.files.get(name).cloned() else {
            if self.builtin.contains(name) {
                done.insert(name.to_string());
                return Ok(());
            }
            if required {
                return Err(MkinitrdError::Module(format!(
                    "module {name} not found in {} (and not built in)",
                    self.dir.display()
                )));
            }
            tracing::warn!(module = name, "soft dependency not found, skipped");
            return Ok(());
        };
        stack.push(name.to_string());
        let (hard, soft) = self.deps(name, &path)?;
        for s in soft {
            if let Some(m) = self.resolve_soft(&s)? {
                self.visit(&m, false, stack, done, order)?;
            } else if !self.builtin.contains(&normalise(&s)) {
                tracing::warn!(
                    module = name,
                    softdep = s,
                    "soft dependency not found, skipped"
                );
            }
        }
        for d in hard {
            self.visit(&d, true, stack, done, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        let rel = path.strip_prefix(&self.dir).unwrap_or(&path);
        let rel_s = rel.to_string_lossy();
        let ko = rel_s
            .strip_suffix(".xz")
            .or_else(|| rel_s.strip_suffix(".zst"))
            .or_else(|| rel_s.strip_suffix(".gz"))
            .unwrap_or(&rel_s);
        let rel_ko = PathBuf::from(ko);
        order.push(ModuleFile {
            name: name.to_string(),
            path,
            rel_ko,
        });
        Ok(())
    }
}

/// `kernel/a/x.ko: kernel/b/y.ko.xz kernel/c/z.ko` → x → [y, z].
fn parse_modules_dep(text: &str) -> HashMap<String, Vec<String>> {
    let name_of = |p: &str| p.rsplit('/').next().and_then(module_name);
    text.lines()
        .filter_map(|l| {
            let (m, deps) = l.split_once(':')?;
            Some((
                name_of(m.trim())?,
                deps.split_whitespace().filter_map(name_of).collect(),
            ))
        })
        .collect()
}

fn walk(dir: &Path, out: &mut BTreeMap<String, PathBuf>) -> Result<(), MkinitrdError> {
    let rd = std::fs::read_dir(dir)
        .map_err(|e| MkinitrdError::Io(format!("read {}", dir.display()), e))?;
    for entry in rd.flatten() {
        let p = entry.path();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            walk(&p, out)?;
        } else if let Some(name) = entry.file_name().to_str().and_then(module_name) {
            // First one wins, like depmod's search order for duplicate names is not ours to
            // guess: keep the shortest path (kernel/ before updates/ is not handled).
            out.entry(name).or_insert(p);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn names_and_modules_dep() {
        assert_eq!(module_name("virtio-blk.ko.xz").unwrap(), "virtio_blk");
        assert_eq!(module_name("ext4.ko").unwrap(), "ext4");
        assert!(module_name("modules.dep").is_none());
        let m = parse_modules_dep(
            "kernel/fs/ext4/ext4.ko.zst: kernel/fs/jbd2/jbd2.ko.zst kernel/lib/crc16.ko\nkernel/x.ko:\n",
        );
        assert_eq!(m["ext4"], vec!["jbd2".to_string(), "crc16".to_string()]);
        assert!(m["x"].is_empty());
    }

    #[test]
    fn non_elf_is_an_error() {
        assert!(modinfo(b"hello").is_err());
        assert!(elf_is_static(b"\x7fELF").is_err());
    }

    #[test]
    fn a_bad_xz_module_is_xzs_error() {
        let dir = tempfile::tempdir().unwrap();
        let ko = dir.path().join("bad.ko.xz");
        std::fs::write(&ko, b"not xz").unwrap();
        match read_module(&ko) {
            // xz installed: it refuses the file and says why.
            Err(MkinitrdError::Command(clb_command::CommandError::Failed {
                program,
                stderr_tail,
                ..
            })) => {
                assert_eq!(program, "xz");
                assert!(stderr_tail.contains("bad.ko.xz"), "{stderr_tail}");
            }
            // xz missing: the error names the package to install.
            Err(e @ MkinitrdError::Command(clb_command::CommandError::Missing { .. })) => {
                assert_eq!(
                    e.to_string(),
                    "xz: not found: install the Debian package xz-utils"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
