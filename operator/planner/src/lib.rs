//! The rollout planner of the clb fleet operator: pure decisions, no I/O, no clock.
//!
//! The controller observes the fleet (Nodes, the per-node objects the bridge writes from each
//! host agent, the rollout's spec), maps it to an [`Observation`] and [`Settings`], calls
//! [`plan`], carries out the [`Plan`]'s per-node [`Action`]s in order, records each node's new
//! [`Phase`], and writes the status (counts, conditions, pinned digest, current wave). Time
//! and the maintenance window are inputs, so every rule is testable without a cluster.
//!
//! # A node's path
//!
//! ```text
//!                   start: not halted, not paused, window open, canary and soak allow,
//!                   room within maxUnavailable; the node Ready, not cordoned by others,
//!                   not held by another rollout, no quarantine label
//!  ┌─────────┐  Stage  ┌─────────┐  agent: target staged  ┌────────┐
//!  │ Pending │────────►│ Staging │───────────────────────►│ Staged │
//!  └─────────┘         └─────────┘                        └────────┘
//!   │      ▲                │ agent error                     │ room within maxUnavailable:
//!   │      │                ▼                                 │ Cordon, Drain
//!   │      │           ┌────────┐  drain timeout: Uncordon ┌──────────┐
//!   │      │           │ Failed │◄─────────────────────────│ Draining │
//!   │      │           └────────┘                          └──────────┘
//!   │      │                                                    │ drained: Reboot
//!   │      │ label removed                                      ▼
//!   │      │ by a person ┌─────────────┐  rolled back or  ┌───────────┐
//!   │      └─────────────│ Quarantined │◄─── timeout ─────│ Rebooting │
//!   │                    └─────────────┘  (Quarantine,    └───────────┘
//!   │                       ▲        ▲     Uncordon)            │ booted the target
//!   │                       │        │                          ▼
//!   │         rolled back   │        │  rolled back or    ┌───────────┐
//!   │         later         │        └──── timeout ───────│ Verifying │
//!   │                  ┌─────────┐                        └───────────┘
//!   └─────────────────►│ Updated │◄─────────────────────────────┘
//!    already on the    └─────────┘  healthy for minReadySeconds: Uncordon
//!    target, slot good
//! ```
//!
//! Staging and Staged keep the node serving; Draining, Rebooting and Verifying are cordoned by
//! the rollout and count as unavailable. Not drawn: a Staging or Staged node that reboots on
//! its own into the target goes straight to Verifying (the agent flips the boot pointer when it
//! stages); a node in flight that another rollout holds is left alone; a cordon of ours found
//! on a node that is not being rolled (a step cut short) is removed first. Failed and
//! Quarantined uncordon before they are recorded, so no node ends cordoned by the rollout.
//!
//! # The fleet's rules
//!
//! - **Order.** Nodes start in name order: the first ones form the canary.
//! - **Canary.** Until `canary.nodes` nodes are `Updated`, only enough nodes start to make up
//!   the canary (a failed canary is replaced; the failure budget decides when to stop). Then
//!   nothing starts until `canary.soak` has passed since the last canary became `Updated`.
//! - **maxUnavailable.** Unavailable = nodes Draining/Rebooting/Verifying + nodes NotReady or
//!   cordoned for any reason. A node starts only while unavailable-or-in-flight nodes leave
//!   room, so a wave reserves its places when it stages; a staged node is cordoned only while
//!   the nodes unavailable now leave room. The planner never takes the fleet past the limit;
//!   only others' outages can.
//! - **Failure budget.** Failed + Quarantined > `failureBudget` halts: nothing new starts,
//!   nodes in flight continue to their end (a started node holds its staged image and a
//!   cordon or a place; finishing is what never leaves a node cordoned), condition `Halted`
//!   names the failed nodes.
//! - **Pause and window.** Paused, or the window closed: nothing new starts; nodes in flight
//!   finish.
//! - **Failures.** A drain past `drain.timeout` is uncordoned and marked `Failed`; a staging
//!   error is `Failed` (the node never left service); so is a reboot the agent refused or
//!   failed (the node did not boot the target; it is uncordoned). A node that falls back on its own
//!   (the initrd gave up on the new slot), or does not come back healthy within the verify
//!   timeout, is quarantined (label + taint, then uncordoned): no rollout retries it until a
//!   person removes the label. Failed nodes are not retried by the same rollout.
//! - **One rollout per node.** A node held by another rollout is not started; a started node
//!   is held (see [`NodePlan::hold`]) until it reaches an end.
//! - **Complete.** Nothing in flight, not halted, and every node `Updated`, `Failed`,
//!   `Quarantined`, or skipped for its quarantine label. Reasons: `AllUpdated`,
//!   `CompletedWithFailures` (failures within the budget), `CompletedWithSkippedNodes`,
//!   `NoNodesSelected`. Pending nodes that cannot start yet (NotReady, cordoned by others, held
//!   by another rollout) keep the rollout progressing (`WaitingForNodes`), not complete.
//!
//! # Decisions
//!
//! - `maxUnavailable` as a percent rounds down (as a Deployment's), and is at least 1 for a
//!   non-empty fleet, so a small fleet or a `0` still progresses one node at a time; see
//!   [`MaxUnavailable::resolve`].
//! - Halting is not remembered: it is read from the failed nodes on every step. A person who
//!   removes quarantine labels (the nodes go back to `Pending`) can thus bring the failures
//!   back within the budget and the rollout resumes; otherwise a halted rollout stays halted.
//! - A node already booted on the target with a good slot is recorded `Updated` without being
//!   touched, whatever the gates say: rolling back to the previous image is just another
//!   rollout, and re-running one skips the work done.
//! - A node is only started, and a staged node only cordoned, while it is Ready and not
//!   cordoned by others: the rollout never adds its disruption to a node already in trouble.
//! - A quarantined node gets a taint that keeps new pods off before it is uncordoned, so the
//!   uncordon never invites pods onto a node whose image misbehaved.
//! - `Stage` only asks for the image to be ready on the node; whether the bridge downloads only
//!   (the boot pointer untouched until `Reboot`) or downloads and applies is the bridge's
//!   choice. Downloading only is the safer one: a drain timeout then leaves no flipped pointer
//!   behind.

mod observe;
mod plan;
mod planner;
mod rules;
mod settings;
mod time;

pub use observe::{FailureReason, NodeObservation, Observation, Phase};
pub use plan::{
    Action, CanaryState, Condition, ConditionKind, NodePlan, PhaseCounts, Plan, WaitReason,
};
pub use planner::plan;
pub use settings::{Canary, HealthCheck, MaxUnavailable, Settings};
pub use time::Timestamp;
