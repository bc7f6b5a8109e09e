//! One rule per test: the fleet's gates (canary, maxUnavailable, failure budget, pause,
//! window, completion) and the status they produce.

mod common;

use clb_rollout_planner::{
    Action, CanaryState, ConditionKind, FailureReason, MaxUnavailable, NodeObservation, Phase,
    Plan, Timestamp, WaitReason, plan,
};
use common::{fleet, in_phase, node, observe, settings};

fn names(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn reason(plan: &Plan, kind: ConditionKind) -> (bool, String) {
    let condition = plan.condition(kind).map(|c| (c.status, c.reason.clone()));
    condition.unwrap_or_else(|| panic!("no {kind:?} condition in {plan:?}"))
}

#[test]
fn max_unavailable_percent_rounds_down_with_at_least_one_node() {
    assert_eq!(MaxUnavailable::Percent(10).resolve(25), 2);
    assert_eq!(MaxUnavailable::Percent(10).resolve(29), 2);
    assert_eq!(MaxUnavailable::Percent(10).resolve(30), 3);
    assert_eq!(
        MaxUnavailable::Percent(10).resolve(5),
        1,
        "0.5 rounds down to 0, raised to 1"
    );
    assert_eq!(MaxUnavailable::Percent(0).resolve(5), 1);
    assert_eq!(MaxUnavailable::Percent(250).resolve(5), 5);
    assert_eq!(MaxUnavailable::Count(0).resolve(5), 1);
    assert_eq!(MaxUnavailable::Count(3).resolve(5), 3);
    assert_eq!(MaxUnavailable::Count(9).resolve(5), 5);
    assert_eq!(MaxUnavailable::Count(3).resolve(0), 0);
    assert_eq!(MaxUnavailable::Percent(100).resolve(0), 0);
}

#[test]
fn max_unavailable_parses_int_or_percent() {
    assert_eq!("10%".parse(), Ok(MaxUnavailable::Percent(10)));
    assert_eq!("3".parse(), Ok(MaxUnavailable::Count(3)));
    assert_eq!(" 25% ".parse(), Ok(MaxUnavailable::Percent(25)));
    assert!("ten".parse::<MaxUnavailable>().is_err());
    assert!("-1".parse::<MaxUnavailable>().is_err());
    assert_eq!(MaxUnavailable::Percent(10).to_string(), "10%");
}

#[test]
fn the_canary_is_the_first_nodes_by_name_and_starts_alone() {
    let mut settings = settings();
    settings.canary.nodes = 2;
    settings.max_unavailable = MaxUnavailable::Count(5);
    let mut nodes = fleet(6);
    nodes.reverse(); // the input order does not matter
    let plan = plan(&settings, &observe(100, nodes));
    assert_eq!(plan.started, names(&["node-00", "node-01"]));
    assert_eq!(plan.canary, CanaryState::Running);
    assert_eq!(
        plan.node("node-02").and_then(|n| n.wait_reason()),
        Some(WaitReason::Canary)
    );
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (true, "CanaryInProgress".to_string())
    );
}

#[test]
fn the_canary_skips_nodes_that_cannot_start() {
    let mut settings = settings();
    settings.canary.nodes = 1;
    settings.max_unavailable = MaxUnavailable::Count(5);
    let mut nodes = fleet(3);
    nodes[0].other_owner = Some("other".to_string());
    let plan = plan(&settings, &observe(100, nodes));
    assert_eq!(plan.started, names(&["node-01"]));
}

#[test]
fn a_failed_canary_is_replaced_by_the_next_node() {
    let mut settings = settings();
    settings.canary.nodes = 1;
    settings.failure_budget = 1;
    settings.max_unavailable = MaxUnavailable::Count(5);
    let mut nodes = fleet(4);
    nodes[0] = in_phase("node-00", Phase::Failed, 50);
    nodes[0].failure = Some(FailureReason::DrainTimeout);
    let plan = plan(&settings, &observe(100, nodes));
    assert_eq!(plan.started, names(&["node-01"]));
    assert_eq!(plan.canary, CanaryState::Running);
}

#[test]
fn waves_wait_for_the_soak_after_the_last_canary_became_updated() {
    let mut settings = settings();
    settings.canary = clb_rollout_planner::Canary {
        nodes: 2,
        soak_seconds: 600,
    };
    settings.max_unavailable = MaxUnavailable::Count(3);
    let mut nodes = fleet(8);
    nodes[0] = in_phase("node-00", Phase::Updated, 100);
    nodes[1] = in_phase("node-01", Phase::Updated, 400);

    let soaking = plan(&settings, &observe(999, nodes.clone()));
    assert!(soaking.started.is_empty());
    assert_eq!(
        soaking.canary,
        CanaryState::Soaking {
            until: Timestamp(1000)
        }
    );
    assert_eq!(soaking.next_check, Some(Timestamp(1000)));
    assert_eq!(
        soaking.node("node-02").and_then(|n| n.wait_reason()),
        Some(WaitReason::CanarySoak)
    );
    assert_eq!(
        reason(&soaking, ConditionKind::Progressing),
        (true, "CanarySoaking".to_string())
    );

    let waves = plan(&settings, &observe(1000, nodes));
    assert_eq!(waves.canary, CanaryState::Done);
    assert_eq!(waves.started, names(&["node-02", "node-03", "node-04"]));
    assert_eq!(
        reason(&waves, ConditionKind::Progressing),
        (true, "WavesInProgress".to_string())
    );
}

