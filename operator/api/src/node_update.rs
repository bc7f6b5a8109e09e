//! `NodeUpdate`: one per Node, the node bridge's report of the host agent, and the
//! controller's requests to it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

const DIGEST_PATTERN: &str = "^sha256:[0-9a-f]{64}$";

/// The clb host agent of one node, as its node bridge reports it, and what the controller asks
/// the bridge to do. Named after the Node. The bridge creates it and writes the status; the
/// controller writes `spec.rollout` and `spec.request`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Each printcolumn(...) has its own `type_ = "string"`: not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "clb.dev",
    version = "v1alpha1",
    kind = "NodeUpdate",
    shortname = "clbnu",
    category = "clb",
    status = "NodeUpdateStatus",
    derive = "PartialEq",
    doc = "The clb host agent of one node as its node bridge reports it, and the rollout's requests to the bridge. Named after the Node.",
    validation = Rule::new("self.metadata.name == self.spec.nodeName").message("a NodeUpdate is named after its node: metadata.name must equal spec.nodeName").reason(Reason::FieldValueInvalid),
    printcolumn(
        name = "Rollout",
        type_ = "string",
        description = "The rollout that claimed the node last",
        json_path = ".spec.rollout"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        description = "What the host is doing",
        json_path = ".status.phase"
    ),
    printcolumn(
        name = "Booted",
        type_ = "string",
        description = "The digest running now (short)",
        json_path = ".status.booted.shortDigest"
    ),
    printcolumn(
        name = "Staged",
        type_ = "string",
        description = "The digest ready for the next boot (short)",
        json_path = ".status.staged.shortDigest"
    ),
    printcolumn(
        name = "Rolled Back",
        type_ = "boolean",
        description = "The last boot fell back to the previous slot",
        json_path = ".status.rolledBack"
    ),
    printcolumn(
        name = "Last Error",
        type_ = "string",
        description = "The class of the agent's last failure",
        json_path = ".status.lastError.class"
    ),
    printcolumn(
        name = "Booted Image",
        type_ = "string",
        json_path = ".status.booted.image",
        priority = 1
    ),
    printcolumn(
        name = "Reported",
        type_ = "date",
        description = "When the bridge last reported",
        json_path = ".status.lastReported",
        priority = 1
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpdateSpec {
    /// The Node this object reports on; always its name. Set by the node bridge when it creates
    /// the object; never changes.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("nodeName never changes").reason(Reason::FieldValueForbidden))]
    pub node_name: String,

    /// The rollout that claimed the node last (set by the controller with its first request).
    /// It holds the node while its record of the node is in progress; only one rollout acts on
    /// a node at a time. Absent: no rollout ever claimed the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub rollout: Option<String>,

    /// What the controller asks the bridge to do (see `status.request` for how it went).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<NodeRequest>,
}

/// A request from the controller to the node bridge. The bridge carries out each `id` once.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.id >= oldSelf.id").message("request ids never go down").reason(Reason::FieldValueInvalid))]
pub struct NodeRequest {
    /// Identifies the request: larger than every earlier one for this node. The bridge reports
    /// the outcome under the same id in `status.request`; a retry is a new id.
    #[schemars(range(min = 1))]
    pub id: i64,

    /// `Stage`: download and verify `image` at `digest` and make it ready to boot, while the
    /// node keeps serving (the boot pointer is only moved by `Reboot`). `Reboot`: boot into
    /// the staged `digest` now; refused when another digest is staged.
    pub action: RequestAction,

    /// The image reference the host agent pulls, pinned: `registry/repository@sha256:…` (a tag
    /// before the digest is allowed and kept for people to read).
    #[schemars(
        length(min = 1, max = 1024),
        regex(pattern = r"^[^\s]+@sha256:[0-9a-f]{64}$")
    )]
    pub image: String,

    /// The manifest digest (`sha256:…`) the node must stage or boot.
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub digest: String,
}

/// What the controller asks of the node bridge.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum RequestAction {
    /// Download, verify and stage the image; the node keeps serving.
    Stage,
    /// Reboot into the staged image.
    Reboot,
}

