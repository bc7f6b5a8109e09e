//! `users` and `authorized_keys`: editing passwd/shadow/group(/gshadow) of the root directly
//! (no useradd: it may not exist in the root, and `--root` support differs between distros).
//!
//! Each database is rewritten through a temporary file and a rename, keeping its mode and
//! owner; lines clb does not manage are kept byte for byte.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};

use super::db::Db;
use super::files::{Owners, create_dir, ensure_file_at};
use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::User;

/// The four databases; gshadow only when the root has one.
struct Dbs {
    passwd: Db,
    shadow: Db,
    group: Db,
    gshadow: Option<Db>,
}

impl Dbs {
    fn load(ctx: &Ctx) -> Result<Dbs, StepError> {
        let group = Db::load(ctx, "/etc/group", 0o644)?;
        let mut shadow = Db::load(ctx, "/etc/shadow", 0o640)?;
        if !shadow.exists {
            // Debian's convention: root:shadow 0640 (or 0600 root:root without that group).
            match group.find("shadow") {
                Some(i) => {
                    shadow.owners = Owners::new(0, group.field(i, 2).parse().unwrap_or(0));
                }
                None => shadow.mode = 0o600,
            }
        }
        let gshadow = Db::load(ctx, "/etc/gshadow", 0o640)?;
        Ok(Dbs {
            passwd: Db::load(ctx, "/etc/passwd", 0o644)?,
            shadow,
            gshadow: gshadow.exists.then_some(gshadow),
            group,
        })
    }

    fn save(&self, ctx: &mut Ctx) -> Result<(), StepError> {
        // Groups before users: a passwd line never points at a group not yet written.
        self.group.save(ctx)?;
        if let Some(g) = &self.gshadow {
            g.save(ctx)?;
        }
        self.passwd.save(ctx)?;
        self.shadow.save(ctx)
    }

    /// The gid of group `name`, creating the group (gid `wanted` if free) when missing.
    fn ensure_group(
        &mut self,
        name: &str,
        wanted: Option<u32>,
        system: bool,
    ) -> Result<u32, StepError> {
        if let Some(i) = self.group.find(name) {
            return self
                .group
                .field(i, 2)
                .parse()
                .map_err(|_| StepError::Conflict(format!("/etc/group: bad gid for {name}")));
        }
        valid_name(name)?;
        let used = self.group.ids(2);
        let gid = match wanted {
            Some(g) if !used.contains(&g) => g,
            _ => next_free(&used, system)?,
        };
        self.group.lines.push(vec![
            name.into(),
            "x".into(),
            gid.to_string(),
            String::new(),
        ]);
        if let Some(gs) = &mut self.gshadow
            && gs.find(name).is_none()
        {
            gs.lines
                .push(vec![name.into(), "!".into(), String::new(), String::new()]);
        }
        Ok(gid)
    }

    fn add_member(&mut self, group: &str, user: &str) {
        for db in [Some(&mut self.group), self.gshadow.as_mut()]
            .into_iter()
            .flatten()
        {
            if let Some(i) = db.find(group) {
                let mut members: Vec<String> = db
                    .field(i, 3)
                    .split(',')
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                if !members.iter().any(|m| m == user) {
                    members.push(user.to_string());
                    db.set(i, 3, &members.join(","));
                }
            }
        }
    }
}

/// useradd's ranges: users from 1000 up, system accounts from 999 down.
fn next_free(used: &[u32], system: bool) -> Result<u32, StepError> {
    let found = if system {
        (100..1000).rev().find(|i| !used.contains(i))
    } else {
        (1000..60000).find(|i| !used.contains(i))
    };
    found.ok_or_else(|| StepError::Conflict("no free id left".to_string()))
}

fn valid_name(name: &str) -> Result<(), StepError> {
    let ok = !name.is_empty()
        && name.len() <= 32
        && !name.starts_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '$'));
    if ok {
        Ok(())
    } else {
        Err(StepError::Invalid(format!(
            "invalid user or group name {name:?}"
        )))
    }
}

fn no_colon(what: &str, v: &str) -> Result<(), StepError> {
    if v.contains(':') || v.contains('\n') {
        Err(StepError::Invalid(format!(
            "{what} {v:?} must not contain ':' or a newline"
        )))
    } else {
        Ok(())
    }
}

/// A crypt(3) string: `$id$...` (or `$id$rounds=N$salt$hash`).
fn is_hashed(p: &str) -> bool {
    p.starts_with('$') && p.matches('$').count() >= 3
}

/// SHA-512 crypt through `openssl passwd -6`, the password on stdin (never in argv).
fn sha512_crypt(plain: &str, salt: Option<&str>) -> Result<String, StepError> {
    if plain.contains('\n') {
        return Err(StepError::Invalid(
            "passwords with a newline are not supported".into(),
        ));
    }
    let mut cmd = Command::new("openssl");
    cmd.args(["passwd", "-6"]);
    if let Some(s) = salt {
        cmd.args(["-salt", s]);
    }
    cmd.arg("-stdin")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = clb_command::spawn(&mut cmd)?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(format!("{plain}\n").as_bytes())
            .map_err(StepError::io("pass the password to openssl passwd"))?;
    }
    let out = clb_command::wait(&cmd, child)?;
    hash_of(&out.stdout)
}

