//! `clb daemon` downloading, on a private system-like bus with the shipped policy: one
//! operation at a time (a second is refused with `Busy`, never queued), `Cancel` (exit code
//! 15, the partial file kept), a prompt clean exit on SIGTERM, and a daemon killed with
//! SIGKILL mid-download that resumes the layer with an HTTP Range request after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::bus::{Caller, Daemon, SystemBus, Throttle, config_dir};
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

/// The `.partial` file of the layer `digest` in STATE/tmp, with its size.
fn partial(state: &Path, digest: &str) -> Option<(PathBuf, u64)> {
    let hex = digest.split_once(':').unwrap().1;
    std::fs::read_dir(state.join("tmp"))
        .ok()?
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(hex) && name.ends_with(".partial")
        })
        .map(|p| {
            let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
            (p, len)
        })
}

#[track_caller]
fn wait_partial(state: &Path, digest: &str, above: u64, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some((_, len)) = partial(state, digest)
            && len > above
        {
            return len;
        }
        assert!(
            Instant::now() < deadline,
            "the partial download of {digest} did not grow past {above} bytes within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Points 4, 9 and 8: while a Download runs every other operation is refused with Busy (the
/// CLI through the daemon exits 9); Cancel, and Ctrl-C at the CLI, end it with code 15
/// (`cancelled`) and keep the partial file; SIGTERM stops the daemon promptly and cleanly; a
/// daemon killed with SIGKILL mid-download resumes the layer with a Range request after a
/// restart.
#[test]
fn busy_while_downloading_cancel_and_resume_after_sigkill() {
    let bus = SystemBus::start(clb_bin());
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "big"]);
    let payload = big_dir(fx.work.path(), "payload", 8 << 20, 33);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.sign("os:v1");
    let big = fx.push(&[&r.base, &r.tops[1], &payload], "os:big", &[]);
    fx.sign("os:big");
    let layer = skopeo_layers(&fx.reg, "os:big")[2].clone();
    let layer_size = fx.reg.skopeo_inspect("os:big", true).unwrap()["layers"][2]["size"]
        .as_u64()
        .unwrap();
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));

    let proxy = Throttle::start(fx.reg.addr(), 512 << 10);
    let cfg = config_dir(
        &fx.work.path().join("etc-clb"),
        &format!(
            "image: {}/os:big\nkeys: [{}]\n",
            proxy.addr(),
            fx.pubkey.display()
        ),
    );
    let monitor = bus.monitor();
    let mut daemon = Daemon::start(&bus, &state, &cfg, false);
    bus.wait_property("ActiveSlot", json!("a"), Duration::from_secs(10));
    let before = bus.status(&state);

    let m = monitor.mark();
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_ok("Download");
    wait_partial(&state, &layer, 0, Duration::from_secs(30));
    assert_eq!(bus.property("Operation"), json!("download"));

    // Point 4: one operation at a time; nothing is queued.
    let busy = "dev.clb.Agent1.Error.Busy";
    let r = bus.call(Caller::Root, "Check", &["a{sv}", "0"]);
    r.expect_error(busy, "Check during Download");
    assert!(
        r.error_message().contains("download"),
        "{}",
        r.error_message()
    );
    bus.gdbus(Caller::Root, "Upgrade", &["{}"])
        .expect_error(busy, "gdbus Upgrade during Download");
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_error(busy, "a second Download");
    bus.call(Caller::Root, "Apply", &["a{sv}", "0"])
        .expect_error(busy, "Apply during Download");
    bus.call(Caller::Root, "MarkBad", &[])
        .expect_error(busy, "MarkBad during Download");
    bus.call(Caller::Root, "Rollback", &["a{sv}", "0"])
        .expect_error(busy, "Rollback during Download");
    // The CLI through the daemon gets the refusal too, as exit code 9 (locked).
    let out = bus.clb(&["--state-dir", state.to_str().unwrap(), "upgrade", "--check"]);
    assert_eq!(
        out.status.code(),
        Some(9),
        "upgrade --check during the daemon's Download: {out:?}"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("busy"),
        "{out:?}"
    );
    assert_eq!(bus.property("Operation"), json!("download"));
    assert!(
        monitor.completed_since(m).is_empty(),
        "a refused operation ran, or the download ended early: {:?}",
        monitor.completed_since(m)
    );

    // Point 9: Cancel.
    bus.call(Caller::Root, "Cancel", &[]).expect_ok("Cancel");
    let (_, cancelled) = monitor.wait_completed(m, "download", Duration::from_secs(15));
    assert_eq!(cancelled.code, 15, "Cancel: {cancelled:?}");
    assert!(cancelled.result.is_null(), "{cancelled:?}");
    let last = bus.property("LastError");
    assert_eq!(last[0], 15, "LastError after Cancel: {last}");
    assert_eq!(last[1], "cancelled", "LastError after Cancel: {last}");
    assert_eq!(bus.property("Operation"), json!("idle"));
    assert_eq!(bus.property("DownloadedDigest"), json!(""));
    let (_, kept) = partial(&state, &layer).expect("Cancel kept the partial download");
    assert!(
        kept > 0 && kept < layer_size,
        "partial: {kept} of {layer_size}"
    );
    assert_eq!(bus.status(&state), before, "Cancel changed the slots");
    bus.call(Caller::Root, "Cancel", &[])
        .expect_error("dev.clb.Agent1.Error.Failed", "Cancel with nothing running");

    // Ctrl-C at a `clb upgrade --download-only` that goes through the daemon cancels the
    // daemon's operation; the CLI exits 15 too.
    let m = monitor.mark();
    let mut cli = std::process::Command::new(clb_bin());
    bus.env(&mut cli)
        .args([
            "--state-dir",
            state.to_str().unwrap(),
            "upgrade",
            "--download-only",
        ])
        .args(["-d", &format!("{}/os:big", proxy.addr())])
        .args(["--key", fx.pubkey.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let cli = cli.spawn().unwrap();
    let grown = wait_partial(&state, &layer, kept + (128 << 10), Duration::from_secs(30));
    assert_eq!(bus.property("Operation"), json!("download"));
    sh(&format!("kill -INT {}", cli.id()));
    let out = cli.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(15),
        "Ctrl-C at the CLI: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (_, cancelled) = monitor.wait_completed(m, "download", Duration::from_secs(15));
    assert_eq!(cancelled.code, 15, "{cancelled:?}");
    assert_eq!(bus.property("Operation"), json!("idle"));
    let (_, kept) = partial(&state, &layer).expect("the partial download after Ctrl-C");
    assert!(kept >= grown, "{kept} < {grown}");

    // SIGTERM (systemctl stop) mid-download: a prompt, clean exit that keeps the partial file.
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_ok("Download after Cancel");
    let grown = wait_partial(&state, &layer, kept + (128 << 10), Duration::from_secs(30));
    let stopping = Instant::now();
    daemon.stop(&bus);
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "SIGTERM mid-download took {:?}",
        stopping.elapsed()
    );
    let (_, kept) = partial(&state, &layer).expect("SIGTERM removed the partial download");
    assert!(kept >= grown, "{kept} < {grown}");
    let mut daemon = Daemon::start(&bus, &state, &cfg, false);

    // Point 8: SIGKILL mid-download.
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_ok("Download after SIGTERM");
    wait_partial(&state, &layer, kept + (256 << 10), Duration::from_secs(30));
    daemon.kill9(&bus);
    let (_, have) = partial(&state, &layer).expect("the partial download survived SIGKILL");
    assert!(have < layer_size, "{have} of {layer_size}");
    proxy.set_rate(0);
    // The registry logs a request when it ends: wait for the killed one (the first Download
    // fetched from 0, the ones after Cancel, Ctrl-C and SIGTERM resumed), so that the marker
    // separates them from what the restarted daemon fetches.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let earlier: Vec<_> = fx
            .reg
            .blob_fetches()
            .into_iter()
            .filter(|f| f.digest == layer)
            .collect();
        if earlier.len() >= 4 {
            assert_eq!(earlier[0].status, 200, "{earlier:?}");
            assert!(
                earlier[1..].iter().all(|f| f.range),
                "a Download after Cancel, Ctrl-C or SIGTERM did not resume the partial file: \
                 {earlier:?}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the registry did not log the killed download: {earlier:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let marker = fx.reg.clear_log_marker();
    let _daemon = Daemon::start(&bus, &state, &cfg, false);
    let m = monitor.mark();
    bus.call(Caller::Root, "Download", &["a{sv}", "0"])
        .expect_ok("Download after restart");
    let (_, done) = monitor.wait_completed(m, "download", OP_TIMEOUT);
    assert_eq!(done.code, 0, "Download after SIGKILL: {done:?}");
    assert_eq!(done.result["digest"], big.as_str());
    assert_eq!(bus.property("DownloadedDigest"), json!(big));
    let fetches = fx.reg.fetches_of(&marker, &layer, 1);
    assert!(!fetches.is_empty(), "the layer was not fetched at all");
    assert!(
        fetches.iter().all(|f| f.range && f.status == 206),
        "the layer was fetched again from the start instead of resumed: {fetches:?}"
    );
    let fetched: u64 = fetches.iter().filter_map(|f| f.bytes).sum();
    assert_eq!(
        fetched,
        layer_size - have,
        "only the missing {} bytes should be fetched: {fetches:?}",
        layer_size - have
    );
    assert!(
        partial(&state, &layer).is_none(),
        "partial file left behind"
    );
}
