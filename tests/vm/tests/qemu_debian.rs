//! A real Debian 12 on clb, end to end in QEMU (TCG, OVMF, 2 GiB): the OS recipe
//! (`packaging/os/debian/build`: debootstrap, systemd, the Debian kernel, initramfs-tools with
//! the clb .deb's hook) published as base, kernel and release layers; `clb deploy` with GRUB
//! and `--kernel-args console=ttyS0` only (no `boot=clb`: GRUB passes it, issue 8 point 3).
//! A report unit in every release prints one `CLB-DEBIAN ...` line on the serial console after
//! `clb-mark-good.service` ran (so never on an unhealthy boot), then powers off.
//!
//! 1. v1 boots to multi-user.target, the health check passes, the slot is marked good; the
//!    shutdown unmounts without "Failed unmounting" (point 8); `clb bootloader show` on the
//!    host reads the kernel arguments and `add-args loglevel=5` changes them for v2's boot.
//! 2. v2, upgraded offline (only its release layer fetched), boots; the machine-id, a file in
//!    /etc, one in /var/lib and the previous boot's journal are there (point 6).
//! 3. The good slot b loses its top layer: two failed boots (max tries 2), then GRUB falls back
//!    to v1, which still has all the state (point 4).
//! 4. v3, whose required service fails: the health check marks it bad and reboots into v1
//!    (point 5).
//! 5. v4, whose init exits: two panics, then v1 (a broken release falls back by itself).
//!
//! Needs root, qemu-system-x86, ovmf, debootstrap (and the Debian archive apt uses), grub-efi,
//! mtools, squashfs-tools-ng, docker-registry, dpkg-dev. Missing ones fail the test.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::qemu::{Qemu, require_uefi_boot};
use clb_vm_tests::{clb, debian, disks, kit};

/// The daemon's self-upgrade (`debian_daemon_upgrades_itself_immediately`) lives in this test
/// binary so that the harness runs its QEMU beside this test's, one per core, instead of after
/// it: the two are the longest boots of the suite.
#[path = "debian/daemon.rs"]
mod daemon;

/// One full Debian boot under TCG, generously.
const BOOT: Duration = Duration::from_secs(420);
const MAX_TRIES: &str = "2";

/// The report every test release carries: one console line, then poweroff. Ordered after
/// clb-mark-good.service with Requires=, so an unhealthy boot (mark-good never runs) prints
/// nothing and the health check's reboot is not raced by a poweroff. DefaultDependencies=no:
/// multi-user.target wants it, and an implicit After= would close a cycle through the health
/// check (which runs after the default target).
const REPORT_UNIT: &str = "[Unit]
Description=clb test: report this boot on the serial console, then power off
DefaultDependencies=no
Requires=clb-mark-good.service
After=clb-mark-good.service

[Service]
Type=oneshot
ExecStart=/usr/lib/clb-test/report

[Install]
WantedBy=multi-user.target
";

const REPORT: &str = r#"#!/bin/sh
release=$(cat /etc/clb-release)
slot=$(cat /run/clb/booted_slot)
mode=none
for m in active passive recovery; do [ -e /run/clb/${m}_mode ] && mode=$m; done
failure=$(cat /run/clb/upgrade_failure 2>/dev/null || echo none)
[ -f /etc/clb-test-etc ] || echo "$release" > /etc/clb-test-etc
mkdir -p /var/lib/clb-test
[ -f /var/lib/clb-test/first ] || echo "$release" > /var/lib/clb-test/first
# The machine's kernel arguments as `clb bootloader` reads them from the ESP on this host
# (mtools, no GRUB tools), and what this boot's kernel got; v1 changes them for the next boot.
kargs=$(clb bootloader show | sed -n 's/^kernel arguments: *//p' | tr ' ' '+')
loglevel=$(grep -o 'loglevel=[0-9]*' /proc/cmdline | tail -n 1)
[ "$release" = v1 ] && [ "$slot" = a ] && [ "$mode" = active ] && clb -q bootloader add-args loglevel=5
boots=$(journalctl --list-boots --no-pager -q 2>/dev/null | wc -l)
prev=$(journalctl -b -1 --no-pager -q 2>/dev/null | wc -l)
echo "CLB-DEBIAN release=$release slot=$slot mode=$mode failure=$failure machine_id=$(cat /etc/machine-id) etc=$(cat /etc/clb-test-etc) var_lib=$(cat /var/lib/clb-test/first) boots=$boots prev_journal_lines=$prev kargs=$kargs proc_$loglevel health=$(systemctl is-active clb-health-check.service) target=$(systemctl is-active multi-user.target)" > /dev/ttyS0
systemctl --no-block poweroff
"#;

