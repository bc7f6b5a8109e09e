//! `clb daemon` on a private dbus-daemon configured like a system bus, with the shipped
//! policy (packaging/dbus/dev.clb.Agent.conf) included, driven by `busctl` and `gdbus`:
//! a whole check/download/apply/reboot cycle, who may call what, and a malformed
//! configuration that keeps the last good one. One operation at a time, Cancel and resuming
//! after SIGKILL are in `daemon_download.rs`, the CLI through the daemon in `daemon_cli.rs`,
//! FleetLock in `daemon_fleetlock.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::bus::{Caller, Daemon, Event, SystemBus, Throttle, config_dir};
use common::*;
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const OP_TIMEOUT: Duration = Duration::from_secs(90);

/// A directory of incompressible bytes: a layer of `len` bytes.
fn big_dir(root: &Path, name: &str, len: usize, seed: u64) -> PathBuf {
    tree(
        &root.join(name),
        &[(&format!("usr/share/{name}.bin") as &str, &noise(len, seed))],
    )
}

/// Points 1 and 2: the shipped policy on a system-like bus lets root drive a whole cycle
/// with busctl and gdbus; Progress only rises during the download; Download touches no slot;
/// Apply with reboot=true stages slot b and calls logind.
#[test]
fn busctl_and_gdbus_drive_a_whole_cycle_under_the_shipped_policy() {
    let bus = SystemBus::start(clb_bin());
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    let big = big_dir(fx.work.path(), "v2-payload", 4 << 20, 21);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    let v2 = fx.push(&[&r.base, &r.tops[1], &big], "os:v2", &[]);
    fx.sign("os:v2");
    let state = fx.new_state_dir("state");
    // v1 installed standalone, before the daemon runs.
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));
    let v1 = bus.status(&state)["slots"]["a"]["digest"].clone();

    // The download goes through a proxy at 3 MiB/s: Progress has time to move.
    let proxy = Throttle::start(fx.reg.addr(), 3 << 20);
    let image = format!("{}/os:v2", proxy.addr());
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {image}\nkeys: [{}]\nstrategy: coordinated\n",
            fx.pubkey.display()
        ),
    );
    let monitor = bus.monitor();
    let _daemon = Daemon::start(&bus, &state, &cfg, false);
    bus.wait_property("ActiveSlot", json!("a"), Duration::from_secs(10));
    assert_eq!(bus.property("Version"), json!(1));
    assert_eq!(bus.property("Operation"), json!("idle"));
    assert_eq!(bus.property("Image"), json!(image));
    assert_eq!(bus.property("StateDir"), json!(state.display().to_string()));

    // Check through gdbus, with the image as an option (a{sv} in GVariant text).
    let m = monitor.mark();
    bus.gdbus(
        Caller::Root,
        "Check",
        &[&format!("{{'image': <'{image}'>}}")],
    )
    .expect_ok("gdbus Check");
    let (_, check) = monitor.wait_completed(m, "check", OP_TIMEOUT);
    assert_eq!(check.code, 0, "Check failed: {check:?}");
    assert_eq!(check.result["update_available"], true, "{check:?}");
    assert_eq!(check.result["digest"], v2.as_str(), "{check:?}");
    assert_eq!(check.result["active"], "a");
    assert_eq!(check.result["active_digest"], v1);

    assert_eq!(
        bus.property("Progress")[0],
        100,
        "a finished operation is at 100%"
    );

    // Options are checked before anything starts.
    let m = monitor.mark();
    for (method, args) in [
        ("Check", &["a{sv}", "1", "reboot", "b", "true"][..]),
        ("Download", &["a{sv}", "1", "verify", "s", "no"]),
        ("Upgrade", &["a{sv}", "1", "max-tries", "s", "3"]),
        (
            "Upgrade",
            &["a{sv}", "1", "credentials", "s", "user:secret"],
        ),
        ("Apply", &["a{sv}", "1", "image", "s", "x/y:z"]),
    ] {
        bus.call(Caller::Root, method, args).expect_error(
            "dev.clb.Agent1.Error.InvalidArgs",
            &format!("{method} {args:?}"),
        );
    }
    // Apply with nothing downloaded: starts, and fails with the `state` class.
    bus.call(
        Caller::Root,
        "Apply",
        &["a{sv}", "1", "reboot", "b", "true"],
    )
    .expect_ok("Apply before any Download");
    let (_, nothing) = monitor.wait_completed(m, "apply", OP_TIMEOUT);
    assert_eq!(
        nothing.code, 11,
        "Apply with nothing downloaded: {nothing:?}"
    );
    assert!(nothing.result.is_null(), "{nothing:?}");
    let last = bus.property("LastError");
    assert_eq!(last[0], 11, "{last}");
    assert_eq!(last[1], "state", "{last}");
    assert!(
        last[2].as_str().unwrap().contains("nothing downloaded"),
        "{last}"
    );
    assert_eq!(
        monitor.completed_since(m).len(),
        1,
        "a refused call ran: {:?}",
        monitor.completed_since(m)
    );
    assert!(bus.reboots().is_empty(), "rebooted after a failed Apply");

    // A caller's trust policy replaces the configured keys: this one rejects everything.
    let policy = fx.work.path().join("reject.yaml");
    std::fs::write(&policy, "default:\n  type: reject\n").unwrap();
    let m = monitor.mark();
    bus.call(
        Caller::Root,
        "Download",
        &["a{sv}", "1", "policy", "s", policy.to_str().unwrap()],
    )
    .expect_ok("Download with a policy");
    let (_, refused) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(refused.code, 4, "{refused:?}");
    assert!(
        refused.message.contains("rejects every image"),
        "{refused:?}"
    );

    // Download through busctl, watched by busctl monitor.
    let m = monitor.mark();
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_ok("busctl Download");
    let (end, done) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(done.code, 0, "Download failed: {done:?}");
    assert_eq!(done.result["digest"], v2.as_str());
    // From the moment the daemon says the download runs (a PropertiesChanged repeating the
    // finished Check's figures may still arrive after Completed(check)).
    let running = |e: &Event| match e {
        Event::Property { name, value } => name == "Operation" && value == "download",
        Event::Completed(_) => false,
    };
    let start = m + monitor
        .events_since(m)
        .iter()
        .position(running)
        .expect("Operation never became download");
    let seen = monitor.progress(start, end);
    let figures: Vec<i64> = seen.iter().map(|(p, _)| *p).collect();
    assert!(
        figures.windows(2).all(|w| w[0] <= w[1]),
        "Progress went backwards during Download: {seen:?}"
    );
    assert!(
        figures.iter().any(|p| *p >= 90),
        "Progress never reached 90 during Download: {seen:?}"
    );
    let mut distinct = figures.clone();
    distinct.dedup();
    assert!(
        distinct.len() >= 4,
        "expected several Progress updates while 4 MiB came in at 3 MiB/s: {seen:?}"
    );
    assert!(
        seen.iter().any(|(_, msg)| msg.contains("downloading")),
        "{seen:?}"
    );
    assert_eq!(bus.property("DownloadedDigest"), json!(v2));
    assert_eq!(bus.property("Operation"), json!("idle"));
    assert_eq!(bus.property("LastError"), json!([0, "", ""]));
    // Nothing staged: slot a active, no slot b, no boot pointer change, no reboot.
    let s = bus.status(&state);
    assert_eq!(s["active"], "a", "{s}");
    assert!(s["slots"].get("b").is_none_or(|b| b.is_null()), "{s}");
    assert!(bus.reboots().is_empty());

    // Apply with reboot=true.
    let m = monitor.mark();
    bus.call(
        Caller::Root,
        "Apply",
        &["a{sv}", "1", "reboot", "b", "true"],
    )
    .expect_ok("busctl Apply");
    let (_, applied) = monitor.wait_completed(m, "apply", OP_TIMEOUT);
    assert_eq!(applied.code, 0, "Apply failed: {applied:?}");
    assert_eq!(applied.result["slot"], "b", "{applied:?}");
    assert_eq!(
        bus.reboots(),
        vec![false],
        "logind Reboot(false) called once"
    );
    assert_eq!(
        bus.fallback_reboots(),
        "",
        "the daemon fell back to systemctl/reboot"
    );
    let s = bus.status(&state);
    assert_eq!(s["active"], "b", "{s}");
    assert_eq!(s["slots"]["b"]["digest"], v2.as_str(), "{s}");
    assert_eq!(s["slots"]["a"]["digest"], v1, "{s}");
    assert_eq!(s["good"], false, "a staged slot is on trial: {s}");
    bus.wait_property("ActiveSlot", json!("b"), Duration::from_secs(5));
    // GetStatus says the same as the CLI.
    let r = bus
        .call(Caller::Root, "GetStatus", &[])
        .expect_ok("GetStatus");
    let doc: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    let inner: serde_json::Value = serde_json::from_str(doc["data"][0].as_str().unwrap()).unwrap();
    assert_eq!(inner, s, "GetStatus differs from `clb status --json`");
}

