//! The CLI and the daemon: while `clb daemon` serves a state directory, `clb upgrade` on it
//! asks the daemon to do the work and prints the daemon's result; `--no-daemon`, another
//! state directory, or a stopped daemon make it work standalone.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::bus::{Daemon, SystemBus, config_dir};
use common::*;
use std::process::Output;
use std::time::Duration;

const OP_TIMEOUT: Duration = Duration::from_secs(60);

#[track_caller]
fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_cli_goes_through_the_daemon_that_serves_its_state() {
    let bus = SystemBus::start(clb_bin());
    let (fx, state, _r) = staged();
    fx.sign("os:v2");
    let s = state.to_str().unwrap();
    let v2 = fx.image("os:v2");
    let key = fx.pubkey.display().to_string();
    // No image configured: the daemon follows the active slot's (os:v1).
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!("keys: [{key}]\nstrategy: coordinated\n"),
    );
    let monitor = bus.monitor();
    let mut daemon = Daemon::start(&bus, &state, &cfg, false);

    // Up to date: exit 14, and the daemon did the check.
    let m = monitor.mark();
    let out = bus.clb(&["--state-dir", s, "upgrade", "--check"]);
    assert_code(&out, 14, "upgrade --check through the daemon, up to date");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("up to date"),
        "{out:?}"
    );
    let (_, check) = monitor.wait_completed(m, "check", OP_TIMEOUT);
    assert_eq!(check.result["update_available"], false, "{check:?}");

    // An update: exit 0, and the CLI prints what the daemon reported.
    let m = monitor.mark();
    let out = bus.clb(&["--state-dir", s, "--json", "upgrade", "--check", "-d", &v2]);
    assert_code(&out, 0, "upgrade --check -d v2 through the daemon");
    let (_, check) = monitor.wait_completed(m, "check", OP_TIMEOUT);
    assert_eq!(
        json(&out),
        check.result,
        "the CLI prints the daemon's result"
    );
    assert_eq!(check.result["update_available"], true);
    let digest = check.result["digest"].as_str().unwrap().to_string();
    // The daemon's report is the document the standalone CLI prints.
    let out = bus.clb(&[
        "--no-daemon",
        "--state-dir",
        s,
        "--json",
        "upgrade",
        "--check",
        "-d",
        &v2,
    ]);
    assert_code(&out, 0, "upgrade --check --no-daemon -d v2");
    assert_eq!(
        json(&out),
        check.result,
        "daemon and standalone reports differ"
    );

    // --download-only: the daemon downloads; the CLI prints its report and exits 0.
    let m = monitor.mark();
    let out = bus.clb(&[
        "--state-dir",
        s,
        "--json",
        "upgrade",
        "--download-only",
        "-d",
        &v2,
        "--key",
        &key,
    ]);
    assert_ok(&out);
    let (_, download) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(download.code, 0, "{download:?}");
    assert_eq!(
        json(&out),
        download.result,
        "the CLI prints the daemon's result"
    );
    assert_eq!(download.result["digest"], digest.as_str());
    assert_eq!(bus.property("DownloadedDigest"), serde_json::json!(digest));
    // Human output, again through the daemon (the layers are in the store by now).
    let m = monitor.mark();
    let out = bus.clb(&[
        "--state-dir",
        s,
        "upgrade",
        "--download-only",
        "-d",
        &v2,
        "--key",
        &key,
    ]);
    assert_ok(&out);
    let (_, again) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(again.code, 0, "{again:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("downloaded and verified {v2} ({digest})")),
        "{text}"
    );
    assert_eq!(
        bus.status(&state)["active"],
        "a",
        "a download stages nothing"
    );

    // --no-daemon: standalone, the daemon hears nothing.
    let m = monitor.mark();
    let out = bus.clb(&["--no-daemon", "--state-dir", s, "upgrade", "--check"]);
    assert_code(&out, 14, "upgrade --check --no-daemon");
    let out = bus.clb(&[
        "--no-daemon",
        "--state-dir",
        s,
        "upgrade",
        "--check",
        "-d",
        &v2,
    ]);
    assert_code(&out, 0, "upgrade --check --no-daemon -d v2");
    // Another state directory than the daemon's: standalone too.
    let other = fx.new_state_dir("other");
    let out = bus.clb(&[
        "--state-dir",
        other.to_str().unwrap(),
        "upgrade",
        "--check",
        "-d",
        &v2,
    ]);
    assert_code(&out, 0, "upgrade --check on another state directory");
    // Flags the daemon does not take from callers keep the command standalone.
    for flags in [["--jobs", "1"], ["--compressor", "lz4"]] {
        let mut args = vec!["--state-dir", s, "upgrade", "--check", "-d", &v2];
        args.extend(flags);
        assert_code(&bus.clb(&args), 0, &format!("upgrade --check {flags:?}"));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        monitor.completed_since(m).is_empty(),
        "standalone runs went through the daemon: {:?}",
        monitor.completed_since(m)
    );

    // Daemon stopped: standalone, with what the daemon downloaded still there.
    daemon.stop(&bus);
    let out = bus.clb(&["--state-dir", s, "upgrade", "--check"]);
    assert_code(&out, 14, "upgrade --check with the daemon stopped");
    let out = bus.clb(&["--state-dir", s, "upgrade", "--check", "-d", &v2]);
    assert_code(&out, 0, "upgrade --check -d v2 with the daemon stopped");
    let out = bus.clb(&["--state-dir", s, "--json", "upgrade", "--apply"]);
    assert_ok(&out);
    assert_eq!(json(&out)["slot"], "b");
    let st = bus.status(&state);
    assert_eq!(st["active"], "b", "{st}");
    assert_eq!(st["slots"]["b"]["digest"], digest.as_str(), "{st}");
    let out = bus.clb(&["--state-dir", s, "upgrade", "--check", "-d", &v2]);
    assert_code(&out, 14, "upgrade --check -d v2 after --apply");
    assert!(bus.reboots().is_empty());
}