#[test]
fn one_canary_updated_of_two_does_not_start_the_waves() {
    let mut settings = settings();
    settings.canary = clb_rollout_planner::Canary {
        nodes: 2,
        soak_seconds: 0,
    };
    settings.max_unavailable = MaxUnavailable::Count(3);
    let mut nodes = fleet(5);
    nodes[0] = in_phase("node-00", Phase::Updated, 100);
    nodes[1] = in_phase("node-01", Phase::Verifying, 100);
    let plan = plan(&settings, &observe(110, nodes));
    assert!(plan.started.is_empty());
    assert_eq!(plan.canary, CanaryState::Running);
}

#[test]
fn a_canary_that_updates_in_this_step_starts_its_soak_now() {
    let mut settings = settings();
    settings.canary = clb_rollout_planner::Canary {
        nodes: 1,
        soak_seconds: 300,
    };
    settings.max_unavailable = MaxUnavailable::Count(3);
    let mut nodes = fleet(3);
    nodes[0] = in_phase("node-00", Phase::Verifying, 100);
    let plan = plan(&settings, &observe(500, nodes));
    assert_eq!(plan.node("node-00").map(|n| n.phase), Some(Phase::Updated));
    assert_eq!(
        plan.canary,
        CanaryState::Soaking {
            until: Timestamp(800)
        }
    );
    assert!(plan.started.is_empty());
}

#[test]
fn a_canary_bigger_than_the_fleet_is_the_whole_fleet() {
    let mut settings = settings();
    settings.canary.nodes = 10;
    settings.max_unavailable = MaxUnavailable::Count(10);
    let plan = plan(&settings, &observe(100, fleet(3)));
    assert_eq!(plan.started.len(), 3);
}

#[test]
fn a_wave_never_exceeds_max_unavailable_counting_other_outages() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Percent(30); // 3 of 10
    let mut nodes = fleet(10);
    nodes[7].ready = false;
    nodes[8].unschedulable = true;
    let plan = plan(&settings, &observe(100, nodes));
    assert_eq!(plan.max_unavailable, 3);
    assert_eq!(
        plan.started,
        names(&["node-00"]),
        "two places are taken by others' outages"
    );
    assert_eq!(
        plan.node("node-01").and_then(|n| n.wait_reason()),
        Some(WaitReason::MaxUnavailable)
    );
    assert_eq!(plan.unavailable, 2);
}

#[test]
fn nodes_in_flight_keep_their_places_while_they_stage() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Count(2);
    let mut nodes = fleet(5);
    nodes[0] = in_phase("node-00", Phase::Staging, 50);
    nodes[1] = in_phase("node-01", Phase::Staged, 50);
    nodes[1].staged_digest = None; // still staging
    let plan = plan(&settings, &observe(100, nodes));
    assert!(plan.started.is_empty());
    assert_eq!(plan.wave, names(&["node-00", "node-01"]));
}

#[test]
fn a_staged_node_waits_for_room_when_others_went_down_meanwhile() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Count(2);
    let mut nodes = fleet(4);
    nodes[0] = in_phase("node-00", Phase::Staged, 50);
    nodes[1] = in_phase("node-01", Phase::Staged, 50);
    nodes[3].ready = false;
    let plan = plan(&settings, &observe(100, nodes));
    assert_eq!(
        plan.node("node-00").map(|n| n.actions.clone()),
        Some(vec![Action::Cordon, Action::Drain])
    );
    let waiting = plan.node("node-01");
    assert_eq!(
        waiting.and_then(|n| n.wait_reason()),
        Some(WaitReason::MaxUnavailable)
    );
    assert_eq!(waiting.map(|n| n.phase), Some(Phase::Staged));
    assert_eq!(plan.unavailable, 2);
    assert!(plan.started.is_empty());
}

