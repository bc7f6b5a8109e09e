//! One planning step: each node's own rules first, then the fleet's gates in a fixed order
//! (cordons within `maxUnavailable`, then the failure budget, pause, window and canary, then
//! starts), then the status.

use crate::observe::{NodeObservation, Observation, Phase};
use crate::plan::{Action, CanaryState, Plan, WaitReason};
use crate::rules::capacity::Capacity;
use crate::rules::node::{self, Decision, Step};
use crate::rules::{canary, status};
use crate::settings::Settings;
use crate::time::Timestamp;

/// Decides the rollout's next step from what was observed. Pure: the same input always gives
/// the same plan, and nothing is read or written.
pub fn plan(settings: &Settings, observation: &Observation) -> Plan {
    let now = observation.now;
    let mut nodes: Vec<&NodeObservation> = observation.nodes.iter().collect();
    // A stable order (by name) makes the canary and each wave the same nodes on every step.
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    let fleet = nodes.len();
    let max_unavailable = settings.max_unavailable.resolve(fleet);
    let mut capacity = Capacity::new(max_unavailable, &nodes);

    // The nodes' own rules, then cordons in name order while there is room.
    let mut decisions: Vec<Option<Decision>> = Vec::with_capacity(fleet);
    let mut startable = Vec::new();
    for (index, observed) in nodes.iter().enumerate() {
        decisions.push(match node::step(settings, now, observed) {
            Step::Done(decision) => Some(decision),
            Step::ReadyToCordon if capacity.try_cordon(index) => Some(node::start_drain(
                settings,
                now,
                observed,
                vec![Action::Cordon],
            )),
            Step::ReadyToCordon => Some(node::wait(
                observed,
                Phase::Staged,
                WaitReason::MaxUnavailable,
                None,
            )),
            Step::Startable => {
                startable.push(index);
                None
            }
        });
    }

    // The fleet as it stands after those decisions (startable nodes are still Pending). The
    // failures decided in this very step count, so a node failing now stops the starts now.
    let phase_of = |index: usize| {
        decisions[index]
            .as_ref()
            .map_or(Phase::Pending, |d| d.plan.phase)
    };
    let failed_nodes: Vec<String> = (0..fleet)
        .filter(|index| phase_of(*index).failed())
        .map(|index| nodes[index].name.clone())
        .collect();
    let halted = failed_nodes.len() > settings.failure_budget as usize;
    let updated_since: Vec<Timestamp> = (0..fleet)
        .filter(|index| phase_of(*index) == Phase::Updated)
        .map(|index| {
            if nodes[index].phase == Phase::Updated {
                nodes[index].since
            } else {
                now
            }
        })
        .collect();
    let updated = updated_since.len();
    let canary = canary::state(settings, fleet, now, updated_since);
    let mut in_flight: Vec<bool> = (0..fleet)
        .map(|index| phase_of(index).in_flight())
        .collect();
    let in_flight_before_starts = in_flight.iter().filter(|flying| **flying).count();

    // Starts, in name order, as long as every gate allows.
    let gate = if halted {
        Some(WaitReason::Halted)
    } else if settings.paused {
        Some(WaitReason::Paused)
    } else if !observation.window_open {
        Some(WaitReason::WindowClosed)
    } else if let CanaryState::Soaking { .. } = canary {
        Some(WaitReason::CanarySoak)
    } else {
        None
    };
    let mut canary_room = canary::room(settings, fleet, canary, updated, in_flight_before_starts);
    let mut started = Vec::new();
    for index in startable {
        let observed = nodes[index];
        let reason = match gate {
            Some(reason) => Some(reason),
            None if canary_room == 0 => Some(WaitReason::Canary),
            None if capacity.start_room(&in_flight) == 0 => Some(WaitReason::MaxUnavailable),
            None => None,
        };
        decisions[index] = Some(match reason {
            Some(reason) => node::wait(observed, Phase::Pending, reason, None),
            None => {
                canary_room = canary_room.saturating_sub(1);
                in_flight[index] = true;
                started.push(observed.name.clone());
                node::to(observed, Phase::Staging, vec![Action::Stage], None, None)
            }
        });
    }

    let decisions: Vec<Decision> = decisions.into_iter().flatten().collect();
    let mut next_check = decisions
        .iter()
        .filter_map(|decision| decision.wake)
        .filter(|at| *at > now)
        .min();
    if let CanaryState::Soaking { until } = canary {
        next_check = Some(next_check.map_or(until, |at| at.min(until)));
    }
    let plans: Vec<_> = decisions
        .into_iter()
        .map(|decision| decision.plan)
        .collect();
    let wave: Vec<String> = plans
        .iter()
        .filter(|plan| plan.phase.in_flight())
        .map(|plan| plan.name.clone())
        .collect();
    let counts = status::counts(&plans, &nodes);
    let complete = status::complete(halted, &plans, &nodes);
    let facts = status::Facts {
        settings,
        window_open: observation.window_open,
        counts,
        canary,
        halted,
        complete,
        failed_nodes: &failed_nodes,
        started: started.len(),
        in_flight: wave.len(),
        waiting_for_room: plans.iter().any(status::waits_for_room),
        unavailable: capacity.unavailable(),
        max_unavailable,
    };
    let conditions = status::conditions(&facts);
    Plan {
        unavailable: capacity.unavailable() as u32,
        max_unavailable: max_unavailable as u32,
        nodes: plans,
        started,
        wave,
        counts,
        canary,
        halted,
        failed_nodes,
        complete,
        paused: settings.paused,
        conditions,
        next_check,
    }
}
