#![allow(clippy::unwrap_used, clippy::expect_used)]
//! StateDisk on a GPT disk image, and host-wide label lookup.

mod common;

use std::io::ErrorKind;

use common::*;

use clb_disk::{DiskError, LoopDevice, StateDisk, find_mounted, host_partition_by_label};

#[test]
fn state_disk_write_drop_reopen_leaves_nothing_behind() {
    let mut scratch = Scratch::new();
    let img = make_disk(&mut scratch, "state.img", None);

    let sd = StateDisk::open(&img, "COS_STATE", true).unwrap();
    let dir = sd.path().to_path_buf();
    assert!(dir.starts_with("/run/clb"), "{}", dir.display());
    assert_eq!(sd.partition().unwrap().number, 3);
    let dev = sd.device().unwrap().to_path_buf();
    assert_eq!(loops_of(&img), [dev.display().to_string()]);
    // The agent finds the existing mount instead of mounting twice.
    assert_eq!(find_mounted(&dev), Some(dir.clone()));
    std::fs::write(dir.join("boot.env"), b"slot=a\n").unwrap();
    drop(sd);

    assert!(
        loops_of(&img).is_empty(),
        "loop devices left: {:?}",
        loops_of(&img)
    );
    assert!(mounted_under(&dir).is_empty());
    assert!(!dir.exists(), "mount dir not removed");
    assert_eq!(find_mounted(&dev), None);

    // Read-only reopen: the file is there, writes fail.
    let sd = StateDisk::open(&img, "COS_STATE", false).unwrap();
    assert_eq!(
        std::fs::read(sd.path().join("boot.env")).unwrap(),
        b"slot=a\n"
    );
    let err = std::fs::write(sd.path().join("x"), b"x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "expected EROFS, got {err}");
    let dir = sd.path().to_path_buf();
    sd.close().unwrap();
    assert!(loops_of(&img).is_empty());
    assert!(mounted_under(&dir).is_empty());

    // The other partitions open the same way. (Not COS_OEM: it is vfat, and this kernel has
    // no vfat driver.)
    let rec = StateDisk::open(&img, "COS_RECOVERY", false).unwrap();
    assert!(rec.path().join("lost+found").is_dir());
    drop(rec);
    assert!(loops_of(&img).is_empty());

    match StateDisk::open(&img, "COS_MISSING", false) {
        Err(DiskError::LabelNotFound { .. }) => {}
        other => panic!("expected LabelNotFound, got {other:?}"),
    }
    assert!(loops_of(&img).is_empty());
}

#[test]
fn host_label_scan_finds_whole_devices_and_rejects_duplicates() {
    let mut scratch = Scratch::new();
    // A label no real device has, so the host's own disks cannot interfere.
    let label = format!("CLBT{}", std::process::id() % 100_000);
    let one = scratch.sparse("one.img", 8);
    let two = scratch.sparse("two.img", 8);
    tool("mkfs.ext4", &["-q", "-F", "-L", &label, s(&one)]);
    tool("mkfs.ext4", &["-q", "-F", "-L", &label, s(&two)]);

    match host_partition_by_label(&label) {
        Err(DiskError::LabelNotFound { .. }) => {}
        other => panic!("expected LabelNotFound, got {other:?}"),
    }
    let lo1 = LoopDevice::attach(&one, 0, None, true).unwrap();
    assert_eq!(host_partition_by_label(&label).unwrap(), lo1.path());
    assert_eq!(find_mounted(lo1.path()), None);

    let lo2 = LoopDevice::attach(&two, 0, None, true).unwrap();
    match host_partition_by_label(&label) {
        Err(DiskError::DuplicateLabel { partitions, .. }) => {
            assert_eq!(partitions.len(), 2, "{partitions:?}");
            assert!(partitions.contains(&lo1.path().display().to_string()));
            assert!(partitions.contains(&lo2.path().display().to_string()));
        }
        other => panic!("expected DuplicateLabel, got {other:?}"),
    }
    lo2.detach().unwrap();

    // open_device mounts a whole device found this way.
    let sd = StateDisk::open_device(lo1.path(), false).unwrap();
    assert_eq!(find_mounted(lo1.path()).as_deref(), Some(sd.path()));
    let e = std::fs::create_dir(sd.path().join("d")).unwrap_err();
    assert!(e.kind() == ErrorKind::ReadOnlyFilesystem || e.raw_os_error() == Some(30));
    drop(sd);
    drop(lo1);
    assert!(loops_of(&one).is_empty() && loops_of(&two).is_empty());
}
