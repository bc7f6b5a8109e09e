//! Builders shared by the planner's tests.
#![allow(dead_code)] // each test binary uses a different part

use clb_rollout_planner::{
    Canary, HealthCheck, MaxUnavailable, NodeObservation, Observation, Phase, Settings, Timestamp,
};

pub const TARGET: &str = "sha256:new";
pub const OLD: &str = "sha256:old";

/// No canary, one node at a time, no failure allowed, 10 min drains, 15 min verify timeout.
pub fn settings() -> Settings {
    Settings {
        target_digest: TARGET.to_string(),
        canary: Canary {
            nodes: 0,
            soak_seconds: 0,
        },
        max_unavailable: MaxUnavailable::Count(1),
        failure_budget: 0,
        drain_timeout_seconds: 600,
        health_check: HealthCheck {
            node_ready: true,
            pods_ready: true,
            min_ready_seconds: 60,
        },
        verify_timeout_seconds: Some(900),
        paused: false,
    }
}

/// A ready, schedulable node on the old image.
pub fn node(name: &str) -> NodeObservation {
    let mut node = NodeObservation::new(name);
    node.booted_digest = Some(OLD.to_string());
    node.slot_good = true;
    node.pods_ready_since = Some(Timestamp(0));
    node
}

/// `count` fresh nodes named node-00, node-01, …
pub fn fleet(count: usize) -> Vec<NodeObservation> {
    (0..count)
        .map(|index| node(&format!("node-{index:02}")))
        .collect()
}

/// A node this rollout moved to `phase` at `since`, in the state that phase implies.
pub fn in_phase(name: &str, phase: Phase, since: u64) -> NodeObservation {
    let mut node = node(name);
    node.phase = phase;
    node.since = Timestamp(since);
    match phase {
        Phase::Pending | Phase::Failed | Phase::Quarantined => {}
        Phase::Staging => {}
        Phase::Staged => node.staged_digest = Some(TARGET.to_string()),
        Phase::Draining => {
            node.staged_digest = Some(TARGET.to_string());
            node.unschedulable = true;
            node.cordoned_by_us = true;
            node.drain_started_at = Some(Timestamp(since));
        }
        Phase::Rebooting => {
            node.staged_digest = Some(TARGET.to_string());
            node.unschedulable = true;
            node.cordoned_by_us = true;
            node.drained = true;
            node.ready = false;
        }
        Phase::Verifying => {
            node.booted_digest = Some(TARGET.to_string());
            node.unschedulable = true;
            node.cordoned_by_us = true;
            node.drained = true;
            node.pods_ready_since = Some(Timestamp(since));
        }
        Phase::Updated => node.booted_digest = Some(TARGET.to_string()),
    }
    node
}

pub fn observe(now: u64, nodes: Vec<NodeObservation>) -> Observation {
    Observation {
        now: Timestamp(now),
        window_open: true,
        nodes,
    }
}
