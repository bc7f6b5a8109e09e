//! `layout` on sparse image files, cross-checked with sgdisk and blkid (on offset loop
//! devices). Needs root and the tools: missing tools fail the tests.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod common;

use clb_cloud_config::{
    Device, Expand, Filesystem, Layout, LayoutError, LayoutOptions, LayoutOutcome, LayoutPlan,
    Options, Outcome, PartAction, Partition, Refusal, Report, Sources,
};
use clb_disk::LoopDevice;
use clb_testsupport::{require_tool, run_cmd, sha256_digest};

const MIB: u64 = 1 << 20;

// The engine's entry points, with every error they return checked to print each cause once.

fn plan_layout(l: &Layout) -> Result<LayoutPlan, LayoutError> {
    let r = clb_cloud_config::plan_layout(l);
    if let Err(e) = &r {
        common::assert_printed_once(e);
    }
    r
}

fn apply_layout(l: &Layout, o: &LayoutOptions) -> Result<LayoutOutcome, LayoutError> {
    let r = clb_cloud_config::apply_layout(l, o);
    if let Err(e) = &r {
        common::assert_printed_once(e);
    }
    r
}

fn run_stage(stage: &str, sources: &Sources, options: &Options) -> Report {
    let report = clb_cloud_config::run_stage(stage, sources, options);
    common::assert_report_printed_once(&report);
    report
}

fn image(dir: &Path, name: &str, mib: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).unwrap();
    f.set_len(mib * MIB).unwrap();
    p
}

/// A resized cloud volume: the image file grows to `mib` MiB.
fn grow_file(img: &Path, mib: u64) {
    std::fs::OpenOptions::new()
        .write(true)
        .open(img)
        .unwrap()
        .set_len(mib * MIB)
        .unwrap();
}

fn part(fs_label: &str, size: u64, p_label: &str, fs: &str) -> Partition {
    Partition {
        fs_label: fs_label.into(),
        size,
        p_label: p_label.into(),
        filesystem: Filesystem::from_name(fs).unwrap(),
    }
}

fn layout(dev: &Path, parts: Vec<Partition>, expand: Option<u64>) -> Layout {
    Layout {
        device: Some(Device {
            path: dev.display().to_string(),
            ..Device::default()
        }),
        expand_partition: expand.map(|size| Expand { size }),
        add_partitions: parts,
    }
}

/// Run a layout through the engine, as a `rootfs` step of a config file.
fn apply(root: &Path, l: &Layout) -> Report {
    let step = serde_json::json!({ "stages": { "rootfs": [ { "name": "layout", "layout": l } ] } });
    // JSON is YAML.
    let dir = root.join("oem");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("layout.yaml"), step.to_string()).unwrap();
    run_stage(
        "rootfs",
        &Sources::default(),
        &Options {
            root: root.to_path_buf(),
            ..Options::default()
        },
    )
}

fn tools() {
    for t in [
        "sgdisk",
        "blkid",
        "losetup",
        "mkfs.ext4",
        "mkfs.vfat",
        "mkswap",
        "mkfs.xfs",
        "resize2fs",
        "e2fsck",
        "dumpe2fs",
    ] {
        require_tool(t);
    }
}

fn sh(cmd: &mut Command) -> String {
    String::from_utf8(run_cmd(cmd).unwrap_or_else(|e| panic!("{e}"))).unwrap()
}

/// (number, first sector, last sector, name) from `sgdisk -p`.
fn sgdisk_parts(img: &Path) -> Vec<(u32, u64, u64, String)> {
    let out = sh(Command::new("sgdisk").arg("-p").arg(img));
    out.lines()
        .skip_while(|l| !l.trim_start().starts_with("Number"))
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((
                f.first()?.parse().ok()?,
                f.get(1)?.parse().ok()?,
                f.get(2)?.parse().ok()?,
                f.get(6..).map(|n| n.join(" ")).unwrap_or_default(),
            ))
        })
        .collect()
}

fn sgdisk_verify(img: &Path) {
    let out = sh(Command::new("sgdisk").arg("-v").arg(img));
    assert!(out.contains("No problems found"), "sgdisk -v: {out}");
}

