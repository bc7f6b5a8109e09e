//! Property tests of the planner: random fleets and settings, driven to their end by the
//! simulator in `sim`, checked on every step (never past maxUnavailable, nothing started after
//! a halt, while paused or outside the window, canary before waves) and at the end (every node
//! updated, failed or untouched, never left cordoned). The last tests show that the checks
//! catch wrong plans, so the properties can fail.

mod sim;

use clb_rollout_planner::{Action, MaxUnavailable, Phase};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use sim::{Fate, NodeSpec, SettingsSpec, Sim, checks};

/// A failure with `percent` percent chance (0 to 31 in these runs: a fleet with many failures
/// halts early, a fleet with few reaches the end), of each kind alike.
fn fate(percent: u32) -> impl Strategy<Value = Fate> {
    const FAILURES: [Fate; 4] = [
        Fate::StageError,
        Fate::DrainStuck,
        Fate::RollBack,
        Fate::NeverHealthy,
    ];
    (0u32..100, 0usize..4).prop_map(move |(roll, kind)| {
        if roll < percent {
            FAILURES[kind]
        } else {
            Fate::Success
        }
    })
}

fn node_spec(failure_percent: u32) -> impl Strategy<Value = NodeSpec> {
    (
        proptest::bool::weighted(0.9),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.1),
        proptest::bool::weighted(0.05),
        proptest::bool::weighted(0.1),
        fate(failure_percent),
    )
        .prop_map(
            |(ready, cordoned_by_others, held_by_other_rollout, quarantined, on_target, fate)| {
                NodeSpec {
                    ready,
                    cordoned_by_others,
                    held_by_other_rollout,
                    quarantined,
                    on_target,
                    fate,
                }
            },
        )
}

fn max_unavailable() -> impl Strategy<Value = MaxUnavailable> {
    prop_oneof![
        (0u32..8).prop_map(MaxUnavailable::Count),
        (0u32..60).prop_map(MaxUnavailable::Percent)
    ]
}

fn settings_spec() -> impl Strategy<Value = SettingsSpec> {
    (
        (0u32..4, 0u64..900),
        max_unavailable(),
        0u32..4,
        300u64..900,
        (0u64..120, any::<bool>()),
        proptest::option::weighted(0.7, 300u64..1200),
        proptest::bool::weighted(0.2),
    )
        .prop_map(
            |(
                (canary_nodes, soak_seconds),
                max_unavailable,
                failure_budget,
                drain_timeout_seconds,
                (min_ready_seconds, pods_ready),
                verify_timeout_seconds,
                paused,
            )| SettingsSpec {
                canary_nodes,
                soak_seconds,
                max_unavailable,
                failure_budget,
                drain_timeout_seconds,
                min_ready_seconds,
                pods_ready,
                verify_timeout_seconds,
                paused,
            },
        )
}

proptest! {
    // Failing cases are kept beside the tests (not next to a lib.rs, which tests/ lacks).
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/proptest-regressions/properties.txt"
        ))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_rollout_respects_its_limits_and_ends_cleanly(
        settings in settings_spec(),
        nodes in (0u32..32).prop_flat_map(|percent| proptest::collection::vec(node_spec(percent), 1..60)),
        seed in any::<u64>(),
        calm_at in 0u64..300,
    ) {
        let mut sim = Sim::new(settings, &nodes, seed, calm_at);
        if let Err(error) = sim.run() {
            return Err(TestCaseError::fail(error));
        }
    }

    #[test]
    fn a_fleet_where_every_node_succeeds_is_all_updated(
        mut settings in settings_spec(),
        count in 1usize..40,
        seed in any::<u64>(),
    ) {
        settings.paused = false;
        let healthy = NodeSpec {
            ready: true,
            cordoned_by_others: false,
            held_by_other_rollout: false,
            quarantined: false,
            on_target: false,
            fate: Fate::Success,
        };
        let mut sim = Sim::new(settings, &vec![healthy; count], seed, 0);
        let outcome = sim.run().map_err(TestCaseError::fail)?;
        prop_assert!(outcome.last_plan.complete);
        prop_assert_eq!(outcome.last_plan.counts.updated as usize, count);
        prop_assert!(sim.nodes.iter().all(|node| node.observed.phase == Phase::Updated));
    }
}

