//! What a step runs against: the root, dry-run mode, and the record of what was (or would be)
//! changed. The step parts (`exec`) and the conditions use it; it uses neither of them.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::sources::under_root;

/// What a step runs against.
#[derive(Debug)]
pub(crate) struct Ctx {
    pub root: PathBuf,
    pub dry_run: bool,
    /// Changes made (or, in dry run, that would be made), in order.
    pub actions: Vec<String>,
    /// Things worth knowing that are not changes (e.g. a unit not started offline).
    pub notes: Vec<String>,
    /// Where `datasource:` finds the cloud metadata service, when not at its usual address.
    pub metadata_endpoint: Option<String>,
    /// The `.Values` of templates, read once per step when a template needs them.
    pub template_values: Option<serde_json::Value>,
}

impl Ctx {
    pub fn new(root: &Path, dry_run: bool) -> Self {
        Ctx {
            root: root.to_path_buf(),
            dry_run,
            actions: Vec::new(),
            notes: Vec::new(),
            metadata_endpoint: None,
            template_values: None,
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
}
