//! What the kernel shows when it mounts our layers: whiteouts, opaque directories, file
//! capabilities and hard links survive from a directory through the registry into the store,
//! for tar layers, native SquashFS layers, and `clb convert` (per layer and merged).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

fn view_trees(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let base = tree(
        &root.join("base"),
        &[
            ("etc/gone", b"delete me"),
            ("opt/dir/old1", b"1"),
            ("opt/dir/old2", b"2"),
            ("usr/lib/a", b"linked"),
            ("usr/bin/tool", b"\x7fELF pretend"),
        ],
    );
    std::fs::hard_link(base.join("usr/lib/a"), base.join("usr/lib/b")).unwrap();
    std::os::unix::fs::symlink("../lib/a", base.join("usr/bin/a-link")).unwrap();
    let st = Command::new("setcap")
        .args([
            "cap_net_raw+ep",
            base.join("usr/bin/tool").to_str().unwrap(),
        ])
        .status()
        .expect("setcap (libcap2-bin)");
    assert!(st.success(), "setcap on the source tree");
    let top = tree(
        &root.join("top"),
        &[
            ("etc/.wh.gone", b""),
            ("opt/dir/.wh..wh..opq", b""),
            ("opt/dir/new", b"n"),
        ],
    );
    (base, top)
}

fn check_view(fx: &Fixture, repo_tag: &str, expect_layers: usize) {
    let state = fx.new_state_dir(&format!("state-{}", repo_tag.replace([':', '/'], "-")));
    let out = fx.upgrade(&state, repo_tag, &["--no-verify"]);
    assert_ok(&out);
    let s = fx.status(&state);
    assert_eq!(
        s["slots"]["a"]["layers"].as_array().unwrap().len(),
        expect_layers
    );
    let mnt = fx
        .work
        .path()
        .join(format!("mnt-{}", repo_tag.replace([':', '/'], "-")));
    assert_ok(&clb(&[
        "--state-dir",
        state.to_str().unwrap(),
        "mount",
        "--slot",
        "a",
        mnt.to_str().unwrap(),
    ]));
    let result = std::panic::catch_unwind(|| {
        assert!(
            !mnt.join("etc/gone").exists(),
            "whiteout hides the deleted file"
        );
        let mut names: Vec<String> = std::fs::read_dir(mnt.join("opt/dir"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["new"], "opaque dir replaces the lower dir");
        let getcap = Command::new("getcap")
            .arg(mnt.join("usr/bin/tool"))
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&getcap.stdout).contains("cap_net_raw"),
            "capability kept: {:?}",
            getcap
        );
        let a = std::fs::metadata(mnt.join("usr/lib/a")).unwrap();
        let b = std::fs::metadata(mnt.join("usr/lib/b")).unwrap();
        assert_eq!(a.nlink(), 2, "hard link count");
        assert_eq!(a.ino(), b.ino(), "hard link shares the inode");
        assert_eq!(
            std::fs::read_link(mnt.join("usr/bin/a-link")).unwrap(),
            Path::new("../lib/a")
        );
        assert_eq!(
            std::fs::read(mnt.join("usr/bin/a-link")).unwrap(),
            b"linked"
        );
        assert!(
            std::fs::write(mnt.join("etc/new"), b"x").is_err(),
            "slot mount is read-only"
        );
    });
    assert_ok(&clb(&["umount", mnt.to_str().unwrap()]));
    result.unwrap();
}

#[test]
fn tar_and_native_layers_give_the_right_kernel_view() {
    require_tool("getcap");
    let fx = Fixture::new();
    let (base, top) = view_trees(fx.work.path());
    fx.push(&[&base, &top], "view:tar", &[]);
    fx.push(&[&base, &top], "view:native", &["--format", "squashfs"]);
    check_view(&fx, "view:tar", 2);
    check_view(&fx, "view:native", 2);

    // Native layers are stored as downloaded: store digest == registry digest.
    let raw = fx.reg.skopeo_inspect("view:native", true).unwrap();
    assert_eq!(
        raw["layers"][0]["mediaType"],
        "application/vnd.clb.layer.v1.squashfs"
    );
}

#[test]
fn convert_per_layer_and_merged() {
    require_tool("getcap");
    let fx = Fixture::new();
    let (base, top) = view_trees(fx.work.path());
    fx.push(&[&base, &top], "view:tar", &[]);
    for (tag, merged, layers) in [("view:conv", false, 2), ("view:merged", true, 1)] {
        let mut args = vec!["convert".to_string(), fx.image("view:tar"), fx.image(tag)];
        if merged {
            args.push("--merged".into());
        }
        assert_ok(&clb_owned(&args));
        let raw = fx.reg.skopeo_inspect(tag, true).unwrap();
        let listed = raw["layers"].as_array().unwrap();
        assert_eq!(listed.len(), layers);
        assert!(
            listed
                .iter()
                .all(|l| l["mediaType"] == "application/vnd.clb.layer.v1.squashfs")
        );
        check_view(&fx, tag, layers);
    }
}

#[test]
fn the_slot_carries_its_kernel_and_initrd() {
    let fx = Fixture::new();
    let root = fx.work.path();
    let base = tree(
        &root.join("kbase"),
        &[
            ("boot/vmlinuz-6.1.0-1-test", b"kernel one"),
            ("boot/initrd.img-6.1.0-1-test", b"initrd one"),
            ("etc/os-release", b"ID=test\n"),
        ],
    );
    std::os::unix::fs::symlink("vmlinuz-6.1.0-1-test", base.join("boot/vmlinuz")).unwrap();
    // v2 adds a newer kernel and deletes the old initrd with a whiteout.
    let top = tree(
        &root.join("ktop"),
        &[
            ("boot/vmlinuz-6.1.0-2-test", b"kernel two"),
            ("boot/.wh.initrd.img-6.1.0-1-test", b""),
        ],
    );
    fx.push(&[&base], "kern:v1", &[]);
    fx.push(&[&base, &top], "kern:v2", &[]);
    let state = fx.new_state_dir("state");
    assert_ok(&fx.upgrade(&state, "kern:v1", &["--no-verify"]));
    assert_eq!(
        std::fs::read(state.join("boot/a/vmlinuz")).unwrap(),
        b"kernel one"
    );
    assert_eq!(
        std::fs::read(state.join("boot/a/initrd")).unwrap(),
        b"initrd one"
    );
    assert_eq!(
        fx.status(&state)["slots"]["a"]["kernel_version"],
        "6.1.0-1-test"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("slots/a.json")).unwrap()).unwrap();
    assert_eq!(
        manifest["boot"]["kernel"],
        clb_testsupport::sha256_digest(b"kernel one")
    );

    assert_ok(&fx.upgrade(&state, "kern:v2", &["--no-verify"]));
    assert_eq!(
        std::fs::read(state.join("boot/b/vmlinuz")).unwrap(),
        b"kernel two"
    );
    assert!(
        !state.join("boot/b/initrd").exists(),
        "the whiteout removed the initrd"
    );
    assert_eq!(
        fx.status(&state)["slots"]["b"]["kernel_version"],
        "6.1.0-2-test"
    );
    // Slot a keeps its own kernel: a rollback restores it.
    assert_eq!(
        std::fs::read(state.join("boot/a/vmlinuz")).unwrap(),
        b"kernel one"
    );
}
