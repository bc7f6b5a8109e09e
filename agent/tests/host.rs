//! Offline disk images (`--disk`) and host mode (COS_STATE found by label among the
//! machine's block devices) with `--reboot` through logind on a real, private dbus-daemon.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};

/// A 160 MiB GPT disk image with COS_OEM, COS_STATE and COS_PERSISTENT (ext4).
fn disk_image(path: &Path) {
    require_tool("sgdisk");
    require_tool("mkfs.ext4");
    let p = path.display();
    sh(&format!(
        "truncate -s 160M {p} && sgdisk -o -n1:2048:+16M -c1:oem -n2:0:+96M -c2:state -n3:0:0 -c3:persistent {p}"
    ));
    for (n, label) in [(1, "COS_OEM"), (2, "COS_STATE"), (3, "COS_PERSISTENT")] {
        let (offset, size) = partition_range(&p.to_string(), n);
        let dev = sh(&format!(
            "losetup --find --show -o {offset} --sizelimit {size} {p}"
        ));
        let ok = Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", label, &dev])
            .status()
            .unwrap()
            .success();
        sh(&format!("losetup -d {dev}"));
        assert!(ok, "mkfs.ext4 {label}");
    }
}

#[test]
fn offline_disk_image_upgrade() {
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    let img = fx.work.path().join("disk.img");
    disk_image(&img);
    let disk = img.display().to_string();
    for tag in ["os:v1", "os:v2"] {
        let out = clb_owned(&[
            "--disk".into(),
            disk.clone(),
            "upgrade".into(),
            "-d".into(),
            fx.image(tag),
            "--key".into(),
            fx.pubkey.display().to_string(),
        ]);
        assert_ok(&out);
    }
    let out = clb(&["--json", "--disk", &disk, "status"]);
    assert_ok(&out);
    let s = json(&out);
    assert_eq!(s["active"], "b");
    assert_eq!(s["fallback"], "a");
    assert!(s["booted"].is_null());
    // Nothing left attached or mounted.
    assert_eq!(
        sh(&format!("losetup -j {disk}")),
        "",
        "loop devices left behind"
    );
    // An independent look at the partition: the slot manifest and the boot state are there.
    let (offset, _) = partition_range(&disk, 2);
    let mnt = fx.work.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    sh(&format!(
        "mount -o loop,ro,offset={offset} {disk} {}",
        mnt.display()
    ));
    let env = Command::new("grub-editenv")
        .arg(mnt.join("grubenv"))
        .arg("list")
        .output()
        .unwrap();
    let has_slot = mnt.join("slots/b.json").is_file();
    sh(&format!("umount {}", mnt.display()));
    assert!(has_slot);
    assert!(String::from_utf8_lossy(&env.stdout).contains("clb_active=b"));
    // --reboot makes no sense offline.
    let out = clb_owned(&[
        "--disk".into(),
        disk.clone(),
        "upgrade".into(),
        "-d".into(),
        fx.image("os:v1"),
        "--no-verify".into(),
        "--reboot".into(),
    ]);
    assert_fails(&out, 3, "--reboot");
}

const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#;

