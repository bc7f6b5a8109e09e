//! The rollout's status: phase counts, completion, and the four conditions.

use crate::observe::{NodeObservation, Phase};
use crate::plan::{
    Action, CanaryState, Condition, ConditionKind, NodePlan, PhaseCounts, WaitReason,
};
use crate::settings::Settings;

/// A node the rollout will not touch: it carries the quarantine label and was never started.
pub(crate) fn skipped(plan: &NodePlan, node: &NodeObservation) -> bool {
    plan.phase == Phase::Pending && node.quarantined
}

pub(crate) fn counts(plans: &[NodePlan], nodes: &[&NodeObservation]) -> PhaseCounts {
    let mut counts = PhaseCounts {
        total: plans.len() as u32,
        ..PhaseCounts::default()
    };
    for (plan, node) in plans.iter().zip(nodes) {
        let count = match plan.phase {
            Phase::Pending if skipped(plan, node) => &mut counts.skipped,
            Phase::Pending => &mut counts.pending,
            Phase::Staging => &mut counts.staging,
            Phase::Staged => &mut counts.staged,
            Phase::Draining => &mut counts.draining,
            Phase::Rebooting => &mut counts.rebooting,
            Phase::Verifying => &mut counts.verifying,
            Phase::Updated => &mut counts.updated,
            Phase::Failed => &mut counts.failed,
            Phase::Quarantined => &mut counts.quarantined,
        };
        *count += 1;
    }
    counts
}

/// Complete: not halted, every node at an end or skipped, and nothing left to do (a last
/// uncordon still counts as something to do).
pub(crate) fn complete(halted: bool, plans: &[NodePlan], nodes: &[&NodeObservation]) -> bool {
    !halted
        && plans.iter().zip(nodes).all(|(plan, node)| {
            (plan.phase.terminal() || skipped(plan, node))
                && plan
                    .actions
                    .iter()
                    .all(|action| matches!(action, Action::Wait { .. }))
        })
}

/// What the conditions are made from.
pub(crate) struct Facts<'a> {
    pub settings: &'a Settings,
    pub window_open: bool,
    pub counts: PhaseCounts,
    pub canary: CanaryState,
    pub halted: bool,
    pub complete: bool,
    pub failed_nodes: &'a [String],
    pub started: usize,
    pub in_flight: usize,
    /// Some node waits only for room within `maxUnavailable`.
    pub waiting_for_room: bool,
    pub unavailable: usize,
    pub max_unavailable: usize,
}

pub(crate) fn conditions(facts: &Facts) -> Vec<Condition> {
    vec![
        progressing(facts),
        halted(facts),
        complete_condition(facts),
        paused(facts),
    ]
}

fn progressing(facts: &Facts) -> Condition {
    let in_flight = format!("{} node(s) in flight", facts.in_flight);
    let (status, reason, message) = if facts.complete {
        (false, "Complete", "the rollout is complete".to_string())
    } else if facts.halted {
        (
            false,
            "Halted",
            format!("the failure budget is exceeded; {in_flight} finishing"),
        )
    } else if facts.settings.paused {
        (
            false,
            "Paused",
            format!("the rollout is paused; {in_flight} finishing"),
        )
    } else if !facts.window_open {
        (
            true,
            "OutsideWindow",
            format!("waiting for the maintenance window; {in_flight} finishing"),
        )
    } else {
        match facts.canary {
            CanaryState::Running => (
                true,
                "CanaryInProgress",
                format!("rolling the canary; {in_flight}"),
            ),
            CanaryState::Soaking { until } => (
                true,
                "CanarySoaking",
                format!("the canary soaks until {until}"),
            ),
            CanaryState::Done if facts.in_flight > 0 || facts.started > 0 => (
                true,
                "WavesInProgress",
                format!("rolling in waves; {in_flight}"),
            ),
            CanaryState::Done if facts.waiting_for_room => (
                true,
                "MaxUnavailableReached",
                format!(
                    "{} node(s) unavailable for other reasons, maxUnavailable {}",
                    facts.unavailable, facts.max_unavailable
                ),
            ),
            CanaryState::Done => (
                true,
                "WaitingForNodes",
                format!(
                    "{} pending node(s) wait to be Ready, uncordoned or released by another rollout",
                    facts.counts.pending
                ),
            ),
        }
    };
    condition(ConditionKind::Progressing, status, reason, message)
}

fn halted(facts: &Facts) -> Condition {
    let failed = facts.failed_nodes.len();
    let budget = facts.settings.failure_budget;
    if facts.halted {
        let message = format!(
            "{failed} node(s) failed, more than the failure budget of {budget}: {}",
            facts.failed_nodes.join(", ")
        );
        condition(
            ConditionKind::Halted,
            true,
            "FailureBudgetExceeded",
            message,
        )
    } else {
        let message = format!("{failed} node(s) failed, failure budget {budget}");
        condition(ConditionKind::Halted, false, "WithinFailureBudget", message)
    }
}

fn complete_condition(facts: &Facts) -> Condition {
    let counts = facts.counts;
    if !facts.complete {
        let reason = if facts.halted { "Halted" } else { "InProgress" };
        let message = format!("{} of {} node(s) updated", counts.updated, counts.total);
        return condition(ConditionKind::Complete, false, reason, message);
    }
    let (reason, message) = if counts.total == 0 {
        (
            "NoNodesSelected",
            "the node selector matches no node".to_string(),
        )
    } else if counts.failed + counts.quarantined > 0 {
        (
            "CompletedWithFailures",
            format!(
                "{} of {} node(s) updated; failed within the budget: {}",
                counts.updated,
                counts.total,
                facts.failed_nodes.join(", ")
            ),
        )
    } else if counts.skipped > 0 {
        (
            "CompletedWithSkippedNodes",
            format!(
                "{} of {} node(s) updated; {} quarantined node(s) skipped",
                counts.updated, counts.total, counts.skipped
            ),
        )
    } else {
        (
            "AllUpdated",
            format!("all {} node(s) updated", counts.total),
        )
    };
    condition(ConditionKind::Complete, true, reason, message)
}

fn paused(facts: &Facts) -> Condition {
    if facts.settings.paused {
        condition(
            ConditionKind::Paused,
            true,
            "Paused",
            "no new node starts until resumed".to_string(),
        )
    } else {
        condition(
            ConditionKind::Paused,
            false,
            "NotPaused",
            "the rollout is not paused".to_string(),
        )
    }
}

fn condition(kind: ConditionKind, status: bool, reason: &str, message: String) -> Condition {
    Condition {
        kind,
        status,
        reason: reason.to_string(),
        message,
    }
}

/// A plan waits only for room within `maxUnavailable`.
pub(crate) fn waits_for_room(plan: &NodePlan) -> bool {
    plan.wait_reason() == Some(WaitReason::MaxUnavailable)
}
