//! dns, commands, hostname, sysctl, modules, environment, timesyncd.

use std::collections::BTreeMap;
use std::process::Command;

use super::files::{Owners, ensure_file, ensure_file_at};
use super::kv::{env_key, env_line, merge_ini_section, merge_lines, sysctl_key};
use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::Dns;

/// Files clb writes its merged settings to (one per kind, so steps add up).
pub(crate) const SYSCTL_FILE: &str = "/etc/sysctl.d/90-clb-cloud-config.conf";
pub(crate) const MODULES_FILE: &str = "/etc/modules-load.d/clb-cloud-config.conf";

fn read_root_file(ctx: &Ctx, path: &str) -> Result<String, StepError> {
    match std::fs::read_to_string(ctx.path(path)) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(StepError::io(format!("read {path}"))(e)),
    }
}

pub(crate) fn dns(ctx: &mut Ctx, dns: &Dns) -> Result<(), StepError> {
    let path = if dns.path.is_empty() {
        "/etc/resolv.conf"
    } else {
        dns.path.as_str()
    };
    let mut text = String::new();
    for ns in &dns.nameservers {
        text.push_str(&format!("nameserver {ns}\n"));
    }
    if !dns.search.is_empty() {
        text.push_str(&format!("search {}\n", dns.search.join(" ")));
    }
    if !dns.options.is_empty() {
        text.push_str(&format!("options {}\n", dns.options.join(" ")));
    }
    ensure_file(ctx, path, text.as_bytes(), 0o644, Owners::default())?;
    Ok(())
}

pub(crate) fn command(ctx: &mut Ctx, script: &str) -> Result<(), StepError> {
    if !ctx.act(format!("run {script:?}")) {
        return Ok(());
    }
    let out = clb_command::output(&mut ctx.shell(script))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    tracing::debug!(command = script, %stdout, %stderr, status = %out.status, "command finished");
    if out.status.success() {
        Ok(())
    } else {
        let last = stderr
            .lines()
            .chain(stdout.lines())
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no output");
        Err(StepError::Script {
            script: script.to_string(),
            status: out.status,
            output: last.trim().to_string(),
        })
    }
}

/// The hostname, after rendering a template in it (`{{ trunc 4 .MachineID }}`) as yip does.
/// Written to `/etc/hostname` (through a symlink that stays inside the root, as Kairos keeps
/// it on persistent storage), the `127.0.0.1` line of an existing `/etc/hosts`, and live, the
/// kernel's.
pub(crate) fn hostname(ctx: &mut Ctx, name: &str) -> Result<(), StepError> {
    let rendered = super::render::hostname(ctx, name)?;
    let name = rendered.trim();
    // A hostname is at most 64 bytes of letters, digits, '-' and '.'.
    if name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        return Err(StepError::Invalid(format!("invalid hostname {name:?}")));
    }
    let target = in_root_target(ctx, "/etc/hostname");
    ensure_file_at(
        ctx,
        &target,
        "/etc/hostname",
        format!("{name}\n").as_bytes(),
        0o644,
        Owners::default(),
    )?;
    update_hosts(ctx, name)?;
    if ctx.live() {
        let current = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        if current.trim() != name && ctx.act(format!("set the kernel hostname to {name}")) {
            std::fs::write("/proc/sys/kernel/hostname", name)
                .map_err(StepError::io("set the kernel hostname"))?;
        }
    }
    Ok(())
}

/// Where writing `path` of the root lands: the file a symlink there points to when that stays
/// inside the root (absolute links read from the root, as in a chroot), else `path` itself
/// (whose symlink `ensure_file_at` then replaces, never follows).
fn in_root_target(ctx: &Ctx, path: &str) -> std::path::PathBuf {
    let mut current = ctx.path(path);
    for _ in 0..8 {
        let Ok(link) = std::fs::read_link(&current) else {
            return current;
        };
        let next = if link.is_absolute() {
            ctx.path(&link.to_string_lossy())
        } else {
            match current.parent() {
                Some(dir) => dir.join(&link),
                None => return ctx.path(path),
            }
        };
        // `..` is resolved by the text of the path; a link that climbs out of the root is not
        // followed.
        let mut normal = std::path::PathBuf::new();
        for c in next.components() {
            match c {
                std::path::Component::ParentDir => {
                    normal.pop();
                }
                std::path::Component::CurDir => {}
                other => normal.push(other),
            }
        }
        if !normal.starts_with(&ctx.root) || normal == ctx.root {
            return ctx.path(path);
        }
        current = normal;
    }
    ctx.path(path)
}

