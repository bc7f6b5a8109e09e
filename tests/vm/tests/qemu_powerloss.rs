//! Issue 3, test 8(f): power loss during an upgrade. Always a complete slot, never a hang.
//!
//! The upgrade (`clb --disk copy.img upgrade`, real registry, tar+gzip layers converted by
//! tar2sqfs, boot files copied) runs with the kit's kill shim (`tests/vm/src/killshim.c`, driven by `killshim.rs`) preloaded. The shim numbers
//! every call that changes what is on disk — writes to regular files, fsync/fdatasync/syncfs,
//! renames, unlinks, mkdir, copy_file_range, ftruncate — in one counter shared by clb, its
//! threads and its children (tar2sqfs, losetup), and at call number N kills the whole process
//! group with SIGKILL *instead of* making the call. A counting run first gives the number of
//! events T; the kill points are every fsync/rename/unlink/mkdir and the event right after
//! it, plus an evenly spaced, fixed-seed jittered spread over 1..=T (at least 50 in all).
//!
//! After each kill the test removes what the dead process left (its mounts, its loop devices:
//! what a reboot would drop), checks that nothing of the group is still running and no loop
//! device or mount is left, then checks the disk OFFLINE: `e2fsck -fn` is clean, an
//! independent reader (sgdisk/blkid, a read-only loop mount, sha256 here) finds `grubenv`
//! pointing at an active slot — and a fallback, when there is one — whose manifest lists
//! layers that all exist with the right sha256 and size, and whose boot files match; the
//! active slot is the old release (not committed) or the new one (committed), and it is the
//! new one exactly when the final `grubenv` rename had happened. `clb status` agrees. Then a
//! second `clb upgrade` (no shim) completes (resume). A sample of kill points (around the
//! pointer flip and in the middle of a layer conversion) is booted in QEMU with the hook.
//!
//! Model: process death at any of these points, the page cache survives (the kernel still
//! writes back what the dead process wrote). A real power cut's loss of unsynced writes and
//! their reordering is `qemu_crash_replay.rs` (dm-log-writes).
//!
//! Two scenarios: (A) first upgrade after `clb deploy` (v1 in a, v2 goes to b); (B) the
//! upgrade that overwrites the fallback slot (v2 good in b with fallback a = v1, v3 goes to
//! a): there the fallback is disarmed first, and a kill between that and the flip must leave
//! no fallback at all rather than a half-written one.
//!
//! Needs root, qemu-system-x86, busybox-static, docker-registry, gdisk, e2fsprogs,
//! squashfs-tools-ng, a C compiler (cc) and apt access for the kernel. Missing ones fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use clb_testsupport::Registry;
use clb_vm_tests::cmd::run;
use clb_vm_tests::disks::{self, PartitionMount};
use clb_vm_tests::killshim::{Event, KillPoint, build_shim, run_under_shim, short};
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::statecheck::{self, Seen};
use clb_vm_tests::{clb, qemu, testos};
use serde_json::Value;

const BOOT_TIMEOUT: Duration = Duration::from_secs(180);

/// Read the state partition of `disk` (mounted read-only) with [`statecheck::inspect`].
fn inspect(disk: &Path, work: &Path) -> Result<Seen, String> {
    let mnt = PartitionMount::state(disk, &work.join("inspect"), false);
    statecheck::inspect(mnt.path())
}

struct Scenario<'a> {
    name: &'a str,
    pristine: &'a Path,
    image: &'a str,
    /// The state before (and after an uncommitted kill, except that the fallback may be gone).
    before: Seen,
    /// The state after a complete upgrade.
    after: Seen,
    target_slot: &'a str,
}

#[derive(Default, Debug)]
struct Stats {
    points: usize,
    committed: usize,
    not_committed: usize,
    fallback_disarmed: usize,
    finished: usize,
    leaked_mounts: usize,
    leaked_loops: usize,
    booted: usize,
}

/// The path of a rename target without the private mount directory (`/run/clb/disk-P-N`).
fn state_suffix(path: &str) -> &str {
    path.split_once("/run/clb/disk-")
        .and_then(|(_, r)| r.find('/').map(|i| &r[i..]))
        .unwrap_or(path)
}

