//! A full disk at every point an upgrade passes (issue 13, point 4): the state lives on a
//! small tmpfs, filled to leave N bytes free for N across the whole range the upgrade needs;
//! every run either stages completely or fails with exit 8 and the state tree unchanged. The
//! boot-state writers (`mark-good`, `mark-bad`, `rollback`) on a disk with no byte free
//! either work or fail with exit 8 and change nothing; `gc` works.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::Path;

fn run(state: &Path, args: &[&str]) -> std::process::Output {
    let mut all = vec!["--json", "--state-dir", state.to_str().unwrap()];
    all.extend_from_slice(args);
    clb(&all)
}

#[test]
fn every_free_space_either_stages_completely_or_fails_cleanly() {
    require_tool("fallocate");
    let fx = Fixture::new();
    let r = releases(fx.work.path(), &["v1", "v2"]);
    let payload = tree(
        &fx.work.path().join("payload"),
        &[("usr/share/v2.bin", &noise(700_000, 13))],
    );
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    fx.push(&[&r.base, &r.tops[1], &payload], "os:v2", &[]);
    fx.sign("os:v1");
    fx.sign("os:v2");
    // The state with v1, kept outside the small filesystem and copied in for every run.
    let template = fx.new_state_dir("template");
    assert_ok(&fx.upgrade(&template, "os:v1", &[]));

    let fs = SmallFs::mount(&fx.work.path().join("small"), 16 << 20);
    let state = fs.0.join("state");
    let (mut staged, mut refused) = (0, 0);
    let mut reasons = std::collections::BTreeSet::new();
    let mut smallest_staged = None;
    // From no byte free to well past what v2 needs (two new layers, their download and
    // SquashFS forms, the manifests): 4 KiB pages at the low end, then coarser.
    let points: Vec<u64> = (0..16)
        .map(|i| i * 4096)
        .chain((1..=48).map(|i| (i * 64) << 10))
        .collect();
    for free in points {
        let _ = std::fs::remove_dir_all(&state);
        sh(&format!("cp -a {} {}", template.display(), state.display()));
        let before = hash_tree(&state);
        fs.leave_free(free);
        let out = fx.upgrade(&state, "os:v2", &[]);
        fs.unfill();
        match out.status.code() {
            Some(0) => {
                staged += 1;
                smallest_staged.get_or_insert(free);
                let status = fx.status(&state);
                assert_eq!(status["active"], "b", "{free} B free: {status}");
                assert_eq!(status["slots"]["b"]["complete"], true, "{free} B free");
                assert_eq!(status["slots"]["a"]["complete"], true, "{free} B free");
            }
            _ => {
                refused += 1;
                let line = assert_fails(&out, 8, "space");
                // The space check before the download, or a write that hit ENOSPC.
                reasons.insert(if line.contains("not enough space") {
                    "checked before downloading"
                } else {
                    "a write ran out of space"
                });
                assert_eq!(hash_tree(&state), before, "{free} B free changed the state");
            }
        }
    }
    eprintln!(
        "{staged} staged, {refused} refused; smallest free space that staged: \
         {smallest_staged:?} B; reasons: {reasons:?}"
    );
    assert!(
        staged > 0 && refused > 0,
        "{staged} staged, {refused} refused"
    );

    // No byte free: the boot-state writers work or fail with exit 8, changing nothing.
    let _ = std::fs::remove_dir_all(&state);
    sh(&format!("cp -a {} {}", template.display(), state.display()));
    assert_ok(&fx.upgrade(&state, "os:v2", &[]));
    for args in [&["mark-good"][..], &["mark-bad"], &["rollback"]] {
        let before = hash_tree(&state);
        fs.leave_free(0);
        let out = run(&state, args);
        fs.unfill();
        eprintln!("{args:?} with no byte free: exit {:?}", out.status.code());
        if out.status.code() != Some(0) {
            assert_fails(&out, 8, "space");
            assert_eq!(hash_tree(&state), before, "{args:?} on a full disk");
        }
        assert_ok(&run(&state, &["status"]));
    }
    fs.leave_free(0);
    let out = run(&state, &["gc"]);
    fs.unfill();
    assert_ok(&out);
    let status = fx.status(&state);
    for slot in ["a", "b"] {
        assert_eq!(status["slots"][slot]["complete"], true, "{status}");
    }
}
