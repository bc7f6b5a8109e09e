//! `systemctl`: enable/disable/mask through `systemctl [--root DIR]` (offline when the root
//! is not `/`), start only on the live system, and drop-in overrides.

use std::process::Command;

use super::files::{Owners, ensure_file};
use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::Systemctl;

const UNIT_SUFFIXES: [&str; 11] = [
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".mount",
    ".automount",
    ".path",
    ".slice",
    ".scope",
    ".swap",
    ".device",
];

/// `foo` means `foo.service`, like systemctl itself.
fn unit_name(u: &str) -> String {
    if UNIT_SUFFIXES.iter().any(|s| u.ends_with(s)) {
        u.to_string()
    } else {
        format!("{u}.service")
    }
}

fn systemctl_cmd(ctx: &Ctx) -> Command {
    let mut c = Command::new("systemctl");
    if !ctx.live() {
        c.arg("--root").arg(&ctx.root);
    }
    c
}

/// `is-enabled` state, e.g. "enabled", "disabled", "masked", "static"; "" if unknown. The
/// exit status only repeats the state, so it is not a failure.
fn state(ctx: &Ctx, unit: &str) -> Result<String, clb_command::CommandError> {
    let out = clb_command::output(systemctl_cmd(ctx).args(["is-enabled", "--", unit]))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A missing systemctl: every further unit would fail the same way, so the part stops at it.
fn missing(e: &clb_command::CommandError) -> bool {
    matches!(e, clb_command::CommandError::Missing { .. })
}

/// Every override and unit is handled even when another fails; the errors of all of them.
/// A missing systemctl is reported once: the part stops there.
pub(crate) fn systemctl(ctx: &mut Ctx, s: &Systemctl) -> Vec<StepError> {
    let mut errors = Vec::new();
    let mut changed_overrides = false;
    // Overrides first: an enabled unit may need its drop-in at start.
    for o in &s.overrides {
        if o.service.is_empty() || o.service.contains('/') {
            errors.push(StepError::Invalid(format!(
                "override: bad service name {:?}",
                o.service
            )));
            continue;
        }
        let name = if o.name.is_empty() {
            "override-clb.conf".to_string()
        } else if o.name.contains('/') {
            errors.push(StepError::Invalid(format!(
                "override: bad drop-in name {:?}",
                o.name
            )));
            continue;
        } else if o.name.ends_with(".conf") {
            o.name.clone()
        } else {
            format!("{}.conf", o.name)
        };
        let path = format!("/etc/systemd/system/{}.d/{name}", unit_name(&o.service));
        match ensure_file(ctx, &path, o.content.as_bytes(), 0o644, Owners::default()) {
            Ok(changed) => changed_overrides |= changed,
            Err(e) => errors.push(e),
        }
    }
    if changed_overrides
        && ctx.live()
        && ctx.act("systemctl daemon-reload")
        && let Err(e) = clb_command::run(Command::new("systemctl").arg("daemon-reload"))
    {
        let stop = missing(&e);
        errors.push(e.into());
        if stop {
            return errors;
        }
    }
    let verbs: [(&str, &Vec<String>, &[&str]); 3] = [
        ("mask", &s.mask, &["masked", "masked-runtime"]),
        (
            "enable",
            &s.enable,
            &[
                "enabled",
                "enabled-runtime",
                "alias",
                "static",
                "indirect",
                "generated",
            ],
        ),
        (
            "disable",
            &s.disable,
            &["disabled", "static", "masked", "not-found", ""],
        ),
    ];
    for (verb, units, done_states) in verbs {
        for u in units {
            let unit = unit_name(u);
            match state(ctx, &unit) {
                Ok(s) if done_states.contains(&s.as_str()) => continue,
                Ok(_) => {}
                Err(e) => {
                    let stop = missing(&e);
                    errors.push(e.into());
                    if stop {
                        return errors;
                    }
                    continue;
                }
            }
            let shown = if ctx.live() {
                format!("systemctl {verb} {unit}")
            } else {
                format!("systemctl --root {} {verb} {unit}", ctx.root.display())
            };
            if ctx.act(shown)
                && let Err(e) = clb_command::run(systemctl_cmd(ctx).args([verb, "--", &unit]))
            {
                let stop = missing(&e);
                errors.push(e.into());
                if stop {
                    return errors;
                }
            }
        }
    }
    for u in &s.start {
        let unit = unit_name(u);
        if !ctx.live() {
            // Nothing runs in an offline root; recorded so the report says why.
            ctx.notes.push(format!(
                "not starting {unit}: the root is not the running system"
            ));
            continue;
        }
        if ctx.act(format!("systemctl start {unit}"))
            && let Err(e) = clb_command::run(Command::new("systemctl").args(["start", "--", &unit]))
        {
            let stop = missing(&e);
            errors.push(e.into());
            if stop {
                return errors;
            }
        }
    }
    errors
}
