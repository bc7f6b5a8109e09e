//! `Rollout`: roll the nodes a selector picks to one OS image, canary first, then in waves.
//!
//! Integers are `i32` with a schema minimum of 0, as the Kubernetes API conventions ask
//! (`format: int32`; an unsigned type would give `format: uint32`, which OpenAPI 3.0 does not
//! know and API servers from 1.36 on warn about).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::duration::Duration;

/// Roll the nodes that `nodeSelector` picks to `image`: stage it on each node while the node
/// still serves, then cordon, drain, reboot into it and check the node's health, a canary
/// first and then in waves that never make more than `maxUnavailable` nodes unavailable.
/// Halts when more than `failureBudget` nodes fail. Nodes must run the clb host agent and the
/// clb node bridge.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
// Each printcolumn(...) has its own `type_ = "string"`: not a duplicate.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "clb.dev",
    version = "v1alpha1",
    kind = "Rollout",
    shortname = "clbro",
    category = "clb",
    status = "RolloutStatus",
    derive = "PartialEq",
    doc = "A fleet rollout of a clb OS image: canary first, then waves within maxUnavailable, halted by a failure budget.",
    printcolumn(name = "Image", type_ = "string", json_path = ".spec.image"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Updated",
        type_ = "string",
        description = "Nodes updated / nodes selected",
        json_path = ".status.updatedText"
    ),
    printcolumn(
        name = "Failed",
        type_ = "integer",
        description = "Nodes failed (left on their previous image, uncordoned)",
        json_path = ".status.counts.failed"
    ),
    printcolumn(
        name = "Quarantined",
        type_ = "integer",
        description = "Nodes quarantined after a failed reboot",
        json_path = ".status.counts.quarantined"
    ),
    printcolumn(
        name = "Digest",
        type_ = "string",
        description = "The digest the image was pinned to",
        json_path = ".status.pinnedDigest",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// The OS image to roll out: `registry/repository:tag` or `registry/repository@sha256:…`.
    /// A tag is resolved to a digest once, when the rollout (or this field) changes, and every
    /// node gets that digest (`status.pinnedDigest`), even if the tag moves meanwhile. Changing
    /// the image starts a new rollout; rolling back is a rollout to the previous image.
    #[schemars(length(min = 1, max = 1024), regex(pattern = r"^[^\s]+$"))]
    pub image: String,

    /// Which nodes to roll (matchLabels and matchExpressions, as a Deployment's selector).
    /// `{}` selects every node. A node that matches but runs no clb node bridge is never
    /// started and keeps the rollout from completing.
    #[schemars(schema_with = "crate::rollout::node_selector_schema")]
    pub node_selector: LabelSelector,

    /// The first wave, and how long it must stay healthy before the other waves start.
    #[serde(default)]
    pub canary: Canary,

    /// How many selected nodes may be unavailable at once: an integer, or a percent of the
    /// selected nodes (`10%`, rounded down). Unavailable counts the nodes this rollout has
    /// cordoned and every selected node that is NotReady or cordoned for any other reason. At
    /// least one node at a time is rolled, whatever this says.
    #[serde(default = "default_max_unavailable")]
    #[schemars(schema_with = "crate::rollout::max_unavailable_schema")]
    pub max_unavailable: IntOrString,

    /// How many nodes may fail (failed plus quarantined) before the rollout halts: with more
    /// than this many, no new node starts, the nodes in progress finish, and the condition
    /// `Halted` names the failed nodes.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failure_budget: i32,

    /// How a node's pods are evicted before its reboot.
    #[serde(default)]
    pub drain: Drain,

    /// When a rebooted node counts as healthy, so that the rollout uncordons it and goes on.
    #[serde(default)]
    pub health_check: HealthCheck,

    /// When new nodes may start; absent: at any time. A node already in progress finishes
    /// outside the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,

    /// Start no new node while true; nodes in progress finish.
    #[serde(default)]
    pub paused: bool,
}

fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

