//! The engine over 120 configuration files other projects ship (mudler/yip, Elemental, cOS,
//! Kairos, Harvester, Spectro Cloud), copied byte for byte into `tests/corpus/yip/` with their
//! sources (`INDEX.tsv`) and the collector's findings (`SUMMARY.md`).
//!
//! Every file goes through the parser (accept or reject as Go yip does: the expected rejects
//! are read from SUMMARY.md's table, plus the deviations listed below with their reasons), and
//! through a dry run of every stage it defines. No unknown-key warning may name a key yip
//! implements. A selection runs for real on a temporary root. The test prints the table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use clb_cloud_config::{Options, Outcome, Sources};

fn corpus() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/yip")
}

/// Files SUMMARY.md expects Go yip to accept that clb rejects, and why clb is right.
const DEVIATIONS: &[(&str, &str)] = &[(
    "rancher-sandbox__cOS-toolkit/packages__cos-features__features__harvester.yaml",
    "one step has two `commands` keys; go-yaml v3 (decode.go, mapping()) refuses a repeated \
     mapping key in every mapping it decodes, as it does for the duplicate `stages` SUMMARY.md \
     lists, so Go yip rejects this file too",
)];

/// The step keys yip implements (its `schema.Stage`); a warning about one of these means clb
/// ignores something yip would do.
const YIP_STEP_KEYS: &[&str] = &[
    "name",
    "after",
    "if",
    "only_os",
    "only_os_version",
    "only_arch",
    "only_service_manager",
    "node",
    "if_files",
    "commands",
    "files",
    "downloads",
    "directories",
    "dns",
    "hostname",
    "sysctl",
    "users",
    "ensure_entities",
    "delete_entities",
    "authorized_keys",
    "modules",
    "systemctl",
    "environment",
    "environment_file",
    "timesyncd",
    "datasource",
    "layout",
    "systemd_firstboot",
    "packages",
    "unpack_images",
    "git",
];

/// Sub-keys yip implements that real files use.
const YIP_SUB_KEYS: &[&str] = &[
    "files.ownerstring",
    "downloads.ownerstring",
    "layout.device.init_disk",
    "layout.device.disk_name",
    "datasource.userdata_name",
];

/// The files SUMMARY.md's table "Files expected to fail loading in Go yip" names, resolved
/// against the corpus (`…` in a name stands for any text).
fn expected_rejects(files: &[String]) -> BTreeMap<String, String> {
    let summary = std::fs::read_to_string(corpus().join("SUMMARY.md")).unwrap();
    let table = summary
        .split("## Files expected to fail loading in Go yip")
        .nth(1)
        .unwrap();
    let mut expected = BTreeMap::new();
    for row in table.lines().skip_while(|l| !l.starts_with("|---")).skip(1) {
        if !row.starts_with('|') {
            break;
        }
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        let (names, reason) = (cells[1], cells[2]);
        for name in names.split(", ") {
            let (prefix, suffix) = name.split_once('…').unwrap_or((name, ""));
            let hits: Vec<&String> = files
                .iter()
                .filter(|f| {
                    f.starts_with(prefix)
                        && f.ends_with(suffix)
                        && (suffix.is_empty() == (prefix == f.as_str()))
                })
                .collect();
            assert_eq!(hits.len(), 1, "SUMMARY.md's {name:?} matches {hits:?}");
            expected.insert(hits[0].clone(), reason.to_string());
        }
    }
    for (file, reason) in DEVIATIONS {
        expected.insert(file.to_string(), format!("(clb's reading) {reason}"));
    }
    expected
}

