//! The upgrade path end to end against a real docker-registry: dedup measured in the
//! registry's access log, slot/boot-state transitions, cross-checks with skopeo and unsquashfs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::process::Command;

#[test]
fn upgrade_fetches_only_changed_layers_then_rolls_back() {
    require_tool("unsquashfs");
    require_tool("skopeo");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    let v1_layers = skopeo_layers(&fx.reg, "os:v1");
    let v2_layers = skopeo_layers(&fx.reg, "os:v2");
    assert_eq!(
        v1_layers[0], v2_layers[0],
        "releases share their base layer"
    );
    assert_ne!(v1_layers[1], v2_layers[1]);

    let state = fx.new_state_dir("state");
    let out = fx.upgrade(&state, "os:v1", &[]);
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["slot"], "a");
    assert_eq!(report["layers_downloaded"], 2);

    let s = fx.status(&state);
    assert_eq!(s["active"], "a");
    assert_eq!(s["good"], true);
    assert_eq!(s["tries_left"], 3, "a good slot counts its boots too");
    assert!(s["booted"].is_null());
    assert_eq!(s["slots"]["a"]["verified"], true);
    assert_eq!(
        s["slots"]["a"]["verified_with"].as_str().unwrap(),
        fx.pubkey.display().to_string()
    );

    // v1 -> v2: only the top layer crosses the wire.
    let marker = fx.reg.clear_log_marker();
    let out = fx.upgrade(&state, "os:v2", &[]);
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["slot"], "b");
    assert_eq!(report["layers_downloaded"], 1);
    assert!(report["bytes_reused"].as_u64().unwrap() > 0);
    let fetched: Vec<String> = fx
        .reg
        .fetches_since(&marker)
        .into_iter()
        .filter(|f| f.method == "GET" && f.status / 100 == 2)
        .map(|f| f.digest)
        .collect();
    assert!(
        fetched.contains(&v2_layers[1]),
        "top layer fetched: {fetched:?}"
    );
    assert!(
        !fetched.contains(&v2_layers[0]),
        "base layer must not be fetched again: {fetched:?}"
    );
    assert_eq!(
        fetched.iter().filter(|d| v2_layers.contains(d)).count(),
        1,
        "exactly one layer blob fetched: {fetched:?}"
    );

    let s = fx.status(&state);
    assert_eq!(s["active"], "b");
    assert_eq!(s["fallback"], "a");
    assert_eq!(s["tries_left"], 3);
    assert_eq!(s["good"], false);
    assert_eq!(s["rolled_back"], false);
    let a = s["slots"]["a"]["layers"].as_array().unwrap();
    let b = s["slots"]["b"]["layers"].as_array().unwrap();
    assert_eq!(a[0], b[0], "A and B share the base layer in the store");
    assert_ne!(a[1], b[1]);
    let stored: Vec<_> = std::fs::read_dir(state.join("layers")).unwrap().collect();
    assert_eq!(stored.len(), 3, "base stored once");

    // Every stored layer is a SquashFS image unsquashfs can list.
    let top = state.join("layers").join(format!(
        "{}.squashfs",
        b[1].as_str().unwrap().replace(':', "-")
    ));
    let listing = Command::new("unsquashfs")
        .args(["-l", top.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(listing.status.success());
    assert!(String::from_utf8_lossy(&listing.stdout).contains("squashfs-root/etc/clb-release"));

    // The boot state is a GRUB env block that grub-editenv agrees with.
    let env = Command::new("grub-editenv")
        .args([state.join("grubenv").to_str().unwrap(), "list"])
        .output()
        .expect("grub-editenv (grub-common)");
    let env = String::from_utf8_lossy(&env.stdout);
    assert!(
        env.contains("clb_active=b\n") && env.contains("clb_fallback=a\n"),
        "{env}"
    );

    let out = clb(&["--json", "--state-dir", state.to_str().unwrap(), "rollback"]);
    assert_ok(&out);
    let s = fx.status(&state);
    assert_eq!(s["active"], "a");
    assert_eq!(s["fallback"], "b");
    assert_eq!(s["good"], true);

    // Re-staging v2 now downloads nothing: every layer is in the store.
    let marker = fx.reg.clear_log_marker();
    let out = fx.upgrade(&state, "os:v2", &[]);
    assert_ok(&out);
    assert_eq!(json(&out)["layers_downloaded"], 0);
    assert!(
        fx.reg
            .fetches_since(&marker)
            .iter()
            .all(|f| !v2_layers.contains(&f.digest)),
        "no layer refetched"
    );

    // mark-good ends the trial and refills the count; gc keeps what slots use.
    assert_ok(&clb(&["--state-dir", state.to_str().unwrap(), "mark-good"]));
    let s = fx.status(&state);
    assert_eq!(s["good"], true);
    assert_eq!(s["tries_left"], s["max_tries"]);
    assert_ok(&clb(&["--state-dir", state.to_str().unwrap(), "gc"]));
    assert_eq!(std::fs::read_dir(state.join("layers")).unwrap().count(), 3);
}

#[test]
fn offline_restaging_keeps_the_known_good_fallback() {
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2", "v3"]);
    for (i, tag) in ["os:v1", "os:v2", "os:v3"].iter().enumerate() {
        fx.push(&[&r.base, &r.tops[i]], tag, &[]);
        fx.sign(tag);
    }
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));
    assert_ok(&fx.upgrade(&state, "os:v2", &["--max-tries", "5"]));
    // v2 never booted: v3 replaces it in slot b, a (v1, good) stays the fallback.
    let out = fx.upgrade(&state, "os:v3", &[]);
    assert_ok(&out);
    assert_eq!(json(&out)["slot"], "b");
    let s = fx.status(&state);
    assert_eq!(s["fallback"], "a");
    // Every boot counts, so --max-tries is the machine's setting: it sticks until changed.
    assert_eq!(
        (&s["max_tries"], &s["tries_left"]),
        (&5.into(), &5.into()),
        "{s}"
    );
    assert_eq!(s["slots"]["a"]["image"], fx.image("os:v1"));
    assert_eq!(s["slots"]["b"]["image"], fx.image("os:v3"));
    // gc drops v2's top layer, which no slot lists any more.
    let out = clb(&["--json", "--state-dir", state.to_str().unwrap(), "gc"]);
    assert_ok(&out);
    assert_eq!(json(&out)["removed_layers"].as_array().unwrap().len(), 1);
    // The same image again is a no-op.
    let out = fx.upgrade(&state, "os:v3", &[]);
    assert_ok(&out);
    assert_eq!(json(&out)["up_to_date"], true);
}

