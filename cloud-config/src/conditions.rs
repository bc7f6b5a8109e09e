//! Step conditions: `node`, `only_os`, `only_os_version`, `only_arch`,
//! `only_service_manager`, `if_files`, `if`.
//!
//! The cheap, side-effect-free ones are checked first; `if` (a shell command) last.

use std::path::Path;

use crate::ctx::Ctx;
use crate::error::{PartError, StepError};
use crate::schema::Step;

/// Facts about the target the conditions match against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub hostname: String,
    /// os-release `ID`, `NAME`, `VERSION_ID`.
    pub os_id: String,
    pub os_name: String,
    pub os_version: String,
    /// Kernel-style (`x86_64`) and Go-style (`amd64`) names; `only_arch` matches either.
    pub arch: String,
    pub go_arch: String,
}

impl Facts {
    pub fn gather(root: &Path, hostname_override: Option<&str>) -> Facts {
        let os = crate::target::read_os_release(root);
        let get = |k: &str| {
            os.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let arch = std::env::consts::ARCH.to_string();
        Facts {
            hostname: hostname_override
                .map(String::from)
                .unwrap_or_else(|| crate::target::current_hostname(root)),
            os_id: get("ID"),
            os_name: get("NAME"),
            os_version: get("VERSION_ID"),
            go_arch: go_arch(&arch).to_string(),
            arch,
        }
    }
}

fn go_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        "riscv64" => "riscv64",
        "s390x" => "s390x",
        "arm" => "arm",
        other => other,
    }
}

/// Unanchored match like Go's `regexp.MatchString`, which yip uses.
fn matches(what: &'static str, pattern: &str, candidates: &[&str]) -> Result<bool, PartError> {
    let re = regex_lite::Regex::new(pattern).map_err(|source| PartError {
        part: what,
        error: StepError::Regex {
            pattern: pattern.to_string(),
            source,
        },
    })?;
    Ok(candidates.iter().any(|c| re.is_match(c)))
}

/// Why a step with `only_service_manager: wanted` is skipped, None when the root's service
/// manager is `wanted`. As yip: found by its program (`systemctl`, `openrc`) in the root's
/// `/sbin`, `/bin`, `/usr/sbin` or `/usr/bin`; a root with both, or an unknown name, skips.
fn service_manager_mismatch(wanted: &str, ctx: &Ctx) -> Option<String> {
    let has = |program: &str| {
        ["/sbin", "/bin", "/usr/sbin", "/usr/bin"]
            .iter()
            .any(|dir| ctx.path(&format!("{dir}/{program}")).exists())
    };
    let wanted_lower = wanted.to_ascii_lowercase();
    if wanted_lower != "systemd" && wanted_lower != "openrc" {
        return Some(format!(
            "only_service_manager {wanted:?} is not supported (systemd or openrc)"
        ));
    }
    let (systemd, openrc) = (has("systemctl"), has("openrc"));
    if systemd && openrc {
        return Some("only_service_manager: both systemd and openrc are installed".to_string());
    }
    let found = if systemd {
        "systemd"
    } else if openrc {
        "openrc"
    } else {
        "none"
    };
    (found != wanted_lower)
        .then(|| format!("only_service_manager {wanted:?}: the root has {found}"))
}

/// Ok(None): run. Ok(Some(reason)): skip. Err: the condition itself is broken (the step fails).
pub(crate) fn check(
    step: &Step,
    facts: &Facts,
    ctx: &mut Ctx,
) -> Result<Option<String>, PartError> {
    if !step.node.is_empty() {
        let host = &facts.hostname;
        if step.node != *host && !matches("node", &step.node, &[host])? {
            return Ok(Some(format!(
                "node {:?} does not match hostname {host:?}",
                step.node
            )));
        }
    }
    if !step.only_os.is_empty()
        && !matches("only_os", &step.only_os, &[&facts.os_id, &facts.os_name])?
    {
        return Ok(Some(format!(
            "only_os {:?} does not match {:?}",
            step.only_os, facts.os_id
        )));
    }
    if !step.only_os_version.is_empty()
        && !matches(
            "only_os_version",
            &step.only_os_version,
            &[&facts.os_version],
        )?
    {
        return Ok(Some(format!(
            "only_os_version {:?} does not match {:?}",
            step.only_os_version, facts.os_version
        )));
    }
    if !step.only_arch.is_empty()
        && !matches("only_arch", &step.only_arch, &[&facts.arch, &facts.go_arch])?
    {
        return Ok(Some(format!(
            "only_arch {:?} does not match {:?}",
            step.only_arch, facts.arch
        )));
    }
    if !step.only_service_manager.is_empty()
        && let Some(skip) = service_manager_mismatch(&step.only_service_manager, ctx)
    {
        return Ok(Some(skip));
    }
    let f = &step.if_files;
    if !f.is_empty() {
        let exists = |p: &String| ctx.path(p).symlink_metadata().is_ok();
        if !f.any.is_empty() && !f.any.iter().any(exists) {
            return Ok(Some(format!("if_files.any: none of {:?} exists", f.any)));
        }
        if let Some(missing) = f.all.iter().find(|p| !exists(p)) {
            return Ok(Some(format!("if_files.all: {missing} does not exist")));
        }
        if let Some(present) = f.none.iter().find(|p| exists(p)) {
            return Ok(Some(format!("if_files.none: {present} exists")));
        }
    }
    if !step.if_.is_empty() {
        if ctx.dry_run {
            // Evaluating it could change the system; the plan assumes it succeeds.
            ctx.notes.push(format!(
                "would run the step only if {:?} succeeds",
                step.if_
            ));
            return Ok(None);
        }
        // Only the exit status answers; the command's output goes nowhere.
        let condition = crate::exec::render::values(ctx, &step.if_).into_owned();
        let status = clb_command::status(&mut ctx.shell(&condition)).map_err(|e| PartError {
            part: "if",
            error: e.into(),
        })?;
        if !status.success() {
            return Ok(Some(format!("if {:?} exited with {status}", step.if_)));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// `if:` is answered by the exit status alone: the command's output is not captured (it
    /// goes to /dev/null, like its closed stdin).
    #[test]
    fn if_takes_only_the_exit_status() {
        let mut ctx = Ctx::new(Path::new("/"), false);
        let step = Step {
            if_: r#"test "$(readlink /proc/$$/fd/1)" = /dev/null &&
                test "$(readlink /proc/$$/fd/2)" = /dev/null"#
                .into(),
            ..Step::default()
        };
        assert_eq!(check(&step, &Facts::default(), &mut ctx).unwrap(), None);
        let step = Step {
            if_: "exit 1".into(),
            ..Step::default()
        };
        assert_eq!(
            check(&step, &Facts::default(), &mut ctx).unwrap(),
            Some("if \"exit 1\" exited with exit status: 1".into())
        );
    }
}