fn type_code(img: &Path, n: u32) -> String {
    let out = sh(Command::new("sgdisk").arg("-i").arg(n.to_string()).arg(img));
    out.lines()
        .find(|l| l.starts_with("Partition GUID code:"))
        .unwrap()
        .split_whitespace()
        .nth(3)
        .unwrap()
        .to_string()
}

/// `blkid -p` of a byte range, through an offset loop device (detached on return).
fn blkid(img: &Path, start: u64, size: u64) -> (String, String) {
    let lo = LoopDevice::attach(img, start, Some(size), true).unwrap();
    let out = sh(Command::new("blkid")
        .args(["-p", "-o", "export"])
        .arg(lo.path()));
    lo.detach().unwrap();
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_string()
    };
    (get("TYPE"), get("LABEL"))
}

fn file_digest(p: &Path) -> String {
    sha256_digest(&std::fs::read(p).unwrap())
}

#[test]
fn creates_partitions_and_filesystems_then_rerun_is_a_noop() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.raw", 256);
    let l = layout(
        &img,
        vec![
            part("COS_GRUB", 32, "efi", "vfat"),
            part("COS_OEM", 64, "oem", "ext4"),
            part("COS_SWAP", 16, "swap", "swap"),
            part("COS_PERSISTENT", 0, "persistent", "ext2"),
            part("", 0, "raw", "noformat"),
        ],
        None,
    );
    // size 0 only for the last one.
    assert!(
        plan_layout(&l)
            .unwrap_err()
            .to_string()
            .contains("only the last partition")
    );
    let mut l = l;
    l.add_partitions.pop();
    // A size no disk can hold (its bytes overflow 64 bits) is refused, not wrapped around.
    let mut huge = l.clone();
    huge.add_partitions[1].size = u64::MAX / 1024;
    assert!(
        matches!(
            plan_layout(&huge),
            Err(LayoutError::Refused {
                problem: Refusal::SizeTooLarge { name: Some(n), .. },
                ..
            }) if n == "oem"
        ),
        "{:?}",
        plan_layout(&huge)
    );
    let plan = plan_layout(&l).unwrap();
    assert!(plan.new_table);
    assert!(
        plan.partitions
            .iter()
            .all(|p| p.action == PartAction::Create)
    );
    let rep = apply(root.path(), &l);
    assert!(rep.success(), "{}", rep.to_json());
    sgdisk_verify(&img);
    let parts = sgdisk_parts(&img);
    let total_sectors = 256 * MIB / 512;
    assert_eq!(
        parts,
        vec![
            (1, 2048, 2048 + 32 * 2048 - 1, "efi".to_string()),
            (2, 67584, 67584 + 64 * 2048 - 1, "oem".to_string()),
            (3, 198656, 198656 + 16 * 2048 - 1, "swap".to_string()),
            // The rest, up to the last usable sector (backup array and header take 33).
            (4, 231424, total_sectors - 34, "persistent".to_string()),
        ]
    );
    assert_eq!(type_code(&img, 1), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert_eq!(type_code(&img, 2), "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
    assert_eq!(type_code(&img, 3), "0657FD6D-A4AB-43C4-84E5-0933C84B4F4F");
    let want = [
        ("vfat", "COS_GRUB"),
        ("ext4", "COS_OEM"),
        ("swap", "COS_SWAP"),
        ("ext2", "COS_PERSISTENT"),
    ];
    for ((n, first, last, _), (ty, label)) in parts.iter().zip(want) {
        assert_eq!(
            blkid(&img, first * 512, (last - first + 1) * 512),
            (ty.to_string(), label.to_string()),
            "partition {n}"
        );
    }
    // The protective MBR: blkid sees a GPT disk.
    let pt = sh(Command::new("blkid")
        .args(["-p", "-o", "value", "-s", "PTTYPE"])
        .arg(&img));
    assert_eq!(pt.trim(), "gpt");
    // Re-running finds everything in place and writes nothing.
    let before = file_digest(&img);
    assert!(plan_layout(&l).unwrap().is_noop());
    let rep = apply(root.path(), &l);
    assert!(rep.success(), "{}", rep.to_json());
    assert!(
        rep.steps[0].actions.is_empty(),
        "{:?}",
        rep.steps[0].actions
    );
    assert_eq!(file_digest(&img), before);
    // A prefix of the layout already there: only the rest is added.
    let img2 = image(dir.path(), "disk2.raw", 128);
    let first = layout(&img2, vec![part("A_ONE", 16, "one", "ext4")], None);
    assert!(apply(root.path(), &first).success());
    let both = layout(
        &img2,
        vec![
            part("A_ONE", 16, "one", "ext4"),
            part("A_TWO", 0, "two", "ext4"),
        ],
        None,
    );
    let plan = plan_layout(&both).unwrap();
    assert_eq!(
        plan.partitions.iter().map(|p| p.action).collect::<Vec<_>>(),
        [PartAction::Keep, PartAction::Create]
    );
    assert!(apply(root.path(), &both).success());
    assert_eq!(sgdisk_parts(&img2).len(), 2);
    sgdisk_verify(&img2);
}

#[test]
fn mismatching_disks_are_refused_untouched() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.raw", 128);
    let base = vec![
        part("B_OEM", 16, "oem", "ext4"),
        part("B_DATA", 32, "data", "ext4"),
    ];
    assert!(apply(root.path(), &layout(&img, base.clone(), None)).success());
    let digest = file_digest(&img);
    let refused = |parts: Vec<Partition>, why: &str| {
        let l = layout(&img, parts, None);
        let err = plan_layout(&l).unwrap_err().to_string();
        assert!(err.contains(why), "wanted {why:?}, got {err}");
        let rep = apply(root.path(), &l);
        assert!(
            matches!(&rep.steps[0].outcome, Outcome::Failed(m) if m.contains(why)),
            "{}",
            rep.to_json()
        );
        assert_eq!(file_digest(&img), digest, "refused layout changed the disk");
    };
    refused(
        vec![
            part("B_OEM", 20, "oem", "ext4"),
            part("B_DATA", 32, "data", "ext4"),
        ],
        "wants 20 MiB",
    );
    refused(
        vec![
            part("B_OEM", 16, "oem", "xfs"),
            part("B_DATA", 32, "data", "ext4"),
        ],
        "the layout wants xfs",
    );
    refused(
        vec![
            part("B_OEM", 16, "other", "ext4"),
            part("B_DATA", 32, "data", "ext4"),
        ],
        "the layout wants \"other\"",
    );
    // Only the second one listed: something else is before it on the disk.
    refused(
        vec![
            part("B_NEW", 16, "new", "ext4"),
            part("B_DATA", 32, "data", "ext4"),
        ],
        "partition \"data\" exists but \"new\", listed before it, does not",
    );
    // Listed partition followed by an unlisted one.
    refused(
        vec![part("B_OEM", 16, "oem", "ext4")],
        "other partitions follow it",
    );
    refused(
        vec![
            part("B_OEM", 16, "oem", "ext4"),
            part("B_DATA", 32, "data", "ext4"),
            part("B_BIG", 512, "big", "ext4"),
        ],
        "partition 3 (big) needs 512 MiB, 78 MiB free",
    );
    // An MBR disk and a whole-disk filesystem are never overwritten.
    let mbr = image(dir.path(), "mbr.raw", 64);
    sh(Command::new("sh").arg("-c").arg(format!(
        "printf 'label: dos\\n,32M,83\\n' | sfdisk -q {}",
        mbr.display()
    )));
    let d = file_digest(&mbr);
    let err = plan_layout(&layout(&mbr, vec![part("X", 8, "x", "ext4")], None)).unwrap_err();
    assert!(err.to_string().contains("MBR"), "{err}");
    assert_eq!(file_digest(&mbr), d);
    let whole = image(dir.path(), "whole.raw", 64);
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "WHOLE"])
        .arg(&whole));
    let err = plan_layout(&layout(&whole, vec![part("X", 8, "x", "ext4")], None)).unwrap_err();
    assert!(err.to_string().contains("whole disk"), "{err}");
}

