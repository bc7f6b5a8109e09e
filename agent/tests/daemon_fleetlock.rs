//! The daemon's own update loop with `strategy: fleet_lock` against a FleetLock server
//! (tests/support, written from the protocol document): it stages on its own, reboots
//! through logind only once the server grants a slot, and after a good boot gives the slot
//! back with `steady-state`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use clb_testsupport::{FleetLockRequest, FleetLockServer};
use common::bus::{Daemon, SystemBus, config_dir};
use common::*;
use std::time::{Duration, Instant};

const GROUP: &str = "workers";
const ID: &str = "clb-test-host-1";

fn to(server: &FleetLockServer, endpoint: &str) -> Vec<FleetLockRequest> {
    server
        .requests()
        .into_iter()
        .filter(|r| r.path.ends_with(endpoint))
        .collect()
}

#[test]
fn fleet_lock_gates_the_reboot_and_steady_state_follows_the_good_boot() {
    let bus = SystemBus::start(clb_bin());
    let (fx, state, _r) = staged();
    fx.sign("os:v2");
    // No free slot: every pre-reboot is refused until the test grants one.
    let server = FleetLockServer::start(0);
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {}\nkeys: [{}]\nstrategy: fleet_lock\nfleet_lock:\n  base_url: {}\n  group: {GROUP}\n  client_id: {ID}\ncheck_interval: 1s\ncheck_jitter: 0s\n",
            fx.image("os:v2"),
            fx.pubkey.display(),
            server.base_url()
        ),
    );
    let monitor = bus.monitor();
    let mut daemon = Daemon::start(&bus, &state, &cfg, true);

    // On its own: Check, Download, Apply.
    let (_, applied) = monitor.wait_completed(0, "apply", Duration::from_secs(60));
    assert_eq!(applied.code, 0, "{applied:?}\n{}", daemon.log());
    assert_eq!(applied.result["slot"], "b");
    assert_eq!(bus.status(&state)["active"], "b");

    // At start (the boot of v1 is decided) it gave back any slot it might hold, before its
    // first check could lead to a pre-reboot.
    let first = server.requests()[0].clone();
    assert!(
        first.path.ends_with("/v1/steady-state") && first.status == 200,
        "the first request should be an accepted steady-state: {:#?}",
        server.requests()
    );
    assert_eq!(first.id.as_deref(), Some(ID), "{first:?}");
    assert_eq!(first.group.as_deref(), Some(GROUP), "{first:?}");

    // Refused: the daemon keeps asking and does not reboot.
    std::thread::sleep(Duration::from_secs(4));
    let pre = to(&server, "/v1/pre-reboot");
    assert!(
        bus.reboots().is_empty(),
        "the daemon rebooted although the FleetLock server refused every pre-reboot: {pre:#?}"
    );
    assert!(
        pre.len() >= 2,
        "expected at least 2 pre-reboot tries in 4 s while refused: {pre:#?}\n{}",
        daemon.log()
    );
    for r in &pre {
        assert_eq!(
            r.protocol_header.as_deref(),
            Some("true"),
            "the protocol requires the header `fleet-lock-protocol: true` (the server \
             refuses anything else with 400): {r:?}"
        );
        assert_eq!(r.id.as_deref(), Some(ID), "{r:?}");
        assert_eq!(r.group.as_deref(), Some(GROUP), "{r:?}");
        assert_eq!(r.status, 409, "refused for being full, nothing else: {r:?}");
    }

    // Granted: the next try takes the slot and the daemon reboots through logind.
    server.set_slots(1);
    let deadline = Instant::now() + Duration::from_secs(20);
    while bus.reboots().is_empty() {
        assert!(
            Instant::now() < deadline,
            "no logind Reboot within 20 s of the server granting a slot: {:#?}\n{}",
            to(&server, "/v1/pre-reboot"),
            daemon.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(bus.reboots(), vec![false]);
    assert_eq!(bus.fallback_reboots(), "");
    assert_eq!(server.holders(GROUP), vec![ID.to_string()]);

    // "Rebooted" into b, on trial: until it is marked good the daemon neither checks nor
    // gives the slot back.
    daemon.stop(&bus);
    let seen = server.requests().len();
    let m = monitor.mark();
    let mut daemon = Daemon::start(&bus, &state, &cfg, true);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        server.requests()[seen..].to_vec(),
        Vec::<FleetLockRequest>::new(),
        "the daemon talked to the lock server before the boot was marked good"
    );
    assert!(
        monitor.completed_since(m).is_empty(),
        "the daemon ran operations before the boot was marked good: {:?}",
        monitor.completed_since(m)
    );
    assert_eq!(server.holders(GROUP), vec![ID.to_string()]);

    // The boot went well: mark it good, as clb-mark-good.service would.
    daemon.stop(&bus);
    let out = bus.clb(&[
        "--no-daemon",
        "--state-dir",
        state.to_str().unwrap(),
        "mark-good",
    ]);
    assert_ok(&out);
    assert_eq!(bus.status(&state)["good"], true);
    let seen = server.requests().len();
    let _daemon = Daemon::start(&bus, &state, &cfg, true);
    let deadline = Instant::now() + Duration::from_secs(15);
    let steady = loop {
        let after: Vec<FleetLockRequest> = server.requests()[seen..].to_vec();
        if let Some(r) = after
            .iter()
            .find(|r| r.path.ends_with("/v1/steady-state") && r.status == 200)
        {
            break r.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no accepted steady-state within 15 s of the good boot: {after:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(steady.id.as_deref(), Some(ID), "{steady:?}");
    assert_eq!(steady.group.as_deref(), Some(GROUP), "{steady:?}");
    assert!(
        server.holders(GROUP).is_empty(),
        "the slot was not released"
    );
    // b holds v2 already: the next checks find nothing to do, and nothing reboots again.
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(bus.reboots(), vec![false], "rebooted again");
}
