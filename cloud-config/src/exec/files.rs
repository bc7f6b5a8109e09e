//! `files`, `directories`, `downloads`, and the owner/mode plumbing they share.

use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use base64::Engine;

use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::{Attrs, Directory, Download, File};

/// Wanted owner ids; `None` leaves that id as it is (new files: the running user's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Owners {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
}

impl Owners {
    pub fn new(uid: u32, gid: u32) -> Self {
        Owners {
            uid: Some(uid),
            gid: Some(gid),
        }
    }

    pub fn matches(&self, uid: u32, gid: u32) -> bool {
        self.uid.is_none_or(|u| u == uid) && self.gid.is_none_or(|g| g == gid)
    }

    pub fn apply(&self, path: &Path) -> std::io::Result<()> {
        if self.uid.is_none() && self.gid.is_none() {
            return Ok(());
        }
        std::os::unix::fs::lchown(path, self.uid, self.gid)
    }

    pub fn describe(&self) -> String {
        let s = |v: Option<u32>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        format!("{}:{}", s(self.uid), s(self.gid))
    }

    pub fn describe_suffix(&self) -> String {
        if self.uid.is_none() && self.gid.is_none() {
            String::new()
        } else {
            format!(", owner {}", self.describe())
        }
    }
}

/// Write through a temporary file in the same directory and rename it over `path`, so
/// readers see the old or the new content, never a mix. Parent directories are created.
pub(crate) fn write_atomic(
    path: &Path,
    content: &[u8],
    mode: u32,
    owners: Owners,
) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.clb-tmp"));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        f.write_all(content)?;
        // Mode after chown: chown clears setuid/setgid bits.
        owners.apply(&tmp)?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Write `content` to `path` (inside the root) unless it already has exactly this content,
/// mode and owner. Returns whether something changed (or would change).
pub(crate) fn ensure_file(
    ctx: &mut Ctx,
    path: &str,
    content: &[u8],
    mode: u32,
    owners: Owners,
) -> Result<bool, StepError> {
    let full = ctx.path(path);
    ensure_file_at(ctx, &full, path, content, mode, owners)
}

pub(crate) fn ensure_file_at(
    ctx: &mut Ctx,
    full: &Path,
    shown: &str,
    content: &[u8],
    mode: u32,
    owners: Owners,
) -> Result<bool, StepError> {
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
        Err(e) => return Err(StepError::io(format!("stat {shown}"))(e)),
    };
    match current {
        Some((true, true, true)) => Ok(false),
        Some((true, m, o)) => {
            if !m && ctx.act(format!("chmod {mode:04o} {shown}")) {
                std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode))
                    .map_err(StepError::io(format!("chmod {shown}")))?;
            }
            if !o && ctx.act(format!("chown {} {shown}", owners.describe())) {
                owners
                    .apply(full)
                    .map_err(StepError::io(format!("chown {shown}")))?;
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
                    .map_err(StepError::io(format!("write {shown}")))?;
            }
            Ok(true)
        }
    }
}

/// Create directory `full` (shown as `shown`) with its parents, then give it `owners` and
/// `mode` (in that order: chown clears setuid/setgid bits).
pub(crate) fn create_dir(
    full: &Path,
    shown: &str,
    owners: Owners,
    mode: u32,
) -> Result<(), StepError> {
    std::fs::create_dir_all(full).map_err(StepError::io(format!("create directory {shown}")))?;
    owners
        .apply(full)
        .map_err(StepError::io(format!("chown {shown}")))?;
    std::fs::set_permissions(full, std::fs::Permissions::from_mode(mode))
        .map_err(StepError::io(format!("chmod {shown}")))
}