#[test]
fn expand_partition_grows_the_last_partition_and_its_ext4() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "disk.raw", 96);
    assert!(
        apply(
            root.path(),
            &layout(
                &img,
                vec![
                    part("C_EFI", 8, "efi", "vfat"),
                    part("C_ROOT", 32, "root", "ext4")
                ],
                None
            )
        )
        .success()
    );
    let huge = layout(
        &img,
        vec![part("C_DATA", 8, "data", "ext4")],
        Some(u64::MAX / 1024),
    );
    assert!(
        matches!(
            plan_layout(&huge),
            Err(LayoutError::Refused {
                problem: Refusal::SizeTooLarge { name: None, .. },
                ..
            })
        ),
        "{:?}",
        plan_layout(&huge)
    );
    let fs_bytes = |first: u64, last: u64| {
        let lo =
            LoopDevice::attach(&img, first * 512, Some((last - first + 1) * 512), true).unwrap();
        let out = sh(Command::new("dumpe2fs").arg("-h").arg(lo.path()));
        lo.detach().unwrap();
        let get = |k: &str| -> u64 {
            out.lines()
                .find_map(|l| l.strip_prefix(k))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        get("Block count:") * get("Block size:")
    };
    // Grow to a fixed size, then to the rest.
    let grow = |size| layout(&img, vec![], Some(size));
    let rep = apply(root.path(), &grow(48));
    assert!(rep.success(), "{}", rep.to_json());
    let (_, first, last, _) = sgdisk_parts(&img)[1].clone();
    assert_eq!((last - first + 1) * 512, 48 * MIB);
    assert_eq!(fs_bytes(first, last), 48 * MIB);
    // Smaller than now: nothing to do (never shrinks).
    let d = file_digest(&img);
    assert!(plan_layout(&grow(40)).unwrap().is_noop());
    assert!(apply(root.path(), &grow(40)).success());
    assert_eq!(file_digest(&img), d);
    // The disk grows (a resized cloud volume): size 0 takes everything, the backup GPT moves.
    grow_file(&img, 160);
    let rep = apply(root.path(), &grow(0));
    assert!(rep.success(), "{}", rep.to_json());
    sgdisk_verify(&img);
    let (_, first, last, _) = sgdisk_parts(&img)[1].clone();
    assert_eq!(last, 160 * MIB / 512 - 34);
    assert_eq!(fs_bytes(first, last) / MIB, (last - first + 1) * 512 / MIB);
    assert_eq!(
        blkid(&img, first * 512, (last - first + 1) * 512),
        ("ext4".into(), "C_ROOT".into())
    );
    // Again: a no-op.
    let d = file_digest(&img);
    assert!(apply(root.path(), &grow(0)).success());
    assert_eq!(file_digest(&img), d);
}

