//! A colon-separated account database (passwd, shadow, group, gshadow) of the root, edited
//! in memory and written back atomically with its mode and owner; lines nobody changed stay
//! byte for byte.

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::files::{Owners, ensure_file_at};
use crate::ctx::Ctx;
use crate::error::StepError;

/// One colon-separated database (passwd, shadow, group, gshadow).
pub(crate) struct Db {
    pub path: String,
    pub lines: Vec<Vec<String>>,
    /// The text as read: saving unchanged data writes nothing.
    original: String,
    pub exists: bool,
    pub mode: u32,
    pub owners: Owners,
}

impl Db {
    pub fn load(ctx: &Ctx, path: &str, default_mode: u32) -> Result<Db, StepError> {
        let full = ctx.path(path);
        let (original, exists, mode, owners) = match std::fs::read_to_string(&full) {
            Ok(s) => {
                let md = std::fs::metadata(&full).map_err(StepError::io(format!("stat {path}")))?;
                (
                    s,
                    true,
                    md.permissions().mode() & 0o7777,
                    Owners::new(md.uid(), md.gid()),
                )
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                (String::new(), false, default_mode, Owners::new(0, 0))
            }
            Err(e) => return Err(StepError::io(format!("read {path}"))(e)),
        };
        let lines = original
            .lines()
            .map(|l| l.split(':').map(String::from).collect())
            .collect();
        Ok(Db {
            path: path.to_string(),
            lines,
            original,
            exists,
            mode,
            owners,
        })
    }

    pub fn find(&self, name: &str) -> Option<usize> {
        self.lines
            .iter()
            .position(|f| f.first().is_some_and(|n| n == name))
    }

    pub fn field(&self, i: usize, f: usize) -> &str {
        self.lines[i].get(f).map(String::as_str).unwrap_or("")
    }

    pub fn set(&mut self, i: usize, f: usize, value: &str) {
        let line = &mut self.lines[i];
        while line.len() <= f {
            line.push(String::new());
        }
        line[f] = value.to_string();
    }

    pub fn ids(&self, field: usize) -> Vec<u32> {
        self.lines
            .iter()
            .filter_map(|l| l.get(field)?.parse().ok())
            .collect()
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for l in &self.lines {
            out.push_str(&l.join(":"));
            out.push('\n');
        }
        out
    }

    pub fn save(&self, ctx: &mut Ctx) -> Result<(), StepError> {
        let text = self.render();
        if self.exists && text == self.original {
            return Ok(());
        }
        let full = ctx.path(&self.path);
        ensure_file_at(
            ctx,
            &full,
            &self.path,
            text.as_bytes(),
            self.mode,
            self.owners,
        )?;
        Ok(())
    }
}