/// Point 3: uid 65534 is refused by the bus policy for every changing call and may read;
/// a member of group "clb" passes the policy, and then the daemon's own check decides by
/// `admin_group`.
#[test]
fn callers_are_checked_by_the_bus_policy_and_by_admin_group() {
    let bus = SystemBus::start(clb_bin());
    let (fx, state, _r) = staged();
    fx.sign("os:v2");
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {}\nkeys: [{}]\nadmin_group: clb\n",
            fx.image("os:v2"),
            fx.pubkey.display()
        ),
    );
    let monitor = bus.monitor();
    let _daemon = Daemon::start(&bus, &state, &cfg, false);
    bus.wait_property("ActiveSlot", json!("a"), Duration::from_secs(10));
    let before = hash_tree(&state);
    let m = monitor.mark();

    // Refused by the bus itself (org.freedesktop.DBus.Error.AccessDenied, not the daemon's
    // dev.clb.Agent1.Error.AccessDenied): the shipped policy grants method calls to root and
    // group clb only, so the daemon never even sees these calls.
    let denied = "org.freedesktop.DBus.Error.AccessDenied";
    bus.call(Caller::Nobody, "Upgrade", &["a{sv}", "0"])
        .expect_error(denied, "busctl Upgrade as uid 65534");
    bus.call(
        Caller::Nobody,
        "Upgrade",
        &["a{sv}", "1", "reboot", "b", "true"],
    )
    .expect_error(denied, "busctl Upgrade reboot=true as uid 65534");
    bus.gdbus(Caller::Nobody, "Upgrade", &["{}"])
        .expect_error(denied, "gdbus Upgrade as uid 65534");
    for (method, args) in [
        ("Check", &["a{sv}", "0"][..]),
        ("Download", &["a{sv}", "0"]),
        ("Apply", &["a{sv}", "0"]),
        ("Rollback", &["a{sv}", "0"]),
        ("MarkGood", &[]),
        ("MarkBad", &[]),
        ("Cancel", &[]),
        ("Reload", &[]),
    ] {
        bus.call(Caller::Nobody, method, args)
            .expect_error(denied, &format!("{method} as uid 65534"));
    }
    // Setting a property is no way around it either.
    bus.busctl(
        Caller::Nobody,
        &[
            "set-property",
            "dev.clb.Agent",
            "/dev/clb/Agent",
            "dev.clb.Agent1",
            "Operation",
            "s",
            "idle",
        ],
    )
    .expect_error(denied, "set-property as uid 65534");

    // Reading is for everyone.
    let r = bus
        .call(Caller::Nobody, "GetStatus", &[])
        .expect_ok("GetStatus as uid 65534");
    assert!(
        r.stdout.contains("\\\"active\\\": \\\"a\\\""),
        "{}",
        r.stdout
    );
    assert_eq!(bus.property_as(Caller::Nobody, "ActiveSlot"), json!("a"));
    assert_eq!(bus.property_as(Caller::Nobody, "Version"), json!(1));
    assert_eq!(bus.property_as(Caller::Nobody, "Operation"), json!("idle"));
    let r = bus
        .busctl(
            Caller::Nobody,
            &["introspect", "dev.clb.Agent", "/dev/clb/Agent"],
        )
        .expect_ok("introspect as uid 65534");
    assert!(r.stdout.contains(".Upgrade"), "{}", r.stdout);
    let r = bus
        .gdbus(Caller::Nobody, "GetStatus", &[])
        .expect_ok("gdbus GetStatus as uid 65534");
    assert!(r.stdout.contains("active"), "{}", r.stdout);

    // Nothing ran, nothing changed.
    assert!(
        monitor.completed_since(m).is_empty(),
        "a refused call ran: {:?}",
        monitor.completed_since(m)
    );
    assert_eq!(
        hash_tree(&state),
        before,
        "a refused call changed the state"
    );

    // uid 65534 in group clb (= admin_group): the bus and the daemon let it through.
    let member = Caller::NobodyIn(bus.clb_gid);
    let m = monitor.mark();
    bus.call(member, "Check", &["a{sv}", "0"])
        .expect_ok("Check by a member of admin_group");
    let (_, check) = monitor.wait_completed(m, "check", OP_TIMEOUT);
    assert_eq!(check.code, 0, "{check:?}");
    assert_eq!(check.result["update_available"], true);

    // The same caller once admin_group names another group: the bus still lets it through,
    // the daemon refuses with its own error and runs nothing.
    config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {}\nkeys: [{}]\nadmin_group: root\n",
            fx.image("os:v2"),
            fx.pubkey.display()
        ),
    );
    bus.call(Caller::Root, "Reload", &[])
        .expect_ok("Reload as root");
    let m = monitor.mark();
    let refused = bus.call(member, "Upgrade", &["a{sv}", "0"]);
    refused.expect_error(
        "dev.clb.Agent1.Error.AccessDenied",
        "Upgrade by a group-clb member outside admin_group",
    );
    assert!(
        refused.error_message().contains("65534"),
        "the refusal names the caller: {}",
        refused.error_message()
    );
    bus.gdbus(member, "Reload", &[]).expect_error(
        "dev.clb.Agent1.Error.AccessDenied",
        "gdbus Reload outside admin_group",
    );
    // And without any admin_group only root may.
    config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {}\nkeys: [{}]\n",
            fx.image("os:v2"),
            fx.pubkey.display()
        ),
    );
    bus.call(Caller::Root, "Reload", &[])
        .expect_ok("Reload as root");
    bus.call(member, "MarkBad", &[]).expect_error(
        "dev.clb.Agent1.Error.AccessDenied",
        "MarkBad by a group-clb member without admin_group",
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        monitor.completed_since(m).is_empty(),
        "a refused call ran: {:?}",
        monitor.completed_since(m)
    );
    assert_eq!(
        hash_tree(&state),
        before,
        "a refused call changed the state"
    );
    assert!(bus.reboots().is_empty());
}