/// The first wave.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Canary {
    /// How many nodes form the canary (in node name order); 0: no canary, the waves start at
    /// once. A failed canary node is replaced by the next one; the failure budget decides when
    /// to stop.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub nodes: i32,

    /// How long the other waves wait after the last canary node was updated, for example
    /// `10m` or `1h30m`.
    #[serde(default)]
    pub soak: Duration,
}

impl Default for Canary {
    fn default() -> Self {
        Canary {
            nodes: 0,
            soak: Duration::ZERO,
        }
    }
}

/// How a node is drained.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Drain {
    /// How long the evictions may take, for example `5m`. Evictions refused by a
    /// PodDisruptionBudget are retried until then; past it the node is uncordoned, left on its
    /// previous image and counted as failed.
    #[serde(default = "default_drain_timeout")]
    pub timeout: Duration,

    /// Leave pods of DaemonSets running (they would be recreated on the node at once); when
    /// false, a node with DaemonSet pods cannot be drained.
    #[serde(default = "yes")]
    pub ignore_daemon_sets: bool,

    /// Evict pods that use emptyDir volumes (their data is lost); when false, a node with
    /// such pods cannot be drained.
    #[serde(default)]
    pub delete_empty_dir_data: bool,

    /// Also evict pods that no controller manages (they are not recreated anywhere); when
    /// false, a node with such pods cannot be drained.
    #[serde(default)]
    pub force: bool,
}

fn default_drain_timeout() -> Duration {
    Duration::from_mins(5)
}

fn yes() -> bool {
    true
}

impl Default for Drain {
    fn default() -> Self {
        Drain {
            timeout: default_drain_timeout(),
            ignore_daemon_sets: true,
            delete_empty_dir_data: false,
            force: false,
        }
    }
}

/// When a rebooted node is healthy. It must always have booted the pinned digest with its slot
/// marked good by the host agent; these add to that.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheck {
    /// Require the Node's `Ready` condition.
    #[serde(default = "yes")]
    pub node_ready: bool,

    /// Require every pod on the node to be ready.
    #[serde(default = "yes")]
    pub pods_ready: bool,

    /// How long the node must stay healthy before it counts as updated: from when its pods
    /// became ready, or (without `podsReady`) from when it came back on the new image.
    #[serde(default = "default_min_ready_seconds")]
    #[schemars(range(min = 0, max = 86400))]
    pub min_ready_seconds: i32,

    /// How long a node may take to come back on the new image after the reboot request, and
    /// again to pass the checks above, for example `15m`; past it the node is quarantined.
    /// Absent: wait for ever (a node that never comes back then holds its place in the wave
    /// until a person acts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

fn default_min_ready_seconds() -> i32 {
    60
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            node_ready: true,
            pods_ready: true,
            min_ready_seconds: default_min_ready_seconds(),
            timeout: None,
        }
    }
}

/// A weekly maintenance window.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.start != self.end").message("the window's start and end must differ").reason(Reason::FieldValueInvalid))]
pub struct Window {
    /// The days the window opens on (`Mon` … `Sun`); absent: every day. A window that runs
    /// past midnight belongs to the day it opens.
    #[serde(default = "every_day")]
    #[schemars(length(min = 1, max = 7), extend("x-kubernetes-list-type" = "set"))]
    pub days: Vec<Weekday>,

    /// When the window opens, `HH:MM` on the 24-hour clock (inclusive).
    #[schemars(regex(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub start: String,

    /// When the window closes, `HH:MM` (exclusive); earlier than `start` means the next day.
    #[schemars(regex(pattern = "^([01][0-9]|2[0-3]):[0-5][0-9]$"))]
    pub end: String,

    /// The time zone of `days`, `start` and `end`: an IANA name such as `Europe/Berlin`, or
    /// `UTC`. An unknown name keeps every node from starting (the `Progressing` condition says
    /// so).
    #[serde(default = "utc")]
    #[schemars(
        length(min = 1, max = 64),
        regex(pattern = "^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")
    )]
    pub time_zone: String,
}

fn every_day() -> Vec<Weekday> {
    Weekday::ALL.to_vec()
}

fn utc() -> String {
    "UTC".to_string()
}