/// Kill points from the counting run: instead of and right after every rename (each one
/// commits a file: a layer, a cache entry, a boot file, a manifest, the boot state), plus
/// `spread` event numbers evenly spaced over the run with a fixed-seed jitter (downloads,
/// conversions, fsyncs, directory changes in between).
fn kill_points(events: &[Event], spread: usize) -> Vec<KillPoint> {
    let mut set = BTreeSet::new();
    let mut seen = std::collections::HashMap::<&str, u64>::new();
    for e in events.iter().filter(|e| e.call.starts_with("rename")) {
        let suffix = state_suffix(&e.path);
        let nth = seen.entry(suffix).or_default();
        *nth += 1;
        for offset in [0, 1] {
            set.insert(KillPoint::Rename {
                suffix: suffix.to_string(),
                nth: *nth,
                offset,
            });
        }
    }
    let t = events.len() as u64;
    let step = t as f64 / spread as f64;
    let mut seed: u64 = 0x00C1_B0F5;
    for i in 0..spread as u64 {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let jitter = ((seed >> 33) % 1000) as f64 / 1000.0 * step;
        set.insert(KillPoint::At(
            (1 + (i as f64 * step + jitter) as u64).min(t),
        ));
    }
    set.into_iter().collect()
}

/// The kill point of the boot-pointer flip (the `grubenv` rename after the target slot's
/// manifest), `offset` events after it.
fn flip_point(events: &[Event], target_slot: &str, offset: u64) -> KillPoint {
    let commit = commit_index(events, target_slot).expect("a commit");
    let nth = events
        .iter()
        .filter(|e| e.n <= commit && e.call.starts_with("rename") && e.path.ends_with("/grubenv"))
        .count() as u64;
    KillPoint::Rename {
        suffix: "/grubenv".into(),
        nth,
        offset,
    }
}

fn run_scenario(kit: &Kit, shim: &Path, work: &Path, sc: &Scenario, spread: usize) -> Stats {
    let disk = work.join(format!("{}-copy.img", sc.name));
    let copy = |disk: &Path| {
        run(Command::new("cp")
            .args(["--sparse=always", "--reflink=auto"])
            .arg(sc.pristine)
            .arg(disk));
    };

    // The counting run: how many events, and where the commit is.
    copy(&disk);
    let start = Instant::now();
    let count = run_under_shim(kit, shim, work, &disk, sc.image, &KillPoint::Never);
    let full = start.elapsed();
    assert!(!count.killed);
    let t = count.done.len();
    let commit = commit_index(&count.done, sc.target_slot)
        .unwrap_or_else(|| panic!("{}: no commit rename in {:?}", sc.name, count.done));
    assert_eq!(inspect(&disk, work).unwrap(), sc.after, "{}", sc.name);
    eprintln!(
        "[{}] full upgrade: {t} events, {:.2} s; the grubenv flip is event {commit}",
        sc.name,
        full.as_secs_f64()
    );
    let mut by_call = std::collections::BTreeMap::<&str, usize>::new();
    for e in &count.done {
        *by_call.entry(e.call.as_str()).or_default() += 1;
    }
    eprintln!("[{}] events by call: {by_call:?}", sc.name);

    let mut points = kill_points(&count.done, spread);
    // The flip is nearly the last thing an upgrade does: add every event after it, and the
    // end of the run.
    let tail = t as u64 - commit + 1;
    for offset in 2..=tail {
        points.push(flip_point(&count.done, sc.target_slot, offset));
    }
    points.dedup();
    // Boot sample: instead of and just after the flip, the middle of the run, and (B) just
    // after the fallback was disarmed.
    let mut boot_at = vec![
        flip_point(&count.done, sc.target_slot, 0),
        flip_point(&count.done, sc.target_slot, 1),
        points
            .iter()
            .filter_map(|p| match p {
                KillPoint::At(k) => Some((k.abs_diff(t as u64 / 2), p.clone())),
                _ => None,
            })
            .min()
            .expect("spread points")
            .1,
    ];
    if sc.before.fallback.is_some() {
        boot_at.push(KillPoint::Rename {
            suffix: "/grubenv".into(),
            nth: 1,
            offset: 1,
        });
    }
    for p in &boot_at {
        assert!(points.contains(p), "{p} is not a kill point");
    }
    let mut stats = Stats::default();
    let mut failures = Vec::new();
    for (i, k) in points.iter().enumerate() {
        copy(&disk);
        let r = run_under_shim(kit, shim, work, &disk, sc.image, k);
        stats.points += 1;
        stats.leaked_mounts += r.leaked_mounts;
        stats.leaked_loops += r.leaked_loops;
        let flipped = commit_index(&r.done, sc.target_slot).is_some();
        let what =
            r.at.as_ref()
                .map(|e| format!("#{} {} {}", e.n, e.call, short(&e.path)))
                .unwrap_or_else(|| "(ran to the end)".into());
        let verdict = check_point(&disk, work, sc, flipped).and_then(|seen| {
            // `clb status` must read the same disk and call the active slot complete.
            let s = clb::status(kit, &disk);
            if s["active"] != seen.active.as_str() || s["slots"][&seen.active]["complete"] != true {
                return Err(format!("clb status disagrees: {s}"));
            }
            Ok(seen)
        });
        match &verdict {
            Ok(seen) => {
                let committed = seen.active_image == sc.after.active_image;
                if !r.killed {
                    stats.finished += 1;
                } else if committed {
                    stats.committed += 1;
                } else {
                    stats.not_committed += 1;
                    if sc.before.fallback.is_some() && seen.fallback.is_none() {
                        stats.fallback_disarmed += 1;
                    }
                }
                eprintln!(
                    "[{}] kill at {:<28} (of {t}) before {what:<60} -> active {} {} fallback {:?} (mounts {} loops {} cleaned)",
                    sc.name,
                    k.to_string(),
                    seen.active,
                    short(&seen.active_image),
                    seen.fallback
                        .as_ref()
                        .map(|f| format!("{} {}", f.0, short(&f.1))),
                    r.leaked_mounts,
                    r.leaked_loops
                );
            }
            Err(e) => {
                eprintln!("[{}] kill {k}/{t} before {what}: FAILED: {e}", sc.name);
                failures.push(format!("kill point {k} ({what}): {e}"));
                continue;
            }
        }
        if boot_at.contains(k) {
            let seen = verdict.as_ref().unwrap();
            let b = qemu::boot_direct(
                kit,
                &disk,
                work,
                &format!("{}-kill{i}", sc.name),
                "",
                BOOT_TIMEOUT,
            );
            let line = testos::test_os_line(&b.console);
            let release = seen.active_image.rsplit(':').next().unwrap();
            let want = format!("release={release} slot={} mode=active", seen.active);
            if !line.contains(&want) {
                failures.push(format!("kill point {k}: booted {line:?}, wanted {want}"));
            }
            stats.booted += 1;
            // The boot may have counted a try: replay nothing, the hook synced and the init
            // remounted read-only before powering off.
        }
        // Resume: the same upgrade again, without the shim, completes.
        clb::upgrade(kit, &disk, sc.image, &[]);
        match inspect(&disk, work) {
            Ok(seen)
                if seen.active == sc.after.active
                    && seen.active_image == sc.after.active_image
                    && seen.fallback == sc.after.fallback => {}
            other => failures.push(format!(
                "kill point {k}: after the resumed upgrade: {other:?}"
            )),
        }
    }
    let _ = std::fs::remove_file(&disk);
    assert!(
        failures.is_empty(),
        "[{}] {} of {} kill points failed:\n{}",
        sc.name,
        failures.len(),
        points.len(),
        failures.join("\n")
    );
    stats
}