/// Every corpus file, as `<dir>/<name>`.
fn corpus_files() -> Vec<String> {
    let mut files = Vec::new();
    for dir in std::fs::read_dir(corpus()).unwrap() {
        let dir = dir.unwrap().path();
        if !dir.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            files.push(format!(
                "{}/{}",
                dir.file_name().unwrap().to_string_lossy(),
                f.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    files.sort();
    files
}

/// The key an unknown-key warning names, without its stage and indexes:
/// `stages.boot[0].files[1].ownerstring` -> `files.ownerstring`.
fn warned_key(message: &str) -> Option<String> {
    let path = message.strip_prefix("unknown key \"")?.split('"').next()?;
    let without_index: String = {
        let mut out = String::new();
        let mut skip = false;
        for c in path.chars() {
            match c {
                '[' => skip = true,
                ']' => skip = false,
                c if !skip => out.push(c),
                _ => {}
            }
        }
        out
    };
    Some(match without_index.strip_prefix("stages.") {
        // `stages.<stage>.<key...>`: stage names may hold dots, the step keys follow the
        // index that was removed; find the first known step key.
        Some(rest) => {
            let parts: Vec<&str> = rest.split('.').collect();
            let at = parts
                .iter()
                .position(|p| YIP_STEP_KEYS.contains(p))
                .unwrap_or(parts.len().saturating_sub(1));
            parts[at..].join(".")
        }
        None => without_index,
    })
}

#[test]
fn every_corpus_file_loads_as_go_yip_loads_it_and_dry_runs() {
    let files = corpus_files();
    assert_eq!(files.len(), 120, "the corpus has 120 files");
    let expected = expected_rejects(&files);
    let root = real_root();
    let mut accepted = 0;
    let mut mismatches = Vec::new();
    let mut yip_keys_ignored = Vec::new();
    let mut warnings_by_key: BTreeMap<String, usize> = BTreeMap::new();
    let mut steps: BTreeMap<&str, usize> = BTreeMap::new();
    let mut failed_dry_runs = Vec::new();
    for file in &files {
        let path = corpus().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let parsed = clb_cloud_config::parse_str(file, &text);
        match (&parsed, expected.get(file)) {
            (Ok(_), None) => accepted += 1,
            (Err(_), Some(_)) => {}
            (Ok(_), Some(reason)) => {
                mismatches.push(format!("{file}: accepted, Go yip rejects it: {reason}"))
            }
            (Err(e), None) => mismatches.push(format!("{file}: rejected: {e}")),
        }
        let Ok(parsed) = parsed else { continue };
        for w in &parsed.warnings {
            let Some(key) = warned_key(&w.message) else {
                *warnings_by_key.entry(w.message.clone()).or_default() += 1;
                continue;
            };
            let last = key.rsplit('.').next().unwrap_or(&key);
            if YIP_SUB_KEYS.contains(&key.as_str())
                || (!key.contains('.') && YIP_STEP_KEYS.contains(&last))
            {
                yip_keys_ignored.push(format!("{file}:{}: {}", w.line, w.message));
            }
            *warnings_by_key.entry(key).or_default() += 1;
        }
        for stage in parsed.config.stages.keys() {
            let report = clb_cloud_config::run_stage(
                stage,
                &Sources::files(vec![path.clone()]),
                &Options {
                    root: root.path().to_path_buf(),
                    dry_run: true,
                    ..Options::default()
                },
            );
            for s in report.steps.iter().filter(|s| &s.stage == stage) {
                let kind = match &s.outcome {
                    Outcome::Ran => "ran",
                    Outcome::Skipped(_) => "skipped",
                    Outcome::Failed(why) => {
                        failed_dry_runs.push(format!("{file} [{stage}] {}: {why}", s.name));
                        "failed"
                    }
                };
                *steps.entry(kind).or_default() += 1;
            }
        }
    }
    println!(
        "corpus: {} files, {accepted} accepted, {} rejected",
        files.len(),
        files.len() - accepted
    );
    println!("dry-run steps: {steps:?}");
    println!("warnings by key:");
    for (key, n) in &warnings_by_key {
        println!("  {n:3}  {key}");
    }
    println!("dry-run failures ({}):", failed_dry_runs.len());
    for f in &failed_dry_runs {
        println!("  {f}");
    }
    // A dry run on a bare root fails only where the machine or the file itself says so: no
    // such disk, a user another stage creates, no package manager, yip README examples that
    // are broken on purpose (a look-around regexp Go cannot compile either, `#!` text marked
    // base64, a download without a URL), and the refused `unpack_images`.
    const EXPECTED: &[&str] = &[
        "layout: layout",
        "not in /etc/passwd",
        "no passwd \"",
        "no package manager",
        "look-around is not supported",
        "invalid base64",
        "no url",
        "unpack_images: not supported by clb",
    ];
    let unexpected: Vec<&String> = failed_dry_runs
        .iter()
        .filter(|f| !EXPECTED.iter().any(|e| f.contains(e)))
        .collect();
    assert!(
        unexpected.is_empty(),
        "unexpected dry-run failures: {unexpected:#?}"
    );
    // Templates render: no step fails on a `{{ … }}` left in a value (Kairos's hostnames).
    let unrendered: Vec<&String> = failed_dry_runs
        .iter()
        .filter(|f| f.contains("{{"))
        .collect();
    assert!(
        unrendered.is_empty(),
        "templates not rendered: {unrendered:#?}"
    );
    assert!(
        mismatches.is_empty(),
        "accept/reject differs from Go yip:\n{}",
        mismatches.join("\n")
    );
    assert!(
        yip_keys_ignored.is_empty(),
        "keys yip implements were ignored:\n{}",
        yip_keys_ignored.join("\n")
    );
}

/// A root with a busybox userland and the account databases, for real runs.
fn real_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let busybox = clb_testsupport::require_tool("busybox");
    let dir = tempfile::tempdir().unwrap();
    let r = dir.path();
    for d in ["etc", "bin", "root", "run", "tmp", "usr/local"] {
        std::fs::create_dir_all(r.join(d)).unwrap();
    }
    for (path, text, mode) in [
        ("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n", 0o644),
        ("etc/group", "root:x:0:\n", 0o644),
        ("etc/shadow", "root:*:19000:0:99999:7:::\n", 0o640),
        ("etc/gshadow", "root:*::\n", 0o640),
        (
            "etc/machine-id",
            "0123456789abcdef0123456789abcdef\n",
            0o444,
        ),
        ("etc/hostname", "old\n", 0o644),
    ] {
        std::fs::write(r.join(path), text).unwrap();
        std::fs::set_permissions(r.join(path), std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::fs::copy(&busybox, r.join("bin/busybox")).unwrap();
    for applet in [
        "sh", "rm", "ln", "test", "[", "[[", "cat", "echo", "mkdir", "true",
    ] {
        std::os::unix::fs::symlink("busybox", r.join("bin").join(applet)).unwrap();
    }
    dir
}

fn run_real(root: &Path, file: &str, stage: &str) -> clb_cloud_config::Report {
    let report = clb_cloud_config::run_stage(
        stage,
        &Sources::files(vec![corpus().join(file)]),
        &Options {
            root: root.to_path_buf(),
            ..Options::default()
        },
    );
    for s in &report.steps {
        println!("{file} [{}] {}: {}", s.stage, s.name, s.outcome);
    }
    report
}

fn line_of(root: &Path, db: &str, name: &str) -> Vec<String> {
    std::fs::read_to_string(root.join(db))
        .unwrap()
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {db}"))
        .split(':')
        .map(String::from)
        .collect()
}

/// Real corpus files, run for real on a temporary root: accounts from entities and `users`,
/// a templated hostname kept on persistent storage through a symlink, files with owners and
/// modes (decimal, octal, by name).
#[test]
fn a_selection_of_corpus_files_runs_for_real() {
    use std::os::unix::fs::MetadataExt;
    let root = real_root();
    let r = root.path();

    // Kairos's default accounts: a group from an entity, a user in it, a sudoers file.
    let report = run_real(
        r,
        "kairos-io__kairos/files__system__oem__04_accounting.yaml",
        "initramfs",
    );
    assert_eq!(report.steps.len(), 3, "{report:#?}");
    assert_eq!(
        line_of(r, "etc/group", "admin"),
        ["admin", "x", "900", "c3os"]
    );
    let c3os = line_of(r, "etc/passwd", "c3os");
    assert_eq!(
        (c3os[5].as_str(), c3os[6].as_str()),
        ("/home/c3os", "/bin/bash")
    );
    assert!(line_of(r, "etc/shadow", "c3os").len() == 9);
    let sudoers = std::fs::metadata(r.join("etc/sudoers")).unwrap();
    // `permsisions` is a typo Go yip ignores too: the default mode.
    assert_eq!(
        (sudoers.mode() & 0o777, sudoers.uid(), sudoers.gid()),
        (0o644, 0, 0)
    );

    // Elemental's: root's password set through a shadow entity, the other fields kept.
    run_real(
        r,
        "rancher__elemental-toolkit/pkg__features__embedded__cloud-config-defaults__system__oem__04_accounting.yaml",
        "initramfs",
    );
    assert_eq!(
        line_of(r, "etc/shadow", "root"),
        ["root", "elemental", "19000", "0", "99999", "7", "", "", ""]
    );

    // Keylime: users with groups created on the way, then a file owned by name.
    let keylime = "kairos-io__kairos/examples__keylime__keylime.yaml";
    run_real(r, keylime, "initramfs");
    run_real(r, keylime, "boot");
    let uid: u32 = line_of(r, "etc/passwd", "keylime")[2].parse().unwrap();
    let gid: u32 = line_of(r, "etc/passwd", "keylime")[3].parse().unwrap();
    assert!(
        line_of(r, "etc/group", "tss")[3]
            .split(',')
            .any(|u| u == "keylime")
    );
    let crt = std::fs::metadata(r.join("var/lib/keylime/cv_ca/cacert.crt")).unwrap();
    assert_eq!(
        (crt.mode() & 0o777, crt.uid(), crt.gid()),
        (0o640, uid, gid)
    );

    // nm-configurator's static config: decimal modes (448 = 0700, 384 = 0600).
    run_real(
        r,
        "rancher__elemental-docs/examples__network__yip-nmc-static-config.yaml",
        "initramfs",
    );
    let mode = |p: &str| std::fs::metadata(r.join(p)).unwrap().mode() & 0o777;
    assert_eq!(mode("tmp/nmc/static/desired-states"), 0o700);
    assert_eq!(mode("tmp/nmc/static/desired-states/node1.yaml"), 0o600);

    // Kairos's persistent hostname: the template renders from the machine id, and is written
    // through the /etc/hostname symlink onto /usr/local; /etc/hosts (also a link) gets it.
    let report = run_real(
        r,
        "kairos-io__kairos/kairos-init__pkg__bundled__cloudconfigs__31_hosts.yaml",
        "initramfs",
    );
    assert!(report.failed_steps().next().is_none(), "{report:#?}");
    assert!(
        std::fs::symlink_metadata(r.join("etc/hostname"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(
        std::fs::read_to_string(r.join("usr/local/etc/hostname")).unwrap(),
        "kairos-0123\n"
    );
    assert!(
        std::fs::read_to_string(r.join("usr/local/etc/hosts"))
            .unwrap()
            .contains("127.0.0.1 localhost kairos-0123\n")
    );
}

/// YAML merge keys (`<<: *step`) reuse whole steps across stages, as Kairos's datasource
/// config does: the merged steps are the anchored ones, and the merged copy can add keys.
#[test]
fn merge_keys_reuse_whole_steps() {
    let file = "kairos-io__kairos/kairos-init__pkg__bundled__cloudconfigs__00_datasource.yaml";
    let text = std::fs::read_to_string(corpus().join(file)).unwrap();
    let parsed = clb_cloud_config::parse_str(file, &text).unwrap();
    let stages = &parsed.config.stages;
    let anchored = &stages["rootfs.before"][2];
    assert_eq!(anchored.name, "Pull data from provider");
    assert_eq!(anchored.datasource.path, "/oem/95_userdata");
    assert_eq!(anchored.datasource.providers.len(), 13);
    for stage in ["initramfs.before", "network"] {
        let merged = &stages[stage][2];
        assert_eq!(merged, anchored, "{stage}");
        assert_eq!(
            stages[stage][0].commands,
            ["mv -f /oem/userdata /oem/95_userdata"]
        );
    }
}