#[test]
fn mark_bad_falls_back_and_status_says_rolled_back() {
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1]], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "os:v1", &[]));
    assert_ok(&fx.upgrade(&state, "os:v2", &[]));
    assert_ok(&clb(&["--state-dir", state.to_str().unwrap(), "mark-bad"]));
    let s = fx.status(&state);
    assert_eq!(s["active"], "a");
    assert_eq!(s["rolled_back"], true);
    assert_eq!(s["failed_slot"], "b");
    // Nothing left to fall back to from a: a second mark-bad is a state error.
    assert_fails(
        &clb(&["--state-dir", state.to_str().unwrap(), "mark-bad"]),
        11,
        "no other slot",
    );
}

#[test]
fn check_says_whether_the_tag_moved_without_staging() {
    let (fx, state, r) = staged();
    let empty = fx.new_state_dir("empty");
    let check_in = |state: &std::path::Path, image: Option<&str>| {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "upgrade".into(),
            "--check".into(),
        ];
        if let Some(i) = image {
            args.extend(["-d".into(), fx.image(i)]);
        }
        args.extend(fx.registry_flags());
        clb_owned(&args)
    };
    let check = |image: Option<&str>| check_in(&state, image);
    // Nothing installed and no -d: a state error, not a guess.
    assert_fails(&check_in(&empty, None), 11, "give -d IMAGE");
    let before = fx.status(&state);

    // The active slot's own image, unchanged: exit 14 (up to date).
    let out = check(None);
    assert_eq!(out.status.code(), Some(14), "{out:?}");
    assert_eq!(json(&out)["update_available"], false);
    // Another tag: exit 0, the digests side by side.
    let out = check(Some("os:v2"));
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["update_available"], true);
    assert_eq!(report["active"], "a");
    assert_ne!(report["digest"], report["active_digest"]);
    // The tag moves (v2's content pushed as os:v1): the default reference sees it.
    fx.push(&[&r.base, &r.tops[1]], "os:v1", &[]);
    assert_ok(&check(None));
    // Nothing was staged or written.
    assert_eq!(fx.status(&state)["slots"], before["slots"]);
    assert_eq!(fx.status(&state)["active"], before["active"]);
}

