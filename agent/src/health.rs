//! Boot health checks (`clb health-check`, run by `clb-health-check.service` before
//! `boot-complete.target`): the system reached its default target, no unit failed (or only
//! the configured ones are checked), and every executable in `/etc/clb/health.d/` exits 0.
//! Only a healthy boot is marked good; what an unhealthy one does is configured
//! (`on_failure`), as greenboot does. See docs/health.md.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ClbError, Result};

/// Where the configuration lives on a host.
pub const CONFIG_FILE: &str = "/etc/clb/health.yaml";

/// What a failed check does after reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnFailure {
    /// Mark the slot bad (the fallback boots next) and reboot into it.
    Reboot,
    /// Mark the slot bad and leave the machine running.
    MarkBad,
    /// Only report: the slot is not marked good, so its boots keep counting down.
    Nothing,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// The default target (`systemctl get-default`) must be active.
    pub check_default_target: bool,
    /// No unit may be in the `failed` state (except `ignore_failed_units`).
    pub no_failed_units: bool,
    /// Units whose failure does not count against `no_failed_units`.
    pub ignore_failed_units: Vec<String>,
    /// Units that must be active, whatever `no_failed_units` says.
    pub required_units: Vec<String>,
    /// Executables run in name order; each must exit 0.
    pub scripts_dir: PathBuf,
    /// Seconds a script may run before it is killed and counted as failed.
    pub script_timeout: u64,
    pub on_failure: OnFailure,
}

impl Default for HealthConfig {
    fn default() -> Self {
        Self {
            check_default_target: true,
            no_failed_units: true,
            ignore_failed_units: Vec::new(),
            required_units: Vec::new(),
            scripts_dir: PathBuf::from("/etc/clb/health.d"),
            script_timeout: 120,
            on_failure: OnFailure::Reboot,
        }
    }
}

impl HealthConfig {
    /// Reads `path`; a missing file means the defaults.
    pub fn load(path: &Path) -> Result<Self> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(e) => return Err(ClbError::io(format!("reading {}", path.display()))(e)),
        };
        if text.trim().is_empty() {
            return Ok(Self::default());
        }
        serde_saphyr::from_str(&text)
            .map_err(|e| ClbError::Invalid(format!("{}: {e}", path.display())))
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

/// The outcome of all checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    pub healthy: bool,
    pub checks: Vec<Check>,
}

impl HealthReport {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| !c.ok).collect()
    }
}

fn check(name: impl Into<String>, ok: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        ok,
        detail: detail.into(),
    }
}

