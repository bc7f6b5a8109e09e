//! What the controller observed: one record per node the rollout's selector matches, plus the
//! time and whether the maintenance window is open.

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

/// The observed state the planner decides from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub now: Timestamp,
    /// The rollout's maintenance window, evaluated by the controller (`true` when it has none).
    pub window_open: bool,
    /// Every node the rollout selects, in any order (the planner orders them by name). Names
    /// are unique.
    pub nodes: Vec<NodeObservation>,
}

/// One selected node: its Kubernetes state, what this rollout recorded for it, and what its
/// host agent reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeObservation {
    pub name: String,
    /// The Node's `Ready` condition is `True`.
    pub ready: bool,
    /// `spec.unschedulable` (cordoned), by anyone.
    pub unschedulable: bool,
    /// The cordon is this rollout's (it carries the rollout's annotation). A cordon that is
    /// not ours is "cordoned for other reasons".
    pub cordoned_by_us: bool,
    /// Another rollout holds the node's lock (only one rollout acts on a node at a time).
    pub other_owner: Option<String>,
    /// The node carries the quarantine label (set by this or an earlier rollout; only a person
    /// removes it).
    pub quarantined: bool,
    /// The node runs a clb node bridge (its `NodeUpdate` exists). A node without one is never
    /// started: nothing could carry out the rollout's requests on it.
    pub has_bridge: bool,
    /// The node's phase in this rollout as last recorded (`Pending` when never recorded).
    pub phase: Phase,
    /// When `phase` was recorded.
    pub since: Timestamp,
    /// The failure recorded with a `Failed` or `Quarantined` phase.
    pub failure: Option<FailureReason>,
    /// The digest the agent reports booted.
    pub booted_digest: Option<String>,
    /// The digest the agent reports staged and ready to boot.
    pub staged_digest: Option<String>,
    /// The agent reports the booted slot marked good.
    pub slot_good: bool,
    /// The agent reports that the node fell back from the target digest (the initrd gave up
    /// on the new slot and booted the previous one).
    pub rolled_back: bool,
    /// The agent's last operation for this rollout failed, with its message: the staging
    /// (seen while `Staging`) or the reboot (seen while `Rebooting`; a reboot that fell back
    /// is `rolled_back` instead).
    pub agent_error: Option<String>,
    /// When the controller began evicting the node's pods.
    pub drain_started_at: Option<Timestamp>,
    /// No pod that a drain must evict is left on the node.
    pub drained: bool,
    /// Since when every pod on the node has been ready (`None`: some pod is not).
    pub pods_ready_since: Option<Timestamp>,
}

impl NodeObservation {
    /// A ready, schedulable node nobody has touched: the starting point of tests and of the
    /// controller's mapping.
    pub fn new(name: impl Into<String>) -> NodeObservation {
        NodeObservation {
            name: name.into(),
            ready: true,
            unschedulable: false,
            cordoned_by_us: false,
            other_owner: None,
            quarantined: false,
            has_bridge: true,
            phase: Phase::Pending,
            since: Timestamp(0),
            failure: None,
            booted_digest: None,
            staged_digest: None,
            slot_good: false,
            rolled_back: false,
            agent_error: None,
            drain_started_at: None,
            drained: false,
            pods_ready_since: None,
        }
    }

    /// Counts against `maxUnavailable`: being rolled while cordoned, or not ready or cordoned
    /// for any reason at all (another node's trouble takes capacity just the same).
    pub(crate) fn unavailable(&self) -> bool {
        self.phase.disrupts() || !self.ready || self.unschedulable
    }
}

