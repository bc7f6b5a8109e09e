//! Issue 13, point 2: power cuts with real lost writes, the method of CrashMonkey and
//! dm-log-writes.
//!
//! A guest on the Debian kernel (`hostguest`: this host's programs over 9p) puts `COS_STATE`
//! — as `clb deploy` left it with v1 in slot a — on a `dm-log-writes` device and runs, each
//! after a mark in the log: the first upgrade (v2 into b), `mark-good`, the upgrade that
//! overwrites the fallback (v3 into a), `rollback` and `gc`, with the real clb against the
//! registry on the host. Then, in the same guest, `crash-replay` (src/bin/crash-replay.rs)
//! replays the log onto a copy of the starting state up to every flush and FUA point and to
//! random points between them, and checks each state on a throwaway snapshot: the journal
//! replayed by a mount, `e2fsck -fn` clean, the boot state decoded and the active slot and
//! fallback complete (every layer with its size and sha256), and the hook
//! (`clb-initrd assemble`) assembling a root with `/sbin/init` and the release of the slot
//! it booted.
//!
//! This test checks what the guest reports: no failed state, every state of an operation on
//! the release before or after it, the hook on the active slot, enough states per operation.
//!
//! Needs root, qemu-system-x86 with 9p, busybox-static, docker-registry, dmsetup, e2fsprogs,
//! squashfs-tools-ng, util-linux and apt access for the kernel. Missing ones fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use clb_testsupport::{Registry, require_tool};
use clb_vm_tests::cmd::run;
use clb_vm_tests::{clb, disks, hostguest, kit, qemu, testos};

const STATE_MIB: u32 = 160;
/// Random states between durability points (on top of every flush/FUA point).
const RANDOM_POINTS: usize = 60;
const GUEST_TIMEOUT: Duration = Duration::from_secs(40 * 60);

/// The operations the guest runs, each after a mark `op:NAME`, and the releases the active
/// slot may hold while it runs (before or after it).
const OPS: &[(&str, &[&str])] = &[
    ("op:mount", &["v1"]),
    ("op:upgrade-v2", &["v1", "v2"]),
    ("op:mark-good", &["v2"]),
    ("op:upgrade-v3", &["v2", "v3"]),
    ("op:rollback", &["v3", "v2"]),
    ("op:gc", &["v2"]),
    ("op:umount", &["v2"]),
    ("dm-log-writes-end", &["v2"]),
];

fn sparse(path: &Path, mib: u64) {
    let f = std::fs::File::create(path).unwrap();
    f.set_len(mib << 20).unwrap();
}

/// The release (`v2`) of an image reference (`…/os:v2`).
fn release(image: &str) -> &str {
    image.rsplit_once("os:").map(|(_, r)| r).unwrap_or(image)
}

#[derive(Default, Debug)]
struct OpCount {
    flush: usize,
    random: usize,
    no_fallback: usize,
    releases: BTreeMap<String, usize>,
}

