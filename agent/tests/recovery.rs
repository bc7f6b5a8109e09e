//! Recovery flows on disk images: `clb build-disk` (COS_OEM + COS_RECOVERY with the recovery
//! slot and the first-boot config), `clb upgrade --recovery`, `clb deploy --from-recovery`
//! (no registry needed) and `clb reset` (persistent data wiped, slot a reinstalled).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;

#[test]
fn build_disk_deploy_from_recovery_and_reset() {
    require_tool("sgdisk");
    require_tool("qemu-img");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    let img = fx.work.path().join("cloud.raw");
    let disk = img.display().to_string();
    let user_data = tree(
        &fx.work.path().join("ud"),
        &[("user-data", b"#cloud-config\nruncmd:\n  - echo hi\n")],
    )
    .join("user-data");
    let out = clb_owned(&[
        "--json".into(),
        "build-disk".into(),
        "-d".into(),
        fx.image("os:v1"),
        "--key".into(),
        fx.pubkey.display().to_string(),
        "--out".into(),
        disk.clone(),
        "--size".into(),
        "400M".into(),
        "--oem-size".into(),
        "16".into(),
        "--recovery-size".into(),
        "64".into(),
        "--state-size".into(),
        "96".into(),
        "--user-data".into(),
        user_data.display().to_string(),
    ]);
    assert_ok(&out);
    let table = sh(&format!("sgdisk -p {disk}"));
    assert!(
        table.contains("oem") && table.contains("recovery") && !table.contains("state"),
        "{table}"
    );

    // COS_OEM carries the first-boot config and the user data (read with an independent mount).
    let (off, size) = partition_range(&disk, 2);
    let mnt = fx.work.path().join("oem");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o loop,ro,offset={off},sizelimit={size} {disk} {}",
        mnt.display()
    ));
    let first_boot = std::fs::read_to_string(mnt.join("90_clb_first_boot.yaml"));
    let ud = std::fs::read_to_string(mnt.join("user-data"));
    sh(&format!("umount {}", mnt.display()));
    assert!(
        first_boot
            .unwrap()
            .contains("clb deploy --from-recovery --state-size 96")
    );
    assert!(ud.unwrap().contains("echo hi"));

    // The recovery slot, as clb sees it.
    let rec = json(&clb(&[
        "--json",
        "--disk",
        &disk,
        "--state-label",
        "COS_RECOVERY",
        "status",
    ]));
    assert_eq!(rec["slots"]["recovery"]["verified"], true);
    let recovery_digest = rec["slots"]["recovery"]["digest"].clone();

    // A newer recovery image: --recovery stages it, the boot state is untouched.
    let out = clb_owned(&[
        "--disk".into(),
        disk.clone(),
        "upgrade".into(),
        "--recovery".into(),
        "-d".into(),
        fx.image("os:v2"),
        "--key".into(),
        fx.pubkey.display().to_string(),
    ]);
    assert_ok(&out);
    let rec = json(&clb(&[
        "--json",
        "--disk",
        &disk,
        "--state-label",
        "COS_RECOVERY",
        "status",
    ]));
    assert_ne!(rec["slots"]["recovery"]["digest"], recovery_digest);
    assert!(rec["active"].is_null(), "no boot state on COS_RECOVERY");

    // Deploy from recovery, offline, with the registry gone: no network needed.
    let mut fx = fx;
    fx.reg.stop();
    let out = clb(&[
        "--json",
        "--disk",
        &disk,
        "deploy",
        "--from-recovery",
        "--state-size",
        "96",
    ]);
    assert_ok(&out);
    let s = json(&clb(&["--json", "--disk", &disk, "status"]));
    assert_eq!(s["active"], "a");
    assert_eq!(
        s["slots"]["a"]["digest"],
        rec["slots"]["recovery"]["digest"]
    );
    assert_eq!(s["slots"]["a"]["complete"], true);
    let table = sh(&format!("sgdisk -p {disk}"));
    assert!(
        table.contains("state") && table.contains("persistent"),
        "{table}"
    );

    // Something on COS_PERSISTENT, then a factory reset wipes it and reinstalls slot a.
    let (off, size) = partition_range(&disk, 5);
    let pm = fx.work.path().join("persistent");
    std::fs::create_dir(&pm).unwrap();
    sh(&format!(
        "mount -o loop,offset={off},sizelimit={size} {disk} {}",
        pm.display()
    ));
    std::fs::write(pm.join("user-file"), b"data").unwrap();
    sh(&format!("umount {}", pm.display()));
    let out = clb(&["--disk", &disk, "reset"]);
    assert_ok(&out);
    sh(&format!(
        "mount -o loop,ro,offset={off},sizelimit={size} {disk} {}",
        pm.display()
    ));
    let survived = pm.join("user-file").exists();
    sh(&format!("umount {}", pm.display()));
    assert!(!survived, "reset wipes COS_PERSISTENT");
    let s = json(&clb(&["--json", "--disk", &disk, "status"]));
    assert_eq!(s["active"], "a");
    assert_eq!(s["slots"]["a"]["complete"], true);
    assert!(s["slots"]["b"].is_null());
    assert_eq!(
        sh(&format!("losetup -j {disk}")),
        "",
        "loop devices left behind"
    );

    // qcow2 output, checked by qemu-img.
    fx.reg.restart().unwrap();
    let q = fx.work.path().join("cloud.qcow2");
    let out = clb_owned(&[
        "build-disk".into(),
        "-d".into(),
        fx.image("os:v1"),
        "--no-verify".into(),
        "--out".into(),
        q.display().to_string(),
        "--format".into(),
        "qcow2".into(),
        "--size".into(),
        "300M".into(),
        "--oem-size".into(),
        "16".into(),
        "--recovery-size".into(),
        "64".into(),
    ]);
    assert_ok(&out);
    let info = sh(&format!("qemu-img info --output=json {}", q.display()));
    assert!(info.contains("\"format\": \"qcow2\""), "{info}");
}