#[test]
fn xfs_and_device_by_label() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    // mkfs.xfs refuses filesystems under 300 MiB; the file is sparse.
    let img = image(dir.path(), "disk.raw", 400);
    // A unique label: other loop devices on this machine must not match.
    let label = format!("L{}", std::process::id());
    assert!(
        apply(
            root.path(),
            &layout(&img, vec![part(&label, 16, "oem", "ext4")], None)
        )
        .success()
    );
    let lo = LoopDevice::attach(&img, 0, None, false).unwrap();
    let by_label = Layout {
        device: Some(Device {
            label: label.clone(),
            ..Device::default()
        }),
        expand_partition: None,
        add_partitions: vec![
            part(&label, 16, "oem", "ext4"),
            part("D_XFS", 0, "data", "xfs"),
        ],
    };
    let plan = plan_layout(&by_label).unwrap();
    assert_eq!(plan.device, lo.path());
    let rep = apply(root.path(), &by_label);
    assert!(rep.success(), "{}", rep.to_json());
    lo.detach().unwrap();
    let parts = sgdisk_parts(&img);
    assert_eq!(parts.len(), 2);
    let (_, first, last, _) = parts[1].clone();
    assert_eq!(
        blkid(&img, first * 512, (last - first + 1) * 512),
        ("xfs".into(), "D_XFS".into())
    );
    sgdisk_verify(&img);
}