/// Index of the event that flips the boot pointer: the `grubenv` rename after the target
/// slot's manifest rename.
fn commit_index(events: &[Event], target_slot: &str) -> Option<u64> {
    let manifest = events.iter().position(|e| {
        e.call.starts_with("rename") && e.path.ends_with(&format!("/slots/{target_slot}.json"))
    })?;
    events[manifest..]
        .iter()
        .find(|e| e.call.starts_with("rename") && e.path.ends_with("/grubenv"))
        .map(|e| e.n)
}

/// Offline verdict for one kill point.
fn check_point(disk: &Path, work: &Path, sc: &Scenario, flipped: bool) -> Result<Seen, String> {
    disks::fsck_state_clean(disk)?;
    let seen = inspect(disk, work)?;
    if flipped {
        if seen != sc.after {
            return Err(format!(
                "the flip happened but the state is {seen:?}, wanted {:?}",
                sc.after
            ));
        }
    } else {
        let old = &sc.before;
        let same_active = seen.active == old.active
            && seen.active_image == old.active_image
            && seen.good == old.good;
        let fallback_ok = seen.fallback.is_none() || seen.fallback == old.fallback;
        if !same_active || !fallback_ok {
            return Err(format!(
                "not committed, but the state is {seen:?}, wanted {old:?} (fallback may be gone)"
            ));
        }
    }
    Ok(seen)
}

/// A release: shared busybox base, a boot layer (a fake kernel and initrd: their bytes are
/// only copied and hashed here, the QEMU boots use the real kernel with -kernel), a data
/// layer, and the top layer with init. Boot and data layers differ per release.
fn publish(kit: &Kit, reg: &Registry, work: &Path, base: &Path, release: &str) -> String {
    let boot = work.join(format!("{release}-boot"));
    let ver = "6.1.0-clbtest";
    testos::files_layer(
        &boot,
        &[
            (
                &format!("boot/vmlinuz-{ver}"),
                testos::noise(&format!("{release}-kernel"), 1536 * 1024),
            ),
            (
                &format!("boot/initrd.img-{ver}"),
                testos::noise(&format!("{release}-initrd"), 512 * 1024),
            ),
        ],
    );
    let data = work.join(format!("{release}-data"));
    testos::files_layer(
        &data,
        &[(
            "usr/share/clb-test/data.bin",
            testos::noise(&format!("{release}-data"), 1024 * 1024),
        )],
    );
    let top = work.join(format!("{release}-top"));
    testos::top_layer(&top, release, false);
    clb::push(
        kit,
        reg,
        &[base.to_path_buf(), boot, data, top],
        &format!("os:{release}"),
    )
}

