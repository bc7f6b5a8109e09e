//! `clb daemon --booted-slot` on a state directory (for tests and simulations, such as the
//! operator's end-to-end test): the daemon reports the slot as booted, `active` resolves to
//! the boot state's active slot once at start (a restart after a reboot into what was
//! staged), and a host refuses the option.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::bus::{Caller, Daemon, SystemBus, config_dir};
use common::*;
use std::time::Duration;

const OP_TIMEOUT: Duration = Duration::from_secs(60);

#[test]
fn a_simulated_boot_reports_the_slot_and_active_follows_a_restart() {
    let bus = SystemBus::start(clb_bin());
    let (fx, state, _r) = staged();
    fx.sign("os:v2");
    let v2 = fx.image("os:v2");
    let key = fx.pubkey.display().to_string();
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!("keys: [{key}]\nstrategy: coordinated\n"),
    );

    // Without the option a state directory has no booted slot.
    let mut daemon = Daemon::start(&bus, &state, &cfg, false);
    assert_eq!(bus.property("BootedSlot"), serde_json::json!(""));
    daemon.stop(&bus);

    // v1 is in slot a, active: `active` boots it.
    let mut daemon = Daemon::start_with(&bus, &state, &cfg, false, &["--booted-slot", "active"]);
    assert_eq!(bus.property("BootedSlot"), serde_json::json!("a"));
    let status: serde_json::Value = {
        let r = bus
            .call(Caller::Nobody, "GetStatus", &[])
            .expect_ok("GetStatus");
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
        serde_json::from_str(v["data"][0].as_str().unwrap()).unwrap()
    };
    assert_eq!(status["booted"], "a", "{status}");
    assert_eq!(status["active"], "a", "{status}");

    // Stage v2 without a reboot: b becomes active, the running slot stays a.
    let monitor = bus.monitor();
    let m = monitor.mark();
    bus.call(Caller::Root, "Download", &["a{sv}", "1", "image", "s", &v2])
        .expect_ok("Download v2");
    let (_, done) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(done.code, 0, "{done:?}\n{}", daemon.log());
    let m = monitor.mark();
    bus.call(Caller::Root, "Apply", &["a{sv}", "0"])
        .expect_ok("Apply");
    let (_, done) = monitor.wait_completed(m, "apply", OP_TIMEOUT);
    assert_eq!(done.code, 0, "{done:?}\n{}", daemon.log());
    assert_eq!(bus.property("ActiveSlot"), serde_json::json!("b"));
    assert_eq!(
        bus.property("BootedSlot"),
        serde_json::json!("a"),
        "`active` was resolved at start, not at every read"
    );
    daemon.stop(&bus);

    // "Reboot": the restart with `active` now runs b.
    let mut daemon = Daemon::start_with(&bus, &state, &cfg, false, &["--booted-slot", "active"]);
    assert_eq!(bus.property("BootedSlot"), serde_json::json!("b"));
    assert_eq!(bus.status(&state)["active"], "b");
    daemon.stop(&bus);

    // A slot by name.
    let mut daemon = Daemon::start_with(&bus, &state, &cfg, false, &["--booted-slot", "a"]);
    assert_eq!(bus.property("BootedSlot"), serde_json::json!("a"));
    daemon.stop(&bus);
}

#[test]
fn booted_slot_needs_a_state_dir_and_a_known_slot() {
    let bus = SystemBus::start(clb_bin());
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_dir(&dir.path().join("etc-clb"), "strategy: coordinated\n");
    let cfg = cfg.to_str().unwrap();
    let out = bus.clb(&["daemon", "--config-dir", cfg, "--booted-slot", "a"]);
    assert!(!out.status.success(), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--state-dir"), "{stderr}");
    assert!(!bus.name_has_owner());

    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let s = state.to_str().unwrap();
    let daemon = |slot: &str| {
        bus.clb(&[
            "--state-dir",
            s,
            "daemon",
            "--config-dir",
            cfg,
            "--booted-slot",
            slot,
        ])
    };
    let out = daemon("c");
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("a, b, recovery or active"),
        "{out:?}"
    );
    // `active` with nothing installed is refused too.
    let out = daemon("active");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nothing installed"),
        "{out:?}"
    );
}