/// A day of the week.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Monday to Sunday.
    pub const ALL: [Weekday; 7] = [
        Weekday::Mon,
        Weekday::Tue,
        Weekday::Wed,
        Weekday::Thu,
        Weekday::Fri,
        Weekday::Sat,
        Weekday::Sun,
    ];
}

/// The rollout as the controller last saw and drove it.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The `metadata.generation` of the spec this status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// The `spec.image` that `pinnedDigest` was resolved from. When `spec.image` changes, a
    /// new rollout begins: the tag is resolved again and the node records start over.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// The manifest digest (`sha256:…`) every node is rolled to, resolved once from `image`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = "^sha256:[0-9a-f]{64}$"))]
    pub pinned_digest: Option<String>,

    /// Where the rollout stands: `Pending` (the image is not resolved yet), `Progressing`,
    /// `Paused`, `Halted` (more nodes failed than the failure budget allows) or `Complete`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RolloutPhase>,

    /// How many selected nodes are in each phase.
    #[serde(default)]
    pub counts: PhaseCounts,

    /// `updated/total`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_text: Option<String>,

    /// Selected nodes unavailable now: cordoned by this rollout, or NotReady or cordoned for
    /// any other reason.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub unavailable: i32,

    /// `spec.maxUnavailable` resolved against the selected nodes.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub max_unavailable: i32,

    /// The current wave: the nodes in progress (staging, draining, rebooting, verifying), by
    /// name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub current_wave: Vec<String>,

    /// The nodes that failed or were quarantined in this rollout, by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "atomic"))]
    pub failed_nodes: Vec<String>,

    /// `Progressing`, `Halted`, `Complete` and `Paused`, each `True` or `False` with a
    /// CamelCase reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// The controller's record of every node this rollout has touched (a node absent here is
    /// `Pending`): what the rollout resumes from after a restart of the controller.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub nodes: Vec<NodeRecord>,
}

/// Where a rollout stands.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum RolloutPhase {
    /// The image is not resolved to a digest yet (or cannot be: see the conditions).
    Pending,
    /// Nodes are being rolled, or wait for their turn.
    Progressing,
    /// `spec.paused`: no new node starts.
    Paused,
    /// More nodes failed than the failure budget allows: no new node starts.
    Halted,
    /// Every selected node is updated, failed, quarantined or skipped.
    Complete,
}

/// How many selected nodes are in each phase.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct PhaseCounts {
    /// Nodes the selector picks.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub total: i32,
    /// Not started yet.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub pending: i32,
    /// Not started and never will be: they carry the quarantine label.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub skipped: i32,
    /// The host agent downloads and stages the image; the node still serves.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub staging: i32,
    /// Staged, waiting for room within maxUnavailable to be cordoned.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub staged: i32,
    /// Cordoned, pods being evicted.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub draining: i32,
    /// Asked to reboot into the image.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub rebooting: i32,
    /// Booted the image, waiting for the health check.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub verifying: i32,
    /// Done: on the image, healthy, uncordoned.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub updated: i32,
    /// Given up before the reboot; left serving on the previous image, uncordoned.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub failed: i32,
    /// Failed after the reboot; labelled and tainted until a person clears it.
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub quarantined: i32,
}

/// The rollout's record of one node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeRecord {
    /// The Node's name.
    pub name: String,

    /// The node's phase in this rollout: `Pending`, `Staging`, `Staged`, `Draining`,
    /// `Rebooting`, `Verifying`, `Updated`, `Failed` or `Quarantined`.
    pub phase: NodePhase,

    /// When the node entered `phase`.
    pub since: Time,

    /// Why the node failed (with `Failed` and `Quarantined`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<NodeFailure>,

    /// When the drain began (from `Draining` on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drain_started_at: Option<Time>,
}

