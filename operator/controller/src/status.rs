//! The Rollout's status from a plan: counts, conditions, the current wave, and the records of
//! every node the rollout touched.

use std::collections::BTreeMap;

use clb_operator_api::{NodeRecord, PhaseCounts, RolloutPhase, RolloutStatus};
use clb_rollout_planner::{NodePlan, Phase, Plan, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::clock::to_kube;
use crate::observe::{failure_to_api, phase_to_api};

/// The record of one node after a step. `carried_out` says whether every action of the node's
/// plan succeeded: if not, nothing changes for it (the next step repeats the actions).
pub fn record(
    plan: &NodePlan,
    previous: Option<&NodeRecord>,
    carried_out: bool,
    now: Timestamp,
) -> Option<NodeRecord> {
    if !carried_out {
        return previous.cloned();
    }
    if plan.phase == Phase::Pending {
        // Back to untouched (a quarantine cleared, a cordon of ours undone): no record.
        return None;
    }
    let phase = phase_to_api(plan.phase);
    let changed = previous.is_none_or(|p| p.phase != phase);
    let since = match previous {
        Some(p) if !changed => p.since.clone(),
        _ => to_kube(now),
    };
    let drain_started_at = match plan.phase {
        Phase::Draining | Phase::Rebooting | Phase::Verifying => previous
            .and_then(|p| p.drain_started_at.clone())
            .or_else(|| (plan.phase == Phase::Draining).then(|| to_kube(now))),
        _ => None,
    };
    Some(NodeRecord {
        name: plan.name.clone(),
        phase,
        since,
        failure: plan.failure.as_ref().map(failure_to_api),
        drain_started_at,
    })
}

/// The whole status after a step.
pub fn status(
    previous: &RolloutStatus,
    generation: Option<i64>,
    image: &str,
    digest: &str,
    plan: &Plan,
    records: Vec<NodeRecord>,
    now: Timestamp,
) -> RolloutStatus {
    let c = plan.counts;
    let count = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
    let phase = if plan.halted {
        RolloutPhase::Halted
    } else if plan.complete {
        RolloutPhase::Complete
    } else if plan.paused {
        RolloutPhase::Paused
    } else {
        RolloutPhase::Progressing
    };
    let conditions = plan
        .conditions
        .iter()
        .map(|condition| {
            kube_condition(
                &previous.conditions,
                condition.kind.as_str(),
                condition.status,
                &condition.reason,
                &condition.message,
                generation,
                now,
            )
        })
        .collect();
    RolloutStatus {
        observed_generation: generation,
        image: Some(image.to_string()),
        pinned_digest: Some(digest.to_string()),
        phase: Some(phase),
        counts: PhaseCounts {
            total: count(c.total),
            pending: count(c.pending),
            skipped: count(c.skipped),
            staging: count(c.staging),
            staged: count(c.staged),
            draining: count(c.draining),
            rebooting: count(c.rebooting),
            verifying: count(c.verifying),
            updated: count(c.updated),
            failed: count(c.failed),
            quarantined: count(c.quarantined),
        },
        updated_text: Some(format!("{}/{}", c.updated, c.total)),
        unavailable: count(plan.unavailable),
        max_unavailable: count(plan.max_unavailable),
        current_wave: plan.wave.clone(),
        failed_nodes: plan.failed_nodes.clone(),
        conditions,
        nodes: records,
    }
}

/// A status while the image cannot be pinned: the records are kept, the reason is shown.
pub fn unresolved(
    previous: &RolloutStatus,
    generation: Option<i64>,
    reason: &str,
    message: &str,
    now: Timestamp,
) -> RolloutStatus {
    let mut status = previous.clone();
    status.observed_generation = generation;
    status.phase = Some(clb_operator_api::RolloutPhase::Pending);
    status.conditions = vec![kube_condition(
        &previous.conditions,
        "Progressing",
        false,
        reason,
        message,
        generation,
        now,
    )];
    status
}

/// A condition that keeps its `lastTransitionTime` while its status stays the same.
fn kube_condition(
    previous: &[Condition],
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" };
    let since = previous
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map_or_else(|| to_kube(now), |c| c.last_transition_time.clone());
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message: message.to_string(),
        observed_generation: generation,
        last_transition_time: since,
    }
}

/// The records of the nodes after a step: every node with a record, in name order.
pub fn records(
    plan: &Plan,
    previous: &BTreeMap<&str, &NodeRecord>,
    carried_out: &BTreeMap<String, bool>,
    now: Timestamp,
) -> Vec<NodeRecord> {
    let mut out: Vec<NodeRecord> = plan
        .nodes
        .iter()
        .filter_map(|node| {
            let done = carried_out.get(&node.name).copied().unwrap_or(true);
            record(node, previous.get(node.name.as_str()).copied(), done, now)
        })
        .collect();
    // Records of nodes no longer selected are dropped: the rollout lets go of them (a cordon
    // of ours on one is undone by the step).
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}
