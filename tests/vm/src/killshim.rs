//! Power loss, modelled as process death: `killshim.c` (next to this file) preloaded into
//! `clb` numbers every call that changes what is on disk, in one counter shared by clb, its
//! threads and its children (tar2sqfs, losetup), and at call number N kills the whole process
//! group with SIGKILL *instead of* making the call. After the kill, what the dead process left
//! (its mounts, its loop devices: what a reboot would drop) is removed, and nothing of it may
//! be left running, mounted or attached.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clb_testsupport::require_tool;

use crate::cmd::{kit_dir, run};
use crate::disks::{MountInfo, loops_backed_by, mounts, wait_loop_released};
use crate::kit::Kit;

/// A whole `clb upgrade` under the shim takes seconds; more is a hang.
const RUN_TIMEOUT: Duration = Duration::from_secs(120);

/// Compile the shim into `work`.
pub fn build_shim(work: &Path) -> PathBuf {
    require_tool("cc");
    let so = work.join("killshim.so");
    run(Command::new("cc")
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o"])
        .arg(&so)
        .arg(kit_dir().join("src/killshim.c"))
        .arg("-ldl"));
    so
}

/// One event the shim counted: number, pid, call, path.
#[derive(Debug, Clone)]
pub struct Event {
    pub n: u64,
    pub call: String,
    pub path: String,
}

fn read_events(log: &Path) -> Vec<Event> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut it = l.splitn(4, ' ');
            let n = it.next()?.parse().ok()?;
            let _pid = it.next()?;
            let call = it.next()?.to_string();
            let path = it.next().unwrap_or("").to_string();
            Some(Event { n, call, path })
        })
        .collect()
}

/// Where to cut the power.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum KillPoint {
    /// Count only.
    Never,
    /// Instead of event number N (1-based) of the run.
    At(u64),
    /// `offset` events after the `nth` rename whose target ends with `suffix` (0: instead of
    /// that rename). Event numbers vary a little between runs (network reads), these do not.
    Rename {
        suffix: String,
        nth: u64,
        offset: u64,
    },
}

impl std::fmt::Display for KillPoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KillPoint::Never => write!(f, "never"),
            KillPoint::At(k) => write!(f, "event {k}"),
            KillPoint::Rename {
                suffix,
                nth,
                offset,
            } => write!(f, "rename#{nth} {}+{offset}", short(suffix)),
        }
    }
}

/// What one run under the shim did.
pub struct Run {
    /// Killed (true) or ran to the end (false).
    pub killed: bool,
    /// Events that happened (the killed one excluded).
    pub done: Vec<Event>,
    /// The event it was killed at (did not happen).
    pub at: Option<Event>,
    pub leaked_mounts: usize,
    pub leaked_loops: usize,
}

/// Run `clb --disk DISK upgrade -d IMAGE` under the shim, kill at `point`, then clean up
/// after the dead process like a reboot would, and check nothing is left.
pub fn run_under_shim(
    kit: &Kit,
    shim: &Path,
    work: &Path,
    disk: &Path,
    image: &str,
    point: &KillPoint,
) -> Run {
    let counter = work.join("kill.counter");
    let log = work.join("kill.log");
    std::fs::write(&counter, [0u8; 24]).unwrap();
    let _ = std::fs::remove_file(&log);
    let start = Instant::now();
    let mut cmd = Command::new(&kit.clb);
    cmd.arg("--disk")
        .arg(disk)
        .args(["upgrade", "-q", "-d", image, "--no-verify"])
        .env("LD_PRELOAD", shim)
        .env("CLB_KILL_COUNTER", &counter)
        .env("CLB_KILL_LOG", &log);
    match point {
        KillPoint::Never => {}
        KillPoint::At(k) => {
            cmd.env("CLB_KILL_AT", k.to_string());
        }
        KillPoint::Rename {
            suffix,
            nth,
            offset,
        } => {
            cmd.env("CLB_KILL_ANCHOR", suffix)
                .env("CLB_KILL_ANCHOR_NTH", nth.to_string())
                .env("CLB_KILL_AT", offset.to_string());
        }
    }
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped()) // a pipe, not a file: its writes are not disk events
        .spawn()
        .expect("start clb");
    let pid = child.id();
    let mut pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut pipe, &mut s);
        s
    });
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break Some(st);
        }
        if start.elapsed() > RUN_TIMEOUT {
            kill_group(pid);
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    // Every process of the group (tar2sqfs, losetup) must be gone too.
    let group_gone = wait_group_gone(pid, Duration::from_secs(20));
    let all = read_events(&log);
    let (leaked_mounts, leaked_loops) = clean_up_after(pid, disk, &all);
    let events: Vec<Event> = all.into_iter().filter(|e| e.n > 0).collect();
    let stderr = reader.join().unwrap_or_default();
    let status = status.unwrap_or_else(|| {
        panic!("kill point {point}: clb upgrade hung (killed after {RUN_TIMEOUT:?}): {stderr}")
    });
    assert!(
        group_gone,
        "kill point {point}: processes of group {pid} still running"
    );
    use std::os::unix::process::ExitStatusExt;
    let killed = status.signal() == Some(9);
    assert!(
        killed || status.success(),
        "kill point {point}: clb upgrade failed instead of dying or finishing: {status}\n{stderr}"
    );
    let (done, at) = if killed {
        // The first event at or past the kill target (other threads may have logged later
        // ones before the signal reached them; none of them happened either).
        let target = match point {
            KillPoint::Never => u64::MAX,
            KillPoint::At(k) => *k,
            KillPoint::Rename {
                suffix,
                nth,
                offset,
            } => {
                let anchor = events
                    .iter()
                    .filter(|e| e.call.starts_with("rename") && e.path.ends_with(suffix.as_str()))
                    .nth(*nth as usize - 1)
                    .unwrap_or_else(|| {
                        panic!("killed at {point} but the anchor is not in the log")
                    });
                anchor.n + offset
            }
        };
        let at = events
            .iter()
            .filter(|e| e.n >= target)
            .min_by_key(|e| e.n)
            .cloned();
        (
            events.iter().filter(|e| e.n < target).cloned().collect(),
            at,
        )
    } else {
        (events, None)
    };
    Run {
        killed,
        done,
        at,
        leaked_mounts,
        leaked_loops,
    }
}