/// `--download-only` fetches and verifies without touching a slot or the boot pointer; gc
/// keeps what it fetched; `--apply` stages it with the registry gone; bad applies change
/// nothing and say why.
#[test]
fn download_now_apply_later_without_the_network() {
    let (mut fx, state, _r) = staged();
    fx.sign("os:v2");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = vec![
            "--json".into(),
            "--no-daemon".into(),
            "--state-dir".into(),
            state.display().to_string(),
            "upgrade".into(),
            "--key".into(),
            fx.pubkey.display().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        clb_owned(&args)
    };
    // Nothing downloaded yet: apply refuses, exit 11, nothing changes.
    let before = fx.status(&state);
    assert_fails(&run(&["--apply"]), 11, "nothing downloaded to apply");
    assert_eq!(fx.status(&state), before);

    let image = fx.image("os:v2");
    let out = run(&["--download-only", "-d", &image]);
    assert_ok(&out);
    let report = json(&out);
    assert_eq!(report["up_to_date"], false);
    assert!(
        report["layers_downloaded"].as_u64().unwrap() >= 1,
        "{report}"
    );
    assert!(report["verified_with"].as_str().unwrap().ends_with(".pub"));
    // No slot and no boot pointer changed; status and the record name the verified digest.
    let mut during = fx.status(&state);
    assert_eq!(during["download"]["digest"], report["digest"], "{during}");
    assert_eq!(during["download"]["complete"], true);
    during["download"] = serde_json::Value::Null;
    assert_eq!(during, before, "download-only staged something");
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("slots/download.json")).unwrap()).unwrap();
    assert_eq!(record["digest"], report["digest"]);
    // Garbage collection keeps a pending download's layers.
    assert_ok(&clb(&[
        "--no-daemon",
        "--state-dir",
        state.to_str().unwrap(),
        "gc",
    ]));
    for layer in record["layers"].as_array().unwrap() {
        let name = layer["digest"].as_str().unwrap().replace(':', "-");
        assert!(
            state.join(format!("layers/{name}.squashfs")).is_file(),
            "gc removed {name} of the pending download"
        );
    }

    // A missing layer: apply refuses, names it, changes nothing (and keeps the record).
    let top = record["layers"].as_array().unwrap().last().unwrap()["digest"]
        .as_str()
        .unwrap()
        .replace(':', "-");
    let top_path = state.join(format!("layers/{top}.squashfs"));
    let saved = fx.work.path().join("saved-layer");
    std::fs::rename(&top_path, &saved).unwrap();
    assert_fails(&run(&["--apply"]), 11, "is missing from the store");
    let mut during = fx.status(&state);
    assert_eq!(during["download"]["complete"], false);
    during["download"] = serde_json::Value::Null;
    assert_eq!(during, before);
    std::fs::rename(&saved, &top_path).unwrap();

    // The registry is gone: apply needs no network.
    fx.reg.stop();
    let out = run(&["--apply"]);
    assert_ok(&out);
    let staged = json(&out);
    assert_eq!(staged["slot"], "b");
    assert_eq!(staged["digest"], report["digest"]);
    let after = fx.status(&state);
    assert_eq!(after["download"], serde_json::Value::Null);
    assert_eq!(after["active"], "b");
    assert_eq!(after["slots"]["b"]["digest"], report["digest"]);
    assert!(
        !state.join("slots/download.json").exists(),
        "the record outlived the apply"
    );
    // Applying again: nothing left to apply.
    assert_fails(&run(&["--apply"]), 11, "nothing downloaded to apply");
    // A power cut between the flip and the record's removal: the record comes back; the
    // next apply sees its digest already active, removes it and stages nothing.
    std::fs::write(
        state.join("slots/download.json"),
        serde_json::to_vec(&record).unwrap(),
    )
    .unwrap();
    let out = run(&["--apply"]);
    assert_ok(&out);
    assert_eq!(json(&out)["up_to_date"], true);
    assert!(!state.join("slots/download.json").exists());
    assert_eq!(fx.status(&state), after);
}

/// `unsquashfs -s` of every layer in a state dir: the compressor and level lines.
fn layer_compression(state: &std::path::Path) -> Vec<String> {
    let mut found: Vec<String> = std::fs::read_dir(state.join("layers"))
        .unwrap()
        .map(|e| {
            let out = Command::new("unsquashfs")
                .arg("-s")
                .arg(e.unwrap().path())
                .output()
                .unwrap();
            assert!(out.status.success());
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("Compression ") || l.contains("compression-level"))
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect();
    found.sort();
    found.dedup();
    found
}

#[test]
fn host_converts_with_the_measured_codec_publisher_keeps_a_high_level() {
    require_tool("unsquashfs");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(
        &[&r.base, &r.tops[0]],
        "os:v1-native",
        &["--format", "squashfs"],
    );
    let host_level = clb_convert::HOST_ZSTD_LEVEL;
    let cases: [(&str, &[&str], String); 4] = [
        (
            "default",
            &[],
            format!("Compression zstd compression-level {host_level}"),
        ),
        ("lz4", &["--compressor", "lz4"], "Compression lz4".into()),
        (
            "level",
            &["--compression-level", "9"],
            "Compression zstd compression-level 9".into(),
        ),
        // tar2sqfs stores no level for its own default (15).
        (
            "zstd-15",
            &["--compression-level", "15"],
            "Compression zstd".into(),
        ),
    ];
    for (name, flags, expect) in cases {
        let state = fx.new_state_dir(name);
        let mut args = vec!["--no-verify"];
        args.extend_from_slice(flags);
        assert_ok(&fx.upgrade(&state, "os:v1", &args));
        assert_eq!(layer_compression(&state), vec![expect], "{name}");
    }
    // Layers a publisher ships as SquashFS keep the publisher's level (zstd 15).
    let state = fx.new_state_dir("native");
    assert_ok(&fx.upgrade(&state, "os:v1-native", &["--no-verify"]));
    assert_eq!(
        layer_compression(&state),
        vec!["Compression zstd".to_string()]
    );
}
