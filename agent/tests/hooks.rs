//! Action hooks in `clb upgrade`: a failing `before-upgrade` aborts with the state untouched;
//! hooks shipped inside the new image run chrooted in it before the pointer flips, and a
//! failing one aborts with the store as it was; `after-upgrade` and `post-upgrade` run once
//! the slot is staged.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::path::{Path, PathBuf};

/// An image tree with a static busybox as /bin/sh and the given hook file in /system/oem.
fn image_with_hook(root: &Path, name: &str, hook_yaml: &str) -> PathBuf {
    let busybox = require_tool("busybox");
    let dir = tree(
        &root.join(name),
        &[
            ("etc/clb-release", name.as_bytes()),
            ("system/oem/90_hook.yaml", hook_yaml.as_bytes()),
        ],
    );
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    std::fs::copy(&busybox, dir.join("bin/busybox")).unwrap();
    for applet in ["sh", "test", "cat", "touch", "mkdir"] {
        std::os::unix::fs::symlink("busybox", dir.join("bin").join(applet)).unwrap();
    }
    dir
}

#[test]
fn hooks_gate_and_follow_the_upgrade() {
    let fx = Fixture::new();
    let work = fx.work.path();
    let r = releases(work, &["v1"]);
    fx.push(&[&r.base, &r.tops[0]], "os:v1", &[]);
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "os:v1", &["--no-verify"]));
    let before = hash_tree(&state);

    // 1. A failing before-upgrade hook of this system: nothing is written.
    let good = image_with_hook(
        work,
        "good",
        "stages:\n  after-upgrade-chroot:\n    - name: image check\n      commands:\n        - test -f /etc/clb-release && touch /tmp/written-in-chroot\n",
    );
    fx.push(&[&r.base, &good], "os:good", &[]);
    let failing_host = work.join("host-fail.yaml");
    std::fs::write(&failing_host, "stages:\n  before-upgrade:\n    - name: maintenance window\n      commands:\n        - exit 3\n").unwrap();
    let out = fx.upgrade(
        &state,
        "os:good",
        &[
            "--no-verify",
            "--cloud-config",
            failing_host.to_str().unwrap(),
        ],
    );
    assert_fails(&out, 12, "before-upgrade");
    assert_eq!(
        hash_tree(&state),
        before,
        "a failing before-upgrade hook changed the state"
    );

    // 2. The image's own hook fails: the layers it brought are taken away again.
    let bad = image_with_hook(
        work,
        "bad",
        "stages:\n  after-upgrade-chroot:\n    - name: refuse\n      commands:\n        - test -f /etc/does-not-exist\n",
    );
    fx.push(&[&r.base, &bad], "os:bad", &[]);
    let out = fx.upgrade(&state, "os:bad", &["--no-verify"]);
    assert_fails(&out, 12, "after-upgrade-chroot");
    assert_eq!(
        hash_tree(&state),
        before,
        "a failing image hook changed the state"
    );

    // 3. Everything passes: before runs first, the image hook ran in the image (its writes are
    // thrown away), after- and post- hooks run once staged, in order.
    let log = work.join("hook.log");
    let host = work.join("host-ok.yaml");
    std::fs::write(
        &host,
        format!(
            "stages:\n  before-upgrade:\n    - commands: [\"echo before >> {0}\"]\n  after-upgrade:\n    - commands: [\"echo after >> {0}\"]\n  post-upgrade:\n    - commands: [\"echo post >> {0}\"]\n",
            log.display()
        ),
    )
    .unwrap();
    let out = fx.upgrade(
        &state,
        "os:good",
        &["--no-verify", "--cloud-config", host.to_str().unwrap()],
    );
    assert_ok(&out);
    assert_eq!(json(&out)["slot"], "b");
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "before\nafter\npost\n"
    );
    // The chroot hook's write went to a throw-away layer, not into the stored image.
    let mnt = work.join("mnt");
    assert_ok(&clb(&[
        "--state-dir",
        state.to_str().unwrap(),
        "mount",
        "--slot",
        "b",
        mnt.to_str().unwrap(),
    ]));
    let leaked = mnt.join("tmp/written-in-chroot").exists();
    let release = std::fs::read_to_string(mnt.join("etc/clb-release")).unwrap();
    assert_ok(&clb(&["umount", mnt.to_str().unwrap()]));
    assert!(!leaked);
    assert_eq!(release, "good");

    // 4. --no-hooks skips even the image's hooks.
    let state2 = fx.new_state_dir("state2");
    assert_ok(&fx.upgrade(&state2, "os:bad", &["--no-verify", "--no-hooks"]));
}