/// A run of a healthy fleet with a canary, then a plan tampered with in each way a planner
/// could go wrong: every tampering must be caught by the step checks.
#[test]
fn the_step_checks_catch_wrong_plans() {
    let settings = SettingsSpec {
        canary_nodes: 1,
        soak_seconds: 600,
        max_unavailable: MaxUnavailable::Count(2),
        failure_budget: 0,
        drain_timeout_seconds: 600,
        min_ready_seconds: 60,
        pods_ready: true,
        verify_timeout_seconds: Some(900),
        paused: false,
    };
    let healthy = NodeSpec {
        ready: true,
        cordoned_by_others: false,
        held_by_other_rollout: false,
        quarantined: false,
        on_target: false,
        fate: Fate::Success,
    };
    let sim = Sim::new(settings, &vec![healthy; 6], 7, 0);
    let plan = clb_rollout_planner::plan(&sim.settings, &observation(&sim));
    assert_eq!(
        plan.started,
        vec!["node-00".to_string()],
        "the canary starts alone"
    );

    // Starting a second node during the canary.
    let wrong = start(&plan, 1);
    assert_rejected(&sim, &wrong, "beyond the canary");

    // Starting while paused.
    let mut paused = sim_clone(&sim);
    paused.settings.paused = true;
    assert_rejected(&paused, &plan, "paused");

    // Starting in the step that halts (a failure beyond the budget of 0).
    let mut halting = plan.clone();
    halting.nodes[5].phase = Phase::Failed;
    halting.nodes[5].failure = Some(clb_rollout_planner::FailureReason::DrainTimeout);
    halting.halted = true;
    assert_rejected(&sim, &halting, "after the rollout halted");

    // Starting on a later step, once a halt was seen.
    let mut halted = sim_clone(&sim);
    halted.halted_seen = true;
    assert_rejected(&halted, &halting, "after the rollout halted");

    // Cordoning beyond maxUnavailable (three nodes at once, max 2).
    let mut cordoned = plan.clone();
    for index in 0..3 {
        cordoned.nodes[index].actions = vec![Action::Cordon, Action::Drain];
        cordoned.nodes[index].phase = Phase::Draining;
        cordoned.nodes[index].hold = true;
    }
    cordoned.started.clear();
    assert_rejected(&sim, &cordoned, "maxUnavailable");

    // Starting a node that is not ready.
    let mut not_ready = sim_clone(&sim);
    not_ready.nodes[0].observed.ready = false;
    assert_rejected(&not_ready, &plan, "may not start");

    // Uncordoning a node we did not cordon.
    let mut uncordon = plan.clone();
    uncordon.nodes[3].actions = vec![Action::Uncordon];
    assert_rejected(&sim, &uncordon, "did not cordon");

    // Holding the lock of a node at rest.
    let mut hold = plan.clone();
    hold.nodes[4].hold = true;
    assert_rejected(&sim, &hold, "lock");
}

/// The end checks catch a node left cordoned, one stuck in flight, and a non-halted rollout
/// that did not complete.
#[test]
fn the_end_checks_catch_unclean_ends() {
    let settings = SettingsSpec {
        canary_nodes: 0,
        soak_seconds: 0,
        max_unavailable: MaxUnavailable::Count(1),
        failure_budget: 0,
        drain_timeout_seconds: 600,
        min_ready_seconds: 0,
        pods_ready: false,
        verify_timeout_seconds: Some(900),
        paused: false,
    };
    let healthy = NodeSpec {
        ready: true,
        cordoned_by_others: false,
        held_by_other_rollout: false,
        quarantined: false,
        on_target: false,
        fate: Fate::Success,
    };
    let mut sim = Sim::new(settings, &vec![healthy; 3], 11, 0);
    let outcome = sim.run().unwrap_or_else(|error| panic!("{error}"));
    assert!(checks::end(&sim, &outcome.last_plan).is_ok());

    let mut cordoned = sim_clone(&sim);
    cordoned.nodes[1].observed.cordoned_by_us = true;
    assert!(checks::end(&cordoned, &outcome.last_plan).is_err());

    let mut stuck = sim_clone(&sim);
    stuck.nodes[2].observed.phase = Phase::Verifying;
    assert!(checks::end(&stuck, &outcome.last_plan).is_err());

    let mut incomplete = outcome.last_plan.clone();
    incomplete.complete = false;
    assert!(checks::end(&sim, &incomplete).is_err());

    let mut wrong_failure = sim_clone(&sim);
    wrong_failure.nodes[0].observed.phase = Phase::Failed;
    wrong_failure.nodes[0].observed.failure =
        Some(clb_rollout_planner::FailureReason::DrainTimeout);
    assert!(checks::end(&wrong_failure, &outcome.last_plan).is_err());
}

fn observation(sim: &Sim) -> clb_rollout_planner::Observation {
    clb_rollout_planner::Observation {
        now: clb_rollout_planner::Timestamp(sim.now),
        window_open: sim.window_open,
        nodes: sim.nodes.iter().map(|node| node.observed.clone()).collect(),
    }
}

