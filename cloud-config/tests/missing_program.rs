//! A program the engine needs but cannot find is reported with the Debian package that
//! provides it. The test runs itself again with a `PATH` that holds nothing: changing this
//! process's own environment is not safe while the test harness has other threads.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod common;

use clb_cloud_config::{Options, Outcome, Sources, StepError, run_stage};
use clb_command::CommandError;

const INNER: &str = "CLB_TEST_INNER_EMPTY_PATH";

#[test]
fn missing_programs_are_named_with_their_package() {
    if std::env::var_os(INNER).is_some() {
        with_empty_path();
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "missing_programs_are_named_with_their_package",
            "--nocapture",
        ])
        .env(INNER, "1")
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "inner run failed:\n{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The inner run did run the test (an unmatched name would pass with 0 tests).
    assert!(stdout.contains("1 passed"), "{stdout}");
}

fn with_empty_path() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("oem")).unwrap();
    std::fs::write(
        r.join("oem/x.yaml"),
        "stages:\n  boot:\n    - name: units\n      systemctl: {enable: [foo, bar], disable: [baz], mask: [qux]}\n    - name: cmd\n      commands: [\"true\"]\n",
    )
    .unwrap();
    let rep = run_stage(
        "boot",
        &Sources::default(),
        &Options {
            root: r.to_path_buf(),
            ..Options::default()
        },
    );
    common::assert_report_printed_once(&rep);
    let units = &rep.steps[0];
    // One error: every further unit would fail the same way.
    assert_eq!(units.errors.len(), 1, "{units:?}");
    assert!(
        matches!(
            &units.errors[0].error,
            StepError::Command(CommandError::Missing { program }) if program == "systemctl"
        ),
        "{units:?}"
    );
    assert_eq!(
        units.outcome,
        Outcome::Failed(
            "systemctl: systemctl: not found: install the Debian package systemd".into()
        )
    );
    // Commands in an offline root run through chroot.
    assert_eq!(
        rep.steps[1].outcome,
        Outcome::Failed("commands: chroot: not found: install the Debian package coreutils".into())
    );
}
