#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Partition tables and labels of a real GPT disk image, checked against sgdisk and blkid.

mod common;

use common::*;

use clb_disk::{DiskError, find_by_label, list_partitions};

#[test]
fn partitions_match_sgdisk_and_labels_match_blkid() {
    let mut scratch = Scratch::new();
    let img = make_disk(&mut scratch, "disk.img", None);
    let parts = list_partitions(&img).unwrap();
    assert_eq!(parts.len(), 4, "{parts:#?}");

    for p in &parts {
        // sgdisk -i N: "First sector: 2048 (at 1024.0 KiB)", "Partition size: 16384 sectors ...".
        let info = tool("sgdisk", &["-i", &p.number.to_string(), s(&img)]);
        let field = |key: &str| -> String {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {info}"))
                .trim()
                .to_string()
        };
        let first: u64 = field("First sector:")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let sectors: u64 = field("Partition size:")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p.start_bytes, first * 512, "partition {}", p.number);
        assert_eq!(p.size_bytes, sectors * 512, "partition {}", p.number);
        assert_eq!(
            p.part_name.as_deref(),
            Some(field("Partition name:").trim_matches('\''))
        );
        let code = field("Partition GUID code:");
        let guid = code.split(' ').next().unwrap();
        assert!(
            p.type_guid.as_deref().unwrap().eq_ignore_ascii_case(guid),
            "{code}"
        );

        // The same partition through an offset loop device, as blkid sees it.
        let lo = RawLoop::attach(&img, p.start_bytes, p.size_bytes);
        assert_eq!(p.fs_label.as_deref().unwrap_or(""), blkid(&lo.0, "LABEL"));
        assert_eq!(p.fs_type.as_deref().unwrap_or(""), blkid(&lo.0, "TYPE"));
    }
    let names: Vec<_> = parts.iter().map(|p| p.fs_label.clone().unwrap()).collect();
    assert_eq!(
        names,
        ["COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_PERSISTENT"]
    );
    assert_eq!(parts[0].fs_type.as_deref(), Some("vfat"));

    let state = find_by_label(&img, "COS_STATE").unwrap();
    assert_eq!(state.number, 3);
    assert_eq!(state.start_bytes, PARTS[2].2 * 512);
    assert_eq!(find_by_label(&img, "COS_OEM").unwrap().number, 1);

    match find_by_label(&img, "COS_NOPE") {
        Err(DiskError::LabelNotFound { label, .. }) => assert_eq!(label, "COS_NOPE"),
        other => panic!("expected LabelNotFound, got {other:?}"),
    }
    drop(scratch);
}

#[test]
fn duplicate_label_is_an_error() {
    let mut scratch = Scratch::new();
    let img = make_disk(
        &mut scratch,
        "dup.img",
        Some(["COS_OEM", "COS_RECOVERY", "COS_STATE", "COS_STATE"]),
    );
    match find_by_label(&img, "COS_STATE") {
        Err(e @ DiskError::DuplicateLabel { .. }) => {
            let DiskError::DuplicateLabel { label, partitions } = &e else {
                unreachable!()
            };
            assert_eq!(label, "COS_STATE");
            assert_eq!(partitions.len(), 2);
            assert!(partitions[0].ends_with("partition 3"), "{partitions:?}");
            assert!(partitions[1].ends_with("partition 4"), "{partitions:?}");
            let msg = e.to_string();
            assert!(!msg.contains('\n') && msg.contains("COS_STATE"), "{msg}");
        }
        other => panic!("expected DuplicateLabel, got {other:?}"),
    }
    // Unique labels on the same disk still resolve.
    assert_eq!(find_by_label(&img, "COS_RECOVERY").unwrap().number, 2);
}

#[test]
fn unpartitioned_image_is_no_partition_table() {
    let mut scratch = Scratch::new();
    let img = scratch.sparse("plain.img", 8);
    tool("mkfs.ext4", &["-q", "-F", "-L", "COS_STATE", s(&img)]);
    match list_partitions(&img) {
        Err(DiskError::NoPartitionTable { .. }) => {}
        other => panic!("expected NoPartitionTable, got {other:?}"),
    }
}