#[test]
fn typed_api_dry_runs_applies_reports_and_refuses() {
    tools();
    let dir = tempfile::tempdir().unwrap();
    let img = image(dir.path(), "api.raw", 128);
    let shown = img.display().to_string();
    let layout = Layout::on_device(
        &img,
        vec![
            Partition::new("E_OEM", "oem", 16, Filesystem::Ext4),
            Partition::new("E_DATA", "data", 64, Filesystem::Ext2),
        ],
    );
    // A dry run writes nothing and says what it would do.
    let blank = file_digest(&img);
    let dry = apply_layout(&layout, &LayoutOptions { dry_run: true }).unwrap();
    assert_eq!(file_digest(&img), blank);
    assert!(dry.changed());
    assert_eq!(
        dry.to_string(),
        format!(
            "{shown}: would write a new GPT; would create partition 1 \"oem\" (16 MiB, ext4 \"E_OEM\"); \
             would create partition 2 \"data\" (64 MiB, ext2 \"E_DATA\")"
        )
    );
    // Applied: the same plan, done.
    let done = apply_layout(&layout, &LayoutOptions::default()).unwrap();
    assert_eq!(done.plan, dry.plan);
    assert_eq!(
        done.to_string(),
        format!(
            "{shown}: wrote a new GPT; created partition 1 \"oem\" (16 MiB, ext4 \"E_OEM\"); \
             created partition 2 \"data\" (64 MiB, ext2 \"E_DATA\")"
        )
    );
    assert_eq!(done.changes().len(), 3, "{:?}", done.changes());
    sgdisk_verify(&img);
    let parts = sgdisk_parts(&img);
    let (_, first, last, _) = parts[1].clone();
    assert_eq!(
        blkid(&img, first * 512, (last - first + 1) * 512),
        ("ext2".into(), "E_DATA".into())
    );
    // Again: nothing to do, nothing written.
    let laid_out = file_digest(&img);
    let again = apply_layout(&layout, &LayoutOptions::default()).unwrap();
    assert!(!again.changed());
    assert!(again.changes().is_empty());
    assert_eq!(
        again.to_string(),
        format!("{shown}: nothing to do; left partitions 1 \"oem\", 2 \"data\" alone")
    );
    assert_eq!(file_digest(&img), laid_out);
    // A partition that does not fit: a typed refusal, one sentence, the disk untouched.
    let mut bigger = layout.clone();
    bigger
        .add_partitions
        .push(Partition::new("E_BIG", "big", 100, Filesystem::Ext4));
    let err = apply_layout(&bigger, &LayoutOptions::default()).unwrap_err();
    assert!(
        matches!(
            &err,
            LayoutError::Refused {
                device,
                problem: Refusal::NoRoom {
                    number: 3,
                    size_mib: 100,
                    free_mib: 46,
                    ..
                },
            } if *device == img
        ),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        format!("layout of {shown}: partition 3 (big) needs 100 MiB, 46 MiB free")
    );
    assert!(std::error::Error::source(&err).is_none());
    assert_eq!(file_digest(&img), laid_out);
    // The disk grows: the last partition and its ext2 grow with it.
    grow_file(&img, 160);
    let grow = Layout {
        expand_partition: Some(Expand { size: 0 }),
        add_partitions: Vec::new(),
        ..layout.clone()
    };
    let grown = apply_layout(&grow, &LayoutOptions::default()).unwrap();
    assert!(grown.filesystem_grown);
    assert_eq!(
        grown.to_string(),
        format!("{shown}: grew partition 2 and its ext2 filesystem from 64 MiB to 142 MiB")
    );
    assert_eq!(
        grown.changes().last().map(String::as_str),
        Some(format!("resize2fs partition 2 of {shown}").as_str())
    );
    sgdisk_verify(&img);
}
