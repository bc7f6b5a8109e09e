//! `clb health-check` as a user runs it: the configuration, the health.d scripts, the report
//! and exit code 13 (unhealthy). The systemd checks (default target, failed units) run in the
//! real-Debian QEMU test; here they are switched off in the configuration.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;

#[test]
fn health_check_runs_scripts_reports_and_exits_13() {
    let work = tempfile::tempdir().unwrap();
    let scripts = work.path().join("health.d");
    std::fs::create_dir(&scripts).unwrap();
    let script = |name: &str, body: &str| {
        let p = scripts.join(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    script("10-disk", "#!/bin/sh\nexit 0\n");
    let cfg = work.path().join("health.yaml");
    std::fs::write(
        &cfg,
        format!(
            "check_default_target: false\nno_failed_units: false\nscripts_dir: {}\n",
            scripts.display()
        ),
    )
    .unwrap();
    let config = cfg.display().to_string();
    let out = clb(&["health-check", "--config", &config]);
    assert_ok(&out);
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok   script"));

    // A failing script: exit 13 with its stderr in the one error line; --report-only (and a
    // machine not booted by clb) takes no action.
    script(
        "20-app",
        "#!/bin/sh\necho 'app does not answer' >&2\nexit 1\n",
    );
    let out = clb(&[
        "--json",
        "health-check",
        "--config",
        &config,
        "--report-only",
    ]);
    assert_fails(&out, 13, "app does not answer");
    let report = json(&out);
    assert_eq!(report["healthy"], false);
    assert_eq!(report["checks"].as_array().unwrap().len(), 2);

    // A configuration with a typo is refused (exit 3), not silently defaulted.
    std::fs::write(&cfg, "on_failur: reboot\n").unwrap();
    assert_fails(&clb(&["health-check", "--config", &config]), 3, "on_failur");
}