/// `passwd`/`group` lookups in the root, for owners given by name.
fn lookup_id(ctx: &Ctx, db: &str, name: &str) -> Result<u32, StepError> {
    if let Ok(id) = name.parse::<u32>() {
        return Ok(id);
    }
    let path = ctx.path(db);
    let text = std::fs::read_to_string(&path).map_err(StepError::io(format!("read {db}")))?;
    text.lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let id = f.nth(1)?;
            (n == name).then_some(id)
        })
        .next()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| {
            StepError::Conflict(format!(
                "no {} {name:?} in {db}",
                db.trim_start_matches("/etc/")
            ))
        })
}

/// Resolve owner/group names or ids against the root's databases.
pub(crate) fn resolve_owners(ctx: &Ctx, attrs: &Attrs) -> Result<Owners, StepError> {
    let (mut owner, mut group) = (attrs.owner.clone(), attrs.group.clone());
    if owner.is_none()
        && group.is_none()
        && let Some(s) = &attrs.owner_string
    {
        match s.split_once(':') {
            Some((u, g)) => {
                owner = (!u.is_empty()).then(|| u.to_string());
                group = (!g.is_empty()).then(|| g.to_string());
            }
            None => owner = Some(s.clone()),
        }
    }
    Ok(Owners {
        uid: owner
            .map(|o| lookup_id(ctx, "/etc/passwd", &o))
            .transpose()?,
        gid: group
            .map(|g| lookup_id(ctx, "/etc/group", &g))
            .transpose()?,
    })
}

/// The bytes of `content` in `encoding`; Err: why it cannot be decoded.
fn decode(content: &str, encoding: &str) -> Result<Vec<u8>, String> {
    let b64 = |s: &str| {
        // Base64 in YAML is often wrapped over several lines.
        let compact: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        base64::engine::general_purpose::STANDARD
            .decode(compact)
            .map_err(|e| format!("invalid base64: {e}"))
    };
    let gunzip = |data: &[u8]| {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(data)
            .read_to_end(&mut out)
            .map_err(|e| format!("invalid gzip: {e}"))?;
        Ok::<_, String>(out)
    };
    match encoding.to_ascii_lowercase().as_str() {
        "" | "text/plain" => Ok(content.as_bytes().to_vec()),
        "b64" | "base64" => b64(content),
        // A YAML string cannot hold raw gzip bytes; yip's "gz" reads them as Latin-1 text.
        "gz" | "gzip" => gunzip(&content.chars().map(|c| c as u32 as u8).collect::<Vec<u8>>()),
        "gz+b64" | "gzip+base64" | "gz+base64" | "gzip+b64" => gunzip(&b64(content)?),
        other => Err(format!("unknown encoding {other:?}")),
    }
}

fn check_path(p: &str) -> Result<(), StepError> {
    let problem = if p.is_empty() {
        "empty path".to_string()
    } else if !p.starts_with('/') {
        format!("path {p:?} is not absolute")
    } else if p.split('/').any(|c| c == "..") {
        format!("path {p:?} contains \"..\"")
    } else {
        return Ok(());
    };
    Err(StepError::Invalid(problem))
}

pub(crate) fn file(ctx: &mut Ctx, f: &File) -> Result<(), StepError> {
    check_path(&f.path)?;
    let decoded = decode(&f.content, &f.encoding)
        .map_err(|e| StepError::Invalid(format!("{}: {e}", f.path)))?;
    // yip renders the decoded content as text; bytes that are not UTF-8 are left alone.
    let content = match std::str::from_utf8(&decoded) {
        Ok(text) => super::render::values(ctx, text).into_owned().into_bytes(),
        Err(_) => decoded,
    };
    let attrs = f.attrs();
    let owners = resolve_owners(ctx, &attrs)?;
    ensure_parent(ctx, &f.path)?;
    ensure_file(
        ctx,
        &f.path,
        &content,
        attrs.permissions.unwrap_or(0o644),
        owners,
    )?;
    Ok(())
}

