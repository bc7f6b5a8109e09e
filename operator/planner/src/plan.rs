//! What the planner decides: per-node actions for the controller to carry out, and the
//! rollout's status.

use serde::{Deserialize, Serialize};

use crate::observe::{FailureReason, Phase};
use crate::time::Timestamp;

/// The next step of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// One entry per observed node, ordered by name.
    pub nodes: Vec<NodePlan>,
    /// Nodes started by this step (their first action is `Stage`), by name.
    pub started: Vec<String>,
    /// The current wave: nodes in flight after this step, by name.
    pub wave: Vec<String>,
    /// How many nodes are in each phase after this step.
    pub counts: PhaseCounts,
    /// Nodes unavailable after this step's cordons (ours and anyone else's, plus NotReady).
    pub unavailable: u32,
    /// `maxUnavailable` resolved against the selected nodes.
    pub max_unavailable: u32,
    pub canary: CanaryState,
    /// Failed nodes exceed the failure budget: nothing new starts, nodes in flight finish.
    pub halted: bool,
    /// Nodes failed or quarantined by this rollout, by name.
    pub failed_nodes: Vec<String>,
    /// Nothing is in flight and nothing is left to start (see `Condition` reasons).
    pub complete: bool,
    /// The rollout's spec says paused.
    pub paused: bool,
    /// `Progressing`, `Halted`, `Complete`, `Paused`, always in that order.
    pub conditions: Vec<Condition>,
    /// The earliest later time at which the plan may change with nothing else changing (a soak
    /// ends, a drain or verify times out, pods have been ready long enough): the controller
    /// requeues for then, since no watch event marks the passing of time.
    pub next_check: Option<Timestamp>,
}

impl Plan {
    /// The plan for one node.
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|node| node.name == name)
    }

    pub fn condition(&self, kind: ConditionKind) -> Option<&Condition> {
        self.conditions
            .iter()
            .find(|condition| condition.kind == kind)
    }
}

/// What to do with one node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodePlan {
    pub name: String,
    /// Carried out in order; when one fails the controller stops there and records nothing, so
    /// the next observation repeats the step. Empty when there is nothing to do.
    pub actions: Vec<Action>,
    /// The phase to record once the actions succeeded (with `since` = now if it changed).
    pub phase: Phase,
    /// The failure to record with a `Failed` or `Quarantined` phase.
    pub failure: Option<FailureReason>,
    /// The rollout holds the node's lock after this step (taken on start, released when the
    /// node reaches an end), so that no other rollout acts on it meanwhile.
    pub hold: bool,
}

impl NodePlan {
    /// The step starts the node.
    pub fn starts(&self) -> bool {
        self.actions.first() == Some(&Action::Stage)
    }

    /// Why the node waits, if it does.
    pub fn wait_reason(&self) -> Option<WaitReason> {
        self.actions.iter().find_map(|action| match action {
            Action::Wait { reason } => Some(*reason),
            _ => None,
        })
    }
}

/// One thing the controller does to a node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Ask the agent to download and stage the target digest (the node keeps serving).
    Stage,
    /// Mark the node unschedulable with the rollout's annotation.
    Cordon,
    /// Evict the node's pods through the Eviction API (keep going: a 429 is retried with
    /// backoff, the planner times the whole drain).
    Drain,
    /// Ask the agent to reboot into the staged target.
    Reboot,
    /// Make the node schedulable again (only ever a cordon of ours).
    Uncordon,
    /// Label and taint the node so no rollout retries it until a person removes the label.
    Quarantine,
    /// Record the failure (event, status); the phase says `Failed` or `Quarantined`.
    MarkFailed { reason: FailureReason },
    /// Nothing to do now, for this reason.
    Wait { reason: WaitReason },
}

/// Why a node waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WaitReason {
    // A node that is not started yet:
    /// The node is not Ready; it is not started (or cordoned) until it is.
    NotReady,
    /// Someone else cordoned the node.
    CordonedByOthers,
    /// Another rollout holds the node.
    OwnedByOtherRollout,
    /// The node carries the quarantine label.
    Quarantined,
    /// The node runs no clb node bridge (it has no `NodeUpdate`).
    NoBridge,
    /// The failure budget is exceeded.
    Halted,
    /// The rollout is paused.
    Paused,
    /// The maintenance window is closed.
    WindowClosed,
    /// The canary nodes are being rolled.
    Canary,
    /// The canary nodes are soaking.
    CanarySoak,
    /// No room left within `maxUnavailable`.
    MaxUnavailable,
    // A node in flight:
    /// The agent is staging.
    Staging,
    /// The agent is rebooting the node.
    Rebooting,
    /// The node runs the target; the health check has not passed yet.
    Verifying,
}

/// Where the canary stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanaryState {
    /// Fewer than the canary's nodes are `Updated`: only canary nodes start.
    Running,
    /// The canary nodes are `Updated`; waves start at `until`.
    Soaking { until: Timestamp },
    /// Waves may start (also when the rollout has no canary).
    Done,
}

/// How many nodes are in each phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PhaseCounts {
    pub total: u32,
    /// Pending nodes, without the skipped ones.
    pub pending: u32,
    /// Pending nodes that carry the quarantine label: the rollout will not touch them.
    pub skipped: u32,
    pub staging: u32,
    pub staged: u32,
    pub draining: u32,
    pub rebooting: u32,
    pub verifying: u32,
    pub updated: u32,
    pub failed: u32,
    pub quarantined: u32,
}

/// A status condition, as the controller writes it to the rollout's status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    pub kind: ConditionKind,
    /// `True` or `False` (the planner always knows).
    pub status: bool,
    /// CamelCase, for machines.
    pub reason: String,
    /// For people.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConditionKind {
    Progressing,
    Halted,
    Complete,
    Paused,
}

impl ConditionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConditionKind::Progressing => "Progressing",
            ConditionKind::Halted => "Halted",
            ConditionKind::Complete => "Complete",
            ConditionKind::Paused => "Paused",
        }
    }
}