/// The crypt hash `openssl passwd` printed.
fn hash_of(stdout: &[u8]) -> Result<String, StepError> {
    let hash = String::from_utf8_lossy(stdout).trim().to_string();
    if !is_hashed(&hash) {
        return Err(StepError::Output {
            program: "openssl passwd".into(),
            wanted: "crypt hash",
            output: hash,
        });
    }
    Ok(hash)
}

/// The shadow hash for `passwd`, reusing `current` when it already matches the plaintext (a
/// fresh salt on every run would change the tree each time).
fn wanted_hash(passwd: &str, current: &str) -> Result<String, StepError> {
    if is_hashed(passwd) {
        return Ok(passwd.to_string());
    }
    let bare = current.trim_start_matches('!');
    if let Some(rest) = bare.strip_prefix("$6$")
        && let Some((salt, _)) = rest.rsplit_once('$')
        && sha512_crypt(passwd, Some(salt))? == bare
    {
        return Ok(bare.to_string());
    }
    sha512_crypt(passwd, None)
}

fn days_since_epoch() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| (d.as_secs() / 86400).to_string())
        .unwrap_or_default()
}

pub(crate) fn users(ctx: &mut Ctx, users: &BTreeMap<String, User>) -> Result<(), StepError> {
    let mut dbs = Dbs::load(ctx)?;
    for (name, u) in users {
        valid_name(name)?;
        for (what, v) in [
            ("shell", &u.shell),
            ("homedir", &u.homedir),
            ("gecos", &u.gecos),
        ] {
            no_colon(what, v)?;
        }
        let existing = dbs.passwd.find(name);
        let primary = if u.primary_group.is_empty() {
            name.as_str()
        } else {
            u.primary_group.as_str()
        };
        let uid = match existing {
            Some(i) => {
                let cur: u32 =
                    dbs.passwd.field(i, 2).parse().map_err(|_| {
                        StepError::Conflict(format!("/etc/passwd: bad uid for {name}"))
                    })?;
                if let Some(want) = u.uid
                    && want != cur
                {
                    return Err(StepError::Conflict(format!(
                        "user {name} exists with uid {cur}, not {want}; refusing to renumber"
                    )));
                }
                cur
            }
            None => {
                let used = dbs.passwd.ids(2);
                match u.uid {
                    Some(want) if used.contains(&want) => {
                        return Err(StepError::Conflict(format!(
                            "uid {want} for {name} is taken"
                        )));
                    }
                    Some(want) => want,
                    None => next_free(&used, u.system)?,
                }
            }
        };
        let gid = dbs.ensure_group(primary, Some(uid), u.system)?;
        let home = if !u.homedir.is_empty() {
            u.homedir.clone()
        } else if let Some(i) = existing {
            dbs.passwd.field(i, 5).to_string()
        } else {
            format!("/home/{name}")
        };
        let i = match existing {
            Some(i) => i,
            None => {
                dbs.passwd.lines.push(vec![
                    name.clone(),
                    "x".into(),
                    uid.to_string(),
                    gid.to_string(),
                    String::new(),
                    home.clone(),
                    "/bin/sh".into(),
                ]);
                dbs.passwd.lines.len() - 1
            }
        };
        if existing.is_none() || !u.primary_group.is_empty() {
            dbs.passwd.set(i, 3, &gid.to_string());
        }
        dbs.passwd.set(i, 5, &home);
        if !u.shell.is_empty() {
            dbs.passwd.set(i, 6, &u.shell);
        }
        if !u.gecos.is_empty() {
            dbs.passwd.set(i, 4, &u.gecos);
        }
        // shadow
        let si = match dbs.shadow.find(name) {
            Some(si) => si,
            None => {
                dbs.shadow.lines.push(vec![
                    name.clone(),
                    "!".into(),
                    days_since_epoch(),
                    "0".into(),
                    "99999".into(),
                    "7".into(),
                    String::new(),
                    String::new(),
                    String::new(),
                ]);
                dbs.shadow.lines.len() - 1
            }
        };
        let current = dbs.shadow.field(si, 1).to_string();
        let mut hash = if u.passwd.is_empty() {
            current.clone()
        } else {
            no_colon("passwd", &u.passwd)?;
            wanted_hash(&u.passwd, &current)?
        };
        if u.lock_passwd && !hash.starts_with('!') {
            hash = format!("!{hash}");
        }
        if hash != current {
            dbs.shadow.set(si, 1, &hash);
            dbs.shadow.set(si, 2, &days_since_epoch());
        }
        for g in &u.groups {
            dbs.ensure_group(g, None, false)?;
            dbs.add_member(g, name);
        }
    }
    dbs.save(ctx)?;
    for (name, u) in users {
        let Some((home, uid, gid)) = lookup(&dbs, name) else {
            continue;
        };
        if !u.no_create_home {
            ensure_home(ctx, &home, uid, gid)?;
        }
        if !u.ssh_authorized_keys.is_empty() {
            write_keys(ctx, &home, uid, gid, &u.ssh_authorized_keys)?;
        }
    }
    Ok(())
}