/// Create missing parent directories (0755) so `files` work without a `directories` entry.
fn ensure_parent(ctx: &mut Ctx, path: &str) -> Result<(), StepError> {
    let full = ctx.path(path);
    if let Some(parent) = full.parent()
        && !parent.is_dir()
        && ctx.act(format!("create directory {}", parent.display()))
    {
        std::fs::create_dir_all(parent).map_err(StepError::io(format!(
            "create directory {}",
            parent.display()
        )))?;
    }
    Ok(())
}

pub(crate) fn directory(ctx: &mut Ctx, d: &Directory) -> Result<(), StepError> {
    check_path(&d.path)?;
    let attrs = d.attrs();
    let owners = resolve_owners(ctx, &attrs)?;
    let full = ctx.path(&d.path);
    match std::fs::symlink_metadata(&full) {
        Ok(md) if md.is_dir() => {
            if let Some(mode) = attrs.permissions
                && md.permissions().mode() & 0o7777 != mode
                && ctx.act(format!("chmod {mode:04o} {}", d.path))
            {
                std::fs::set_permissions(&full, std::fs::Permissions::from_mode(mode))
                    .map_err(StepError::io(format!("chmod {}", d.path)))?;
            }
            if !owners.matches(md.uid(), md.gid())
                && ctx.act(format!("chown {} {}", owners.describe(), d.path))
            {
                owners
                    .apply(&full)
                    .map_err(StepError::io(format!("chown {}", d.path)))?;
            }
            Ok(())
        }
        Ok(_) => Err(StepError::Conflict(format!(
            "{} exists and is not a directory",
            d.path
        ))),
        Err(_) => {
            let mode = attrs.permissions.unwrap_or(0o755);
            if ctx.act(format!(
                "create directory {} (mode {mode:04o}{})",
                d.path,
                owners.describe_suffix()
            )) {
                create_dir(&full, &d.path, owners, mode)?;
            }
            Ok(())
        }
    }
}

pub(crate) fn download(ctx: &mut Ctx, d: &Download) -> Result<(), StepError> {
    check_path(&d.path)?;
    if d.url.is_empty() {
        return Err(StepError::Invalid(format!("{}: no url", d.path)));
    }
    let attrs = d.attrs();
    let owners = resolve_owners(ctx, &attrs)?;
    let timeout = Duration::from_secs(if d.timeout == 0 { 60 } else { d.timeout });
    if ctx.dry_run {
        ctx.act(format!("download {} to {}", d.url, d.path));
        return Ok(());
    }
    ensure_parent(ctx, &d.path)?;
    // Fetched next to the target, then compared: an unchanged download leaves the file (and
    // the tree) exactly as it was.
    let full = ctx.path(&d.path);
    let tmp = full.with_file_name(format!(
        ".{}.clb-download",
        full.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let result = (|| {
        crate::fetch::fetch_to_file(&d.url, timeout, &tmp)?;
        let content = std::fs::read(&tmp)
            .map_err(StepError::io(format!("read the download of {}", d.path)))?;
        let shown = format!("{} (from {})", d.path, d.url);
        ensure_file_at(
            ctx,
            &full,
            &shown,
            &content,
            attrs.permissions.unwrap_or(0o644),
            owners,
        )
    })();
    let _ = std::fs::remove_file(&tmp);
    result.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_every_encoding() {
        use std::io::Write as _;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(b"hello gz").unwrap_or_default();
        let gz = gz.finish().unwrap_or_default();
        let b64 = base64::engine::general_purpose::STANDARD.encode(&gz);
        assert_eq!(decode("aGk=", "b64"), Ok(b"hi".to_vec()));
        assert_eq!(decode("aG\n k=", "base64"), Ok(b"hi".to_vec()));
        assert_eq!(decode(&b64, "gz+b64"), Ok(b"hello gz".to_vec()));
        let latin1: String = gz.iter().map(|&b| b as char).collect();
        assert_eq!(decode(&latin1, "gzip"), Ok(b"hello gz".to_vec()));
        assert!(decode("!!", "b64").is_err());
        assert!(decode("x", "rot13").is_err());
    }
}