#[test]
fn every_flush_point_of_every_operation_is_a_complete_bootable_state() {
    for tool in ["dmsetup", "unshare", "e2fsck", "qemu-system-x86_64"] {
        require_tool(tool);
    }
    let tmp = tempfile::tempdir().unwrap();
    let work = tmp.path();
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();
    let images = testos::releases(
        &kit,
        &reg,
        work,
        &[],
        &[("v1", false), ("v2", false), ("v3", false)],
    );

    // The starting state: COS_STATE of a disk deployed with v1, cut out of the disk image.
    let disk = work.join("disk.img");
    clb::deploy(&kit, &disk, &images[0], STATE_MIB);
    let (offset, size) = disks::partition_range(&disk, "COS_STATE");
    let share = work.join("share");
    std::fs::create_dir_all(&share).unwrap();
    let state = share.join("state.img");
    run(Command::new("dd")
        .arg(format!("if={}", disk.display()))
        .arg(format!("of={}", state.display()))
        .args([
            "bs=1M",
            "conv=sparse",
            "iflag=skip_bytes,count_bytes",
            "status=none",
        ])
        .arg(format!("skip={offset}"))
        .arg(format!("count={size}")));
    let base = work.join("base.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&state)
        .arg(&base));
    let log = work.join("log.img");
    sparse(&log, 2048);
    let cow = work.join("cow.img");
    sparse(&cow, 512);

    let crash_replay = env!("CARGO_BIN_EXE_crash-replay");
    let script = format!(
        r#"set -eu
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin DM_DISABLE_UDEV=1
busybox ip link set lo up
busybox ip link set eth0 up
busybox ip addr add 10.0.2.15/24 dev eth0
dmsetup create rec --table "0 $(cat /sys/class/block/vda/size) log-writes /dev/vda /dev/vdb"
mark() {{ dmsetup message rec 0 mark "$1"; }}
mkdir -p /run/state
mark op:mount
mount -t ext4 /dev/mapper/rec /run/state
clb() {{ {clb} --state-dir /run/state "$@"; }}
mark op:upgrade-v2
clb upgrade -q --insecure -d 10.0.2.100/os:v2 --no-verify
mark op:mark-good
clb mark-good
mark op:upgrade-v3
clb upgrade -q --insecure -d 10.0.2.100/os:v3 --no-verify
mark op:rollback
clb rollback
mark op:gc
clb gc
clb --json status > /run/work/status.json
mark op:umount
umount /run/state
dmsetup remove rec
# The recorded disk carries the state's label too: only the replayed snapshots may.
rm /dev/vda
echo "RECORDED after $(cut -d" " -f1 /proc/uptime) s"
{crash_replay} --log /dev/vdb --base /dev/vdc --cow /dev/vdd --hook {hook} \
    --random {RANDOM_POINTS} --seed 13 | tee /run/work/results.txt
"#,
        clb = kit.clb.display(),
        hook = kit.hook.display(),
    );
    std::fs::write(share.join("guest.sh"), script).unwrap();

    let initrd = hostguest::initramfs(&kit, work, &["dm_log_writes", "dm_snapshot"]);
    let boot = hostguest::qemu(&kit, &initrd, &share)
        .memory(1024)
        .disk(&state)
        .disk(&log)
        .disk(&base)
        .disk(&cow)
        .args(qemu::restricted_net_args(reg.port()))
        .boot(work, "crash-replay", GUEST_TIMEOUT);
    assert!(
        boot.console.contains("RECORDED"),
        "the recording failed:\n{}",
        boot.console
    );
    let results = std::fs::read_to_string(share.join("results.txt")).unwrap_or_default();
    let summary = results
        .lines()
        .find(|l| l.starts_with("CRASH-SUMMARY"))
        .unwrap_or_else(|| panic!("no summary:\n{results}\n{}", boot.console));
    eprintln!("{results}");

    let allowed: BTreeMap<&str, &[&str]> = OPS.iter().copied().collect();
    let mut counts: BTreeMap<String, OpCount> = BTreeMap::new();
    let mut failures = Vec::new();
    for line in results.lines().filter(|l| l.starts_with("CRASH-POINT")) {
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{k}=")))
                .unwrap_or("")
                .to_string()
        };
        if line.contains(" FAIL ") {
            failures.push(line.to_string());
            continue;
        }
        let op = field("op");
        let (active, active_image) = field("active").split_once(':').map_or_else(
            || (String::new(), String::new()),
            |(s, i)| (s.to_string(), i.to_string()),
        );
        let rel = release(&active_image).to_string();
        let Some(ok) = allowed.get(op.as_str()) else {
            failures.push(format!("unknown operation: {line}"));
            continue;
        };
        if !ok.contains(&rel.as_str()) {
            failures.push(format!("release {rel} during {op}: {line}"));
        }
        let hook = field("hook");
        if hook != format!("{active}:{rel}") {
            failures.push(format!(
                "the hook booted {hook}, the active slot is {active}:{rel}: {line}"
            ));
        }
        let c = counts.entry(op).or_default();
        if field("kind") == "random" {
            c.random += 1;
        } else {
            c.flush += 1;
        }
        if field("fallback") == "none" {
            c.no_fallback += 1;
        }
        *c.releases.entry(rel).or_default() += 1;
    }
    for (op, c) in &counts {
        eprintln!("{op}: {c:?}");
    }
    assert!(
        failures.is_empty(),
        "{} states failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(summary.contains(" failures=0"), "{summary}");
    // Every operation was crossed by flush points, and both sides of each upgrade were seen.
    for op in [
        "op:upgrade-v2",
        "op:mark-good",
        "op:upgrade-v3",
        "op:rollback",
        "op:gc",
    ] {
        let c = counts
            .get(op)
            .unwrap_or_else(|| panic!("no state during {op}: {counts:?}"));
        assert!(c.flush > 0, "no flush point during {op}: {c:?}");
    }
    for (op, old, new) in [("op:upgrade-v2", "v1", "v2"), ("op:upgrade-v3", "v2", "v3")] {
        let r = &counts[op].releases;
        assert!(r.contains_key(old) && r.contains_key(new), "{op}: {r:?}");
    }
    // The check can fail: in each upgrade, states that keep writes logged after lost ones
    // (a disk that ignores flushes) are found broken.
    for op in ["op:upgrade-v2", "op:upgrade-v3"] {
        let controls: Vec<&str> = results
            .lines()
            .filter(|l| l.starts_with(&format!("CRASH-CONTROL op={op} ")))
            .collect();
        assert!(
            controls.iter().any(|l| l.contains(" detected ")),
            "no broken state detected during {op}: {controls:?}"
        );
    }
    // The final state is what clb reported at the end of the recording.
    let status = std::fs::read_to_string(share.join("status.json")).unwrap();
    assert!(status.contains("os:v2"), "{status}");
}
