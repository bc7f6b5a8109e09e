//! The CLI's side of the bus: when the daemon runs (and works on the same state), `clb`
//! asks it to do the work and follows its `Progress` until `Completed`, so a person sees the
//! daemon's operation and two operations can never race.

use std::collections::HashMap;
use std::path::Path;

use futures_util::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use zbus::Variant as Value;

use super::ops::OpKind;
use crate::error::{ClbError, Result, exit};

#[zbus::proxy(
    interface = "dev.clb.Agent1",
    default_service = "dev.clb.Agent",
    default_path = "/dev/clb/Agent"
)]
pub trait Agent {
    fn check(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn download(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn upgrade(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn apply(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn rollback(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn mark_good(&self) -> zbus::Result<()>;
    fn mark_bad(&self) -> zbus::Result<()>;
    fn cancel(&self) -> zbus::Result<()>;
    fn get_status(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;
    #[zbus(property)]
    fn state_dir(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn completed(
        &self,
        operation: String,
        code: i32,
        message: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// The daemon's proxy when it owns its name on the system bus and serves `state_dir` (`None`:
/// the host's COS_STATE); `None` when clb should work standalone.
pub async fn connect(state_dir: Option<&Path>) -> Option<AgentProxy<'static>> {
    let conn = zbus::Connection::system().await.ok()?;
    let dbus = zbus::fdo::DBusProxy::new(&conn).await.ok()?;
    let name = zbus::names::BusName::try_from(super::BUS_NAME).ok()?;
    if !dbus.name_has_owner(name).await.ok()? {
        return None;
    }
    let proxy = AgentProxy::new(&conn).await.ok()?;
    let served = proxy.state_dir().await.ok()?;
    let same = match state_dir {
        None => served.is_empty(),
        Some(dir) => {
            !served.is_empty()
                && std::fs::canonicalize(dir).ok() == std::fs::canonicalize(&served).ok()
        }
    };
    if same {
        tracing::debug!("the clb daemon runs: working through it");
    }
    same.then_some(proxy)
}

/// A finished operation as the daemon reported it.
pub struct Finished {
    pub result: serde_json::Value,
}

/// Starts `kind` on the daemon and follows it to its end: a bar on a terminal (`bar`),
/// nothing else otherwise. Ctrl-C asks the daemon to cancel. A failure comes back with the
/// daemon's exit code.
pub async fn run(
    proxy: &AgentProxy<'static>,
    kind: OpKind,
    options: HashMap<&str, Value<'_>>,
    bar: bool,
) -> Result<Finished> {
    let mut completed = proxy.receive_completed().await.map_err(bus)?;
    let mut progress = proxy.receive_progress_changed().await;
    let started = match kind {
        OpKind::Check => proxy.check(options).await,
        OpKind::Download => proxy.download(options).await,
        OpKind::Upgrade => proxy.upgrade(options).await,
        OpKind::Apply => proxy.apply(options).await,
        OpKind::Rollback => proxy.rollback(options).await,
        OpKind::MarkGood => proxy.mark_good().await,
        OpKind::MarkBad => proxy.mark_bad().await,
    };
    started.map_err(refused)?;
    let bar = bar.then(|| {
        let b = ProgressBar::new(100);
        // A constant template known to be valid; the default style otherwise.
        if let Ok(style) = ProgressStyle::with_template("{prefix:>10} [{bar:30}] {pos:>3}% {msg}") {
            b.set_style(style.progress_chars("=> "));
        }
        b.set_prefix(kind.name());
        b
    });
    let mut cancelled = false;
    loop {
        tokio::select! {
            signal = completed.next() => {
                let Some(signal) = signal else {
                    return Err(ClbError::State("the clb daemon left the bus".into()));
                };
                let args = signal.args().map_err(bus)?;
                if args.operation != kind.name() {
                    continue;
                }
                if let Some(b) = &bar {
                    b.finish_and_clear();
                }
                if args.code != 0 {
                    return Err(ClbError::Daemon {
                        code: u8::try_from(args.code).unwrap_or(exit::FAILURE),
                        message: args.message.clone(),
                    });
                }
                let result = serde_json::from_str(&args.result).unwrap_or(serde_json::Value::Null);
                return Ok(Finished { result });
            }
            Some(change) = progress.next() => {
                if let (Some(b), Ok((percent, message, _))) = (&bar, change.get().await) {
                    b.set_position(u64::try_from(percent).unwrap_or(0));
                    b.set_message(message);
                }
            }
            _ = tokio::signal::ctrl_c(), if !cancelled => {
                cancelled = true;
                tracing::warn!("cancelling the daemon's {} operation", kind.name());
                let _ = proxy.cancel().await;
            }
        }
    }
}

fn bus(e: zbus::Error) -> ClbError {
    ClbError::State(format!("talking to the clb daemon: {e}"))
}

/// A refusal by the daemon, with the exit code its reason deserves.
fn refused(e: zbus::Error) -> ClbError {
    let zbus::Error::MethodError(name, message, _) = &e else {
        return bus(e);
    };
    let (name, message) = (name.to_string(), message.clone().unwrap_or_default());
    let code = match name.rsplit('.').next() {
        Some("Busy") => exit::LOCKED,
        Some("InvalidArgs") => exit::INVALID_INPUT,
        Some("AccessDenied") => exit::ACCESS_DENIED,
        _ => exit::FAILURE,
    };
    ClbError::Daemon { code, message }
}
