//! `ensure_entities` and `delete_entities`: yip's account entries, written as its `entities`
//! library (github.com/mudler/entities) applies them. An entity is a YAML document:
//!
//! - `kind: user`: `username`, `password`, `uid` (negative: the first free id from 1000),
//!   `gid`, `group` (a group name whose gid is used), `info` (default "Created by entities"),
//!   `homedir`, `shell` → a passwd line, replacing the user's line or appended.
//! - `kind: shadow`: `username`, `password`, `last_changed` (`now`: today in days),
//!   `minimum_changed`, `maximum_changed`, `warn`, `inactive`, `expire`, `reserved`; empty
//!   fields keep the existing line's values.
//! - `kind: group`: `group_name`, `password`, `gid` (negative or unset for a new group: the
//!   first free id from 1000), `users` (comma separated; merged with the existing members).
//! - `kind: gshadow`: `name`, `password`, `administrators`, `members`.
//!
//! Delete removes the line that is exactly the entity's line, as the library does.

use serde::Deserialize;

use super::db::Db;
use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::Entity;

/// Go's `int` fields: YAML integers (negative allowed), or absent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct UserEntity {
    username: String,
    password: String,
    uid: Option<i64>,
    gid: Option<i64>,
    group: String,
    info: String,
    homedir: String,
    shell: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ShadowEntity {
    username: String,
    password: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    last_changed: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    minimum_changed: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    maximum_changed: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    warn: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    inactive: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    expire: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    reserved: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GroupEntity {
    group_name: String,
    password: String,
    gid: Option<i64>,
    #[serde(deserialize_with = "crate::schema::de::string")]
    users: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct GshadowEntity {
    name: String,
    password: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    administrators: String,
    #[serde(deserialize_with = "crate::schema::de::string")]
    members: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Kind {
    kind: String,
}

/// A parsed entity: the database it belongs to and how it changes a line.
enum Parsed {
    User(UserEntity),
    Shadow(ShadowEntity),
    Group(GroupEntity),
    Gshadow(GshadowEntity),
}

impl Parsed {
    fn read(text: &str) -> Result<Parsed, StepError> {
        let invalid = |e: serde_saphyr::Error| StepError::Invalid(format!("entity: {e}"));
        let kind: Kind = serde_saphyr::from_str(text).map_err(invalid)?;
        Ok(match kind.kind.as_str() {
            "user" => Parsed::User(serde_saphyr::from_str(text).map_err(invalid)?),
            "shadow" => Parsed::Shadow(serde_saphyr::from_str(text).map_err(invalid)?),
            "group" => Parsed::Group(serde_saphyr::from_str(text).map_err(invalid)?),
            "gshadow" => Parsed::Gshadow(serde_saphyr::from_str(text).map_err(invalid)?),
            other => {
                return Err(StepError::Invalid(format!(
                    "entity kind {other:?} (user, shadow, group or gshadow)"
                )));
            }
        })
    }

    fn default_path(&self) -> &'static str {
        match self {
            Parsed::User(_) => "/etc/passwd",
            Parsed::Shadow(_) => "/etc/shadow",
            Parsed::Group(_) => "/etc/group",
            Parsed::Gshadow(_) => "/etc/gshadow",
        }
    }

    /// The entity's line as written, the one `delete` removes.
    fn fields(&self) -> Vec<String> {
        match self {
            Parsed::User(u) => vec![
                u.username.clone(),
                u.password.clone(),
                id(u.uid),
                id(u.gid),
                u.info.clone(),
                u.homedir.clone(),
                u.shell.clone(),
            ],
            Parsed::Shadow(s) => vec![
                s.username.clone(),
                s.password.clone(),
                s.last_changed.clone(),
                s.minimum_changed.clone(),
                s.maximum_changed.clone(),
                s.warn.clone(),
                s.inactive.clone(),
                s.expire.clone(),
                s.reserved.clone(),
            ],
            Parsed::Group(g) => vec![
                g.group_name.clone(),
                g.password.clone(),
                id(g.gid),
                g.users.clone(),
            ],
            Parsed::Gshadow(g) => vec![
                g.name.clone(),
                g.password.clone(),
                g.administrators.clone(),
                g.members.clone(),
            ],
        }
    }

    fn name(&self) -> &str {
        match self {
            Parsed::User(u) => &u.username,
            Parsed::Shadow(s) => &s.username,
            Parsed::Group(g) => &g.group_name,
            Parsed::Gshadow(g) => &g.name,
        }
    }
}

fn id(v: Option<i64>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// The database an entity edits, which must exist (the library refuses a missing file too).
fn open(ctx: &Ctx, entity: &Entity, parsed: &Parsed) -> Result<Db, StepError> {
    let path = if entity.path.is_empty() {
        parsed.default_path()
    } else {
        entity.path.as_str()
    };
    let db = Db::load(ctx, path, 0o644)?;
    if !db.exists {
        return Err(StepError::Conflict(format!("{path} does not exist")));
    }
    Ok(db)
}

/// The first id from 1000 that no line of `db` uses in `field`.
fn free_id(db: &Db, field: usize) -> Result<i64, StepError> {
    let used = db.ids(field);
    (1000..60000)
        .find(|i| !used.contains(i))
        .map(i64::from)
        .ok_or_else(|| StepError::Conflict(format!("no free id in {}", db.path)))
}

/// Applies one entity, `text` being its (already rendered) YAML.
pub(crate) fn ensure(ctx: &mut Ctx, entity: &Entity, text: &str) -> Result<(), StepError> {
    let parsed = Parsed::read(text)?;
    if parsed.name().is_empty() {
        return Err(StepError::Invalid("entity without a name".to_string()));
    }
    let mut db = open(ctx, entity, &parsed)?;
    let existing = db.find(parsed.name());
    let line: Vec<String> = match &parsed {
        Parsed::User(u) => {
            // A dynamic uid is allocated once: an existing user keeps its id (the library
            // would allocate a new one on every run).
            let uid = match (u.uid, existing) {
                (Some(uid), Some(i)) if uid < 0 => db.field(i, 2).parse().unwrap_or(uid),
                (Some(uid), None) if uid < 0 => free_id(&db, 2)?,
                (uid, _) => uid.unwrap_or(0),
            };
            let gid = if u.group.is_empty() {
                id(u.gid)
            } else {
                let groups = Db::load(ctx, "/etc/group", 0o644)?;
                let at = groups.find(&u.group).ok_or_else(|| {
                    StepError::Conflict(format!("group {:?} is not in /etc/group", u.group))
                })?;
                groups.field(at, 2).to_string()
            };
            let info = if u.info.is_empty() {
                "Created by entities"
            } else {
                &u.info
            };
            vec![
                u.username.clone(),
                u.password.clone(),
                uid.to_string(),
                gid,
                info.to_string(),
                u.homedir.clone(),
                u.shell.clone(),
            ]
        }
        Parsed::Shadow(s) => {
            let mut wanted = parsed.fields();
            if s.last_changed == "now" {
                wanted[2] = days_since_epoch().to_string();
            }
            wanted
                .iter()
                .enumerate()
                .map(|(f, v)| match existing {
                    // The library keeps what the entity leaves empty (not the password).
                    Some(i) if v.is_empty() && f >= 2 => db.field(i, f).to_string(),
                    _ => v.clone(),
                })
                .collect()
        }
        Parsed::Group(g) => {
            let mut users: Vec<String> = Vec::new();
            let mut password = g.password.clone();
            let mut gid = g.gid.filter(|gid| *gid >= 0).map(|gid| gid.to_string());
            if let Some(i) = existing {
                users.extend(
                    db.field(i, 3)
                        .split(',')
                        .filter(|u| !u.is_empty())
                        .map(String::from),
                );
                if password.is_empty() {
                    password = db.field(i, 1).to_string();
                }
                if g.gid.is_none_or(|gid| gid < 0) {
                    gid = Some(db.field(i, 2).to_string());
                }
            }
            for u in g.users.split(',').filter(|u| !u.is_empty()) {
                if !users.iter().any(|x| x == u) {
                    users.push(u.to_string());
                }
            }
            let gid = match gid {
                Some(gid) => gid,
                None => free_id(&db, 2)?.to_string(),
            };
            vec![g.group_name.clone(), password, gid, users.join(",")]
        }
        Parsed::Gshadow(_) => parsed.fields(),
    };
    match existing {
        Some(i) => db.lines[i] = line,
        None => db.lines.push(line),
    }
    db.save(ctx)
}

/// Removes the line that is exactly the entity's line; nothing when there is none.
pub(crate) fn delete(ctx: &mut Ctx, entity: &Entity, text: &str) -> Result<(), StepError> {
    let parsed = Parsed::read(text)?;
    let mut db = open(ctx, entity, &parsed)?;
    let line = parsed.fields();
    if let Some(i) = db.lines.iter().position(|l| *l == line) {
        db.lines.remove(i);
        db.save(ctx)?;
    }
    Ok(())
}

/// Today as days since 1970-01-01, never 0 (0 means "change the password at next login").
fn days_since_epoch() -> u64 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    (secs / 86_400).max(1)
}
