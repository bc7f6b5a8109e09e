//! Issue 3, point 9: boot figures, measured in QEMU (TCG), printed as the table of
//! docs/performance.md ("Boot"). Asserts only that every boot reached the test OS (or, for the
//! broken release, panicked and was rolled back); the numbers themselves vary with the host.
//!
//! - Hook time from its start to `switch_root` (the hook's own console line
//!   `switch_root after N ms`, measured inside the guest) for slots of 1, 4 and 16 layers;
//! - boot-to-rollback: wall time of one VM that boots a broken release (its init exits, the
//!   kernel panics, `panic=5` reboots the VM) until the rolled-back release's init runs, for
//!   max tries 1 and 3. The VM reboots itself, as a machine does; ext4 replays its journal
//!   at mount.
//!
//! `CLB_BENCH_REPEAT=N` boots each layer count N times (default 1); `scripts/bench-boot` runs
//! it with 3 and prints the table. Needs what qemu_boot.rs needs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clb_testsupport::Registry;
use clb_vm_tests::cmd::run;
use clb_vm_tests::kit::{self, Kit};
use clb_vm_tests::qemu::{self, Qemu};
use clb_vm_tests::{clb, testos};

const TIMEOUT: Duration = Duration::from_secs(240);

/// Small trees: `files` files of 1-4 KiB under /usr/share/clb-bench/<name>.
fn small_tree(dir: &Path, name: &str, files: usize) {
    let list: Vec<(String, Vec<u8>)> = (0..files)
        .map(|i| {
            (
                format!("usr/share/clb-bench/{name}/f{i:03}"),
                testos::noise(&format!("{name}-{i}"), 1024 * (1 + i % 4)),
            )
        })
        .collect();
    let refs: Vec<(&str, Vec<u8>)> = list.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
    testos::files_layer(dir, &refs);
}

/// An image of exactly `n` layers: busybox base (with the init when n == 1), n - 2 small
/// trees, the top layer with the init.
fn image_with_layers(kit: &Kit, reg: &Registry, work: &Path, n: usize) -> String {
    let root = work.join(format!("img{n}"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    let base = root.join("base");
    testos::base_layer(&base);
    small_tree(&base, "base", 20);
    if n == 1 {
        testos::top_layer(&base, &format!("layers{n}"), false);
        dirs.push(base);
    } else {
        dirs.push(base);
        for i in 0..n - 2 {
            let d = root.join(format!("tree{i:02}"));
            small_tree(&d, &format!("tree{i:02}"), 20);
            dirs.push(d);
        }
        let top = root.join("top");
        testos::top_layer(&top, &format!("layers{n}"), false);
        dirs.push(top);
    }
    clb::push(kit, reg, &dirs, &format!("bench:layers{n}"))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

#[test]
fn qemu_boot_figures() {
    let repeat: usize = std::env::var("CLB_BENCH_REPEAT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
        .max(1);
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap();
    let work = tempfile::tempdir().unwrap();
    let work = work.path();
    let kit = kit::prepare(work);
    let reg = Registry::start_plain();

    let mut rows = Vec::new();
    for n in [1usize, 4, 16] {
        let image = image_with_layers(&kit, &reg, work, n);
        let disk = work.join(format!("disk{n}.img"));
        clb::deploy(&kit, &disk, &image, 96);
        let s = clb::status(&kit, &disk);
        assert_eq!(
            s["slots"]["a"]["layers"].as_array().map(Vec::len),
            Some(n),
            "{s}"
        );
        let (mut hook, mut wall, mut init) = (Vec::new(), Vec::new(), Vec::new());
        for r in 0..repeat {
            let b = qemu::boot_direct(&kit, &disk, work, &format!("layers{n}-{r}"), "", TIMEOUT);
            let line = testos::test_os_line(&b.console);
            assert!(
                line.starts_with(&format!("CLB-TEST-OS release=layers{n} slot=a mode=active")),
                "{line}"
            );
            hook.push(qemu::hook_ms(&b.console) as f64);
            wall.push(b.elapsed.as_secs_f64());
            let up: f64 = line
                .rsplit("uptime=")
                .next()
                .and_then(|u| u.trim().parse().ok())
                .expect("uptime");
            init.push(up);
        }
        rows.push((n, median(&mut hook), median(&mut init), median(&mut wall)));
    }

    // Boot-to-rollback: a good v1 (2 layers), a broken v2 staged with max tries N.
    let good = image_with_layers(&kit, &reg, work, 2);
    let broken = {
        let root = work.join("broken");
        let base = root.join("base");
        testos::base_layer(&base);
        let top = root.join("top");
        testos::top_layer(&top, "broken", true);
        clb::push(&kit, &reg, &[base, top], "bench:broken")
    };
    let mut rollbacks = Vec::new();
    for tries in [1u32, 3] {
        let disk = work.join(format!("rollback{tries}.img"));
        clb::deploy(&kit, &disk, &good, 96);
        clb::upgrade(&kit, &disk, &broken, &["--max-tries", &tries.to_string()]);
        let b = Qemu::direct(&kit, "").disk(&disk).rebooting().boot(
            work,
            &format!("rollback{tries}"),
            TIMEOUT,
        );
        let panics = b
            .console
            .matches("CLB-TEST-OS broken release=broken")
            .count();
        assert_eq!(panics as u32, tries, "{}", b.console);
        assert!(
            b.console
                .contains("clb-initrd: slot b failed to boot: rolled back to slot a"),
            "{}",
            b.console
        );
        let line = testos::test_os_line(&b.console);
        assert!(
            line.starts_with("CLB-TEST-OS release=layers2 slot=a mode=passive failure=b"),
            "{line}"
        );
        let s = clb::status(&kit, &disk);
        assert_eq!(s["rolled_back"], true, "{s}");
        rollbacks.push((tries, b.elapsed.as_secs_f64()));
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap();

    let qemu = run(Command::new("qemu-system-x86_64").arg("--version"));
    let mut table = String::new();
    table.push_str(&format!(
        "kernel {} (Debian), {}, QEMU TCG, 1 vCPU, 512 MiB; median of {repeat} boot(s)\n",
        kit.kernel_version,
        qemu.lines().next().unwrap_or("qemu")
    ));
    table.push_str(&format!(
        "load average before {} / after {}\n",
        load_before
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
        load_after
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    table.push_str("| layers | hook start → switch_root | init runs (guest uptime) | VM wall time, power-on → poweroff |\n|---:|---:|---:|---:|\n");
    for (n, hook, init, wall) in &rows {
        table.push_str(&format!(
            "| {n} | {hook:.0} ms | {init:.2} s | {wall:.1} s |\n"
        ));
    }
    table.push_str("\n| max tries | broken boots | boot-to-rollback (VM wall time, panic=5) |\n|---:|---:|---:|\n");
    for (tries, secs) in &rollbacks {
        table.push_str(&format!("| {tries} | {tries} | {secs:.1} s |\n"));
    }
    eprintln!("BOOT FIGURES\n{table}END BOOT FIGURES");
}