struct FakeLogind {
    calls: std::sync::Arc<std::sync::Mutex<Vec<bool>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeLogind {
    fn reboot(&self, interactive: bool) {
        self.calls.lock().unwrap().push(interactive);
    }
}

#[test]
fn host_mode_finds_cos_state_by_label_and_reboots_through_logind() {
    require_tool("dbus-daemon");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");

    // A "host" state partition: a loop device whose ext4 label is unique to this test.
    let label = format!("CLBT{}", std::process::id() % 100000);
    let img = fx.work.path().join("state.img");
    sh(&format!(
        "truncate -s 64M {0} && mkfs.ext4 -q -F -L {label} {0}",
        img.display()
    ));
    let dev = sh(&format!("losetup --find --show {}", img.display()));
    struct Detach(String);
    impl Drop for Detach {
        fn drop(&mut self) {
            let _ = Command::new("losetup").args(["-d", &self.0]).status();
        }
    }
    let _detach = Detach(dev.clone());

    // A private system bus with a fake logind, and a fake systemctl that must not be used.
    let socket = fx.work.path().join("system_bus_socket");
    let config = fx.work.path().join("bus.conf");
    std::fs::write(
        &config,
        BUS_CONFIG.replace("SOCKET", socket.to_str().unwrap()),
    )
    .unwrap();
    let mut daemon = Command::new("dbus-daemon")
        .args(["--nofork", "--config-file", config.to_str().unwrap()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let address = format!("unix:path={}", socket.display());
    let bin = fx.work.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let systemctl_log = fx.work.path().join("systemctl.log");
    std::fs::write(
        bin.join("systemctl"),
        format!("#!/bin/sh\necho \"$@\" >> {}\n", systemctl_log.display()),
    )
    .unwrap();
    sh(&format!("chmod +x {}", bin.join("systemctl").display()));
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());

    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let conn = rt.block_on(async {
        zbus::connection::Builder::address(address.as_str())
            .name("org.freedesktop.login1")
            .serve_at(
                "/org/freedesktop/login1",
                FakeLogind {
                    calls: calls.clone(),
                },
            )
            .build()
            .await
            .unwrap()
    });

    let run = |extra: &[&str]| {
        let mut cmd = Command::new(clb_bin());
        cmd.args([
            "--state-label",
            &label,
            "--json",
            "upgrade",
            "-d",
            &fx.image("os:v1"),
        ])
        .args(["--key", fx.pubkey.to_str().unwrap()])
        .args(extra)
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .env("PATH", &path)
        .env("RUST_LOG", "warn");
        cmd.output().unwrap()
    };
    let out = run(&["--reboot"]);
    assert_ok(&out);
    assert_eq!(json(&out)["slot"], "a");
    assert_eq!(
        *calls.lock().unwrap(),
        vec![false],
        "logind Reboot(false) called once"
    );
    assert!(
        !systemctl_log.exists(),
        "systemctl not used when logind answers"
    );

    // The state really went to the labelled device.
    let out = Command::new(clb_bin())
        .args(["--state-label", &label, "--json", "status"])
        .output()
        .unwrap();
    assert_ok(&out);
    assert_eq!(json(&out)["active"], "a");

    // Without logind on the bus, clb falls back to `systemctl reboot`.
    drop(conn);
    rt.block_on(async { tokio::time::sleep(std::time::Duration::from_millis(200)).await });
    let r2 = releases(&fx.work.path().join("r2"), &["v2"]);
    fx.push(&[&r2.base, &r2.tops[0]], "os:v2", &[]);
    let out = {
        let mut cmd = Command::new(clb_bin());
        cmd.args([
            "--state-label",
            &label,
            "upgrade",
            "--no-verify",
            "--reboot",
            "-d",
            &fx.image("os:v2"),
        ])
        .env("DBUS_SYSTEM_BUS_ADDRESS", &address)
        .env("PATH", &path)
        .env("RUST_LOG", "warn");
        cmd.output().unwrap()
    };
    assert_ok(&out);
    assert_eq!(
        std::fs::read_to_string(&systemctl_log).unwrap().trim(),
        "reboot"
    );
    daemon.kill().unwrap();
    daemon.wait().unwrap();
    // Duplicate labels are refused, never guessed.
    let dup = fx.work.path().join("dup.img");
    sh(&format!(
        "truncate -s 16M {0} && mkfs.ext4 -q -F -L {label} {0}",
        dup.display()
    ));
    let dev2 = sh(&format!("losetup --find --show {}", dup.display()));
    let _detach2 = Detach(dev2);
    let out = Command::new(clb_bin())
        .args(["--state-label", &label, "status"])
        .output()
        .unwrap();
    assert_fails(&out, 3, "more than one partition");
}