/// yip's `/etc/hosts` update: each `127.0.0.1` line becomes `127.0.0.1 localhost <name>`.
/// Nothing when the root has no `/etc/hosts`.
fn update_hosts(ctx: &mut Ctx, name: &str) -> Result<(), StepError> {
    let target = in_root_target(ctx, "/etc/hosts");
    let text = match std::fs::read_to_string(&target) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(StepError::io("read /etc/hosts")(e)),
    };
    let mode = std::fs::metadata(&target)
        .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
        .unwrap_or(0o644);
    let updated: String = text
        .lines()
        .map(|l| {
            if l.split_whitespace().next() == Some("127.0.0.1") {
                format!("127.0.0.1 localhost {name}\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    ensure_file_at(
        ctx,
        &target,
        "/etc/hosts",
        updated.as_bytes(),
        mode,
        Owners::default(),
    )?;
    Ok(())
}

/// The file is merged first; live, every value is then set even when another fails, and the
/// errors of all of them are returned.
pub(crate) fn sysctl(ctx: &mut Ctx, values: &BTreeMap<String, String>) -> Vec<StepError> {
    let normalised: BTreeMap<String, String> = values
        .iter()
        .map(|(k, v)| (k.replace('/', "."), v.clone()))
        .collect();
    let written = read_root_file(ctx, SYSCTL_FILE).and_then(|existing| {
        let merged = merge_lines(&existing, &normalised, sysctl_key, |k, v| {
            format!("{k} = {v}")
        });
        ensure_file(
            ctx,
            SYSCTL_FILE,
            merged.as_bytes(),
            0o644,
            Owners::default(),
        )
    });
    if let Err(e) = written {
        return vec![e];
    }
    let mut errors = Vec::new();
    if ctx.live() {
        for (k, v) in &normalised {
            let proc_path = format!("/proc/sys/{}", k.replace('.', "/"));
            let current = std::fs::read_to_string(&proc_path).unwrap_or_default();
            // /proc/sys prints vectors tab-separated; compare word by word.
            let same = current.split_whitespace().eq(v.split_whitespace());
            if !same
                && ctx.act(format!("set {k} = {v}"))
                && let Err(e) = std::fs::write(&proc_path, v)
            {
                errors.push(StepError::io(format!("set {k} in {proc_path}"))(e));
            }
        }
    }
    errors
}

/// The list is merged first; live, every module is then loaded even when another fails, and
/// the errors of all of them are returned.
pub(crate) fn modules(ctx: &mut Ctx, modules: &[String]) -> Vec<StepError> {
    let existing = match read_root_file(ctx, MODULES_FILE) {
        Ok(text) => text,
        Err(e) => return vec![e],
    };
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for m in modules {
        if !existing.lines().any(|l| l.trim() == m) {
            text.push_str(m);
            text.push('\n');
        }
    }
    if let Err(e) = ensure_file(ctx, MODULES_FILE, text.as_bytes(), 0o644, Owners::default()) {
        return vec![e];
    }
    let mut errors = Vec::new();
    if ctx.live() {
        for m in modules {
            if ctx.act(format!("modprobe {m}"))
                && let Err(e) = clb_command::run(Command::new("modprobe").arg("--").arg(m))
            {
                errors.push(e.into());
            }
        }
    }
    errors
}

pub(crate) fn environment(
    ctx: &mut Ctx,
    vars: &BTreeMap<String, String>,
    file: &str,
) -> Result<(), StepError> {
    let path = if file.is_empty() {
        "/etc/environment"
    } else {
        file
    };
    if let Some(bad) = vars
        .keys()
        .find(|k| k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
    {
        return Err(StepError::Invalid(format!("invalid variable name {bad:?}")));
    }
    let existing = read_root_file(ctx, path)?;
    let merged = merge_lines(&existing, vars, env_key, env_line);
    ensure_file(ctx, path, merged.as_bytes(), 0o644, Owners::default())?;
    Ok(())
}

pub(crate) fn timesyncd(ctx: &mut Ctx, keys: &BTreeMap<String, String>) -> Result<(), StepError> {
    const PATH: &str = "/etc/systemd/timesyncd.conf";
    let existing = read_root_file(ctx, PATH)?;
    let merged = merge_ini_section(&existing, "Time", keys);
    ensure_file(ctx, PATH, merged.as_bytes(), 0o644, Owners::default())?;
    Ok(())
}

/// `systemd-firstboot` with `--KEY=VALUE` per entry (`--KEY` for `"true"`), sorted, as yip
/// runs it; `--root` when the root is not `/`. It sets only what is not set yet, so a second
/// run changes nothing.
pub(crate) fn systemd_firstboot(
    ctx: &mut Ctx,
    settings: &BTreeMap<String, String>,
) -> Result<(), StepError> {
    let mut args: Vec<String> = settings
        .iter()
        .map(|(k, v)| {
            let k = k.to_ascii_lowercase();
            if v == "true" {
                format!("--{k}")
            } else {
                format!("--{k}={v}")
            }
        })
        .collect();
    args.sort();
    if !ctx.live() {
        args.insert(0, format!("--root={}", ctx.root.display()));
    }
    if !ctx.act(format!("run systemd-firstboot {}", args.join(" "))) {
        return Ok(());
    }
    clb_command::run(Command::new("systemd-firstboot").args(&args))?;
    Ok(())
}
