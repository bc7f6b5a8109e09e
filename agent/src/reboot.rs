//! Rebooting after a staged upgrade: through logind over D-Bus (what `systemctl reboot` does
//! too, without needing systemctl), falling back to `systemctl reboot`.

use crate::error::{ClbError, Result};

#[zbus::proxy(
    interface = "org.freedesktop.login1.Manager",
    default_service = "org.freedesktop.login1",
    default_path = "/org/freedesktop/login1"
)]
trait LoginManager {
    fn reboot(&self, interactive: bool) -> zbus::Result<()>;
}

pub async fn reboot() -> Result<()> {
    match reboot_via_logind().await {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "logind reboot failed, falling back to systemctl reboot");
            // systemctl where systemd runs; a plain `reboot` (busybox, sysvinit) elsewhere.
            for (cmd, args) in [("systemctl", &["reboot"][..]), ("reboot", &[][..])] {
                let run = tokio::task::spawn_blocking(move || {
                    clb_command::run(std::process::Command::new(cmd).args(args))
                });
                match run.await? {
                    Ok(_) => return Ok(()),
                    Err(e) => tracing::warn!(error = %e, "reboot command failed"),
                }
            }
            Err(ClbError::State(
                "could not reboot: no logind, systemctl reboot and reboot both failed".into(),
            ))
        }
    }
}

async fn reboot_via_logind() -> zbus::Result<()> {
    let conn = zbus::Connection::system().await?;
    LoginManagerProxy::new(&conn).await?.reboot(false).await
}
