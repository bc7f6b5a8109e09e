//! Update strategies: maintenance windows against an injected clock (zones, midnight, DST),
//! and the FleetLock exchange against a lock server written from the protocol document
//! (clb_testsupport::FleetLockServer) on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use clb::config::{AgentConfig, FleetLockConfig, PeriodicConfig, StrategyKind, WindowConfig};
use clb::error::{ClbError, exit};
use clb::strategy::periodic::Schedule;
use clb::strategy::{
    Clock, RETRY_FIRST, RETRY_MAX, RebootGate, StrategyError, WINDOW_POLL_MAX, fleetlock, identity,
};
use clb_testsupport::{FleetLockRequest, FleetLockServer};
use futures_util::future::BoxFuture;
use jiff::Timestamp;
use jiff::civil::{Weekday, date};
use jiff::tz::TimeZoneDatabase;
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------------
// Fixtures

/// Virtual time: `sleep` advances it at once (after a real pause of a few ms, so retry loops do
/// not spin) and records how long each sleep was.
struct TestClock {
    state: Mutex<(Timestamp, Vec<Duration>)>,
}

impl TestClock {
    fn at(now: &str) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new((ts(now), Vec::new())),
        })
    }

    fn sleeps(&self) -> Vec<Duration> {
        self.state.lock().unwrap().1.clone()
    }
}

impl Clock for TestClock {
    fn now(&self) -> Timestamp {
        self.state.lock().unwrap().0
    }

    fn sleep(&self, duration: Duration) -> BoxFuture<'_, ()> {
        {
            let mut state = self.state.lock().unwrap();
            state.0 = state.0.checked_add(duration).unwrap();
            state.1.push(duration);
        }
        Box::pin(tokio::time::sleep(Duration::from_millis(3)))
    }
}

/// Awaits `f`, failing the test instead of hanging when a regression makes it wait forever.
async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(20), f)
        .await
        .expect("did not finish within 20 s")
}

fn ts(text: &str) -> Timestamp {
    text.parse()
        .unwrap_or_else(|e| panic!("timestamp {text}: {e}"))
}

fn window(days: &[&str], start: &str, minutes: u32) -> WindowConfig {
    WindowConfig {
        days: days.iter().map(|d| d.to_string()).collect(),
        start_time: start.to_owned(),
        length_minutes: minutes,
    }
}

fn periodic(zone: Option<&str>, windows: Vec<WindowConfig>) -> PeriodicConfig {
    PeriodicConfig {
        time_zone: zone.map(str::to_owned),
        windows,
    }
}

fn schedule(zone: &str, windows: Vec<WindowConfig>) -> Schedule {
    Schedule::from_config(&periodic(Some(zone), windows)).unwrap()
}