/// The offline checker must be able to fail: a flipped byte in a layer of the fallback, a
/// missing boot file of the active slot, a boot pointer to a slot without a manifest.
fn checker_catches_damage(work: &Path, pristine: &Path) {
    let disk = work.join("damaged.img");
    let damage = |what: &str, f: &dyn Fn(&Path)| {
        run(Command::new("cp")
            .arg("--sparse=always")
            .arg(pristine)
            .arg(&disk));
        {
            let mnt = PartitionMount::state(&disk, &work.join("damage"), true);
            f(mnt.path());
        }
        let r = inspect(&disk, work);
        assert!(r.is_err(), "{what} went unnoticed: {r:?}");
        eprintln!("checker self-test: {what}: {}", r.unwrap_err());
    };
    damage("a flipped byte in a layer of fallback a", &|root| {
        let m: Value =
            serde_json::from_str(&std::fs::read_to_string(root.join("slots/a.json")).unwrap())
                .unwrap();
        let hex = m["layers"][1]["digest"].as_str().unwrap()["sha256:".len()..].to_string();
        let p = root.join(format!("layers/sha256-{hex}.squashfs"));
        let mut data = std::fs::read(&p).unwrap();
        data[100] ^= 1;
        std::fs::write(&p, data).unwrap();
    });
    damage("active b without its kernel", &|root| {
        std::fs::remove_file(root.join("boot/b/vmlinuz")).unwrap();
    });
    damage("a boot pointer to a slot with no manifest", &|root| {
        std::fs::remove_file(root.join("slots/a.json")).unwrap();
    });
    let _ = std::fs::remove_file(&disk);
}

#[test]
fn qemu_power_loss_during_upgrade() {
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    let shim = build_shim(work);
    let reg = Registry::start_plain();
    let base = work.join("base");
    testos::base_layer(&base);
    let v1 = publish(&kit, &reg, work, &base, "v1");
    let v2 = publish(&kit, &reg, work, &base, "v2");
    let v3 = publish(&kit, &reg, work, &base, "v3");

    // (A) v1 deployed in a; the upgrade writes v2 into b.
    let pristine_a = work.join("pristine-a.img");
    clb::deploy(&kit, &pristine_a, &v1, 96);
    let seen = |active: &str, image: &str, fallback: Option<(&str, &str)>, good: bool| Seen {
        active: active.into(),
        active_image: image.into(),
        fallback: fallback.map(|(s, i)| (s.into(), i.into())),
        good,
        tries: 3,
    };
    let before_a = inspect(&pristine_a, work).unwrap();
    assert_eq!(before_a, seen("a", &v1, None, true));
    let sc_a = Scenario {
        name: "A",
        pristine: &pristine_a,
        image: &v2,
        before: before_a.clone(),
        after: seen("b", &v2, Some(("a", &v1)), false),
        target_slot: "b",
    };

    // (B) v2 in b, marked good, fallback a = v1; the upgrade writes v3 into a.
    let pristine_b = work.join("pristine-b.img");
    run(Command::new("cp")
        .arg("--sparse=always")
        .arg(&pristine_a)
        .arg(&pristine_b));
    clb::upgrade(&kit, &pristine_b, &v2, &[]);
    clb::mark_good(&kit, &pristine_b);
    let before_b = inspect(&pristine_b, work).unwrap();
    assert_eq!(before_b, seen("b", &v2, Some(("a", &v1)), true));
    let sc_b = Scenario {
        name: "B",
        pristine: &pristine_b,
        image: &v3,
        before: before_b,
        after: seen("a", &v3, Some(("b", &v2)), false),
        target_slot: "a",
    };

    checker_catches_damage(work, &pristine_b);
    let a = run_scenario(&kit, &shim, work, &sc_a, 20);
    let b = run_scenario(&kit, &shim, work, &sc_b, 40);
    eprintln!("[A] {a:?}\n[B] {b:?}");
    let total = a.points + b.points;
    assert!(total >= 50 && b.points >= 50, "{total} kill points");
    for (name, s) in [("A", &a), ("B", &b)] {
        assert!(
            s.committed > 0 && s.not_committed > 0,
            "[{name}] the kill points must fall on both sides of the flip: {s:?}"
        );
        assert!(s.booted >= 3, "[{name}] {s:?}");
    }
    assert!(
        b.fallback_disarmed > 0,
        "[B] some kill points must fall between disarming the fallback and the flip: {b:?}"
    );
}