/// A directory `work/NAME` holding `files` (path, content, mode): extra files of a release.
fn files(work: &Path, name: &str, files: &[(&str, &str, u32)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = work.join(name);
    for (rel, content, mode) in files {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode)).unwrap();
    }
    dir
}

/// The files every test release carries. The persistent journal: the previous boot's is what
/// one reads after a rollback.
fn report_files(work: &Path) -> PathBuf {
    files(
        work,
        "files-report",
        &[
            (
                "etc/systemd/system/clb-test-report.service",
                REPORT_UNIT,
                0o644,
            ),
            ("usr/lib/clb-test/report", REPORT, 0o755),
            (
                "etc/systemd/journald.conf.d/clb-test.conf",
                "[Journal]\nStorage=persistent\n",
                0o644,
            ),
        ],
    )
}

/// v3's extra: a service the health check requires, which fails.
fn failing_service(work: &Path) -> PathBuf {
    files(
        work,
        "files-failing",
        &[
            (
                "etc/systemd/system/clb-test-app.service",
                "[Unit]\nDescription=clb test: the application, broken in this release\n\n\
                 [Service]\nType=oneshot\nExecStart=/bin/false\n\n[Install]\nWantedBy=multi-user.target\n",
                0o644,
            ),
            (
                "etc/clb/health.yaml",
                "required_units: [clb-test-app.service]\n",
                0o644,
            ),
        ],
    )
}

/// v4's extra: an init that exits (the kernel panics, panic=5 reboots).
fn broken_init(work: &Path) -> PathBuf {
    files(
        work,
        "files-broken",
        &[(
            "usr/sbin/init",
            "#!/bin/sh\necho 'CLB-DEBIAN broken init exits'\nexit 1\n",
            0o755,
        )],
    )
}

/// The `CLB-DEBIAN release=...` line of a console log, as key=value pairs.
fn report(console: &str) -> Vec<(String, String)> {
    line_with(console, "CLB-DEBIAN release=")
}