/// A node's phase in one rollout. See the state machine in the crate documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Phase {
    /// Not started by this rollout.
    Pending,
    /// The agent was asked to download and stage the target; the node still serves.
    Staging,
    /// Staged, waiting for room within `maxUnavailable` to be cordoned.
    Staged,
    /// Cordoned; its pods are being evicted.
    Draining,
    /// The agent was asked to reboot into the target.
    Rebooting,
    /// Booted on the target; waiting for the health check.
    Verifying,
    /// Done: booted on the target, healthy, uncordoned.
    Updated,
    /// Gave up on the node; it was left serving on its previous image, uncordoned.
    Failed,
    /// Failed after its reboot; labelled and tainted so no rollout retries it until a person
    /// removes the label.
    Quarantined,
}

impl Phase {
    /// Every phase, in the order of the state machine.
    pub const ALL: [Phase; 9] = [
        Phase::Pending,
        Phase::Staging,
        Phase::Staged,
        Phase::Draining,
        Phase::Rebooting,
        Phase::Verifying,
        Phase::Updated,
        Phase::Failed,
        Phase::Quarantined,
    ];

    /// Started by this rollout and not yet at an end: the node holds the rollout's lock and a
    /// place in `maxUnavailable`, and is part of the current wave.
    pub fn in_flight(self) -> bool {
        matches!(
            self,
            Phase::Staging | Phase::Staged | Phase::Draining | Phase::Rebooting | Phase::Verifying
        )
    }

    /// Cordoned by the rollout, so unavailable.
    pub fn disrupts(self) -> bool {
        matches!(self, Phase::Draining | Phase::Rebooting | Phase::Verifying)
    }

    /// Counts against the failure budget.
    pub fn failed(self) -> bool {
        matches!(self, Phase::Failed | Phase::Quarantined)
    }

    /// An end for this rollout (`Quarantined` ends until a person clears the label).
    pub fn terminal(self) -> bool {
        matches!(self, Phase::Updated | Phase::Failed | Phase::Quarantined)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Staging => "Staging",
            Phase::Staged => "Staged",
            Phase::Draining => "Draining",
            Phase::Rebooting => "Rebooting",
            Phase::Verifying => "Verifying",
            Phase::Updated => "Updated",
            Phase::Failed => "Failed",
            Phase::Quarantined => "Quarantined",
        }
    }
}

/// Why the rollout gave up on a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureReason {
    /// The agent could not download or stage the target (for example a signature that does not
    /// verify). The node never left service.
    StageFailed { message: String },
    /// The drain did not finish within `drain.timeout` (PodDisruptionBudgets kept refusing).
    DrainTimeout,
    /// The agent refused or failed the reboot into the target (for example the staged image
    /// was gone); the node did not boot it and is uncordoned on its previous image.
    RebootFailed { message: String },
    /// The node fell back from the target on its own.
    RolledBack,
    /// The node did not come back on the target, or not healthy, within the verify timeout.
    VerifyTimeout,
}

impl FailureReason {
    /// Failures after the reboot say something is wrong with this image on this node:
    /// quarantine it so no rollout retries it forever. Failures before the reboot left the
    /// node on its previous image and say nothing about the image.
    pub fn quarantines(&self) -> bool {
        matches!(
            self,
            FailureReason::RolledBack | FailureReason::VerifyTimeout
        )
    }

    /// The CamelCase reason for events and conditions.
    pub fn reason(&self) -> &'static str {
        match self {
            FailureReason::StageFailed { .. } => "StageFailed",
            FailureReason::DrainTimeout => "DrainTimeout",
            FailureReason::RebootFailed { .. } => "RebootFailed",
            FailureReason::RolledBack => "RolledBack",
            FailureReason::VerifyTimeout => "VerifyTimeout",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FailureReason::StageFailed { message } => write!(f, "staging failed: {message}"),
            FailureReason::DrainTimeout => {
                f.write_str("the drain did not finish within its timeout")
            }
            FailureReason::RebootFailed { message } => write!(f, "the reboot failed: {message}"),
            FailureReason::RolledBack => f.write_str("the node fell back to its previous image"),
            FailureReason::VerifyTimeout => f.write_str(
                "the node did not come back healthy on the target within the verify timeout",
            ),
        }
    }
}