/// Asserts `contains` for each (instant, expected) pair, naming the instant on failure.
fn assert_windows(schedule: &Schedule, cases: &[(&str, bool)]) {
    for (instant, expected) in cases {
        assert_eq!(
            schedule.contains(ts(instant)),
            *expected,
            "{instant} in {} should be {}",
            schedule.zone_name(),
            if *expected { "inside" } else { "outside" }
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Periodic windows

#[test]
fn the_calendar_days_used_below_are_what_the_tests_say() {
    assert_eq!(date(2026, 1, 3).weekday(), Weekday::Saturday);
    assert_eq!(date(2026, 6, 1).weekday(), Weekday::Monday);
    for d in [
        date(2026, 3, 8),
        date(2026, 3, 29),
        date(2026, 10, 25),
        date(2026, 11, 1),
    ] {
        assert_eq!(d.weekday(), Weekday::Sunday, "{d}");
    }
}

#[test]
fn inside_and_outside_a_weekend_window_in_utc() {
    let s = schedule("UTC", vec![window(&["Sat", "sunday"], "22:00", 180)]);
    assert_windows(
        &s,
        &[
            ("2026-01-03T21:59:59Z", false), // Sat, a second early
            ("2026-01-03T22:00:00Z", true),  // start inclusive
            ("2026-01-03T23:59:59Z", true),
            ("2026-01-04T00:30:00Z", true), // Sat's window runs into Sunday
            ("2026-01-04T01:00:00Z", false), // end exclusive
            ("2026-01-04T21:59:00Z", false),
            ("2026-01-04T22:00:00Z", true), // Sunday's own window
            ("2026-01-05T00:59:00Z", true), // … into Monday
            ("2026-01-05T01:00:00Z", false),
            ("2026-01-02T22:30:00Z", false), // Friday is not listed
        ],
    );
}

#[test]
fn a_window_across_midnight_covers_the_next_day_even_when_that_day_is_not_listed() {
    let s = schedule("UTC", vec![window(&["fri"], "23:00", 120)]);
    assert_windows(
        &s,
        &[
            ("2026-01-02T23:30:00Z", true),  // Fri
            ("2026-01-03T00:59:00Z", true),  // Sat, not a listed day
            ("2026-01-03T01:00:00Z", false), // closed
            ("2026-01-03T23:30:00Z", false), // Sat's own 23:00: no window
        ],
    );
}

#[test]
fn a_week_long_window_every_day_never_closes() {
    let all = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
    let s = schedule("Europe/Berlin", vec![window(&all, "00:00", 10080)]);
    for instant in [
        "2026-01-01T00:00:00Z",
        "2026-03-29T01:30:00Z",
        "2026-10-25T01:30:00Z",
        "2026-12-31T23:59:59Z",
    ] {
        assert!(s.contains(ts(instant)), "{instant}");
    }
}

#[test]
fn the_same_instant_is_inside_for_one_zone_and_outside_for_another() {
    let w = || vec![window(&["Mon"], "09:00", 60)];
    let (berlin, new_york, utc) = (
        schedule("Europe/Berlin", w()),
        schedule("America/New_York", w()),
        schedule("UTC", w()),
    );
    // Monday 2026-06-01 07:30Z: 09:30 CEST, 03:30 EDT, 07:30 UTC.
    let instant = ts("2026-06-01T07:30:00Z");
    assert!(berlin.contains(instant));
    assert!(!new_york.contains(instant));
    assert!(!utc.contains(instant));
    // 13:30Z is 09:30 EDT in New York, 15:30 in Berlin.
    let later = ts("2026-06-01T13:30:00Z");
    assert!(new_york.contains(later));
    assert!(!berlin.contains(later));
    assert_eq!(berlin.zone_name(), "Europe/Berlin");
}

#[test]
fn the_local_weekday_counts_not_the_utc_one() {
    // Sunday 23:30Z is already Monday 01:30 in Berlin (CEST).
    let w = || vec![window(&["Mon"], "01:00", 60)];
    let instant = ts("2026-05-31T23:30:00Z");
    assert!(schedule("Europe/Berlin", w()).contains(instant));
    assert!(!schedule("UTC", w()).contains(instant));
}

#[test]
fn a_start_in_the_spring_forward_gap_opens_when_the_clock_jumps_past_it() {
    // Europe/Berlin, Sunday 2026-03-29: 02:00 CET (01:00Z) jumps to 03:00 CEST, so 02:30 does
    // not exist; the window opens at 01:30Z (= 03:30 CEST) and still lasts 60 real minutes.
    let s = schedule("Europe/Berlin", vec![window(&["Sun"], "02:30", 60)]);
    assert_windows(
        &s,
        &[
            ("2026-03-29T00:59:59Z", false),
            ("2026-03-29T01:00:00Z", false), // 03:00 CEST: 02:30 did not "happen" yet
            ("2026-03-29T01:29:59Z", false),
            ("2026-03-29T01:30:00Z", true),
            ("2026-03-29T02:29:59Z", true),
            ("2026-03-29T02:30:00Z", false),
        ],
    );
    assert_eq!(
        s.next_start(ts("2026-03-28T12:00:00Z")),
        Some(ts("2026-03-29T01:30:00Z"))
    );
    // The next week is ordinary CEST: 02:30 CEST = 00:30Z.
    assert_eq!(
        s.next_start(ts("2026-03-29T03:00:00Z")),
        Some(ts("2026-04-05T00:30:00Z"))
    );
}

#[test]
fn a_window_spanning_the_spring_forward_gap_lasts_its_real_minutes() {
    // 01:00 CET (00:00Z) for 120 minutes ends at 02:00Z, which the wall clock calls 04:00 CEST.
    let s = schedule("Europe/Berlin", vec![window(&["Sun"], "01:00", 120)]);
    assert_windows(
        &s,
        &[
            ("2026-03-28T23:59:59Z", false),
            ("2026-03-29T00:00:00Z", true),
            ("2026-03-29T01:59:59Z", true),
            ("2026-03-29T02:00:00Z", false),
        ],
    );
}

#[test]
fn a_start_in_the_repeated_autumn_hour_opens_once_at_its_first_occurrence() {
    // Europe/Berlin, Sunday 2026-10-25: 03:00 CEST (01:00Z) falls back to 02:00 CET, so 02:30
    // happens at 00:30Z (CEST) and again at 01:30Z (CET). Only the first opens the window.
    let s = schedule("Europe/Berlin", vec![window(&["Sun"], "02:30", 30)]);
    assert_windows(
        &s,
        &[
            ("2026-10-25T00:29:59Z", false),
            ("2026-10-25T00:30:00Z", true),
            ("2026-10-25T00:59:59Z", true),
            ("2026-10-25T01:00:00Z", false),
            ("2026-10-25T01:30:00Z", false), // the second 02:30 opens nothing
            ("2026-10-25T01:45:00Z", false),
        ],
    );
    // After the first occurrence the next start is a week later, at 02:30 CET (01:30Z).
    assert_eq!(
        s.next_start(ts("2026-10-25T00:50:00Z")),
        Some(ts("2026-11-01T01:30:00Z"))
    );
}

#[test]
fn new_york_gap_and_repeated_hour() {
    // 2026-03-08: 02:00 EST (07:00Z) jumps to 03:00 EDT; 02:15 opens at 07:15Z (= 03:15 EDT).
    let spring = schedule("America/New_York", vec![window(&["Sun"], "02:15", 60)]);
    assert_windows(
        &spring,
        &[
            ("2026-03-08T07:14:59Z", false),
            ("2026-03-08T07:15:00Z", true),
            ("2026-03-08T08:14:59Z", true),
            ("2026-03-08T08:15:00Z", false),
        ],
    );
    // 2026-11-01: 02:00 EDT (06:00Z) falls back to 01:00 EST; 01:30 happens at 05:30Z and
    // 06:30Z; the window opens at the first and lasts 60 real minutes, so at the second
    // 01:30 it has just closed.
    let autumn = schedule("America/New_York", vec![window(&["Sun"], "01:30", 60)]);
    assert_windows(
        &autumn,
        &[
            ("2026-11-01T05:29:59Z", false),
            ("2026-11-01T05:30:00Z", true),
            ("2026-11-01T06:29:59Z", true),
            ("2026-11-01T06:30:00Z", false),
        ],
    );
}

#[test]
fn next_start_is_the_earliest_opening_at_or_after_now() {
    let s = schedule(
        "UTC",
        vec![window(&["Mon"], "09:00", 60), window(&["Wed"], "03:00", 30)],
    );
    // Monday 2026-06-01.
    let cases = [
        ("2026-06-01T08:00:00Z", "2026-06-01T09:00:00Z"), // later today
        ("2026-06-01T09:00:00Z", "2026-06-01T09:00:00Z"), // exactly now
        ("2026-06-01T09:30:00Z", "2026-06-03T03:00:00Z"), // inside: the next one after
        ("2026-06-03T03:10:00Z", "2026-06-08T09:00:00Z"), // wraps to next week
        ("2026-06-07T23:59:59Z", "2026-06-08T09:00:00Z"),
    ];
    for (now, expected) in cases {
        assert_eq!(s.next_start(ts(now)), Some(ts(expected)), "from {now}");
    }
}

#[test]
fn window_syntax_errors_are_typed_and_name_the_culprit() {
    let bad = |w: WindowConfig| Schedule::from_config(&periodic(Some("UTC"), vec![w])).unwrap_err();
    let e = bad(window(&["Funday"], "10:00", 10));
    assert!(
        matches!(&e, StrategyError::InvalidDay { day } if day == "Funday"),
        "{e}"
    );
    assert!(e.to_string().contains("Funday"), "{e}");
    for start in [
        "24:00", "9:5", "7:05", "09:60", "0900", "ab:cd", "-1:00", "10:00:00", "",
    ] {
        let e = bad(window(&["Mon"], start, 10));
        assert!(
            matches!(&e, StrategyError::InvalidStartTime { value } if value == start),
            "{start:?}: {e}"
        );
    }
    for minutes in [0, 10081] {
        let e = bad(window(&["Mon"], "10:00", minutes));
        assert!(
            matches!(e, StrategyError::InvalidLength { .. }),
            "{minutes}: {e}"
        );
    }
    assert!(matches!(
        bad(window(&[], "10:00", 10)),
        StrategyError::NoDays
    ));
    let e = Schedule::from_config(&periodic(Some("UTC"), vec![])).unwrap_err();
    assert!(matches!(e, StrategyError::NoWindows), "{e}");
    // Accepted edge cases: any case, full names, a week-long window.
    Schedule::from_config(&periodic(
        Some("utc"),
        vec![window(&["MONDAY", "tUe", "Sun"], "07:05", 10080)],
    ))
    .unwrap();
}

#[test]
fn an_unknown_time_zone_is_an_error_naming_it() {
    let e = Schedule::from_config(&periodic(
        Some("Mars/Olympus_Mons"),
        vec![window(&["Mon"], "10:00", 10)],
    ))
    .unwrap_err();
    assert!(
        matches!(&e, StrategyError::UnknownTimeZone { name } if name == "Mars/Olympus_Mons"),
        "{e}"
    );
    assert!(e.to_string().contains("Mars/Olympus_Mons"));
    assert!(e.is_config());
    assert_eq!(ClbError::from(e).exit_code(), exit::INVALID_INPUT);
}

#[test]
fn zones_resolve_without_a_system_tzdata_from_the_bundled_copy() {
    // An empty database plays a host without /usr/share/zoneinfo.
    let config = periodic(Some("Europe/Berlin"), vec![window(&["Sun"], "02:30", 60)]);
    let s = Schedule::from_config_in(&config, &TimeZoneDatabase::none()).unwrap();
    assert_eq!(s.zone_name(), "Europe/Berlin");
    // Same DST behaviour as with the system's copy.
    assert!(!s.contains(ts("2026-03-29T01:29:59Z")));
    assert!(s.contains(ts("2026-03-29T01:30:00Z")));
    let e = Schedule::from_config_in(
        &periodic(Some("Nowhere/Atlantis"), config.windows.clone()),
        &TimeZoneDatabase::none(),
    )
    .unwrap_err();
    assert!(matches!(e, StrategyError::UnknownTimeZone { .. }), "{e}");
}

#[test]
fn the_default_zone_is_the_hosts() {
    let w = vec![window(&["Mon"], "10:00", 10)];
    let host = jiff::tz::TimeZone::try_system().unwrap();
    let host_name = host.iana_name().unwrap_or("localtime");
    for zone in [None, Some("localtime"), Some("LocalTime")] {
        let s = Schedule::from_config(&periodic(zone, w.clone())).unwrap();
        assert_eq!(s.zone_name(), host_name, "{zone:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// The gate: immediate, coordinated, periodic

#[tokio::test]
async fn immediate_and_coordinated_allow_at_once_and_only_immediate_is_automatic() {
    let clock = TestClock::at("2026-01-01T00:00:00Z");
    let cancel = CancellationToken::new();
    for (gate, automatic, kind) in [
        (RebootGate::immediate(), true, StrategyKind::Immediate),
        (RebootGate::coordinated(), false, StrategyKind::Coordinated),
    ] {
        assert_eq!(gate.automatic(), automatic);
        assert_eq!(gate.kind(), kind);
        within(gate.wait_until_reboot_allowed(&*clock, &cancel))
            .await
            .unwrap();
        within(gate.report_steady_state(&*clock, &cancel))
            .await
            .unwrap();
    }
    assert!(clock.sleeps().is_empty(), "{:?}", clock.sleeps());
}

#[test]
fn from_config_checks_only_the_selected_strategy() {
    let mut config = AgentConfig {
        periodic: periodic(Some("Mars/Olympus_Mons"), vec![]),
        ..AgentConfig::default()
    };
    let gate = RebootGate::from_config(&config).unwrap();
    assert_eq!(gate.kind(), StrategyKind::Immediate);

    config.strategy = StrategyKind::Periodic;
    let e = RebootGate::from_config(&config).unwrap_err();
    assert!(matches!(e, StrategyError::NoWindows), "{e}");

    config.strategy = StrategyKind::FleetLock;
    let e = RebootGate::from_config(&config).unwrap_err();
    assert!(matches!(e, StrategyError::MissingBaseUrl), "{e}");
    assert_eq!(ClbError::from(e).exit_code(), exit::INVALID_INPUT);

    config.strategy = StrategyKind::Coordinated;
    assert!(!RebootGate::from_config(&config).unwrap().automatic());
}

#[tokio::test]
async fn periodic_waits_until_the_window_opens() {
    // Monday 2026-06-01 10:00Z; the window opens at 12:00Z.
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::periodic(schedule("UTC", vec![window(&["Mon"], "12:00", 30)]));
    within(gate.wait_until_reboot_allowed(&*clock, &CancellationToken::new()))
        .await
        .unwrap();
    // It woke exactly when the window opened, re-reading the clock at least every poll.
    assert_eq!(clock.now(), ts("2026-06-01T12:00:00Z"));
    let sleeps = clock.sleeps();
    assert!(sleeps.iter().all(|d| *d <= WINDOW_POLL_MAX), "{sleeps:?}");
    assert_eq!(
        sleeps.iter().sum::<Duration>(),
        Duration::from_secs(2 * 3600)
    );

    // Inside the window: no wait at all.
    let before = clock.sleeps().len();
    within(gate.wait_until_reboot_allowed(&*clock, &CancellationToken::new()))
        .await
        .unwrap();
    assert_eq!(clock.sleeps().len(), before);
}

#[tokio::test]
async fn periodic_wait_stops_when_cancelled() {
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::periodic(schedule("UTC", vec![window(&["Mon"], "09:00", 30)]));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
    });
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        gate.wait_until_reboot_allowed(&*clock, &cancel),
    )
    .await
    .expect("cancel ends the wait")
    .unwrap_err();
    assert!(matches!(e, StrategyError::Cancelled), "{e}");
    assert!(clock.now() < ts("2026-06-08T09:00:00Z"));
}

// ---------------------------------------------------------------------------------------------
// FleetLock

fn client(server_url: &str, group: &str, id: &str) -> fleetlock::Client {
    fleetlock::Client::new(server_url, group, id).unwrap()
}

fn assert_protocol_request(r: &FleetLockRequest, path: &str, id: &str, group: &str) {
    assert_eq!(r.method, "POST", "{r:?}");
    assert_eq!(r.path, path, "{r:?}");
    assert_eq!(r.protocol_header.as_deref(), Some("true"), "{r:?}");
    assert_eq!(r.content_type.as_deref(), Some("application/json"), "{r:?}");
    assert_eq!(r.id.as_deref(), Some(id), "{r:?}");
    assert_eq!(r.group.as_deref(), Some(group), "{r:?}");
}

/// Sleeps between tries start at RETRY_FIRST and double up to RETRY_MAX.
fn assert_backoff(sleeps: &[Duration]) {
    assert!(sleeps.len() >= 2, "{sleeps:?}");
    let mut expected = RETRY_FIRST;
    for d in sleeps {
        assert_eq!(*d, expected, "{sleeps:?}");
        expected = (expected * 2).min(RETRY_MAX);
    }
}

#[tokio::test]
async fn granted_lock_allows_the_reboot_and_steady_state_releases_it() {
    let server = FleetLockServer::start(1);
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let cancel = CancellationToken::new();
    let gate = RebootGate::fleet_lock(client(&server.base_url(), "workers", "host-a"));
    assert!(gate.automatic());

    within(gate.wait_until_reboot_allowed(&*clock, &cancel))
        .await
        .unwrap();
    assert_eq!(server.holders("workers"), ["host-a"]);
    // … the host reboots into the new slot, which boots well …
    within(gate.report_steady_state(&*clock, &cancel))
        .await
        .unwrap();
    assert!(server.holders("workers").is_empty());

    let log = server.requests();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_protocol_request(&log[0], "/v1/pre-reboot", "host-a", "workers");
    assert_protocol_request(&log[1], "/v1/steady-state", "host-a", "workers");
    assert!(log.iter().all(|r| r.status == 200), "{log:?}");
    assert!(clock.sleeps().is_empty());
}

#[tokio::test]
async fn a_refused_lock_never_allows_the_reboot_and_retries_with_growing_pauses() {
    let server = FleetLockServer::start(0);
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::fleet_lock(client(&server.base_url(), "default", "host-a"));

    let waited = tokio::time::timeout(
        Duration::from_millis(1500),
        gate.wait_until_reboot_allowed(&*clock, &CancellationToken::new()),
    )
    .await;
    assert!(waited.is_err(), "returned without the lock: {waited:?}");

    let log = server.requests();
    assert!(log.len() >= 3, "{log:?}");
    for r in &log {
        assert_protocol_request(r, "/v1/pre-reboot", "host-a", "default");
        assert_eq!(r.status, 409);
        assert_eq!(r.kind.as_deref(), Some("failed_lock_semaphore_full"));
    }
    // One pause between each two tries, doubling; the cap is reached after enough tries.
    let sleeps = clock.sleeps();
    assert!(
        sleeps.len() + 1 >= log.len(),
        "{sleeps:?} vs {} tries",
        log.len()
    );
    assert_backoff(&sleeps);
    assert!(server.holders("default").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reboot_waits_for_another_host_to_release_the_only_slot() {
    let server = Arc::new(FleetLockServer::start(1));
    server.hold("workers", "host-b");
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::fleet_lock(client(&server.base_url(), "workers", "host-a"));
    let cancel = CancellationToken::new();

    let waiting = {
        let (clock, cancel) = (clock.clone(), cancel.clone());
        tokio::spawn(async move { gate.wait_until_reboot_allowed(&*clock, &cancel).await })
    };
    let seen = {
        let server = server.clone();
        tokio::task::spawn_blocking(move || server.wait_for_requests(2, Duration::from_secs(20)))
            .await
            .unwrap()
    };
    assert!(seen.iter().all(|r| r.status == 409), "{seen:?}");
    assert!(
        !waiting.is_finished(),
        "allowed while host-b holds the slot"
    );

    server.release("workers", "host-b");
    tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("granted once the slot is free")
        .unwrap()
        .unwrap();
    assert_eq!(server.holders("workers"), ["host-a"]);
    let log = server.requests();
    assert_eq!(log.last().map(|r| r.status), Some(200), "{log:?}");
    assert_eq!(log.iter().filter(|r| r.status == 200).count(), 1, "{log:?}");
}

#[tokio::test]
async fn a_refusal_reports_the_protocol_error_kind_and_value() {
    let server = FleetLockServer::start(0);
    let e = client(&server.base_url(), "default", "host-a")
        .pre_reboot()
        .await
        .unwrap_err();
    match &e {
        StrategyError::Refused { status, kind, .. } => {
            assert_eq!(*status, 409);
            assert_eq!(kind.as_deref(), Some("failed_lock_semaphore_full"));
        }
        other => panic!("expected a refusal, got {other}"),
    }
    let text = e.to_string();
    assert!(text.contains("semaphore currently full"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert_eq!(ClbError::from(e).exit_code(), exit::FAILURE);
}

#[tokio::test]
async fn a_base_url_with_a_path_prefix_reaches_the_prefixed_endpoints() {
    let server = FleetLockServer::start_with_prefix(1, "/fleet/lock");
    let url = format!("{}/", server.base_url()); // a trailing slash is fine
    let c = client(&url, "default", "host-a");
    c.pre_reboot().await.unwrap();
    c.steady_state().await.unwrap();
    let log = server.requests();
    assert_protocol_request(&log[0], "/fleet/lock/v1/pre-reboot", "host-a", "default");
    assert_protocol_request(&log[1], "/fleet/lock/v1/steady-state", "host-a", "default");
}

#[tokio::test]
async fn steady_state_retries_until_the_server_accepts_it() {
    // The server only answers under /fleet: the client's first tries get 404.
    let server = Arc::new(FleetLockServer::start_with_prefix(1, "/fleet"));
    let wrong = server.base_url().replace("/fleet", "/elsewhere");
    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::fleet_lock(client(&wrong, "default", "host-a"));
    let result = tokio::time::timeout(
        Duration::from_millis(500),
        gate.report_steady_state(&*clock, &CancellationToken::new()),
    )
    .await;
    assert!(
        result.is_err(),
        "steady state reported without a 200: {result:?}"
    );
    let log = server.requests();
    assert!(log.len() >= 2, "{log:?}");
    assert!(
        log.iter()
            .all(|r| r.status == 404 && r.path == "/elsewhere/v1/steady-state")
    );
    assert_backoff(&clock.sleeps());
}

#[tokio::test]
async fn an_unreachable_server_is_retried_and_cancel_ends_the_wait() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    let e = client(&url, "default", "host-a")
        .pre_reboot()
        .await
        .unwrap_err();
    assert!(matches!(e, StrategyError::Unreachable { .. }), "{e}");

    let clock = TestClock::at("2026-06-01T10:00:00Z");
    let gate = RebootGate::fleet_lock(client(&url, "default", "host-a"));
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        trigger.cancel();
    });
    let e = tokio::time::timeout(
        Duration::from_secs(10),
        gate.wait_until_reboot_allowed(&*clock, &cancel),
    )
    .await
    .expect("cancel ends the wait")
    .unwrap_err();
    assert!(matches!(e, StrategyError::Cancelled), "{e}");
    assert_backoff(&clock.sleeps());
}

#[test]
fn fleet_lock_settings_are_validated() {
    let cfg = |url: &str, group: Option<&str>, id: Option<&str>| FleetLockConfig {
        base_url: Some(url.to_owned()),
        group: group.map(str::to_owned),
        client_id: id.map(str::to_owned),
    };
    let dir = tempfile::tempdir().unwrap();
    let machine_id = dir.path().join("machine-id");
    std::fs::write(&machine_id, "3d1219c7c4c5404aaa1f6d2a48adfda4\n").unwrap();
    let build =
        |c: FleetLockConfig| fleetlock::Client::from_config_with_machine_id(&c, &machine_id);

    let c = build(cfg("http://127.0.0.1:1", None, None)).unwrap();
    assert_eq!(c.group(), "default");
    assert_eq!(
        c.id(),
        identity::client_id_from_machine_id("3d1219c7c4c5404aaa1f6d2a48adfda4").unwrap()
    );
    assert_ne!(
        c.id(),
        "3d1219c7c4c5404aaa1f6d2a48adfda4",
        "the raw machine id leaked"
    );
    let c = build(cfg(
        "https://lock.example/base",
        Some("workers.eu-1"),
        Some("node-7"),
    ))
    .unwrap();
    assert_eq!((c.group(), c.id()), ("workers.eu-1", "node-7"));

    for url in [
        "not a url",
        "ftp://lock.example",
        "http://lock.example/?x=1",
    ] {
        let e = build(cfg(url, None, Some("a"))).unwrap_err();
        assert!(
            matches!(e, StrategyError::InvalidBaseUrl { .. }),
            "{url}: {e}"
        );
    }
    for group in ["", "bad group", "ünï"] {
        let e = build(cfg("http://x", Some(group), Some("a"))).unwrap_err();
        assert!(
            matches!(e, StrategyError::InvalidGroup { .. }),
            "{group:?}: {e}"
        );
    }
    let e = build(cfg("http://x", None, Some(""))).unwrap_err();
    assert!(matches!(e, StrategyError::InvalidClientId { .. }), "{e}");

    std::fs::write(&machine_id, "not-a-machine-id\n").unwrap();
    let e = build(cfg("http://x", None, None)).unwrap_err();
    assert!(matches!(e, StrategyError::MachineId { .. }), "{e}");
    assert!(e.to_string().contains("machine-id"), "{e}");
    assert!(
        !e.is_config(),
        "a broken host file is not a configuration error"
    );
}

#[test]
fn the_default_client_id_is_systemds_app_specific_machine_id() {
    let tool = clb_testsupport::require_tool("systemd-id128");
    let expected = clb_testsupport::run_cmd(
        std::process::Command::new(tool)
            .arg("machine-id")
            .arg(format!("--app-specific={}", hex::encode(identity::APP_ID))),
    )
    .unwrap();
    let machine_id = std::fs::read_to_string(fleetlock::MACHINE_ID_PATH).unwrap();
    assert_eq!(
        identity::client_id_from_machine_id(&machine_id).unwrap(),
        String::from_utf8(expected).unwrap().trim()
    );
}

#[test]
fn the_test_server_follows_the_protocol_without_our_client() {
    // Guards the fixture: without the header the request is refused with a protocol error.
    let server = FleetLockServer::start(1);
    let addr = server.base_url().trim_start_matches("http://").to_owned();
    let body = br#"{"client_params":{"id":"host-a","group":"default"}}"#;
    let r = clb_testsupport::http_request(&addr, "POST", "/v1/pre-reboot", &[], body).unwrap();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("\"kind\""), "{}", r.text());
    assert!(server.holders("default").is_empty());
    let header = [("fleet-lock-protocol", "true")];
    let r = clb_testsupport::http_request(&addr, "POST", "/v1/pre-reboot", &header, body).unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(server.holders("default"), ["host-a"]);
}