fn kill_group(pgid: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pgid}")])
        .status();
}

/// Live (non-zombie) processes whose process group is `pgid`.
fn group_members(pgid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...; comm may contain spaces: split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() != Some(&"Z") && f.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

fn wait_group_gone(pgid: u32, timeout: Duration) -> bool {
    let start = Instant::now();
    loop {
        if group_members(pgid).is_empty() {
            return true;
        }
        if start.elapsed() > timeout {
            kill_group(pgid);
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Unmount what the dead process group `pid` mounted and detach its loop devices (what a
/// reboot drops), then check nothing of it is left. Only touches mounts at directories the
/// group created (from the shim's log) or under `/run/clb/disk-<p>-*` of its processes, and
/// loop devices backed by `disk` or by files under those: other tests may run concurrently.
/// Returns how many mounts and loop devices had to be removed.
fn clean_up_after(pid: u32, disk: &Path, events: &[Event]) -> (usize, usize) {
    // The directories it really created (the shim's "made" lines, written after mkdir
    // succeeded): never touch a same-named directory of another process.
    let made: Vec<&str> = events
        .iter()
        .filter(|e| e.n == 0 && e.call == "made")
        .map(|e| e.path.as_str())
        .collect();
    // Its private mounts of the state partition (`/run/clb/disk-<pid>-<n>`); a pid prefix
    // alone would also match other processes' (reused pids, concurrent tests).
    let prefixes: Vec<String> = made
        .iter()
        .filter(|d| d.starts_with("/run/clb/disk-"))
        .map(|d| format!("{d}/"))
        .collect();
    let in_state = |p: &str| {
        prefixes
            .iter()
            .any(|x| p.starts_with(x.as_str()) || x.strip_suffix('/') == Some(p))
    };
    let ours = |loops: &[String], m: &MountInfo| {
        in_state(&m.point)
            || made
                .iter()
                .any(|d| m.point == *d || m.point.starts_with(&format!("{d}/")))
            || loops.contains(&m.source)
    };
    let all_loops = || loops_backed_by(Some(disk), &prefixes);
    let loops = all_loops();
    let victims: Vec<String> = mounts()
        .iter()
        .filter(|m| ours(&loops, m))
        .map(|m| m.point.clone())
        .collect();
    // Like a shutdown: mounts on top first (mountinfo lists parents before children), then
    // the layer loop devices whose files live on the state partition, then the partition.
    let umount = |point: &str| {
        let ok = Command::new("umount")
            .arg(point)
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "cannot unmount {point} left by process group {pid}");
    };
    let detach = |dev: &str| {
        // Auto-clearing devices may already be gone once unmounted: ignore the error, the
        // check below is what counts.
        let _ = Command::new("losetup")
            .args(["-d", dev])
            .stderr(Stdio::null())
            .status();
        wait_loop_released(dev);
    };
    for point in victims.iter().rev().filter(|p| !in_state(p)) {
        umount(point);
    }
    for dev in loops_backed_by(None, &prefixes) {
        detach(&dev);
    }
    for point in victims.iter().rev().filter(|p| in_state(p)) {
        umount(point);
    }
    for dev in all_loops() {
        detach(&dev);
    }
    // Directories it created and left (empty now); remove_dir never removes content.
    let mut dirs: Vec<&str> = made
        .iter()
        .copied()
        .filter(|d| d.starts_with("/run/clb/") || d.starts_with("/tmp/clb-"))
        .collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.len()));
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
    let start = Instant::now();
    loop {
        let left_loops = all_loops();
        let left_mounts: Vec<String> = mounts()
            .iter()
            .filter(|m| ours(&left_loops, m))
            .map(|m| format!("{} on {}", m.source, m.point))
            .collect();
        if left_loops.is_empty() && left_mounts.is_empty() {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "left behind by process group {pid}: loops {left_loops:?}, mounts {left_mounts:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // And `losetup -j` (the tool's own view) agrees.
    let j = run(Command::new("losetup").arg("-j").arg(disk));
    assert!(j.trim().is_empty(), "losetup -j {}: {j}", disk.display());
    (victims.len(), loops.len())
}

/// A path or image reference short enough for a log line: a path without the private
/// mount dir, an image by its tag.
pub fn short(s: &str) -> String {
    let s = s
        .split_once("/run/clb/disk-")
        .map(|(_, r)| r.split_once('/').map_or(r, |(_, p)| p))
        .unwrap_or(s);
    let s = s.rsplit_once("127.0.0.1:").map_or(s, |(_, r)| r);
    let s = s.rsplit_once('/').map_or(s, |(_, r)| r);
    if s.len() > 40 {
        format!("{}…", &s[..40])
    } else {
        s.to_string()
    }
}
