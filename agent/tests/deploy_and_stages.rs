//! `clb deploy` onto a blank image (default GPT layout through the stage engine, slot a
//! through the verified staging path), `clb run-stage` and `clb cloud-config validate`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::process::Command;

#[test]
fn deploy_lays_out_a_blank_image_and_installs_slot_a() {
    require_tool("sgdisk");
    require_tool("blkid");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    let img = fx.work.path().join("blank.img");
    sh(&format!("truncate -s 400M {}", img.display()));
    let disk = img.display().to_string();
    let deploy = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--disk".into(),
            disk.clone(),
            "deploy".into(),
            "-d".into(),
            fx.image("os:v1"),
            "--key".into(),
            fx.pubkey.display().to_string(),
            "--oem-size".into(),
            "32".into(),
            "--recovery-size".into(),
            "64".into(),
            "--state-size".into(),
            "160".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        clb_owned(&args)
    };
    let out = deploy(&["--kernel-args", "console=ttyS0 quiet"]);
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["slot"], "a");
    // COS_RECOVERY holds the recovery slot of the same image (issue 8: it was left empty).
    assert_eq!(report["recovery"]["slot"], "recovery", "{report}");
    assert_eq!(report["recovery"]["digest"], report["digest"], "{report}");

    // sgdisk sees the four partitions with our names, sizes in order.
    let table = sh(&format!("sgdisk -p {disk}"));
    for name in ["efi", "oem", "recovery", "state", "persistent"] {
        assert!(table.contains(name), "{name} missing from:\n{table}");
    }
    // Partition 1 is the ESP with GRUB (mtools reads it without mounting).
    let (esp, _) = partition_range(&disk, 1);
    let listing = sh(&format!(
        "MTOOLS_SKIP_CHECK=1 mdir -b -i {disk}@@{esp} ::/EFI/BOOT"
    ));
    for f in ["BOOTX64.EFI", "grub.cfg", "clb.env"] {
        assert!(listing.contains(f), "{f} missing on the ESP: {listing}");
    }
    let (offset, size) = partition_range(&disk, 4);
    assert_eq!(size, 160 << 20);
    // blkid on an offset loop device reads our filesystem label.
    let dev = sh(&format!(
        "losetup --find --show -r -o {offset} --sizelimit {size} {disk}"
    ));
    let label = Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "LABEL", &dev])
        .output()
        .unwrap();
    sh(&format!("losetup -d {dev}"));
    assert_eq!(String::from_utf8_lossy(&label.stdout).trim(), "COS_STATE");

    let out = clb(&["--json", "--disk", &disk, "status"]);
    assert_ok(&out);
    let s = json(&out);
    assert_eq!(s["active"], "a");
    assert_eq!(s["good"], true);
    assert_eq!(s["slots"]["a"]["verified"], true);

    // The recovery slot, read with an independent mount of COS_RECOVERY (partition 3).
    let (off, size) = partition_range(&disk, 3);
    let mnt = fx.work.path().join("recovery");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o loop,ro,offset={off},sizelimit={size} {disk} {}",
        mnt.display()
    ));
    let manifest = std::fs::read_to_string(mnt.join("slots/recovery.json"));
    sh(&format!("umount {}", mnt.display()));
    let manifest: serde_json::Value = serde_json::from_str(&manifest.unwrap()).unwrap();
    assert_eq!(manifest["image"], fx.image("os:v1"));

    // `clb bootloader`: the machine's kernel arguments, read and changed on the ESP; each
    // change checked with mtools + grub-editenv, independently of clb.
    let esp_env = || {
        let (esp, _) = partition_range(&disk, 1);
        let copy = fx.work.path().join("clb.env");
        let _ = std::fs::remove_file(&copy);
        sh(&format!(
            "MTOOLS_SKIP_CHECK=1 mcopy -i {disk}@@{esp} ::/EFI/BOOT/clb.env {}",
            copy.display()
        ));
        sh(&format!("grub-editenv {} list", copy.display()))
    };
    let boot = |args: &[&str]| {
        let mut all = vec!["--json", "--disk", &disk, "bootloader"];
        all.extend(args);
        clb(&all)
    };
    let out = boot(&["show"]);
    assert_ok(&out);
    let shown = json(&out);
    assert_eq!(shown["kernel_args"], "console=ttyS0 quiet");
    assert_eq!(
        shown["command_line"],
        "root=clb boot=clb panic=5 console=ttyS0 quiet"
    );
    assert_ok(&boot(&["add-args", "console=ttyS0,115200", "loglevel=3"]));
    assert!(
        esp_env().contains("clb_cmdline=quiet console=ttyS0,115200 loglevel=3"),
        "{}",
        esp_env()
    );
    assert_ok(&boot(&["remove-args", "quiet", "loglevel=4"]));
    assert!(esp_env().contains("clb_cmdline=console=ttyS0,115200 loglevel=3"));
    // A backslash is escaped as GRUB escapes it: grub-editenv reads the value back as given.
    assert_ok(&boot(&["add-args", "x=a\\b"]));
    assert!(
        esp_env().contains("clb_cmdline=console=ttyS0,115200 loglevel=3 x=a\\b"),
        "{}",
        esp_env()
    );
    assert_eq!(
        json(&boot(&["show"]))["kernel_args"],
        "console=ttyS0,115200 loglevel=3 x=a\\b"
    );
    assert_ok(&boot(&["set-args", ""]));
    assert!(
        esp_env().lines().any(|l| l == "clb_cmdline="),
        "{}",
        esp_env()
    );
    // A root= of one's own would take the boot away from the image's initrd: refused, exit
    // 3, nothing written.
    let before = esp_env();
    assert_fails(
        &boot(&["add-args", "root=/dev/sda2"]),
        3,
        "GRUB passes root=",
    );
    assert_eq!(esp_env(), before);

    // Deploying again is refused (the layout step itself is a no-op), nothing changes.
    // (The ext4 superblock's mount count changes with any read-write mount; the partition
    // table and the state do not.)
    let table_before = sh(&format!("sgdisk -p {disk}"));
    let state_before = json(&clb(&["--json", "--disk", &disk, "status"]));
    assert_fails(&deploy(&[]), 11, "already holds a system");
    assert_eq!(sh(&format!("sgdisk -p {disk}")), table_before);
    assert_eq!(
        json(&clb(&["--json", "--disk", &disk, "status"]))["slots"],
        state_before["slots"]
    );
    assert_eq!(sh(&format!("losetup -j {disk}")), "");

    // Another layout on the deployed disk is refused by the layout engine, untouched: exit 3,
    // one line naming the disk once.
    let mut args: Vec<String> = vec!["--disk".into(), disk.clone()];
    args.extend(["deploy", "-d", &fx.image("os:v1"), "--no-verify"].map(String::from));
    args.extend(
        [
            "--oem-size",
            "32",
            "--recovery-size",
            "64",
            "--state-size",
            "200",
        ]
        .map(String::from),
    );
    let out = clb_owned(&args);
    assert_fails(&out, 3, "layout of");
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).matches(&disk).count(),
        1
    );
    assert_eq!(sh(&format!("sgdisk -p {disk}")), table_before);

    // A disk too small for the layout: exit 3, the image byte for byte as it was.
    let tiny = fx.work.path().join("tiny.img");
    sh(&format!("truncate -s 64M {}", tiny.display()));
    let hash_before = sh(&format!("sha256sum < {}", tiny.display()));
    let mut args: Vec<String> = vec!["--disk".into(), tiny.display().to_string()];
    args.extend(["deploy", "-d", &fx.image("os:v1"), "--no-verify"].map(String::from));
    assert_fails(&clb_owned(&args), 3, "layout of");
    assert_eq!(sh(&format!("sha256sum < {}", tiny.display())), hash_before);
    assert_eq!(sh(&format!("losetup -j {}", tiny.display())), "");
}