#[test]
fn the_failure_budget_is_not_exceeded_at_equal() {
    let mut settings = settings();
    settings.failure_budget = 1;
    settings.max_unavailable = MaxUnavailable::Count(2);
    let mut nodes = fleet(4);
    nodes[0] = in_phase("node-00", Phase::Failed, 50);
    let plan = plan(&settings, &observe(100, nodes));
    assert!(!plan.halted);
    assert_eq!(plan.started, names(&["node-01", "node-02"]));
    assert_eq!(
        reason(&plan, ConditionKind::Halted),
        (false, "WithinFailureBudget".to_string())
    );
}

#[test]
fn failures_beyond_the_budget_halt_starts_but_nodes_in_flight_finish() {
    let mut settings = settings();
    settings.failure_budget = 1;
    settings.max_unavailable = MaxUnavailable::Count(5);
    let mut nodes = fleet(6);
    nodes[0] = in_phase("node-00", Phase::Failed, 50);
    nodes[1] = in_phase("node-01", Phase::Quarantined, 50);
    nodes[1].quarantined = true;
    nodes[2] = in_phase("node-02", Phase::Staged, 50);
    nodes[3] = in_phase("node-03", Phase::Draining, 90);
    let plan = plan(&settings, &observe(100, nodes));
    assert!(plan.halted);
    assert!(plan.started.is_empty());
    assert_eq!(plan.failed_nodes, names(&["node-00", "node-01"]));
    assert_eq!(
        plan.node("node-02").map(|n| n.phase),
        Some(Phase::Draining),
        "in flight finishes"
    );
    assert_eq!(
        plan.node("node-03").map(|n| n.actions.clone()),
        Some(vec![Action::Drain])
    );
    assert_eq!(
        plan.node("node-04").and_then(|n| n.wait_reason()),
        Some(WaitReason::Halted)
    );
    let halted = plan.condition(ConditionKind::Halted).cloned();
    let halted = halted.unwrap_or_else(|| panic!("no Halted condition"));
    assert!(halted.status);
    assert_eq!(halted.reason, "FailureBudgetExceeded");
    assert!(
        halted.message.contains("node-00, node-01"),
        "{}",
        halted.message
    );
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (false, "Halted".to_string())
    );
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (false, "Halted".to_string())
    );
}

#[test]
fn a_failure_decided_in_this_step_already_stops_starts() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Count(2);
    let mut nodes = fleet(3);
    nodes[0] = in_phase("node-00", Phase::Draining, 0); // times out at 600
    let plan = plan(&settings, &observe(600, nodes));
    assert_eq!(plan.node("node-00").map(|n| n.phase), Some(Phase::Failed));
    assert!(plan.halted);
    assert!(plan.started.is_empty());
}

#[test]
fn a_halted_rollout_with_nothing_in_flight_stays_halted_not_complete() {
    let mut nodes = fleet(3);
    nodes[0] = in_phase("node-00", Phase::Failed, 50);
    let plan = plan(&settings(), &observe(100, nodes));
    assert!(plan.halted);
    assert!(!plan.complete);
    assert!(plan.wave.is_empty());
}

#[test]
fn pausing_stops_new_starts_and_lets_nodes_in_flight_finish() {
    let mut settings = settings();
    settings.paused = true;
    settings.max_unavailable = MaxUnavailable::Count(3);
    let mut nodes = fleet(4);
    nodes[0] = in_phase("node-00", Phase::Staged, 50);
    let plan = plan(&settings, &observe(100, nodes));
    assert!(plan.started.is_empty());
    assert!(plan.paused);
    assert_eq!(plan.node("node-00").map(|n| n.phase), Some(Phase::Draining));
    assert_eq!(
        plan.node("node-01").and_then(|n| n.wait_reason()),
        Some(WaitReason::Paused)
    );
    assert_eq!(
        reason(&plan, ConditionKind::Paused),
        (true, "Paused".to_string())
    );
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (false, "Paused".to_string())
    );
}

#[test]
fn a_closed_window_stops_new_starts_and_lets_nodes_in_flight_finish() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Count(3);
    let mut nodes = fleet(4);
    nodes[0] = in_phase("node-00", Phase::Verifying, 0);
    let mut observation = observe(100, nodes);
    observation.window_open = false;
    let plan = plan(&settings, &observation);
    assert!(plan.started.is_empty());
    assert_eq!(plan.node("node-00").map(|n| n.phase), Some(Phase::Updated));
    assert_eq!(
        plan.node("node-01").and_then(|n| n.wait_reason()),
        Some(WaitReason::WindowClosed)
    );
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (true, "OutsideWindow".to_string())
    );
    assert_eq!(
        reason(&plan, ConditionKind::Paused),
        (false, "NotPaused".to_string())
    );
}

#[test]
fn complete_when_every_node_is_updated() {
    let nodes: Vec<NodeObservation> = (0..3)
        .map(|i| in_phase(&format!("node-{i}"), Phase::Updated, 10))
        .collect();
    let plan = plan(&settings(), &observe(100, nodes));
    assert!(plan.complete);
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (true, "AllUpdated".to_string())
    );
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (false, "Complete".to_string())
    );
    assert_eq!(plan.counts.updated, 3);
    assert_eq!(plan.counts.total, 3);
}

