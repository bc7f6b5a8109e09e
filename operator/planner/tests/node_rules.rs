//! One rule per test: a node's own path (see the state machine in the crate documentation).

mod common;

use clb_rollout_planner::{Action, FailureReason, Phase, Plan, Timestamp, WaitReason, plan};
use common::{OLD, TARGET, in_phase, node, observe, settings};

fn only(plan: &Plan) -> &clb_rollout_planner::NodePlan {
    assert_eq!(plan.nodes.len(), 1, "{plan:?}");
    &plan.nodes[0]
}

#[test]
fn a_free_ready_node_starts_by_staging_and_takes_the_lock() {
    let plan = plan(&settings(), &observe(100, vec![node("a")]));
    let a = only(&plan);
    assert_eq!(a.actions, vec![Action::Stage]);
    assert_eq!(a.phase, Phase::Staging);
    assert!(a.hold);
    assert_eq!(plan.started, vec!["a".to_string()]);
    assert_eq!(plan.wave, vec!["a".to_string()]);
}

#[test]
fn staging_waits_for_the_agent_and_does_not_cordon_yet() {
    let plan = plan(
        &settings(),
        &observe(100, vec![in_phase("a", Phase::Staging, 50)]),
    );
    let a = only(&plan);
    assert_eq!(
        a.actions,
        vec![Action::Wait {
            reason: WaitReason::Staging
        }]
    );
    assert_eq!(a.phase, Phase::Staging);
    assert!(a.hold);
}

#[test]
fn a_staged_node_is_cordoned_and_drained() {
    let mut a = in_phase("a", Phase::Staging, 50);
    a.staged_digest = Some(TARGET.to_string());
    let plan = plan(&settings(), &observe(100, vec![a]));
    let a = only(&plan);
    assert_eq!(a.actions, vec![Action::Cordon, Action::Drain]);
    assert_eq!(a.phase, Phase::Draining);
    assert_eq!(
        plan.next_check,
        Some(Timestamp(100 + 600)),
        "the drain's deadline"
    );
}

