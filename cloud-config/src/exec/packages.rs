//! `packages`: install, remove, refresh and upgrade through the root's package manager, with
//! the arguments yip uses for each (apt-get, dnf, zypper, apk, pacman). Commands run chrooted
//! into the root when it is not `/`; on a clb host that is the build or install chroot (the
//! booted system's root is read-only).

use super::system::command;
use crate::ctx::Ctx;
use crate::error::StepError;
use crate::schema::Packages;

/// A package manager and its arguments for refresh, upgrade, install and remove.
struct Manager {
    program: &'static str,
    refresh: &'static str,
    upgrade: &'static str,
    install: &'static str,
    remove: &'static str,
}

const MANAGERS: &[Manager] = &[
    Manager {
        program: "apt-get",
        refresh: "-y update",
        upgrade: "-y upgrade",
        install: "-y --no-install-recommends install",
        remove: "-y remove",
    },
    Manager {
        program: "dnf",
        refresh: "makecache",
        upgrade: "update -y",
        install: "install -y --setopt=install_weak_deps=False",
        remove: "remove -y",
    },
    Manager {
        program: "zypper",
        refresh: "refresh",
        upgrade: "update -y",
        install: "install -y --no-recommends",
        remove: "remove -y",
    },
    Manager {
        program: "apk",
        refresh: "update",
        upgrade: "upgrade --no-cache",
        install: "add --no-cache",
        remove: "del --no-cache",
    },
    Manager {
        program: "pacman",
        refresh: "-Sy --noconfirm",
        upgrade: "-Syu --noconfirm",
        install: "-S --noconfirm",
        remove: "-R --noconfirm",
    },
];

/// The first manager whose program is in the root's `/usr/bin`, `/bin`, `/usr/sbin` or `/sbin`.
fn manager(ctx: &Ctx) -> Option<&'static Manager> {
    MANAGERS.iter().find(|m| {
        ["/usr/bin", "/bin", "/usr/sbin", "/sbin"]
            .iter()
            .any(|d| ctx.path(&format!("{d}/{}", m.program)).exists())
    })
}

/// Package names are passed to the shell: anything but a plain name is refused.
fn checked(names: &[String]) -> Result<String, StepError> {
    for n in names {
        let plain = !n.is_empty()
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-._:=<>~/@*".contains(c));
        if !plain {
            return Err(StepError::Invalid(format!("package name {n:?}")));
        }
    }
    Ok(names.join(" "))
}

pub(crate) fn packages(ctx: &mut Ctx, p: &Packages) -> Result<(), StepError> {
    let m = manager(ctx).ok_or_else(|| {
        StepError::Conflict(
            "no package manager (apt-get, dnf, zypper, apk, pacman) in the root".to_string(),
        )
    })?;
    let env = if m.program == "apt-get" {
        "DEBIAN_FRONTEND=noninteractive "
    } else {
        ""
    };
    let mut scripts = Vec::new();
    if p.refresh {
        scripts.push(format!("{env}{} {}", m.program, m.refresh));
    }
    if p.upgrade {
        scripts.push(format!("{env}{} {}", m.program, m.upgrade));
    }
    if !p.install.is_empty() {
        scripts.push(format!(
            "{env}{} {} {}",
            m.program,
            m.install,
            checked(&p.install)?
        ));
    }
    if !p.remove.is_empty() {
        scripts.push(format!(
            "{env}{} {} {}",
            m.program,
            m.remove,
            checked(&p.remove)?
        ));
    }
    for s in scripts {
        command(ctx, &s)?;
    }
    Ok(())
}
