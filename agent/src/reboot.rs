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
            let status = tokio::process::Command::new("systemctl")
                .arg("reboot")
                .status()
                .await
                .map_err(ClbError::io("running systemctl reboot"))?;
            if status.success() {
                Ok(())
            } else {
                Err(ClbError::State(format!(
                    "systemctl reboot failed: {status}"
                )))
            }
        }
    }
}

async fn reboot_via_logind() -> zbus::Result<()> {
    let conn = zbus::Connection::system().await?;
    LoginManagerProxy::new(&conn).await?.reboot(false).await
}
