//! `clb daemon`: the host agent as a service on the system bus. It owns the versioned D-Bus
//! interface [`INTERFACE`] (methods return at once; progress and results come as properties
//! and the `Completed` signal, as RAUC's Installer does), runs one operation at a time, and
//! follows the configured update strategy on its own.
//!
//! Data flows one way: the bus interface and the update loop hand [`ops::OpRequest`]s to the
//! [`ops::Runner`], which calls the library; nothing here writes the store itself.

pub mod access;
pub mod client;
pub mod interface;
pub mod ops;
pub mod policy;

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::{self, ConfigHolder};
use crate::error::{ClbError, Result};
use crate::target::Target;

/// The well-known bus name the daemon owns.
pub const BUS_NAME: &str = "dev.clb.Agent";
/// The object the interface lives on.
pub const OBJECT_PATH: &str = "/dev/clb/Agent";
/// The interface name; the trailing number is its version (a change that removes or
/// retypes a member gets a new interface next to the old one).
pub const INTERFACE: &str = "dev.clb.Agent1";

/// Where the daemon keeps its state and configuration.
#[derive(Debug, Clone)]
pub struct DaemonOptions {
    /// A directory laid out like COS_STATE instead of the host's partition (tests, chroots).
    pub state_dir: Option<PathBuf>,
    pub state_label: String,
    /// `/etc/clb`: `config.yaml` and `config.d/`.
    pub config_dir: PathBuf,
    /// Run the update loop (check, download, stage, reboot per strategy).
    pub updates: bool,
    /// With `state_dir` only, for tests and simulations: the slot to report as booted (a
    /// state directory has none), as if the machine had booted it. See
    /// [`SimulatedBoot`].
    pub booted_slot: Option<SimulatedBoot>,
}

/// The booted slot `clb daemon --booted-slot` simulates on a state directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimulatedBoot {
    /// This slot.
    Slot(clb_ondisk::SlotName),
    /// The slot the boot state names active when the daemon starts: a reboot into what was
    /// staged (read once at start, so a later `Apply` does not move it).
    Active,
}

impl DaemonOptions {
    /// Opens the state the daemon works on, with the simulated booted slot (resolved by
    /// [`run`] at start) on a state directory. Blocking: call it from `crate::blocking`.
    pub fn open_target(&self, writable: bool) -> Result<Target> {
        let booted = match self.booted_slot {
            Some(SimulatedBoot::Slot(slot)) => Some(slot),
            Some(SimulatedBoot::Active) | None => None,
        };
        Ok(
            Target::open(self.state_dir.as_deref(), None, &self.state_label, writable)?
                .simulate_booted(booted),
        )
    }

    /// Checks `booted_slot` is used with a state directory, and resolves `Active` to the slot
    /// the boot state names now.
    fn resolve_booted_slot(mut self) -> Result<Self> {
        match self.booted_slot {
            None => return Ok(self),
            Some(_) if self.state_dir.is_none() => {
                return Err(ClbError::Invalid(
                    "--booted-slot simulates a boot on a --state-dir only; a host reports the slot it booted".into(),
                ));
            }
            Some(SimulatedBoot::Slot(_)) => {}
            Some(SimulatedBoot::Active) => {
                let target = self.open_target(false)?;
                let state = target.store().read_bootstate()?.ok_or_else(|| {
                    ClbError::State(
                        "--booted-slot active: nothing installed in the state directory".into(),
                    )
                })?;
                self.booted_slot = Some(SimulatedBoot::Slot(state.active));
            }
        }
        if let Some(SimulatedBoot::Slot(slot)) = self.booted_slot {
            tracing::warn!(
                slot = slot.as_str(),
                "simulating a boot of this slot (--booted-slot)"
            );
        }
        Ok(self)
    }
}

/// Serves the interface until SIGTERM/SIGINT; SIGHUP re-reads the configuration (a bad file
/// keeps the last good one).
pub async fn run(opts: DaemonOptions) -> Result<()> {
    let opts = crate::blocking(move || opts.resolve_booted_slot()).await?;
    let dir = opts.config_dir.clone();
    let holder = crate::blocking(move || Ok(ConfigHolder::open(dir)?)).await?;
    for w in &holder.current().warnings {
        tracing::warn!("{w}");
    }
    let runner = Arc::new(ops::Runner::new(opts.clone(), holder));
    let conn = interface::serve(runner.clone()).await?;
    runner.refresh_host_view().await;
    tracing::info!(name = BUS_NAME, path = OBJECT_PATH, "serving {INTERFACE}");
    notify_ready();

    let updates = opts
        .updates
        .then(|| tokio::spawn(policy::update_loop(runner.clone())));
    wait_for_signals(&runner).await?;
    if let Some(task) = updates {
        task.abort();
    }
    runner.shutdown().await;
    drop(conn);
    Ok(())
}

async fn wait_for_signals(runner: &ops::Runner) -> Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let io = |e| ClbError::io("installing signal handlers")(e);
    let mut term = signal(SignalKind::terminate()).map_err(io)?;
    let mut int = signal(SignalKind::interrupt()).map_err(io)?;
    let mut hup = signal(SignalKind::hangup()).map_err(io)?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                if let Err(e) = runner.reload().await {
                    tracing::error!(error = %e, "configuration not reloaded; keeping the last good one");
                }
            }
        }
    }
}

/// Tells systemd (Type=notify) that the bus name is owned; nothing when not under systemd.
fn notify_ready() {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let socket = match std::os::unix::net::UnixDatagram::unbound() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "sd_notify: no socket");
            return;
        }
    };
    let bytes = path.as_encoded_bytes();
    // An abstract socket is written with a leading '@' in NOTIFY_SOCKET.
    let sent = if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name)
            .and_then(|addr| socket.send_to_addr(b"READY=1", &addr))
    } else {
        socket.send_to(b"READY=1", &path)
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, "sd_notify READY=1 failed");
    }
}

/// The config directory's default.
pub fn default_config_dir() -> PathBuf {
    PathBuf::from(config::DEFAULT_DIR)
}