/// The plan with node `index` started too.
fn start(plan: &clb_rollout_planner::Plan, index: usize) -> clb_rollout_planner::Plan {
    let mut plan = plan.clone();
    plan.nodes[index].actions = vec![Action::Stage];
    plan.nodes[index].phase = Phase::Staging;
    plan.nodes[index].hold = true;
    plan.started.push(plan.nodes[index].name.clone());
    plan.started.sort();
    plan
}

fn sim_clone(sim: &Sim) -> Sim {
    Sim {
        settings: sim.settings.clone(),
        now: sim.now,
        step: sim.step,
        calm_at: sim.calm_at,
        window_open: sim.window_open,
        nodes: sim.nodes.clone(),
        rng: sim::Rng::new(1),
        halted_seen: sim.halted_seen,
        coverage: sim.coverage.clone(),
    }
}

/// Carries out `plan` on a copy of `sim` the way the simulator's controller does and expects
/// the step checks to reject it with a message containing `expected`.
fn assert_rejected(sim: &Sim, plan: &clb_rollout_planner::Plan, expected: &str) {
    let mut after = sim_clone(sim);
    let before = sim.nodes.clone();
    after.apply(plan).unwrap_or_else(|error| panic!("{error}"));
    match checks::step(&after, &before, plan) {
        Ok(()) => panic!("a wrong plan passed the checks (expected {expected:?}): {plan:#?}"),
        Err(error) => assert!(
            error.contains(expected),
            "expected {expected:?}, got {error}"
        ),
    }
}

/// The generated runs reach the cases the properties are about: every reason to wait, waves
/// that fill maxUnavailable, halts, complete runs with and without failures. Deterministic
/// seeds, same generators' ranges as the property test.
#[test]
fn the_simulated_runs_reach_every_interesting_case() {
    let mut coverage = sim::Coverage::default();
    let mut rng = sim::Rng::new(2024);
    const FAILURES: [Fate; 4] = [
        Fate::StageError,
        Fate::DrainStuck,
        Fate::RollBack,
        Fate::NeverHealthy,
    ];
    for seed in 0..150 {
        let failure_percent = rng.below(32);
        let count = 1 + rng.below(59) as usize;
        let nodes: Vec<NodeSpec> = (0..count)
            .map(|_| NodeSpec {
                ready: rng.chance(90),
                cordoned_by_others: rng.chance(10),
                held_by_other_rollout: rng.chance(10),
                quarantined: rng.chance(5),
                on_target: rng.chance(10),
                fate: if rng.chance(failure_percent) {
                    FAILURES[rng.below(4) as usize]
                } else {
                    Fate::Success
                },
            })
            .collect();
        let max_unavailable = if rng.chance(50) {
            MaxUnavailable::Count(rng.below(8) as u32)
        } else {
            MaxUnavailable::Percent(rng.below(60) as u32)
        };
        let settings = SettingsSpec {
            canary_nodes: rng.below(4) as u32,
            soak_seconds: rng.below(900),
            max_unavailable,
            failure_budget: rng.below(4) as u32,
            drain_timeout_seconds: 300 + rng.below(600),
            min_ready_seconds: rng.below(120),
            pods_ready: rng.chance(50),
            verify_timeout_seconds: rng.chance(70).then(|| 300 + rng.below(900)),
            paused: rng.chance(20),
        };
        let mut sim = Sim::new(settings, &nodes, seed, rng.below(300));
        sim.run()
            .unwrap_or_else(|error| panic!("seed {seed}: {error}"));
        coverage.merge(&sim.coverage);
    }
    use clb_rollout_planner::WaitReason;
    for reason in [
        WaitReason::NotReady,
        WaitReason::CordonedByOthers,
        WaitReason::OwnedByOtherRollout,
        WaitReason::Quarantined,
        WaitReason::Halted,
        WaitReason::Paused,
        WaitReason::WindowClosed,
        WaitReason::Canary,
        WaitReason::CanarySoak,
        WaitReason::MaxUnavailable,
        WaitReason::Staging,
        WaitReason::Rebooting,
        WaitReason::Verifying,
    ] {
        assert!(
            coverage.wait_reasons.contains(&reason),
            "no run waited for {reason:?}: {coverage:?}"
        );
    }
    assert!(coverage.full_waves > 0, "{coverage:?}");
    assert!(coverage.halted_runs > 10, "{coverage:?}");
    assert!(coverage.complete_runs > 10, "{coverage:?}");
    assert!(coverage.completed_with_failures > 5, "{coverage:?}");
    println!("{coverage:?}");
}