/// `systemctl ARGS`, its stdout trimmed (its status is part of the answer, not a failure).
fn systemctl(args: &[&str]) -> Result<String> {
    let out = clb_command::output(Command::new("systemctl").args(args))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Runs every check of `cfg` (blocking: call it off any async runtime's workers).
pub fn run_checks(cfg: &HealthConfig) -> Result<HealthReport> {
    let mut checks = Vec::new();
    if cfg.check_default_target {
        let target = systemctl(&["get-default"])?;
        let state = systemctl(&["is-active", &target])?;
        checks.push(check(
            format!("default target {target}"),
            state == "active",
            state,
        ));
    }
    if cfg.no_failed_units {
        let listing = systemctl(&[
            "list-units",
            "--state=failed",
            "--plain",
            "--no-legend",
            "--no-pager",
        ])?;
        let failed = failed_units(&listing, &cfg.ignore_failed_units);
        checks.push(check(
            "no failed units",
            failed.is_empty(),
            if failed.is_empty() {
                "none failed".to_string()
            } else {
                format!("failed: {}", failed.join(" "))
            },
        ));
    }
    for unit in &cfg.required_units {
        let state = systemctl(&["is-active", unit])?;
        checks.push(check(
            format!("required unit {unit}"),
            state == "active",
            state,
        ));
    }
    for script in scripts(&cfg.scripts_dir)? {
        let timeout = Duration::from_secs(cfg.script_timeout);
        let name = format!("script {}", script.display());
        checks.push(
            match clb_command::output_within(&mut Command::new(&script), timeout) {
                Ok(out) if out.status.success() => check(name, true, "exit 0"),
                Ok(out) => check(
                    name,
                    false,
                    format!("{}: {}", out.status, clb_command::stderr_tail(&out.stderr)),
                ),
                Err(e) => check(name, false, clb_command::one_line(&e)),
            },
        );
    }
    let healthy = checks.iter().all(|c| c.ok);
    Ok(HealthReport { healthy, checks })
}

/// Unit names of `systemctl list-units --plain --no-legend` lines, without `ignored` ones.
fn failed_units(listing: &str, ignored: &[String]) -> Vec<String> {
    listing
        .lines()
        // A leading "●" marks a failed unit on some systemd versions even with --plain.
        .filter_map(|l| l.split_whitespace().find(|w| *w != "●"))
        .map(str::to_string)
        .filter(|u| !ignored.contains(u))
        .collect()
}

/// Executable regular files of `dir` in name order (none when the directory is missing).
fn scripts(dir: &Path) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt;
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(ClbError::io(format!("reading {}", dir.display()))(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(ClbError::io(format!("reading {}", dir.display())))?
            .path();
        let Ok(meta) = std::fs::metadata(&path) else {
            continue;
        };
        if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            found.push(path);
        } else {
            tracing::debug!(path = %path.display(), "not an executable file: skipped");
        }
    }
    found.sort();
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn config_defaults_and_overrides() {
        let dir = tempfile::tempdir().unwrap();
        let missing = HealthConfig::load(&dir.path().join("none.yaml")).unwrap();
        assert_eq!(missing, HealthConfig::default());
        let f = dir.path().join("health.yaml");
        std::fs::write(
            &f,
            "required_units: [sshd.service]\nignore_failed_units: [x.service]\n\
             on_failure: mark-bad\nscript_timeout: 5\n",
        )
        .unwrap();
        let c = HealthConfig::load(&f).unwrap();
        assert_eq!(c.required_units, ["sshd.service"]);
        assert_eq!(c.on_failure, OnFailure::MarkBad);
        assert_eq!(c.script_timeout, 5);
        assert!(c.check_default_target && c.no_failed_units);
        std::fs::write(&f, "on_failur: reboot\n").unwrap();
        let e = HealthConfig::load(&f).unwrap_err();
        assert!(matches!(e, ClbError::Invalid(_)), "{e}");
    }

    #[test]
    fn failed_unit_listing_is_parsed_and_filtered() {
        let listing = "a.service loaded failed failed A\n\
                       ● b.mount loaded failed failed B\n\
                       x.service loaded failed failed X\n";
        assert_eq!(
            failed_units(listing, &["x.service".into()]),
            ["a.service", "b.mount"]
        );
        assert!(failed_units("", &[]).is_empty());
    }

    #[test]
    fn scripts_run_in_order_and_failures_are_reported() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, body: &str, mode: u32| {
            let p = dir.path().join(name);
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write("10-ok", "#!/bin/sh\nexit 0\n", 0o755);
        write(
            "20-bad",
            "#!/bin/sh\necho 'disk is sad' >&2\nexit 3\n",
            0o755,
        );
        write("30-slow", "#!/bin/sh\nsleep 30\n", 0o755);
        write("README", "not a script", 0o644);
        let cfg = HealthConfig {
            check_default_target: false,
            no_failed_units: false,
            scripts_dir: dir.path().to_path_buf(),
            script_timeout: 1,
            ..HealthConfig::default()
        };
        let started = std::time::Instant::now();
        let r = run_checks(&cfg).unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the slow one was killed"
        );
        assert!(!r.healthy);
        let names: Vec<_> = r.checks.iter().map(|c| c.name.clone()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert!(names[0].ends_with("10-ok") && r.checks[0].ok);
        assert!(
            r.checks[1].detail.contains("disk is sad"),
            "{:?}",
            r.checks[1]
        );
        assert!(
            r.checks[2].detail.contains("did not finish within 1 s"),
            "{:?}",
            r.checks[2]
        );
        assert_eq!(r.failures().len(), 2);
    }
}
