//! The power-cut checker of `tests/qemu_crash_replay.rs`, run inside the guest (Debian kernel,
//! the host's programs over 9p) after the operations were recorded with `dm-log-writes`.
//!
//! `crash-replay --log DEV --base DEV --cow DEV --hook CLB_INITRD --random N --seed S`
//!
//! `base` holds the state partition as it was before the recording. The log is replayed onto
//! it entry by entry. At every flush or FUA entry (a point where the disk holds everything
//! logged so far), and at the end of the log, the state is checked. `random` more states are
//! built between two such points: everything up to the first, the FUA writes that follow up
//! to a random cut, and a random half of the other writes up to that cut (the writes a
//! volatile cache may or may not have kept, in any order).
//!
//! A state is checked on a throwaway snapshot of `base` (dm-snapshot, `cow` takes its
//! writes): a read-write mount and unmount replay the ext4 journal as a boot would, then
//! `e2fsck -fn` must find it clean; the independent reader (`statecheck`) must decode the boot
//! state and find the active slot and the fallback complete; `clb-initrd assemble` (the hook)
//! must assemble a root from it with `/sbin/init` and the release file of a slot. One line
//! per state on stdout (`CRASH-POINT …`), then `CRASH-SUMMARY …`.
//!
//! Controls show that the check can fail: for each upgrade, states that drop the writes of
//! one of its largest intervals between durability points and keep everything after them
//! (what a disk that ignores flushes may leave) are built and checked too
//! (`CRASH-CONTROL … detected|MISSED`).
//!
//! The base device's node is removed once it is open, so that the hook, which looks for
//! `COS_STATE` by label among the block devices in /dev, finds the snapshot only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

use clb_testsupport::Rng;
use clb_vm_tests::logwrites::{FUA, Log};
use clb_vm_tests::statecheck;

struct Args {
    log: PathBuf,
    base: PathBuf,
    cow: PathBuf,
    hook: PathBuf,
    random: usize,
    seed: u64,
}

