//! Applying a step to a root directory.
//!
//! Every action compares the wanted state with what is there and changes only the
//! difference, so a second run changes nothing (commands excepted: they are the user's).
//! In dry-run mode the same comparison runs and each change that would be made is recorded
//! instead of made.

mod files;
mod kv;
mod system;
mod systemctl;
mod users;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::schema::Step;
use crate::sources::under_root;

pub(crate) use files::{Owners, write_atomic};

/// What a step runs against.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub root: PathBuf,
    pub dry_run: bool,
    /// Changes made (or, in dry run, that would be made), in order.
    pub actions: Vec<String>,
    /// Things worth knowing that are not changes (e.g. a unit not started offline).
    pub notes: Vec<String>,
}

impl Ctx {
    pub fn new(root: &Path, dry_run: bool) -> Self {
        Ctx {
            root: root.to_path_buf(),
            dry_run,
            actions: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// True when the root is the running system: only then are live changes made (sysctl
    /// through /proc, modprobe, the kernel hostname, starting units).
    pub fn live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// The path inside the root.
    pub fn path(&self, p: &str) -> PathBuf {
        under_root(&self.root, Path::new(p))
    }

    /// Record a change; false in dry run (the caller then skips making it).
    pub fn act(&mut self, what: impl Into<String>) -> bool {
        let what = what.into();
        if self.dry_run {
            tracing::info!("dry run: would {what}");
        } else {
            tracing::debug!("{what}");
        }
        self.actions.push(if self.dry_run {
            format!("would {what}")
        } else {
            what
        });
        !self.dry_run
    }

    /// A `sh -c` command, chrooted into the root unless the root is `/`.
    pub fn shell(&self, script: &str) -> Command {
        if self.live() {
            let mut c = Command::new("sh");
            c.arg("-c").arg(script);
            c
        } else {
            let mut c = Command::new("chroot");
            c.arg(&self.root).arg("sh").arg("-c").arg(script);
            c
        }
    }

    /// Write `content` to `path` (inside the root) unless it already has exactly this content,
    /// mode and owner. Returns whether something changed (or would change).
    pub fn ensure_file(
        &mut self,
        path: &str,
        content: &[u8],
        mode: u32,
        owners: Owners,
    ) -> Result<bool, String> {
        let full = self.path(path);
        ensure_file_at(self, &full, path, content, mode, owners)
    }
}

pub(crate) fn ensure_file_at(
    ctx: &mut Ctx,
    full: &Path,
    shown: &str,
    content: &[u8],
    mode: u32,
    owners: Owners,
) -> Result<bool, String> {
    // A symlink at the target is replaced, never followed: following it could write outside
    // the root (e.g. /etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf).
    let current = match std::fs::symlink_metadata(full) {
        Ok(md) if md.file_type().is_file() => {
            let same_content = std::fs::read(full).map(|c| c == content).unwrap_or(false);
            Some((
                same_content,
                md.permissions().mode() & 0o7777 == mode,
                owners.matches(md.uid(), md.gid()),
            ))
        }
        Ok(_) => None,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("stat {shown}: {e}")),
    };
    match current {
        Some((true, true, true)) => Ok(false),
        Some((true, m, o)) => {
            if !m && ctx.act(format!("chmod {mode:04o} {shown}")) {
                std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("chmod {shown}: {e}"))?;
            }
            if !o && ctx.act(format!("chown {} {shown}", owners.describe())) {
                owners
                    .apply(full)
                    .map_err(|e| format!("chown {shown}: {e}"))?;
            }
            Ok(true)
        }
        _ => {
            if ctx.act(format!(
                "write {shown} ({} bytes, mode {mode:04o}{})",
                content.len(),
                owners.describe_suffix()
            )) {
                write_atomic(full, content, mode, owners)
                    .map_err(|e| format!("write {shown}: {e}"))?;
            }
            Ok(true)
        }
    }
}

/// Run a step's parts in yip's order; every part runs even when an earlier one failed, and
/// the errors are returned together.
pub(crate) fn run_step(step: &Step, ctx: &mut Ctx) -> Vec<String> {
    let mut errors = Vec::new();
    let mut part = |name: &str, r: Result<(), String>| {
        if let Err(e) = r {
            errors.push(format!("{name}: {e}"));
        }
    };
    if !step.dns.is_empty() {
        part("dns", system::dns(ctx, &step.dns));
    }
    for d in &step.downloads {
        part("downloads", files::download(ctx, d));
    }
    for d in &step.directories {
        part("directories", files::directory(ctx, d));
    }
    for f in &step.files {
        part("files", files::file(ctx, f));
    }
    for c in &step.commands {
        part("commands", system::command(ctx, c));
    }
    if !step.hostname.is_empty() {
        part("hostname", system::hostname(ctx, &step.hostname));
    }
    if !step.sysctl.is_empty() {
        part("sysctl", system::sysctl(ctx, &step.sysctl));
    }
    if !step.users.is_empty() {
        part("users", users::users(ctx, &step.users));
    }
    if !step.authorized_keys.is_empty() {
        part(
            "authorized_keys",
            users::authorized_keys(ctx, &step.authorized_keys),
        );
    }
    if !step.modules.is_empty() {
        part("modules", system::modules(ctx, &step.modules));
    }
    if !step.systemctl.is_empty() {
        part("systemctl", systemctl::systemctl(ctx, &step.systemctl));
    }
    if !step.environment.is_empty() {
        part(
            "environment",
            system::environment(ctx, &step.environment, &step.environment_file),
        );
    }
    if !step.timesyncd.is_empty() {
        part("timesyncd", system::timesyncd(ctx, &step.timesyncd));
    }
    if !step.datasource.is_empty() {
        part("datasource", system::datasource(ctx, &step.datasource));
    }
    if !step.layout.is_empty() {
        part("layout", crate::layout::apply(ctx, &step.layout));
    }
    errors
}

/// Run a command; Ok(stdout) on exit 0, else an error with the last stderr line.
pub(crate) fn run_tool(cmd: &mut Command) -> Result<String, String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| format!("run {shown}: {e}"))?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let last = stderr
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no error output");
    Err(format!("{shown} failed ({}): {}", out.status, last.trim()))
}
