//! The clb node bridge: runs as a DaemonSet pod on each clb host, talks to the host agent
//! (`clb daemon`, D-Bus `dev.clb.Agent1` on the system bus reached through a mounted socket,
//! docs/daemon.md) and to the Kubernetes API, and is the only thing that connects the two:
//! the agent has no Kubernetes code, the operator no D-Bus.
//!
//! # What it does
//!
//! - **Its node's `NodeUpdate`.** At start (and whenever the object disappears) it creates
//!   the `NodeUpdate` named after the node with `spec.nodeName` (server-side apply, field
//!   manager [`clb_operator_api::BRIDGE_MANAGER`]; applying again is a no-op), and watches
//!   that one object.
//! - **Status.** It reads the agent's properties and its `GetStatus` document and reports them
//!   in `status` (see [`report::from_agent`]): `phase` (`Busy` while an operation runs,
//!   `Staged` when an image other than the booted one is ready, `Rebooting` while a `Reboot`
//!   request waits for the node to come back, `Unreachable` when the agent cannot be read,
//!   `Idle` otherwise), the `booted`, `staged` and `rollback` slots, `markedGood`,
//!   `rolledBack`/`rolledBackFrom`, `operation`, `progress`, `lastError`, `strategy`, and
//!   `lastReported`. It follows `PropertiesChanged`, `Completed` and the owner of the agent's
//!   bus name, so a change shows within a second, and re-reads everything every `--resync`
//!   period. API requests are counted per node, so it writes only what changed: a change
//!   other than progress at once (after a short pause that gathers a burst of signals into
//!   one write), progress at most every 5 s, and otherwise nothing but a heartbeat (a write
//!   that only moves `lastReported`) every `--heartbeat` period.
//! - **Requests** (the protocol in `clb_operator_api`'s crate doc). When `spec.request.id` is
//!   larger than `status.request.id`, it first records `status.request = {id, action,
//!   Running, startedAt}`, then calls the agent: `Stage` → `Download` of the pinned image
//!   (verified as the agent's configuration says; the boot pointer does not move);
//!   `Reboot` → `Apply` with `reboot`, only when the agent's verified download is the
//!   requested digest (else the request fails at once, saying what is there), or
//!   `Succeeded` at once when the node already runs it. The outcome goes under the same id:
//!   `Stage` succeeds when the download ends with the requested digest; `Reboot` stays
//!   `Running` (phase `Rebooting`) after the agent staged it and asked logind to reboot,
//!   until the node runs the digest (`Succeeded`) or fell back (`Failed`, "rolled back").
//!   A failed operation gives `Failed` with the agent's message, and `lastError` carries its
//!   class. An agent busy with another operation (`dev.clb.Agent1.Error.Busy`) is asked again
//!   every few seconds; that is not a failure.
//! - **At most once.** An id is taken up only when it is larger than the one in the status
//!   (and than any this process took up). After a restart of the bridge or a reboot of the
//!   node, a request found `Running` is never started again: it is finished from what the
//!   agent reports ([`report::verdict`]: `Stage` succeeded when the download is the digest;
//!   `Reboot` succeeded when the booted slot holds it, failed when the node rolled back,
//!   still running while the digest is staged for the next boot), or failed as interrupted.
//!
//! Blocking work never runs on the runtime: everything here is async I/O (D-Bus through
//! zbus, the API through kube). SIGTERM ends it cleanly.

pub mod agent;
mod bridge;
pub mod report;

pub use bridge::{Options, run};

/// What can stop the bridge or one of its steps.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("{what}: {source}")]
    Dbus {
        what: &'static str,
        #[source]
        source: zbus::Error,
    },
    #[error("the agent's status document is not what docs/status.schema.json describes: {0}")]
    StatusDocument(#[source] serde_json::Error),
    #[error("{what}: {source}")]
    Kube {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("the watch of the NodeUpdate ended")]
    WatchEnded,
}