fn parse_args() -> Args {
    let mut it = std::env::args().skip(1);
    let mut a = Args {
        log: PathBuf::new(),
        base: PathBuf::new(),
        cow: PathBuf::new(),
        hook: PathBuf::new(),
        random: 0,
        seed: 1,
    };
    while let Some(k) = it.next() {
        let v = it.next().unwrap_or_else(|| panic!("{k} needs a value"));
        match k.as_str() {
            "--log" => a.log = v.into(),
            "--base" => a.base = v.into(),
            "--cow" => a.cow = v.into(),
            "--hook" => a.hook = v.into(),
            "--random" => a.random = v.parse().unwrap(),
            "--seed" => a.seed = v.parse().unwrap(),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

/// A sysfs attribute of a block device node (`dev` is `major:minor`, `size` in sectors).
fn block_attr(dev: &Path, attr: &str) -> String {
    let name = dev.file_name().unwrap().to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/sys/class/block/{name}/{attr}"))
        .unwrap()
        .trim()
        .to_string()
}

/// Run a command; `Err` with its output unless it exits 0.
fn sh(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .map_err(|e| format!("{}: {e}", cmd.get_program().to_string_lossy()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        let program = cmd.get_program().to_string_lossy().into_owned();
        Err(format!("{program}: {}: {}", out.status, text.trim()))
    }
}

const SNAPSHOT: &str = "crashcheck";
const STATE_MNT: &str = "/run/crash-state";
const SYSROOT: &str = "/run/crash-sysroot";
const CMDLINE: &str = "/run/crash-cmdline";

struct Checker {
    origin: String,
    cow: String,
    sectors: u64,
    hook: PathBuf,
}

impl Checker {
    /// Build the snapshot, add `extra` writes of the log to it, and check the state.
    fn check(&self, log: &Log, extra: &[usize]) -> Result<String, String> {
        sh(Command::new("dmsetup").args([
            "create",
            SNAPSHOT,
            "--table",
            &format!(
                "0 {} snapshot {} {} N 8",
                self.sectors, self.origin, self.cow
            ),
        ]))?;
        let verdict = self.check_snapshot(log, extra);
        let teardown = self.teardown();
        let verdict = verdict?;
        teardown?;
        Ok(verdict)
    }

    fn check_snapshot(&self, log: &Log, extra: &[usize]) -> Result<String, String> {
        let dev = format!("/dev/mapper/{SNAPSHOT}");
        if !extra.is_empty() {
            let f = File::options()
                .write(true)
                .open(&dev)
                .map_err(|e| format!("{dev}: {e}"))?;
            for &i in extra {
                log.apply(i, &f).map_err(|e| format!("replay {i}: {e}"))?;
            }
            f.sync_all().map_err(|e| format!("sync {dev}: {e}"))?;
        }
        // What a boot does first: mount (the kernel replays the journal), later unmount.
        sh(Command::new("mount").args(["-t", "ext4", &dev, STATE_MNT]))
            .map_err(|e| format!("mount: {e}"))?;
        sh(Command::new("umount").arg(STATE_MNT))?;
        sh(Command::new("e2fsck").args(["-fn", &dev])).map_err(|e| format!("e2fsck: {e}"))?;
        sh(Command::new("mount").args(["-t", "ext4", "-o", "ro", &dev, STATE_MNT]))?;
        let seen = statecheck::inspect(Path::new(STATE_MNT));
        sh(Command::new("umount").arg(STATE_MNT))?;
        let seen = seen?;
        let fallback = match &seen.fallback {
            Some((slot, image)) => format!("{slot}:{image}"),
            None => "none".into(),
        };
        let hook = self.boot_with_hook()?;
        Ok(format!(
            "active={}:{} fallback={fallback} good={} {hook}",
            seen.active, seen.active_image, seen.good as u8
        ))
    }

    /// The hook assembles the root in a private mount namespace (its mounts go with it).
    fn boot_with_hook(&self) -> Result<String, String> {
        let script = format!(
            "set -e\n\
             {hook} assemble --sysroot {SYSROOT} --cmdline {CMDLINE} 2>&1\n\
             test -x {SYSROOT}/sbin/init\n\
             . {SYSROOT}/etc/clb-test-release\n\
             echo \"HOOK-RELEASE=$RELEASE\"\n",
            hook = self.hook.display()
        );
        let out = sh(Command::new("unshare").args([
            "-m",
            "--propagation",
            "private",
            "sh",
            "-c",
            &script,
        ]))
        .map_err(|e| format!("hook: {e}"))?;
        let slot = out
            .lines()
            .find_map(|l| l.split("assembled slot ").nth(1))
            .and_then(|r| r.split_whitespace().next())
            .ok_or_else(|| format!("hook: no slot assembled: {out}"))?;
        let release = out
            .lines()
            .find_map(|l| l.strip_prefix("HOOK-RELEASE="))
            .ok_or_else(|| format!("hook: no release: {out}"))?;
        Ok(format!("hook={slot}:{release}"))
    }

    fn teardown(&self) -> Result<(), String> {
        // The hook's layer loop devices, gone with its mounts.
        let _ = sh(Command::new("losetup").arg("-D"));
        let mut last = String::new();
        for _ in 0..50 {
            match sh(Command::new("dmsetup").args(["remove", SNAPSHOT])) {
                Ok(_) => return Ok(()),
                Err(e) => last = e,
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
            let _ = sh(Command::new("losetup").arg("-D"));
        }
        Err(format!("cannot remove the snapshot: {last}"))
    }
}

/// One line of at most 300 characters (a manifest of zeros would fill a screen).
fn one_line(e: &str) -> String {
    let line = e.trim().replace('\n', " | ");
    match line.char_indices().nth(300) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}

fn main() {
    let a = parse_args();
    let log = Log::read(File::open(&a.log).unwrap()).unwrap();
    let base = File::options()
        .read(true)
        .write(true)
        .open(&a.base)
        .unwrap();
    let checker = Checker {
        origin: block_attr(&a.base, "dev"),
        cow: block_attr(&a.cow, "dev"),
        sectors: block_attr(&a.base, "size").parse().unwrap(),
        hook: a.hook.clone(),
    };
    let journal = journal_extents(&a.base);
    // Only the snapshot may carry the state's label from here on: the base holds it, and
    // the exception store of a transient snapshot starts with the chunks it copied (the
    // superblock among them).
    std::fs::remove_file(&a.base).unwrap();
    std::fs::remove_file(&a.cow).unwrap();
    for d in [STATE_MNT, SYSROOT] {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(CMDLINE, "clb.timeout=5\n").unwrap();

    let n = log.entries.len();
    let points: Vec<usize> = (0..n)
        .filter(|&i| log.entries[i].is_durability_point())
        .collect();
    // Random states: an interval after a durability point (or the start) with writes in it.
    let mut rng = Rng(a.seed | 1);
    let mut random: Vec<Vec<usize>> = vec![Vec::new(); points.len() + 1];
    let intervals: Vec<(usize, usize)> = std::iter::once(0)
        .chain(points.iter().map(|&p| p + 1))
        .zip(points.iter().copied().chain(std::iter::once(n)))
        .collect();
    let with_writes: Vec<usize> = (0..intervals.len())
        .filter(|&k| (intervals[k].0..intervals[k].1).any(|i| log.entries[i].writes()))
        .collect();
    for _ in 0..a.random {
        if with_writes.is_empty() {
            break;
        }
        let k = with_writes[rng.below(with_writes.len())];
        random[k].push(rng.next_u64() as usize);
    }

    let controls = controls(&log, &intervals, &journal);

    let mut op = String::from("start");
    let (mut checked, mut same, mut failures, mut random_done) = (0, 0, 0, 0);
    let mut dirty = true;
    let report = |kind: &str, entry: usize, op: &str, r: &Result<String, String>| match r {
        Ok(v) => println!("CRASH-POINT kind={kind} entry={entry} op={op} ok {v}"),
        Err(e) => println!(
            "CRASH-POINT kind={kind} entry={entry} op={op} FAIL {}",
            one_line(e)
        ),
    };
    let mut controls_detected = 0;
    for (k, &(from, to)) in intervals.iter().enumerate() {
        if let Some((control_op, extra)) = controls.get(&k) {
            base.sync_all().unwrap();
            let dropped: u64 = (from..to)
                .filter(|&i| log.entries[i].writes() && !extra.contains(&i))
                .map(|i| log.entries[i].nr_sectors * log.sectorsize)
                .sum();
            match checker.check(&log, extra) {
                Ok(v) => println!(
                    "CRASH-CONTROL op={control_op} entries={from}..{to} dropped_bytes={dropped} MISSED {v}"
                ),
                Err(e) => {
                    controls_detected += 1;
                    println!(
                        "CRASH-CONTROL op={control_op} entries={from}..{to} dropped_bytes={dropped} detected {}",
                        one_line(&e)
                    );
                }
            }
        }
        // Random states of this interval, on top of the base as it stands (up to `from`).
        for &draw in &random[k] {
            let writes: Vec<usize> = (from..to).filter(|&i| log.entries[i].writes()).collect();
            let cut = writes[draw % writes.len()];
            let mut pick = Rng(draw as u64 | 1);
            let extra: Vec<usize> = writes
                .iter()
                .copied()
                .filter(|&i| {
                    i <= cut && (log.entries[i].flags & FUA != 0 || pick.next_u64() & 1 == 1)
                })
                .collect();
            let op_here = (from..=cut)
                .rev()
                .find_map(|i| log.entries[i].mark.clone())
                .unwrap_or_else(|| op.clone());
            base.sync_all().unwrap();
            let r = checker.check(&log, &extra);
            failures += r.is_err() as usize;
            random_done += 1;
            report("random", cut, &op_here, &r);
        }
        for i in from..to {
            if let Some(m) = &log.entries[i].mark {
                op = m.clone();
            }
            if log.entries[i].writes() {
                log.apply(i, &base).unwrap();
                dirty = true;
            }
        }
        // The durability point `to` itself (or the end of the log).
        if to < n {
            if log.entries[to].writes() {
                log.apply(to, &base).unwrap();
                dirty = true;
            }
            if let Some(m) = &log.entries[to].mark {
                op = m.clone();
            }
        }
        if !dirty {
            same += 1;
            continue;
        }
        base.sync_all().unwrap();
        let r = checker.check(&log, &[]);
        failures += r.is_err() as usize;
        checked += 1;
        dirty = false;
        let kind = if to == n {
            "end"
        } else if log.entries[to].flags & FUA != 0 {
            "fua"
        } else {
            "flush"
        };
        report(kind, to, &op, &r);
    }
    let writes = log.entries.iter().filter(|e| e.writes()).count();
    println!(
        "CRASH-SUMMARY entries={n} writes={writes} durability_points={} checked={checked} \
         unchanged={same} random={random_done} failures={failures} controls={} \
         controls_detected={controls_detected}",
        points.len(),
        controls.len()
    );
}

/// Controls, states no disk that honours flushes can produce: during each upgrade, the
/// writes outside the ext4 journal (file data, metadata in place) of one of its three
/// largest intervals between durability points are lost while the journal and everything
/// after them, up to the end of the upgrade, reached the disk. (Losing the journal's
/// writes too is not a control: jbd2 then stops replaying at the hole and the disk comes
/// back as it was, consistent.) The check must find such states broken: it is how the test
/// shows that it can fail. Keyed by the interval: the operation and the writes applied.
fn controls(
    log: &Log,
    intervals: &[(usize, usize)],
    journal: &[(u64, u64)],
) -> BTreeMap<usize, (String, Vec<usize>)> {
    let marks: Vec<(usize, String)> = log
        .entries
        .iter()
        .enumerate()
        .filter_map(|(i, e)| e.mark.clone().map(|m| (i, m)))
        .collect();
    let mut out = BTreeMap::new();
    for (w, (start, name)) in marks.iter().enumerate() {
        if !name.starts_with("op:upgrade") {
            continue;
        }
        let end = marks.get(w + 1).map_or(log.entries.len(), |m| m.0);
        let in_journal = |i: usize| {
            let e = &log.entries[i];
            let (start, len) = (e.sector * log.sectorsize, e.nr_sectors * log.sectorsize);
            journal
                .iter()
                .any(|&(j, jl)| start >= j && start + len <= j + jl)
        };
        // Sized by what would be lost: the writes outside the journal.
        let mut sized: Vec<(u64, usize)> = intervals
            .iter()
            .enumerate()
            .filter(|(_, (from, to))| *from > *start && *to < end)
            .map(|(k, &(from, to))| {
                let bytes = (from..to)
                    .filter(|&i| log.entries[i].writes() && !in_journal(i))
                    .map(|i| log.entries[i].nr_sectors)
                    .sum::<u64>();
                (bytes, k)
            })
            .filter(|&(bytes, _)| bytes > 0)
            .collect();
        sized.sort_unstable_by(|a, b| b.cmp(a));
        for &(_, k) in sized.iter().take(3) {
            let (from, to) = intervals[k];
            let after: Vec<usize> = (from..end)
                .filter(|&i| log.entries[i].writes() && (i >= to || in_journal(i)))
                .collect();
            out.insert(k, (name.clone(), after));
        }
    }
    out
}

/// Byte ranges of the ext4 journal (inode 8) on `dev`, from debugfs.
fn journal_extents(dev: &Path) -> Vec<(u64, u64)> {
    let dev = dev.to_str().unwrap();
    let stats = sh(Command::new("debugfs").args(["-R", "stats", dev])).unwrap();
    let block: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("Block size:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no block size in debugfs stats: {stats}"));
    let stat = sh(Command::new("debugfs").args(["-R", "stat <8>", dev])).unwrap();
    let extents = stat
        .split("EXTENTS:")
        .nth(1)
        .unwrap_or_else(|| panic!("no extents for the journal: {stat}"));
    // "(0-4095):65537-69632, (4096):70000": logical range, then physical block(s).
    let ranges: Vec<(u64, u64)> = extents
        .split([',', '\n'])
        .filter_map(|item| item.trim().split_once("):"))
        .filter(|(logical, _)| !logical.contains("ETB"))
        .map(|(_, physical)| {
            let (a, b) = physical.split_once('-').unwrap_or((physical, physical));
            let (a, b): (u64, u64) = (a.trim().parse().unwrap(), b.trim().parse().unwrap());
            (a * block, (b - a + 1) * block)
        })
        .collect();
    assert!(!ranges.is_empty(), "no journal extents in: {stat}");
    ranges
}
