//! The clb fleet operator's controller: rolls the nodes a `Rollout` selects to its image,
//! through the clb node bridge on each node (which talks to the host agent over D-Bus).
//!
//! The decisions are the pure planner's (`clb-rollout-planner`); this crate observes the
//! cluster, hands the planner what it saw, and carries the plan out:
//!
//! - [`run`] keeps watch caches of Rollouts, Nodes, NodeUpdates and Pods, holds the leader
//!   Lease (only the leader acts; the others keep warm caches to take over), and steps every
//!   rollout, oldest first, when a watch reports a change or a rollout asked to be looked at
//!   again (a soak ends, a drain retries, a timeout falls due).
//! - A step ([`step`]) pins the image (a tag is resolved to its digest once; a new image
//!   starts the rollout over), maps the selected nodes to the planner's observation
//!   ([`observe`]), plans, and carries out each node's actions ([`act`]): a `Stage` or
//!   `Reboot` request in the node's `NodeUpdate` (server-side apply; the first one claims the
//!   node with a `resourceVersion` precondition), cordon and uncordon (a merge patch with the
//!   `clb.dev/cordoned-by` annotation), evictions through the Eviction API (a refusal by a
//!   PodDisruptionBudget is retried every 5 s until the drain timeout), quarantine (label,
//!   taint, annotation). A node whose actions failed keeps its record, so the next step
//!   repeats them. Every phase change is an Event on the Node.
//! - The Rollout's status holds the record of every node the rollout touched: what a new
//!   leader resumes from. Request ids only grow and the bridge carries each out once, so a
//!   repeated step never starts a node twice.
//!
//! The controller's own writes are laid over its caches until the caches catch up
//! ([`world`]), so a step never acts on an object older than what the controller wrote.

pub mod act;
pub mod clock;
pub mod metrics;
pub mod observe;
pub mod pods;
pub mod resolve;
mod run;
pub mod select;
pub mod status;
pub mod step;
pub mod window;
pub mod world;

pub use run::{Options, RunError, client, run};