#[test]
fn a_staged_digest_other_than_the_target_is_still_staging() {
    let mut a = in_phase("a", Phase::Staged, 50);
    a.staged_digest = Some("sha256:other".to_string());
    let plan = plan(&settings(), &observe(100, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Staging);
    assert_eq!(only(&plan).wait_reason(), Some(WaitReason::Staging));
}

#[test]
fn a_staged_node_that_is_not_ready_or_cordoned_by_others_waits() {
    let mut not_ready = in_phase("a", Phase::Staged, 50);
    not_ready.ready = false;
    let mut cordoned = in_phase("b", Phase::Staged, 50);
    cordoned.unschedulable = true;
    let mut settings = settings();
    settings.max_unavailable = clb_rollout_planner::MaxUnavailable::Count(5);
    let plan = plan(&settings, &observe(100, vec![not_ready, cordoned]));
    assert_eq!(plan.nodes[0].wait_reason(), Some(WaitReason::NotReady));
    assert_eq!(
        plan.nodes[1].wait_reason(),
        Some(WaitReason::CordonedByOthers)
    );
    assert!(
        plan.nodes
            .iter()
            .all(|node| node.phase == Phase::Staged && node.hold)
    );
}

#[test]
fn a_staging_error_fails_the_node_without_quarantine() {
    let mut a = in_phase("a", Phase::Staging, 50);
    a.agent_error = Some("signature does not verify".to_string());
    let mut settings = settings();
    settings.failure_budget = 1;
    let plan = plan(&settings, &observe(100, vec![a]));
    let a = only(&plan);
    let reason = FailureReason::StageFailed {
        message: "signature does not verify".to_string(),
    };
    assert_eq!(
        a.actions,
        vec![Action::MarkFailed {
            reason: reason.clone()
        }]
    );
    assert_eq!(a.phase, Phase::Failed);
    assert_eq!(a.failure, Some(reason));
    assert!(!a.hold, "the lock is released at an end");
}

#[test]
fn draining_goes_on_until_drained_then_reboots() {
    let draining = in_phase("a", Phase::Draining, 100);
    let plan1 = plan(&settings(), &observe(200, vec![draining.clone()]));
    assert_eq!(only(&plan1).actions, vec![Action::Drain]);
    assert_eq!(only(&plan1).phase, Phase::Draining);
    assert_eq!(plan1.next_check, Some(Timestamp(700)));

    let mut drained = draining;
    drained.drained = true;
    let plan2 = plan(&settings(), &observe(200, vec![drained]));
    assert_eq!(only(&plan2).actions, vec![Action::Reboot]);
    assert_eq!(only(&plan2).phase, Phase::Rebooting);
}

#[test]
fn a_node_uncordoned_mid_drain_is_cordoned_again() {
    let mut a = in_phase("a", Phase::Draining, 100);
    a.unschedulable = false;
    a.cordoned_by_us = false;
    let plan = plan(&settings(), &observe(200, vec![a]));
    assert_eq!(only(&plan).actions, vec![Action::Cordon, Action::Drain]);
}

#[test]
fn a_drain_past_its_timeout_is_uncordoned_and_failed_not_quarantined() {
    let mut settings = settings();
    settings.failure_budget = 1;
    let a = in_phase("a", Phase::Draining, 100);
    // One second before the deadline: still draining.
    let before = plan(&settings, &observe(699, vec![a.clone()]));
    assert_eq!(only(&before).phase, Phase::Draining);

    let after = plan(&settings, &observe(700, vec![a]));
    let a = only(&after);
    assert_eq!(
        a.actions,
        vec![
            Action::Uncordon,
            Action::MarkFailed {
                reason: FailureReason::DrainTimeout
            }
        ]
    );
    assert_eq!(a.phase, Phase::Failed);
    assert_eq!(a.failure, Some(FailureReason::DrainTimeout));
}

#[test]
fn the_drain_timeout_counts_from_when_the_drain_began() {
    let mut a = in_phase("a", Phase::Draining, 100);
    a.drain_started_at = Some(Timestamp(300));
    let plan = plan(&settings(), &observe(800, vec![a]));
    assert_eq!(
        only(&plan).phase,
        Phase::Draining,
        "300 + 600 is not reached at 800"
    );
}

#[test]
fn a_rebooting_node_on_the_target_is_verified() {
    let mut a = in_phase("a", Phase::Rebooting, 100);
    let waiting = plan(&settings(), &observe(200, vec![a.clone()]));
    assert_eq!(only(&waiting).wait_reason(), Some(WaitReason::Rebooting));
    assert_eq!(waiting.next_check, Some(Timestamp(100 + 900)));

    a.booted_digest = Some(TARGET.to_string());
    a.ready = true;
    let back = plan(&settings(), &observe(200, vec![a]));
    assert_eq!(only(&back).phase, Phase::Verifying);
    assert!(only(&back).actions.is_empty());
}

#[test]
fn a_node_that_rolled_back_is_quarantined_then_uncordoned() {
    for phase in [Phase::Rebooting, Phase::Verifying] {
        let mut a = in_phase("a", phase, 100);
        a.booted_digest = Some(OLD.to_string());
        a.rolled_back = true;
        a.ready = true;
        let mut settings = settings();
        settings.failure_budget = 1;
        let plan = plan(&settings, &observe(200, vec![a]));
        let a = only(&plan);
        assert_eq!(
            a.actions,
            vec![
                Action::Quarantine,
                Action::Uncordon,
                Action::MarkFailed {
                    reason: FailureReason::RolledBack
                }
            ],
            "{phase:?}"
        );
        assert_eq!(a.phase, Phase::Quarantined);
        assert!(!a.hold);
    }
}

#[test]
fn a_verifying_node_back_on_another_digest_counts_as_rolled_back() {
    let mut a = in_phase("a", Phase::Verifying, 100);
    a.booted_digest = Some(OLD.to_string());
    let plan = plan(&settings(), &observe(200, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Quarantined);
    assert_eq!(only(&plan).failure, Some(FailureReason::RolledBack));
}

#[test]
fn verifying_needs_a_good_slot_ready_node_and_pods_ready_for_min_ready_seconds() {
    let mut a = in_phase("a", Phase::Verifying, 100);
    a.pods_ready_since = Some(Timestamp(120));
    let early = plan(&settings(), &observe(179, vec![a.clone()]));
    assert_eq!(only(&early).wait_reason(), Some(WaitReason::Verifying));
    assert_eq!(early.next_check, Some(Timestamp(180)));

    let done = plan(&settings(), &observe(180, vec![a.clone()]));
    assert_eq!(only(&done).actions, vec![Action::Uncordon]);
    assert_eq!(only(&done).phase, Phase::Updated);
    assert!(!only(&done).hold);

    let mut slot_not_good = a.clone();
    slot_not_good.slot_good = false;
    assert_eq!(
        plan(&settings(), &observe(500, vec![slot_not_good])).nodes[0].phase,
        Phase::Verifying
    );

    let mut not_ready = a.clone();
    not_ready.ready = false;
    assert_eq!(
        plan(&settings(), &observe(500, vec![not_ready.clone()])).nodes[0].phase,
        Phase::Verifying
    );
    let mut settings_without_node_ready = settings();
    settings_without_node_ready.health_check.node_ready = false;
    assert_eq!(
        plan(&settings_without_node_ready, &observe(500, vec![not_ready])).nodes[0].phase,
        Phase::Updated
    );

    let mut pods_not_ready = a;
    pods_not_ready.pods_ready_since = None;
    assert_eq!(
        plan(&settings(), &observe(500, vec![pods_not_ready.clone()])).nodes[0].phase,
        Phase::Verifying
    );
    let mut settings_without_pods = settings();
    settings_without_pods.health_check.pods_ready = false;
    let no_pods = plan(&settings_without_pods, &observe(160, vec![pods_not_ready]));
    assert_eq!(
        no_pods.nodes[0].phase,
        Phase::Updated,
        "min ready counts from Verifying's start"
    );
}

#[test]
fn pods_ready_from_before_the_reboot_do_not_count() {
    let mut a = in_phase("a", Phase::Verifying, 1000);
    a.pods_ready_since = Some(Timestamp(10));
    let plan = plan(&settings(), &observe(1030, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Verifying);
    assert_eq!(plan.next_check, Some(Timestamp(1060)));
}

#[test]
fn a_node_that_never_comes_back_healthy_is_quarantined_at_the_verify_timeout() {
    for phase in [Phase::Rebooting, Phase::Verifying] {
        let mut a = in_phase("a", phase, 100);
        a.slot_good = false;
        let waiting = plan(&settings(), &observe(999, vec![a.clone()]));
        assert_eq!(only(&waiting).phase, phase);
        let timed_out = plan(&settings(), &observe(1000, vec![a]));
        assert_eq!(only(&timed_out).phase, Phase::Quarantined, "{phase:?}");
        assert_eq!(only(&timed_out).failure, Some(FailureReason::VerifyTimeout));
        assert_eq!(only(&timed_out).actions[0], Action::Quarantine);
    }
}

#[test]
fn without_a_verify_timeout_a_node_waits() {
    let mut settings = settings();
    settings.verify_timeout_seconds = None;
    let a = in_phase("a", Phase::Rebooting, 100);
    let plan = plan(&settings, &observe(1_000_000, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Rebooting);
    assert_eq!(plan.next_check, None);
}

#[test]
fn a_staged_node_that_rebooted_on_its_own_into_the_target_is_verified() {
    let mut a = in_phase("a", Phase::Staged, 100);
    a.booted_digest = Some(TARGET.to_string());
    let plan = plan(&settings(), &observe(200, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Verifying);
    assert!(
        only(&plan).actions.is_empty(),
        "not cordoned: it was never drained"
    );
}

#[test]
fn a_node_already_on_the_target_is_recorded_updated_without_disruption() {
    let mut a = node("a");
    a.booted_digest = Some(TARGET.to_string());
    let mut b = node("b");
    b.booted_digest = Some(TARGET.to_string());
    b.slot_good = false;
    let plan = plan(&settings(), &observe(100, vec![a, b]));
    assert_eq!(plan.nodes[0].phase, Phase::Updated);
    assert!(plan.nodes[0].actions.is_empty());
    assert!(!plan.started.contains(&"a".to_string()));
    assert_eq!(
        plan.nodes[1].phase,
        Phase::Staging,
        "a slot not marked good is rolled again"
    );
}

#[test]
fn an_updated_node_that_falls_back_later_is_quarantined() {
    let mut a = in_phase("a", Phase::Updated, 100);
    a.rolled_back = true;
    a.booted_digest = Some(OLD.to_string());
    let plan = plan(&settings(), &observe(5000, vec![a]));
    assert_eq!(only(&plan).phase, Phase::Quarantined);
    assert_eq!(only(&plan).actions[0], Action::Quarantine);
    assert!(
        !only(&plan).actions.contains(&Action::Uncordon),
        "it was not cordoned"
    );
}

#[test]
fn a_cordon_of_ours_left_on_a_node_at_an_end_or_not_started_is_removed() {
    for phase in [
        Phase::Pending,
        Phase::Updated,
        Phase::Failed,
        Phase::Quarantined,
    ] {
        let mut a = in_phase("a", phase, 100);
        a.unschedulable = true;
        a.cordoned_by_us = true;
        a.quarantined = phase == Phase::Quarantined;
        let plan = plan(&settings(), &observe(200, vec![a]));
        assert_eq!(only(&plan).actions, vec![Action::Uncordon], "{phase:?}");
        assert_eq!(only(&plan).phase, phase);
        assert!(plan.started.is_empty());
    }
}

#[test]
fn a_staged_node_cordoned_by_a_lost_step_goes_on_draining_without_a_new_cordon() {
    let mut a = in_phase("a", Phase::Staged, 100);
    a.unschedulable = true;
    a.cordoned_by_us = true;
    // Another node is unavailable: a new cordon would not fit, this one already counts.
    let mut b = node("b");
    b.ready = false;
    let plan = plan(&settings(), &observe(200, vec![a, b]));
    assert_eq!(plan.nodes[0].actions, vec![Action::Drain]);
    assert_eq!(plan.nodes[0].phase, Phase::Draining);
}

#[test]
fn a_quarantined_node_stays_until_a_person_removes_the_label() {
    let mut a = in_phase("a", Phase::Quarantined, 100);
    a.quarantined = true;
    a.failure = Some(FailureReason::RolledBack);
    let mut settings = settings();
    settings.failure_budget = 1;
    let kept = plan(&settings, &observe(200, vec![a.clone()]));
    assert_eq!(only(&kept).phase, Phase::Quarantined);
    assert!(only(&kept).actions.is_empty());
    assert_eq!(only(&kept).failure, Some(FailureReason::RolledBack));

    a.quarantined = false;
    let cleared = plan(&settings, &observe(300, vec![a]));
    assert_eq!(only(&cleared).phase, Phase::Pending);
    assert_eq!(only(&cleared).failure, None);
    assert!(
        cleared.started.is_empty(),
        "it may start on a later step, not in the clearing one"
    );
}

#[test]
fn a_pending_node_is_never_started_when_not_ready_cordoned_held_or_quarantined() {
    let mut not_ready = node("a");
    not_ready.ready = false;
    let mut cordoned = node("b");
    cordoned.unschedulable = true;
    let mut held = node("c");
    held.other_owner = Some("other-rollout".to_string());
    let mut quarantined = node("d");
    quarantined.quarantined = true;
    let mut settings = settings();
    settings.max_unavailable = clb_rollout_planner::MaxUnavailable::Count(10);
    let plan = plan(
        &settings,
        &observe(100, vec![not_ready, cordoned, held, quarantined]),
    );
    let reasons: Vec<_> = plan.nodes.iter().map(|node| node.wait_reason()).collect();
    assert_eq!(
        reasons,
        vec![
            Some(WaitReason::NotReady),
            Some(WaitReason::CordonedByOthers),
            Some(WaitReason::OwnedByOtherRollout),
            Some(WaitReason::Quarantined)
        ]
    );
    assert!(plan.started.is_empty());
    assert!(
        plan.nodes
            .iter()
            .all(|node| node.phase == Phase::Pending && !node.hold)
    );
}

#[test]
fn a_node_in_flight_taken_by_another_rollout_is_left_alone() {
    let mut a = in_phase("a", Phase::Draining, 100);
    a.other_owner = Some("other".to_string());
    let plan = plan(&settings(), &observe(10_000, vec![a]));
    assert_eq!(
        only(&plan).actions,
        vec![Action::Wait {
            reason: WaitReason::OwnedByOtherRollout
        }]
    );
    assert_eq!(only(&plan).phase, Phase::Draining);
    assert!(!only(&plan).hold);
}

#[test]
fn a_node_without_a_bridge_is_never_started_and_keeps_the_rollout_from_completing() {
    let mut lonely = node("a");
    lonely.has_bridge = false;
    let plan = plan(&settings(), &observe(100, vec![lonely]));
    assert_eq!(only(&plan).phase, Phase::Pending);
    assert_eq!(only(&plan).wait_reason(), Some(WaitReason::NoBridge));
    assert!(plan.started.is_empty());
    assert_eq!(plan.unavailable, 0, "a node without a bridge still serves");
    assert!(!plan.complete);
}

#[test]
fn a_refused_reboot_fails_the_node_and_uncordons_it_without_quarantine() {
    let mut refused = in_phase("a", Phase::Rebooting, 50);
    refused.agent_error = Some("the staged image is gone".into());
    let step = plan(&settings(), &observe(100, vec![refused.clone()]));
    let node = only(&step);
    assert_eq!(node.phase, Phase::Failed);
    assert!(matches!(
        &node.failure,
        Some(FailureReason::RebootFailed { message }) if message.contains("gone")
    ));
    assert!(node.actions.contains(&Action::Uncordon));
    assert!(!node.actions.contains(&Action::Quarantine));
    // A node that came back on the target despite an error report is simply verified.
    refused.booted_digest = Some(TARGET.to_string());
    let step = plan(&settings(), &observe(100, vec![refused]));
    assert_eq!(only(&step).phase, Phase::Verifying);
}