/// The host agent of the node, as the node bridge last read it (its D-Bus properties and
/// `GetStatus`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeUpdateStatus {
    /// What the host is doing: `Idle` (nothing running, nothing staged), `Busy` (the agent runs
    /// an operation, see `operation`), `Staged` (an image is ready for the next boot),
    /// `Rebooting` (the bridge asked the agent to reboot; until the node is back) or
    /// `Unreachable` (the bridge cannot reach the agent's D-Bus API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<HostPhase>,

    /// The slot running now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub booted: Option<SlotInfo>,

    /// The booted slot has been marked good (its boot succeeded; the host does this itself
    /// after `boot-complete.target`).
    #[serde(default)]
    pub marked_good: bool,

    /// The image ready for the next boot, if it differs from the booted one: a slot staged
    /// and made active, or a verified download that `Reboot` stages first (then without
    /// `slot`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staged: Option<SlotInfo>,

    /// The slot a failed boot of the active slot falls back to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<SlotInfo>,

    /// The last boot fell back: the slot in `rolledBackFrom` did not reach "boot good" and the
    /// boot loader or initrd went back to the previous slot.
    #[serde(default)]
    pub rolled_back: bool,

    /// The slot that failed to boot, when `rolledBack`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_from: Option<SlotInfo>,

    /// The agent's running operation (`idle`, `check`, `download`, `upgrade`, `apply`,
    /// `rollback`, `mark-good`, `mark-bad`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub operation: Option<String>,

    /// The running operation's progress.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<OperationProgress>,

    /// The agent's last failure; absent after a success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<LastError>,

    /// The agent's update strategy (`immediate`, `periodic`, `fleet_lock` or `coordinated`).
    /// Nodes in a rollout should use `coordinated`, so that only the rollout reboots them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub strategy: Option<String>,

    /// The outcome of the latest request the bridge took up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<RequestStatus>,

    /// When the bridge last wrote this status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reported: Option<Time>,
}

/// What a host is doing.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum HostPhase {
    /// Nothing running and nothing staged.
    Idle,
    /// The agent runs an operation.
    Busy,
    /// An image is ready for the next boot.
    Staged,
    /// The bridge asked the agent to reboot; until the node is back.
    Rebooting,
    /// The bridge cannot reach the agent's D-Bus API.
    Unreachable,
}

/// One slot (or a verified download) of the host.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SlotInfo {
    /// The slot: `a`, `b` or `recovery`; absent for a download not staged into a slot yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16))]
    pub slot: Option<String>,

    /// The image reference it was staged (or downloaded) from.
    #[schemars(length(max = 1024))]
    pub image: String,

    /// Its manifest digest (`sha256:…`).
    #[schemars(regex(pattern = DIGEST_PATTERN))]
    pub digest: String,

    /// The digest's first 12 hex digits, for `kubectl get`.
    #[serde(default)]
    #[schemars(length(max = 12))]
    pub short_digest: String,
}

impl SlotInfo {
    /// A slot with its short digest filled in from `digest`.
    pub fn new(slot: Option<String>, image: String, digest: String) -> SlotInfo {
        let short_digest = short_digest(&digest);
        SlotInfo {
            slot,
            image,
            digest,
            short_digest,
        }
    }
}

/// The first 12 hex digits of a `sha256:…` digest (the whole text after the algorithm if it is
/// shorter).
pub fn short_digest(digest: &str) -> String {
    let hex = digest.split_once(':').map_or(digest, |(_, hex)| hex);
    hex.chars().take(12).collect()
}

/// The progress of the agent's running operation (its `Progress` property).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OperationProgress {
    /// Percent done; never goes down within an operation, 100 when it ended well.
    #[schemars(range(min = 0, max = 100))]
    pub percent: i32,

    /// What the agent is doing (the phase, or the layer it fetches).
    #[serde(default)]
    #[schemars(length(max = 1024))]
    pub message: String,
}

/// The agent's last failure (its `LastError` property).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LastError {
    /// The exit code `clb` would have returned (see docs/cli.md).
    pub code: i32,

    /// The code's name, for machines: `registry-unreachable`, `verification-failed`, …
    #[schemars(length(max = 64))]
    pub class: String,

    /// For people.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub message: String,
}

/// How the bridge is getting on with a request.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RequestStatus {
    /// The `spec.request.id` this is about.
    #[schemars(range(min = 1))]
    pub id: i64,

    /// The request's action.
    pub action: RequestAction,

    /// `Running` (taken up, the agent works on it; after a reboot, until the node is back),
    /// `Succeeded` or `Failed` (see `message` and `lastError`).
    pub state: RequestState,

    /// For people: what failed, or what the bridge waits for.
    #[serde(default)]
    #[schemars(length(max = 4096))]
    pub message: String,

    /// When the bridge took the request up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,

    /// When the request ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
}

/// How a request is going.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum RequestState {
    /// Taken up; the agent works on it.
    Running,
    /// Done.
    Succeeded,
    /// Gave up (see the message).
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_digest_is_twelve_hex_digits() {
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        assert_eq!(short_digest(&digest), "0123456789ab");
        assert_eq!(short_digest("sha256:abc"), "abc");
        let slot = SlotInfo::new(Some("b".into()), "os:v2".into(), digest);
        assert_eq!(slot.short_digest, "0123456789ab");
    }
}
