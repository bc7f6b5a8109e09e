//! One node's next step from its own observation alone. Decisions that depend on the rest of
//! the fleet (cordoning within `maxUnavailable`, starting) are left to the fleet rules: this
//! module only says that the node is ready for them.

use crate::observe::{FailureReason, NodeObservation, Phase};
use crate::plan::{Action, NodePlan, WaitReason};
use crate::settings::Settings;
use crate::time::Timestamp;

/// A node's plan plus the time at which it may change with nothing else changing.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub plan: NodePlan,
    pub wake: Option<Timestamp>,
}

/// What a node needs from this step.
#[derive(Debug, Clone)]
pub(crate) enum Step {
    /// Decided from the node alone.
    Done(Decision),
    /// Staged, Ready and not cordoned by anyone: it may be cordoned and drained when
    /// `maxUnavailable` leaves room.
    ReadyToCordon,
    /// Pending, Ready, schedulable, free: it may start when the fleet's gates allow.
    Startable,
}

pub(crate) fn step(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Step {
    if node.phase.in_flight() && node.other_owner.is_some() {
        // Our lock was taken by another rollout (it should be impossible: locks are claimed
        // with a conflict check). Acting would fight the other rollout; waiting is safe and
        // visible in the status.
        return Step::Done(wait(
            node,
            node.phase,
            WaitReason::OwnedByOtherRollout,
            None,
        ));
    }
    match node.phase {
        Phase::Pending => pending(settings, node),
        Phase::Staging | Phase::Staged => staging(settings, now, node),
        Phase::Draining => Step::Done(draining(settings, now, node)),
        Phase::Rebooting => Step::Done(rebooting(settings, now, node)),
        Phase::Verifying => Step::Done(verifying(settings, now, node)),
        Phase::Updated => Step::Done(updated(node)),
        Phase::Failed => Step::Done(keep(node, uncordon_if_ours(node))),
        Phase::Quarantined => Step::Done(quarantined(node)),
    }
}

fn pending(settings: &Settings, node: &NodeObservation) -> Step {
    if node.cordoned_by_us {
        // Our cordon on a node we are not rolling: left by a step that was cut short. Undo it
        // first, so that no node is ever left cordoned by us.
        return Step::Done(keep(node, vec![Action::Uncordon]));
    }
    if node.quarantined {
        return Step::Done(wait(node, Phase::Pending, WaitReason::Quarantined, None));
    }
    if node.other_owner.is_some() {
        return Step::Done(wait(
            node,
            Phase::Pending,
            WaitReason::OwnedByOtherRollout,
            None,
        ));
    }
    if on_target(settings, node) && node.slot_good && !node.rolled_back {
        // Already runs the target with a good slot (rolled before, or a rollout back to the
        // image it runs): nothing to disrupt, it is simply recorded as updated.
        return Step::Done(to(node, Phase::Updated, Vec::new(), None, None));
    }
    if !node.has_bridge {
        return Step::Done(wait(node, Phase::Pending, WaitReason::NoBridge, None));
    }
    if !node.ready {
        return Step::Done(wait(node, Phase::Pending, WaitReason::NotReady, None));
    }
    if node.unschedulable {
        return Step::Done(wait(
            node,
            Phase::Pending,
            WaitReason::CordonedByOthers,
            None,
        ));
    }
    Step::Startable
}

fn staging(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Step {
    if let Some(message) = &node.agent_error {
        let reason = FailureReason::StageFailed {
            message: message.clone(),
        };
        return Step::Done(fail(node, reason));
    }
    if on_target(settings, node) {
        // The node rebooted into the staged target on its own (the agent flips the boot
        // pointer when it stages): check it as if we had rebooted it.
        return Step::Done(to(
            node,
            Phase::Verifying,
            Vec::new(),
            None,
            verify_wake(settings, now),
        ));
    }
    if node.staged_digest.as_deref() != Some(settings.target_digest.as_str()) {
        return Step::Done(wait(node, Phase::Staging, WaitReason::Staging, None));
    }
    if node.cordoned_by_us {
        // Cordoned by a step whose record was lost: it already counts as unavailable, so it
        // needs no room and goes on draining.
        return Step::Done(start_drain(settings, now, node, Vec::new()));
    }
    if !node.ready {
        return Step::Done(wait(node, Phase::Staged, WaitReason::NotReady, None));
    }
    if node.unschedulable {
        return Step::Done(wait(
            node,
            Phase::Staged,
            WaitReason::CordonedByOthers,
            None,
        ));
    }
    Step::ReadyToCordon
}

/// Cordon (if `cordon`) and begin the drain.
pub(crate) fn start_drain(
    settings: &Settings,
    now: Timestamp,
    node: &NodeObservation,
    mut actions: Vec<Action>,
) -> Decision {
    actions.push(Action::Drain);
    to(
        node,
        Phase::Draining,
        actions,
        None,
        Some(now.plus(settings.drain_timeout_seconds)),
    )
}

fn draining(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Decision {
    if node.drained {
        return to(
            node,
            Phase::Rebooting,
            vec![Action::Reboot],
            None,
            verify_wake(settings, now),
        );
    }
    let deadline = node
        .drain_started_at
        .unwrap_or(node.since)
        .plus(settings.drain_timeout_seconds);
    if now >= deadline {
        return fail(node, FailureReason::DrainTimeout);
    }
    let mut actions = Vec::new();
    if !node.unschedulable {
        // Someone uncordoned the node mid-drain: evicted pods would come straight back.
        actions.push(Action::Cordon);
    }
    actions.push(Action::Drain);
    keep_until(node, actions, Some(deadline))
}

fn rebooting(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Decision {
    if node.rolled_back {
        return fail(node, FailureReason::RolledBack);
    }
    if let Some(message) = node
        .agent_error
        .as_ref()
        .filter(|_| !on_target(settings, node))
    {
        // The agent did not reboot into the target: nothing is wrong with the image that we
        // know of, and waiting would hold a cordon (for ever without a verify timeout).
        let reason = FailureReason::RebootFailed {
            message: message.clone(),
        };
        return fail(node, reason);
    }
    if on_target(settings, node) {
        return to(
            node,
            Phase::Verifying,
            Vec::new(),
            None,
            verify_wake(settings, now),
        );
    }
    match timed_out(settings, now, node) {
        Some(true) => fail(node, FailureReason::VerifyTimeout),
        _ => wait(
            node,
            Phase::Rebooting,
            WaitReason::Rebooting,
            verify_deadline(settings, node),
        ),
    }
}

fn verifying(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Decision {
    if node.rolled_back || !on_target(settings, node) {
        // Verifying began on the target; any other digest now means the node went back.
        return fail(node, FailureReason::RolledBack);
    }
    let ready_at = healthy_at(settings, node);
    if ready_at.is_some_and(|at| now >= at) {
        return to(node, Phase::Updated, uncordon_if_ours(node), None, None);
    }
    if timed_out(settings, now, node) == Some(true) {
        return fail(node, FailureReason::VerifyTimeout);
    }
    let wake = earliest(ready_at, verify_deadline(settings, node));
    wait(node, Phase::Verifying, WaitReason::Verifying, wake)
}

fn updated(node: &NodeObservation) -> Decision {
    if node.rolled_back {
        // An updated node that falls back later (the agent's boot counting gave up on a later
        // boot) is a failure of the image all the same.
        return fail(node, FailureReason::RolledBack);
    }
    keep(node, uncordon_if_ours(node))
}

fn quarantined(node: &NodeObservation) -> Decision {
    if !node.quarantined {
        // The label is set before the phase is recorded, so a missing label means a person
        // removed it: the node may be rolled again.
        return to(node, Phase::Pending, uncordon_if_ours(node), None, None);
    }
    keep(node, uncordon_if_ours(node))
}

/// Give up on a node: quarantine it when the failure says the image is bad on it, never leave
/// it cordoned by us, record why.
fn fail(node: &NodeObservation, reason: FailureReason) -> Decision {
    let mut actions = Vec::new();
    // Quarantine before uncordoning, so that the taint is there before pods can land.
    let phase = if reason.quarantines() {
        actions.push(Action::Quarantine);
        Phase::Quarantined
    } else {
        Phase::Failed
    };
    actions.extend(uncordon_if_ours(node));
    actions.push(Action::MarkFailed {
        reason: reason.clone(),
    });
    to(node, phase, actions, Some(reason), None)
}

/// When the node passes the health check, if nothing changes (`None`: not while the node is
/// as observed).
fn healthy_at(settings: &Settings, node: &NodeObservation) -> Option<Timestamp> {
    let check = settings.health_check;
    if !node.slot_good || (check.node_ready && !node.ready) {
        return None;
    }
    let ready_since = if check.pods_ready {
        // Never count readiness from before the reboot, should the observation carry an old
        // value.
        node.pods_ready_since.map(|since| since.max(node.since))
    } else {
        Some(node.since)
    };
    ready_since.map(|since| since.plus(check.min_ready_seconds))
}

fn on_target(settings: &Settings, node: &NodeObservation) -> bool {
    node.booted_digest.as_deref() == Some(settings.target_digest.as_str())
}

fn verify_deadline(settings: &Settings, node: &NodeObservation) -> Option<Timestamp> {
    settings
        .verify_timeout_seconds
        .map(|timeout| node.since.plus(timeout))
}

fn verify_wake(settings: &Settings, now: Timestamp) -> Option<Timestamp> {
    settings
        .verify_timeout_seconds
        .map(|timeout| now.plus(timeout))
}

fn timed_out(settings: &Settings, now: Timestamp, node: &NodeObservation) -> Option<bool> {
    verify_deadline(settings, node).map(|deadline| now >= deadline)
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn uncordon_if_ours(node: &NodeObservation) -> Vec<Action> {
    if node.cordoned_by_us {
        vec![Action::Uncordon]
    } else {
        Vec::new()
    }
}

/// Stay in the same phase, doing `actions`.
fn keep(node: &NodeObservation, actions: Vec<Action>) -> Decision {
    keep_until(node, actions, None)
}

fn keep_until(node: &NodeObservation, actions: Vec<Action>, wake: Option<Timestamp>) -> Decision {
    to(node, node.phase, actions, node.failure.clone(), wake)
}

/// Wait in `phase` for `reason`.
pub(crate) fn wait(
    node: &NodeObservation,
    phase: Phase,
    reason: WaitReason,
    wake: Option<Timestamp>,
) -> Decision {
    to(node, phase, vec![Action::Wait { reason }], None, wake)
}

/// Move to `phase`, doing `actions`.
pub(crate) fn to(
    node: &NodeObservation,
    phase: Phase,
    actions: Vec<Action>,
    failure: Option<FailureReason>,
    wake: Option<Timestamp>,
) -> Decision {
    Decision {
        plan: NodePlan {
            name: node.name.clone(),
            actions,
            phase,
            failure: if phase.failed() { failure } else { None },
            // The lock is held exactly while the node is in flight; a node another rollout
            // holds is never ours to hold.
            hold: phase.in_flight() && node.other_owner.is_none(),
        },
        wake,
    }
}
