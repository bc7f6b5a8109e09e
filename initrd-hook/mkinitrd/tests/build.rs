//! Build initramfs archives and read them back with GNU cpio (an independent tool).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use clb_mkinitrd::{Compression, MkinitrdOptions, build};

/// A minimal little-endian ELF64 relocatable file with a `.modinfo` section, like a module.
fn fake_module(modinfo: &[&str]) -> Vec<u8> {
    let mut info = Vec::new();
    for kv in modinfo {
        info.extend_from_slice(kv.as_bytes());
        info.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0";
    let info_off = 64usize;
    let str_off = info_off + info.len();
    let sh_off = (str_off + shstrtab.len() + 7) & !7;
    let mut elf = vec![0u8; sh_off + 3 * 64];
    elf[0..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELF64
    elf[5] = 1; // little-endian
    elf[6] = 1;
    elf[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    elf[0x28..0x30].copy_from_slice(&(sh_off as u64).to_le_bytes());
    elf[0x34..0x36].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
    elf[0x3C..0x3E].copy_from_slice(&3u16.to_le_bytes());
    elf[0x3E..0x40].copy_from_slice(&2u16.to_le_bytes());
    elf[info_off..str_off].copy_from_slice(&info);
    elf[str_off..str_off + shstrtab.len()].copy_from_slice(shstrtab);
    let mut section = |i: usize, name: u32, off: usize, size: usize| {
        let b = sh_off + i * 64;
        elf[b..b + 4].copy_from_slice(&name.to_le_bytes());
        elf[b + 4..b + 8].copy_from_slice(&1u32.to_le_bytes());
        elf[b + 0x18..b + 0x20].copy_from_slice(&(off as u64).to_le_bytes());
        elf[b + 0x20..b + 0x28].copy_from_slice(&(size as u64).to_le_bytes());
    };
    section(1, 1, info_off, info.len());
    section(2, 10, str_off, shstrtab.len());
    elf
}

fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}

/// A modules directory without modules.dep: ext4 → jbd2, crc16; ext4 softdep pre crc32c by
/// alias; jbd2 → crc16 (a diamond); a zstd-compressed module; a built-in one.
fn modules_dir(root: &Path) -> PathBuf {
    let dir = root.join("lib/modules/9.9.9-test");
    let k = dir.join("kernel");
    write(
        &k.join("fs/ext4/ext4.ko"),
        &fake_module(&[
            "license=GPL",
            "softdep=pre: crypto-crc32c",
            "depends=jbd2,crc16",
            "name=ext4",
        ]),
    );
    write(
        &k.join("fs/jbd2/jbd2.ko"),
        &fake_module(&["depends=crc16", "name=jbd2"]),
    );
    let crc16 = zstd::encode_all(&fake_module(&["depends=", "name=crc16"])[..], 3).unwrap();
    write(&k.join("lib/crc16.ko.zst"), &crc16);
    write(
        &k.join("crypto/crc32c_generic.ko"),
        &fake_module(&["alias=crypto-crc32c", "alias=crc32c", "depends="]),
    );
    write(
        &k.join("drivers/virtio-blk.ko"),
        &fake_module(&["depends=virtio"]),
    );
    write(&k.join("drivers/unrelated.ko"), &fake_module(&["depends="]));
    write(
        &dir.join("modules.builtin"),
        b"kernel/drivers/virtio/virtio.ko\n",
    );
    dir
}

fn static_init() -> PathBuf {
    // Any static executable will do as /init for these tests.
    clb_mkinitrd::find_busybox().expect("busybox-static must be installed for this test")
}

fn cpio_list(archive: &Path, decompress: &[&str]) -> Vec<String> {
    let mut dec = Command::new(decompress[0])
        .args(&decompress[1..])
        .arg(archive)
        .stdout(Stdio::piped())
        .spawn()
        .expect("decompressor");
    let out = Command::new("cpio")
        .args(["-it", "--quiet"])
        .stdin(dec.stdout.take().unwrap())
        .output()
        .expect("cpio must be installed");
    assert!(dec.wait().unwrap().success());
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn extract_file(archive: &Path, name: &str) -> Vec<u8> {
    let script = format!(
        "zcat '{}' | cpio -i --quiet --to-stdout '{name}'",
        archive.display()
    );
    let out = Command::new("sh").args(["-c", &script]).output().unwrap();
    assert!(out.status.success());
    out.stdout
}

#[test]
fn gzip_archive_lists_with_cpio_and_orders_dependencies() {
    let tmp = tempfile::tempdir().unwrap();
    let mods = modules_dir(tmp.path());
    let out = tmp.path().join("initrd.img");
    let mut opts = MkinitrdOptions::new(static_init(), &out);
    opts.modules_dir = Some(mods);
    opts.modules = vec!["ext4".into()];
    opts.add_modules(["virtio_blk", "ext4"]);
    let stats = build(&opts).unwrap();
    assert_eq!(
        stats.modules,
        ["crc32c_generic", "crc16", "jbd2", "ext4", "virtio_blk"],
        "dependencies first, each once, built-in virtio skipped"
    );
    assert!(stats.busybox_applets > 50, "{stats:?}");

    let list = cpio_list(&out, &["zcat"]);
    for want in [
        "init",
        "dev/console",
        "proc",
        "sys",
        "run",
        "sysroot",
        "etc/clb/modules",
        "bin/busybox",
        "bin/sh",
        "lib/modules/9.9.9-test/kernel/fs/ext4/ext4.ko",
        "lib/modules/9.9.9-test/kernel/lib/crc16.ko",
        "lib/modules/9.9.9-test/kernel/drivers/virtio-blk.ko",
    ] {
        assert!(
            list.iter().any(|l| l == want),
            "{want} missing from {list:?}"
        );
    }
    assert!(!list.iter().any(|l| l.contains("unrelated")), "{list:?}");
    assert!(
        !list.iter().any(|l| l.ends_with(".zst")),
        "decompressed: {list:?}"
    );

    let order = String::from_utf8(extract_file(&out, "etc/clb/modules")).unwrap();
    let lines: Vec<&str> = order.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(
        lines,
        [
            "/lib/modules/9.9.9-test/kernel/crypto/crc32c_generic.ko",
            "/lib/modules/9.9.9-test/kernel/lib/crc16.ko",
            "/lib/modules/9.9.9-test/kernel/fs/jbd2/jbd2.ko",
            "/lib/modules/9.9.9-test/kernel/fs/ext4/ext4.ko",
            "/lib/modules/9.9.9-test/kernel/drivers/virtio-blk.ko",
        ]
    );
    // The decompressed module is a plain ELF again.
    let crc16 = extract_file(&out, "lib/modules/9.9.9-test/kernel/lib/crc16.ko");
    assert!(crc16.starts_with(b"\x7fELF"));
    // /init is the given binary, byte for byte.
    assert_eq!(
        extract_file(&out, "init"),
        std::fs::read(static_init()).unwrap()
    );
}

#[test]
fn modules_dep_wins_over_modinfo_and_zstd_output_works() {
    let tmp = tempfile::tempdir().unwrap();
    let mods = modules_dir(tmp.path());
    // modules.dep says ext4 needs only jbd2 (and jbd2 nothing).
    write(
        &mods.join("modules.dep"),
        b"kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko\nkernel/fs/jbd2/jbd2.ko:\n",
    );
    let out = tmp.path().join("initrd.zst");
    let mut opts = MkinitrdOptions::new(static_init(), &out);
    opts.modules_dir = Some(mods);
    opts.modules = vec!["ext4".into()];
    opts.busybox = None;
    opts.compression = Compression::Zstd;
    let stats = build(&opts).unwrap();
    assert_eq!(stats.modules, ["crc32c_generic", "jbd2", "ext4"]);
    let list = cpio_list(&out, &["zstd", "-dc"]);
    assert!(list.iter().any(|l| l == "init"));
    assert!(!list.iter().any(|l| l.starts_with("bin/")), "{list:?}");
}

#[test]
fn clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let mods = modules_dir(tmp.path());
    let out = tmp.path().join("initrd.img");
    let mut opts = MkinitrdOptions::new(static_init(), &out);
    opts.modules_dir = Some(mods.clone());
    opts.modules = vec!["nosuchmod".into()];
    let e = build(&opts).unwrap_err().to_string();
    assert!(e.contains("module nosuchmod not found"), "{e}");
    assert!(!out.exists());

    // A dynamically linked /init would panic the kernel at boot: refused here.
    let dynamic = PathBuf::from("/bin/ls");
    let opts = MkinitrdOptions::new(&dynamic, &out);
    let e = build(&opts).unwrap_err().to_string();
    assert!(e.contains("dynamically linked"), "{e}");

    // --modules-list FILE
    let list = tmp.path().join("mods.txt");
    std::fs::write(&list, "# comment\next4, virtio_blk\n\nloop # trailing\n").unwrap();
    let mut opts = MkinitrdOptions::new(static_init(), &out);
    opts.modules.clear();
    opts.add_modules_from_file(&list).unwrap();
    assert_eq!(opts.modules, ["ext4", "virtio_blk", "loop"]);
}