/// Point 7: a broken drop-in is refused by Reload (with file:line:column) and by SIGHUP; the
/// last good configuration stays in force and the daemon keeps serving; once fixed, both
/// reload it.
#[test]
fn a_malformed_config_keeps_the_last_good_one() {
    let bus = SystemBus::start(clb_bin());
    let work = tempfile::tempdir().unwrap();
    let state = work.path().join("state");
    std::fs::create_dir(&state).unwrap();
    let cfg = config_dir(&work.path().join("etc-clb"), "strategy: coordinated\n");
    let mut daemon = Daemon::start(&bus, &state, &cfg, false);
    assert_eq!(bus.property("Strategy"), json!("coordinated"));

    let bad = cfg.join("config.d/50-bad.yaml");
    std::fs::write(&bad, "# a typo below\nstrategy: sometimes\n").unwrap();
    let r = bus.gdbus(Caller::Root, "Reload", &[]);
    r.expect_error(
        "dev.clb.Agent1.Error.InvalidArgs",
        "Reload of a broken drop-in",
    );
    let message = r.error_message();
    let at = format!("{}:2:", bad.display());
    assert!(
        message.contains(&at),
        "the error should name {at}LINE:COLUMN: {message}"
    );
    let column = message
        .split(&at)
        .nth(1)
        .and_then(|rest| rest.split(':').next())
        .and_then(|c| c.parse::<u32>().ok());
    assert!(column.is_some(), "no column after {at}: {message}");
    assert_eq!(bus.property("Strategy"), json!("coordinated"));

    // SIGHUP (systemctl reload) likewise: kept, logged, still serving.
    daemon.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !daemon.log().contains("not reloaded") {
        assert!(
            Instant::now() < deadline,
            "no log line about the refused SIGHUP reload:\n{}",
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        daemon.alive(),
        "SIGHUP with a broken file killed the daemon"
    );
    assert!(
        daemon.log().contains(&at),
        "the log names {at}…:\n{}",
        daemon.log()
    );
    assert_eq!(bus.property("Strategy"), json!("coordinated"));
    bus.call(Caller::Root, "GetStatus", &[])
        .expect_ok("GetStatus after SIGHUP");

    // Fixed: SIGHUP applies it…
    std::fs::write(&bad, "strategy: immediate\n").unwrap();
    daemon.signal("HUP");
    bus.wait_property("Strategy", json!("immediate"), Duration::from_secs(10));
    // … and so does Reload.
    std::fs::write(
        &bad,
        "strategy: fleet_lock\nfleet_lock:\n  base_url: http://127.0.0.1:9\nimage: example.org/os:v9\n",
    )
    .unwrap();
    bus.call(Caller::Root, "Reload", &[]).expect_ok("Reload");
    assert_eq!(bus.property("Strategy"), json!("fleet_lock"));
    assert_eq!(bus.property("Image"), json!("example.org/os:v9"));
    assert!(daemon.alive());
}