fn lookup(dbs: &Dbs, name: &str) -> Option<(String, u32, u32)> {
    let i = dbs.passwd.find(name)?;
    Some((
        dbs.passwd.field(i, 5).to_string(),
        dbs.passwd.field(i, 2).parse().ok()?,
        dbs.passwd.field(i, 3).parse().ok()?,
    ))
}

fn ensure_home(ctx: &mut Ctx, home: &str, uid: u32, gid: u32) -> Result<(), StepError> {
    if home.is_empty() || !home.starts_with('/') {
        return Err(StepError::Invalid(format!(
            "home directory {home:?} is not absolute"
        )));
    }
    let full = ctx.path(home);
    if full.exists() {
        return Ok(()); // an existing home is the user's business
    }
    if ctx.act(format!("create home {home} (mode 0700, owner {uid}:{gid})")) {
        create_dir(&full, home, Owners::new(uid, gid), 0o700)?;
    }
    Ok(())
}

/// Add `keys` to `~/.ssh/authorized_keys` (keys already there are kept; none is removed).
fn write_keys(
    ctx: &mut Ctx,
    home: &str,
    uid: u32,
    gid: u32,
    keys: &[String],
) -> Result<(), StepError> {
    for k in keys {
        if k.contains(':') && (k.starts_with("github:") || k.starts_with("gitlab:")) {
            return Err(StepError::Invalid(format!(
                "{k:?}: fetching keys from GitHub/GitLab is not supported; paste the key"
            )));
        }
    }
    let ssh = format!("{}/.ssh", home.trim_end_matches('/'));
    let ssh_full = ctx.path(&ssh);
    let owners = Owners::new(uid, gid);
    match std::fs::symlink_metadata(&ssh_full) {
        Ok(md) if md.is_dir() => {
            if (md.permissions().mode() & 0o7777 != 0o700 || !owners.matches(md.uid(), md.gid()))
                && ctx.act(format!("chmod 0700 and chown {uid}:{gid} {ssh}"))
            {
                owners
                    .apply(&ssh_full)
                    .map_err(StepError::io(format!("chown {ssh}")))?;
                std::fs::set_permissions(&ssh_full, std::fs::Permissions::from_mode(0o700))
                    .map_err(StepError::io(format!("chmod {ssh}")))?;
            }
        }
        Ok(_) => {
            return Err(StepError::Conflict(format!("{ssh} is not a directory")));
        }
        Err(_) => {
            if ctx.act(format!("create {ssh} (mode 0700, owner {uid}:{gid})")) {
                create_dir(&ssh_full, &ssh, owners, 0o700)?;
            }
        }
    }
    let path = format!("{ssh}/authorized_keys");
    let full = ctx.path(&path);
    let existing = std::fs::read_to_string(&full).unwrap_or_default();
    let mut text = existing.clone();
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    for k in keys {
        let k = k.trim();
        if !k.is_empty() && !existing.lines().any(|l| l.trim() == k) {
            text.push_str(k);
            text.push('\n');
        }
    }
    ensure_file_at(ctx, &full, &path, text.as_bytes(), 0o600, owners)?;
    Ok(())
}

/// Every user's keys are written even when another user's fail; the errors of all of them.
pub(crate) fn authorized_keys(
    ctx: &mut Ctx,
    keys: &BTreeMap<String, Vec<String>>,
) -> Vec<StepError> {
    let dbs = match Dbs::load(ctx) {
        Ok(dbs) => dbs,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for (user, list) in keys {
        let result = match lookup(&dbs, user) {
            Some((home, uid, gid)) => write_keys(ctx, &home, uid, gid, list),
            None => Err(StepError::Conflict("not in /etc/passwd".to_string())),
        };
        // Several users' keys fail separately: each error names its user.
        errors.extend(result.err().map(|e| StepError::User {
            user: user.clone(),
            error: Box::new(e),
        }));
    }
    errors
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn openssl_without_a_hash_is_unusable_output() {
        assert_eq!(hash_of(b"$6$salt$abc\n").unwrap(), "$6$salt$abc");
        match hash_of(b"usage: passwd\n").unwrap_err() {
            StepError::Output {
                program, output, ..
            } => assert_eq!(
                (program.as_str(), output.as_str()),
                ("openssl passwd", "usage: passwd")
            ),
            other => panic!("{other:?}"),
        }
    }
}