/// The key=value pairs of the last console line containing `tag` (e.g. `CLB-DEBIAN
/// release=v2`), from `tag` on.
fn line_with(console: &str, tag: &str) -> Vec<(String, String)> {
    let line = console
        .lines()
        .rev()
        .find(|l| l.contains(tag))
        .unwrap_or_else(|| panic!("no {tag:?} line on the console:\n{console}"));
    line[line.find(tag).unwrap()..]
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(r: &'a [(String, String)], key: &str) -> &'a str {
    r.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{key} missing from {r:?}"))
}

fn boot(disk: &Path, work: &Path, name: &str, reboots: bool, timeout: Duration) -> String {
    let q = Qemu::new().uefi().memory(2048).disk(disk);
    let q = if reboots { q.rebooting() } else { q };
    q.boot(work, name, timeout).console
}

#[test]
fn debian_boots_keeps_state_checks_health_and_never_loops() {
    require_uefi_boot();
    require_tool("debootstrap");
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();
    let recipe = debian::Recipe::prepare(work);
    let report_dir = report_files(work);
    let publish = |version: &str, extra: &[&Path]| {
        let mut dirs: Vec<&Path> = vec![&report_dir];
        dirs.extend(extra);
        recipe.publish(&reg, version, &dirs, &["clb-test-report.service"])
    };
    let v1 = publish("v1", &[]);
    let v2 = publish("v2", &[]);

    // 1. v1: deployed with console=ttyS0 only; healthy, marked good, clean shutdown.
    let disk = work.join("disk.img");
    clb::deploy_bootable(
        &kit,
        &disk,
        &v1,
        2300,
        &[
            "--esp-size",
            "32",
            "--state-size",
            "1600",
            "--max-tries",
            MAX_TRIES,
        ],
    );
    let c = boot(&disk, work, "debian-v1", false, BOOT);
    let r1 = report(&c);
    assert_eq!(
        (get(&r1, "release"), get(&r1, "slot"), get(&r1, "mode")),
        ("v1", "a", "active"),
        "{c}"
    );
    assert_eq!(get(&r1, "target"), "active");
    assert_eq!(get(&r1, "health"), "active", "the health check passed");
    assert!(c.contains("root=clb boot=clb"), "GRUB passes both: {c}");
    assert!(
        c.contains("clb-initrd: assembled slot a"),
        "the image's own initramfs-tools initrd ran the hook:\n{c}"
    );
    assert!(
        !c.contains("Failed unmounting"),
        "every mount clb made comes down cleanly at shutdown:\n{c}"
    );
    // point 3: the kernel arguments, read on the host with `clb bootloader show`.
    assert_eq!(get(&r1, "kargs"), "console=ttyS0+loglevel=4");
    assert_eq!(get(&r1, "proc_loglevel"), "4");
    let machine_id = get(&r1, "machine_id").to_string();
    assert_eq!(machine_id.len(), 32, "{machine_id}");
    let s = clb::status(&kit, &disk);
    assert_eq!(
        (&s["good"], &s["tries_left"]),
        (&true.into(), &2.into()),
        "marked good: {s}"
    );

    // 2. v2, offline: only the release layer is fetched; the state of v1 is there.
    let up = clb::on_disk(
        &kit,
        &disk,
        &["--json", "upgrade", "-q", "--no-verify", "-d", &v2],
    );
    let up: serde_json::Value = serde_json::from_str(&up).unwrap();
    assert_eq!(up["layers_downloaded"], 1, "only the release layer: {up}");
    let c = boot(&disk, work, "debian-v2", false, BOOT);
    let r2 = report(&c);
    assert_eq!((get(&r2, "release"), get(&r2, "slot")), ("v2", "b"), "{c}");
    // v1 ran `clb bootloader add-args loglevel=5` on the host: GRUB passed it this boot.
    assert_eq!(get(&r2, "kargs"), "console=ttyS0+loglevel=5");
    assert_eq!(get(&r2, "proc_loglevel"), "5");
    assert_eq!(get(&r2, "machine_id"), machine_id, "machine-id stable");
    assert_eq!(get(&r2, "etc"), "v1", "a file written to /etc under v1");
    assert_eq!(
        get(&r2, "var_lib"),
        "v1",
        "a file written to /var/lib under v1"
    );
    assert!(get(&r2, "boots").parse::<u32>().unwrap() >= 2, "{r2:?}");
    assert!(
        get(&r2, "prev_journal_lines").parse::<u32>().unwrap() > 10,
        "the previous boot's journal is readable: {r2:?}"
    );
    assert_eq!(clb::status(&kit, &disk)["good"], true);

    // 3. The good slot b stops booting: two counted failures, then v1, state intact.
    disks::break_slot(&disk, work, "b");
    let c = boot(&disk, work, "debian-good-broken", true, BOOT * 2);
    assert_eq!(
        c.matches("clb-initrd: error: slot b: layer").count(),
        2,
        "{c}"
    );
    assert!(
        c.contains("clb-grub: slot b failed to boot: rolled back to slot a"),
        "{c}"
    );
    let r3 = report(&c);
    assert_eq!(
        (
            get(&r3, "release"),
            get(&r3, "slot"),
            get(&r3, "mode"),
            get(&r3, "failure")
        ),
        ("v1", "a", "passive", "b"),
        "{c}"
    );
    assert_eq!(get(&r3, "machine_id"), machine_id);
    assert_eq!((get(&r3, "etc"), get(&r3, "var_lib")), ("v1", "v1"));

    // 4. v3's required service fails: the health check marks it bad and reboots into v1.
    let failing = failing_service(work);
    let v3 = recipe.publish(
        &reg,
        "v3",
        &[&report_dir, &failing],
        &["clb-test-report.service", "clb-test-app.service"],
    );
    clb::upgrade(&kit, &disk, &v3, &[]);
    let c = boot(&disk, work, "debian-unhealthy", true, BOOT * 2);
    assert!(
        !c.contains("CLB-DEBIAN release=v3"),
        "an unhealthy boot is never marked good (and never reports):\n{c}"
    );
    // One boot of b, not two: the health check marked it bad at once (it did not spend its
    // tries), and systemd shows the check failed.
    assert_eq!(c.matches("clb-grub: booting slot b from").count(), 1, "{c}");
    assert!(
        c.contains("Failed to start") && c.contains("clb-health-check"),
        "{c}"
    );
    let r4 = report(&c);
    assert_eq!(
        (get(&r4, "release"), get(&r4, "slot"), get(&r4, "failure")),
        ("v1", "a", "b"),
        "{c}"
    );
    let s = clb::status(&kit, &disk);
    assert_eq!(
        (&s["active"], &s["failed_slot"]),
        (&"a".into(), &"b".into()),
        "{s}"
    );

    // 5. v4's init exits: its two tries panic, then v1 again.
    let broken = broken_init(work);
    let v4 = recipe.publish(
        &reg,
        "v4",
        &[&report_dir, &broken],
        &["clb-test-report.service"],
    );
    clb::upgrade(&kit, &disk, &v4, &[]);
    let c = boot(&disk, work, "debian-broken-init", true, BOOT * 2);
    assert_eq!(c.matches("CLB-DEBIAN broken init exits").count(), 2, "{c}");
    let r5 = report(&c);
    assert_eq!(
        (get(&r5, "release"), get(&r5, "slot"), get(&r5, "failure")),
        ("v1", "a", "b"),
        "{c}"
    );
    assert_eq!(get(&r5, "machine_id"), machine_id);
}