/// A node's phase in a rollout (see the state machine in docs/operator.md).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum NodePhase {
    /// Not started by this rollout.
    Pending,
    /// The host agent was asked to download and stage the image; the node still serves.
    Staging,
    /// Staged, waiting for room within maxUnavailable to be cordoned.
    Staged,
    /// Cordoned; its pods are being evicted.
    Draining,
    /// The host agent was asked to reboot into the image.
    Rebooting,
    /// Booted on the image; waiting for the health check.
    Verifying,
    /// Done: booted on the image, healthy, uncordoned.
    Updated,
    /// Given up before the reboot; left serving on its previous image, uncordoned.
    Failed,
    /// Failed after its reboot; labelled and tainted until a person removes the label.
    Quarantined,
}

/// Why a rollout gave up on a node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct NodeFailure {
    /// `StageFailed` (the host agent could not download, verify or stage the image),
    /// `DrainTimeout` (the drain did not finish within `drain.timeout`), `RebootFailed` (the
    /// host agent refused or failed the reboot), `RolledBack` (the node
    /// fell back to its previous image on its own) or `VerifyTimeout` (the node did not come
    /// back healthy within `healthCheck.timeout`).
    pub reason: FailureReason,

    /// For people: what happened, with the host agent's message when there is one.
    #[serde(default)]
    pub message: String,
}

/// Why a rollout gave up on a node.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[schemars(transform = crate::without_description)]
pub enum FailureReason {
    /// The host agent could not download, verify or stage the image; the node never left
    /// service.
    StageFailed,
    /// The drain did not finish within `drain.timeout`.
    DrainTimeout,
    /// The host agent refused or failed the reboot into the image; the node did not boot it
    /// and was uncordoned on its previous image.
    RebootFailed,
    /// The node fell back to its previous image on its own.
    RolledBack,
    /// The node did not come back healthy on the image within `healthCheck.timeout`.
    VerifyTimeout,
}

/// The `maxUnavailable` schema: an integer of at least 0, or a percent from `0%` to `100%`
/// (Kubernetes' int-or-string, whose schema from k8s-openapi says nothing about the values).
/// `nullable: false` so that a `null` is pruned and defaulted instead of stored.
pub(crate) fn max_unavailable_schema(
    _: &mut schemars::generate::SchemaGenerator,
) -> schemars::Schema {
    schemars::json_schema!({
        "x-kubernetes-int-or-string": true,
        "minimum": 0,
        "pattern": "^(100|[1-9]?[0-9])%$",
        "nullable": false
    })
}

/// The `nodeSelector` schema: a LabelSelector whose operators and sizes are checked, since the
/// API server checks selectors of its own kinds but not those inside custom resources.
pub(crate) fn node_selector_schema(
    _: &mut schemars::generate::SchemaGenerator,
) -> schemars::Schema {
    schemars::json_schema!({
        "type": "object",
        "properties": {
            "matchLabels": {
                "description": "Labels a node must carry, with these values.",
                "type": "object",
                "maxProperties": 64,
                "additionalProperties": {"type": "string", "maxLength": 63}
            },
            "matchExpressions": {
                "description": "Requirements a node's labels must all meet.",
                "type": "array",
                "maxItems": 64,
                "x-kubernetes-list-type": "atomic",
                "items": {
                    "type": "object",
                    "required": ["key", "operator"],
                    "properties": {
                        "key": {
                            "description": "The label key.",
                            "type": "string",
                            "minLength": 1,
                            "maxLength": 317
                        },
                        "operator": {
                            "description": "`In`, `NotIn`, `Exists` or `DoesNotExist`.",
                            "type": "string",
                            "enum": ["In", "NotIn", "Exists", "DoesNotExist"]
                        },
                        "values": {
                            "description": "The values for `In` and `NotIn` (at least one); empty for `Exists` and `DoesNotExist`.",
                            "type": "array",
                            "maxItems": 64,
                            "x-kubernetes-list-type": "atomic",
                            "items": {"type": "string", "maxLength": 63}
                        }
                    },
                    "x-kubernetes-validations": [{
                        "rule": "(self.operator in ['In', 'NotIn']) == (has(self.values) && size(self.values) > 0)",
                        "message": "In and NotIn need values; Exists and DoesNotExist take none",
                        "reason": "FieldValueInvalid"
                    }]
                }
            }
        },
        "x-kubernetes-map-type": "atomic"
    })
}
