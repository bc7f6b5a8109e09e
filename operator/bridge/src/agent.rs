//! The bridge's side of the host agent's D-Bus API (`dev.clb.Agent1`, docs/daemon.md): a
//! small proxy of the members the bridge uses, a snapshot of the agent's state (its
//! properties and `GetStatus`), and the stream of what the agent signals.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use zbus::Variant as Value;

use crate::BridgeError;

/// The bus name the agent owns.
pub const BUS_NAME: &str = "dev.clb.Agent";
/// The object the interface lives on.
pub const OBJECT_PATH: &str = "/dev/clb/Agent";
/// The interface (version 1).
pub const INTERFACE: &str = "dev.clb.Agent1";
/// The error the agent answers while another operation runs (nothing was queued).
pub const BUSY_ERROR: &str = "dev.clb.Agent1.Error.Busy";

#[zbus::proxy(
    interface = "dev.clb.Agent1",
    default_service = "dev.clb.Agent",
    default_path = "/dev/clb/Agent"
)]
pub trait Agent {
    fn download(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn apply(&self, options: HashMap<&str, Value<'_>>) -> zbus::Result<()>;
    fn get_status(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn operation(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn progress(&self) -> zbus::Result<(i32, String, i32)>;
    #[zbus(property)]
    fn last_error(&self) -> zbus::Result<(i32, String, String)>;
    #[zbus(property)]
    fn downloaded_digest(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn strategy(&self) -> zbus::Result<String>;
    #[zbus(signal)]
    fn completed(
        &self,
        operation: String,
        code: i32,
        message: String,
        result: String,
    ) -> zbus::Result<()>;
}

/// The host status document `GetStatus` returns (docs/status.schema.json), the fields the
/// bridge reports.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct HostStatus {
    #[serde(default)]
    pub active: Option<String>,
    #[serde(default)]
    pub booted: Option<String>,
    #[serde(default)]
    pub fallback: Option<String>,
    #[serde(default)]
    pub good: bool,
    #[serde(default)]
    pub rolled_back: bool,
    #[serde(default)]
    pub failed_slot: Option<String>,
    #[serde(default)]
    pub download: Option<ImageRef>,
    #[serde(default)]
    pub slots: BTreeMap<String, ImageRef>,
}

/// An installed slot or a verified download: where it came from and its digest.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct ImageRef {
    pub image: String,
    pub digest: String,
}

/// What the agent says about itself at one moment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AgentState {
    /// `idle` or the running operation.
    pub operation: String,
    /// Percent and message of the running operation.
    pub progress: (i32, String),
    /// Exit code, class and message of the last failure; code 0 after a success.
    pub last_error: (i32, String, String),
    /// The verified download waiting for `Apply` (`""`: none).
    pub downloaded_digest: String,
    pub strategy: String,
    pub status: HostStatus,
}

impl AgentState {
    /// The slot by name, if it is installed.
    pub fn slot(&self, name: Option<&str>) -> Option<&ImageRef> {
        name.and_then(|n| self.status.slots.get(n))
    }

    /// The digest of the slot running now.
    pub fn booted_digest(&self) -> Option<&str> {
        self.slot(self.status.booted.as_deref())
            .map(|s| s.digest.as_str())
    }

    /// The digest of the slot the next boot tries.
    pub fn active_digest(&self) -> Option<&str> {
        self.slot(self.status.active.as_deref())
            .map(|s| s.digest.as_str())
    }

    pub fn is_idle(&self) -> bool {
        self.operation == "idle" || self.operation.is_empty()
    }
}

/// What the agent signalled.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// A property changed (the bridge re-reads them all).
    Changed,
    /// An operation ended (`code` 0: success).
    Completed {
        operation: String,
        code: i32,
        message: String,
    },
    /// The agent's bus name got a new owner or lost it (a restart).
    OwnerChanged,
}

type EventStream = Pin<Box<dyn Stream<Item = AgentEvent> + Send>>;

/// A connection to the bus with the agent's proxy and its signals.
pub struct AgentLink {
    pub proxy: AgentProxy<'static>,
    events: EventStream,
}

impl AgentLink {
    /// Connects to the bus at `address` and subscribes to the agent's signals (before any
    /// read, so nothing between the first read and the subscription is missed).
    pub async fn connect(address: &str) -> Result<AgentLink, BridgeError> {
        let dbus = |e| BridgeError::Dbus {
            what: "connecting to the system bus",
            source: e,
        };
        let conn = zbus::connection::Builder::address(address)
            .build()
            .await
            .map_err(dbus)?;
        let sub = |e| BridgeError::Dbus {
            what: "subscribing to the agent's signals",
            source: e,
        };
        let proxy = AgentProxy::builder(&conn)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(sub)?;
        let props = zbus::fdo::PropertiesProxy::builder(&conn)
            .destination(BUS_NAME)
            .path(OBJECT_PATH)
            .build()
            .await
            .map_err(sub)?;
        let bus = zbus::fdo::DBusProxy::new(&conn).await.map_err(sub)?;
        let changed = props
            .receive_properties_changed()
            .await
            .map_err(sub)?
            .map(|_| AgentEvent::Changed);
        let completed = proxy.receive_completed().await.map_err(sub)?.map(|signal| {
            match signal.args() {
                Ok(a) => AgentEvent::Completed {
                    operation: a.operation,
                    code: a.code,
                    message: a.message,
                },
                // A malformed signal still means something happened: re-read.
                Err(_) => AgentEvent::Changed,
            }
        });
        let owner = bus
            .receive_name_owner_changed_with_args(&[(0, BUS_NAME)])
            .await
            .map_err(sub)?
            .map(|_| AgentEvent::OwnerChanged);
        let events =
            futures_util::stream::select(futures_util::stream::select(changed, completed), owner);
        Ok(AgentLink {
            proxy,
            events: Box::pin(events),
        })
    }

