//! Who may change the system: root, and members of the configured admin group. The caller
//! is identified by the bus (its connection's uid and groups, as the kernel told the bus
//! daemon), never by a parameter. Read-only members need no check.

use zbus::message::Header;

/// Why a caller was turned away (one line, safe to send back).
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the bus did not say who the caller is")]
    Unknown,
    #[error(
        "uid {uid} may not call {member}: only root{} may", group.as_ref().map(|g| format!(" and members of group {g}")).unwrap_or_default()
    )]
    Denied {
        uid: u32,
        member: String,
        group: Option<String>,
    },
    #[error("asking the bus who the caller is")]
    Bus(#[source] zbus::fdo::Error),
}

pub async fn authorize(
    conn: &zbus::Connection,
    hdr: &Header<'_>,
    admin_group: Option<&str>,
) -> Result<u32, AccessError> {
    let sender = hdr.sender().ok_or(AccessError::Unknown)?.to_owned();
    let dbus = zbus::fdo::DBusProxy::new(conn)
        .await
        .map_err(|e| AccessError::Bus(e.into()))?;
    let creds = dbus
        .get_connection_credentials(sender.into())
        .await
        .map_err(AccessError::Bus)?;
    let uid = creds.unix_user_id().ok_or(AccessError::Unknown)?;
    if uid == 0 {
        return Ok(uid);
    }
    let member = hdr
        .member()
        .map(|m| m.to_string())
        .unwrap_or_else(|| "this method".into());
    let Some(group) = admin_group else {
        return Err(AccessError::Denied {
            uid,
            member,
            group: None,
        });
    };
    let bus_groups = creds.unix_group_ids().cloned();
    let group_name = group.to_string();
    // /etc/group and /etc/passwd are files: read them off the runtime's workers.
    let member_of = tokio::task::spawn_blocking(move || {
        in_group(
            uid,
            bus_groups.as_deref(),
            &group_name,
            &read("/etc/passwd"),
            &read("/etc/group"),
        )
    })
    .await
    .unwrap_or(false);
    if member_of {
        Ok(uid)
    } else {
        Err(AccessError::Denied {
            uid,
            member,
            group: Some(group.to_string()),
        })
    }
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// `uid` is in `group`: by the group ids the bus reported (supplementary groups included),
/// else by the user's primary group or the group's member list in the files.
fn in_group(uid: u32, bus_groups: Option<&[u32]>, group: &str, passwd: &str, groups: &str) -> bool {
    let entry = groups.lines().find_map(|line| {
        let mut f = line.split(':');
        let name = f.next()?;
        let gid = f.nth(1)?.parse::<u32>().ok()?;
        let members = f.next().unwrap_or("");
        (name == group).then(|| (gid, members.to_string()))
    });
    let Some((gid, members)) = entry else {
        return false;
    };
    if bus_groups.is_some_and(|ids| ids.contains(&gid)) {
        return true;
    }
    let user = passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() > 3 && f[2].parse::<u32>().ok() == Some(uid))
            .then(|| (f[0].to_string(), f[3].parse::<u32>().ok()))
    });
    let Some((name, primary)) = user else {
        return false;
    };
    primary == Some(gid) || members.split(',').any(|m| m == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\ncarol:x:1002:990::/:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nclb:x:990:alice\nbob:x:1001:\n";

    #[test]
    fn membership_by_list_primary_group_or_bus() {
        assert!(in_group(1000, None, "clb", PASSWD, GROUP), "listed member");
        assert!(!in_group(1001, None, "clb", PASSWD, GROUP), "not a member");
        assert!(in_group(1002, None, "clb", PASSWD, GROUP), "primary group");
        assert!(
            in_group(1001, Some(&[990]), "clb", PASSWD, GROUP),
            "bus says so"
        );
        assert!(
            !in_group(1000, None, "wheel", PASSWD, GROUP),
            "no such group"
        );
    }
}