#[test]
fn failures_within_the_budget_complete_with_failures() {
    let mut settings = settings();
    settings.failure_budget = 2;
    let mut nodes = vec![
        in_phase("a", Phase::Updated, 10),
        in_phase("b", Phase::Failed, 10),
    ];
    nodes.push(in_phase("c", Phase::Quarantined, 10));
    nodes[2].quarantined = true;
    let plan = plan(&settings, &observe(100, nodes));
    assert!(plan.complete);
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (true, "CompletedWithFailures".to_string())
    );
    assert_eq!((plan.counts.failed, plan.counts.quarantined), (1, 1));
}

#[test]
fn quarantined_nodes_from_before_are_skipped() {
    let mut skipped = node("b");
    skipped.quarantined = true;
    let plan = plan(
        &settings(),
        &observe(100, vec![in_phase("a", Phase::Updated, 10), skipped]),
    );
    assert!(plan.complete);
    assert_eq!(plan.counts.skipped, 1);
    assert_eq!(plan.counts.pending, 0);
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (true, "CompletedWithSkippedNodes".to_string())
    );
}

#[test]
fn an_empty_selection_is_complete() {
    let plan = plan(&settings(), &observe(100, Vec::new()));
    assert!(plan.complete);
    assert_eq!(plan.max_unavailable, 0);
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (true, "NoNodesSelected".to_string())
    );
}

#[test]
fn nodes_that_cannot_start_yet_keep_the_rollout_waiting_not_complete() {
    let mut waiting = node("b");
    waiting.ready = false;
    let plan = plan(
        &settings(),
        &observe(100, vec![in_phase("a", Phase::Updated, 10), waiting]),
    );
    assert!(!plan.complete);
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (true, "WaitingForNodes".to_string())
    );
    assert_eq!(
        reason(&plan, ConditionKind::Complete),
        (false, "InProgress".to_string())
    );
}

#[test]
fn a_last_uncordon_is_done_before_complete() {
    let plan = plan(
        &settings(),
        &observe(100, vec![in_phase("a", Phase::Verifying, 0)]),
    );
    assert_eq!(plan.node("a").map(|n| n.phase), Some(Phase::Updated));
    assert!(!plan.complete, "the uncordon is still to be carried out");
}

#[test]
fn others_outages_filling_max_unavailable_are_reported() {
    let mut nodes = fleet(3);
    nodes[2].ready = false;
    let plan = plan(&settings(), &observe(100, nodes));
    assert!(plan.started.is_empty());
    assert_eq!(
        reason(&plan, ConditionKind::Progressing),
        (true, "MaxUnavailableReached".to_string())
    );
}

#[test]
fn the_plan_does_not_depend_on_the_input_order() {
    let mut settings = settings();
    settings.max_unavailable = MaxUnavailable::Count(2);
    settings.canary.nodes = 1;
    let mut nodes = fleet(7);
    nodes[2] = in_phase("node-02", Phase::Updated, 10);
    nodes[4].ready = false;
    nodes[5] = in_phase("node-05", Phase::Draining, 50);
    let forward = plan(&settings, &observe(100, nodes.clone()));
    nodes.reverse();
    nodes.swap(0, 3);
    let shuffled = plan(&settings, &observe(100, nodes));
    assert_eq!(forward, shuffled);
    let sorted: Vec<_> = forward.nodes.iter().map(|n| n.name.clone()).collect();
    let mut expected = sorted.clone();
    expected.sort();
    assert_eq!(sorted, expected);
}

#[test]
fn counts_cover_every_phase() {
    let mut settings = settings();
    settings.failure_budget = 5;
    settings.max_unavailable = MaxUnavailable::Count(9);
    let nodes: Vec<NodeObservation> = Phase::ALL
        .iter()
        .enumerate()
        .map(|(i, phase)| {
            let mut node = in_phase(&format!("n{i}"), *phase, 100);
            node.quarantined = *phase == Phase::Quarantined;
            node.ready = true;
            // Keep each node in its phase for this step.
            if *phase == Phase::Staged {
                node.unschedulable = true;
            }
            if *phase == Phase::Pending {
                node.other_owner = Some("other".to_string());
            }
            node
        })
        .collect();
    let plan = plan(&settings, &observe(110, nodes));
    let c = plan.counts;
    assert_eq!(
        [
            c.pending,
            c.staging,
            c.staged,
            c.draining,
            c.rebooting,
            c.verifying,
            c.updated,
            c.failed,
            c.quarantined
        ],
        [1; 9],
        "{c:?}"
    );
    assert_eq!(c.total, 9);
}
