//! Operations on one state at once (issue 13, point 5): a second upgrade, a `gc` and a
//! download while an upgrade runs are refused with exit 9 (locked) and change nothing;
//! `mark-good` waits for the upgrade and then applies; the state is whole afterwards. The
//! upgrade is slowed by a throttling proxy so that the others really start while it runs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use clb_testsupport::bus::Throttle;

fn clb_command(state: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(clb_bin());
    cmd.arg("--json").arg("--state-dir").arg(state).args(args);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd
}

/// Waits until the upgrade holds the lock: its partial download exists in STATE/tmp.
fn wait_until_downloading(state: &Path) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let partial = std::fs::read_dir(state.join("tmp")).ok().is_some_and(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().ends_with(".partial"))
        });
        if partial {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("the upgrade never started downloading");
}

#[test]
fn a_running_upgrade_locks_out_the_others_and_mark_good_waits() {
    let (fx, state, r) = staged();
    let payload = tree(
        &fx.work.path().join("payload"),
        &[("usr/share/payload.bin", &noise(6 << 20, 77))],
    );
    fx.push(&[&r.base, &r.tops[1], &payload], "os:big", &[]);
    fx.sign("os:big");
    let proxy = Throttle::start(fx.reg.addr(), 2 << 20);
    let image = format!("{}/os:big", proxy.addr());
    let key = fx.pubkey.display().to_string();
    let before = hash_tree(&state);

    let upgrade = clb_command(&state, &["upgrade", "-d", &image, "--key", &key])
        .spawn()
        .unwrap();
    wait_until_downloading(&state);
    let during = hash_tree(&state);

    // A second upgrade, a download and gc: refused while the first runs, nothing changed.
    let second = clb_command(&state, &["upgrade", "-d", &image, "--key", &key])
        .output()
        .unwrap();
    assert_fails(&second, 9, "locked");
    let download = clb_command(
        &state,
        &["upgrade", "--download-only", "-d", &image, "--key", &key],
    )
    .output()
    .unwrap();
    assert_fails(&download, 9, "locked");
    let gc = clb_command(&state, &["gc"]).output().unwrap();
    assert_fails(&gc, 9, "locked");
    assert_ne!(during, before, "the running upgrade wrote nothing yet");

    // mark-good waits for the lock rather than failing, and is applied after the upgrade.
    let mark_good = clb_command(&state, &["mark-good"]).spawn().unwrap();
    let upgraded = upgrade.wait_with_output().unwrap();
    assert_ok(&upgraded);
    let marked = mark_good.wait_with_output().unwrap();
    assert_ok(&marked);

    let status = fx.status(&state);
    assert_eq!(status["active"], "b", "{status}");
    assert_eq!(status["good"], true, "mark-good was lost: {status}");
    for slot in ["a", "b"] {
        assert_eq!(status["slots"][slot]["complete"], true, "{status}");
    }
    // And gc now runs, keeping every layer both slots use.
    assert_ok(&clb_command(&state, &["gc"]).output().unwrap());
    let status = fx.status(&state);
    for slot in ["a", "b"] {
        assert_eq!(
            status["slots"][slot]["complete"], true,
            "gc removed a used layer"
        );
    }
}