    /// The next signal; `None` when the connection is gone.
    pub async fn next_event(&mut self) -> Option<AgentEvent> {
        self.events.next().await
    }

    /// Reads the agent's properties and status document.
    pub async fn state(&self) -> Result<AgentState, BridgeError> {
        let read = |e| BridgeError::Dbus {
            what: "reading the agent's state",
            source: e,
        };
        let p = &self.proxy;
        let json = p.get_status().await.map_err(read)?;
        let status: HostStatus =
            serde_json::from_str(&json).map_err(BridgeError::StatusDocument)?;
        let (percent, message, _depth) = p.progress().await.map_err(read)?;
        Ok(AgentState {
            operation: p.operation().await.map_err(read)?,
            progress: (percent, message),
            last_error: p.last_error().await.map_err(read)?,
            downloaded_digest: p.downloaded_digest().await.map_err(read)?,
            strategy: p.strategy().await.map_err(read)?,
            status,
        })
    }

    /// `Download` of `image` (verified per the agent's configuration; no boot pointer moves).
    pub async fn download(&self, image: &str) -> Result<(), CallError> {
        let mut options = HashMap::new();
        options.insert("image", Value::from(image));
        self.proxy.download(options).await.map_err(CallError::from)
    }

    /// `Apply` with `reboot`: stages the download and reboots into it.
    pub async fn apply_and_reboot(&self) -> Result<(), CallError> {
        let mut options = HashMap::new();
        options.insert("reboot", Value::from(true));
        self.proxy.apply(options).await.map_err(CallError::from)
    }
}

/// Why a call that starts an operation did not start it.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Another operation runs: try again later.
    #[error("the agent is busy: {0}")]
    Busy(String),
    /// The agent refused the call (access denied, invalid arguments, failed at once).
    #[error("the agent refused: {name}: {message}")]
    Refused { name: String, message: String },
    /// The call did not reach the agent or its answer did not come back.
    #[error("calling the agent: {0}")]
    Transport(zbus::Error),
}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => {
                let message = message.unwrap_or_default();
                if name.as_str() == BUSY_ERROR {
                    CallError::Busy(message)
                } else if name.as_str().starts_with("dev.clb.Agent1.Error.") {
                    CallError::Refused {
                        name: name.to_string(),
                        message,
                    }
                } else {
                    // org.freedesktop.DBus.Error.ServiceUnknown, NoReply…: not the agent's
                    // answer.
                    CallError::Transport(zbus::Error::Failure(format!("{name}: {message}")))
                }
            }
            other => CallError::Transport(other),
        }
    }
}