#[test]
fn run_stage_and_validate() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let cfg = work.path().join("boot.yaml");
    std::fs::write(
        &cfg,
        "name: test\nstages:\n  boot:\n    - name: motd\n      files:\n        - path: /etc/motd\n          content: hello from clb\n          permissions: 0644\n      hostname: clb-host\n",
    )
    .unwrap();
    let out = clb(&[
        "run-stage",
        "boot",
        "--root",
        root.to_str().unwrap(),
        "--cloud-config",
        cfg.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert_eq!(
        std::fs::read_to_string(root.join("etc/motd")).unwrap(),
        "hello from clb"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("etc/hostname"))
            .unwrap()
            .trim(),
        "clb-host"
    );
    // Dry run changes nothing.
    std::fs::remove_file(root.join("etc/motd")).unwrap();
    let out = clb(&[
        "run-stage",
        "boot",
        "--dry-run",
        "--root",
        root.to_str().unwrap(),
        "--cloud-config",
        cfg.to_str().unwrap(),
    ]);
    assert_ok(&out);
    assert!(!root.join("etc/motd").exists());

    let bad = work.path().join("bad.yaml");
    std::fs::write(&bad, "stages:\n  boot:\n    - name: x\n      files: [\n").unwrap();
    let out = clb(&[
        "cloud-config",
        "validate",
        cfg.to_str().unwrap(),
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("{}:", bad.display())),
        "file:line:column expected: {stderr}"
    );
    let unknown = work.path().join("unknown.yaml");
    std::fs::write(
        &unknown,
        "stages:\n  boot:\n    - name: x\n      flies: []\n",
    )
    .unwrap();
    let out = clb(&["cloud-config", "validate", unknown.to_str().unwrap()]);
    assert_ok(&out);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(":4:"),
        "unknown key warned with its line"
    );
}
