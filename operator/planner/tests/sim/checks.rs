//! The properties, checked on every step and at the end of a run. Each returns `Err` with what
//! went wrong, so that the property tests can also show that a wrong plan is caught.

use clb_rollout_planner::{Action, FailureReason, Phase, Plan};

use super::{Fate, Sim, SimNode, TARGET, max_unavailable, unavailable};

/// After the controller carried out `plan` (the simulator's nodes), given the nodes before.
pub fn step(sim: &Sim, before: &[SimNode], plan: &Plan) -> Result<(), String> {
    let settings = &sim.settings;
    let max = max_unavailable(settings, sim.nodes.len());
    if plan.max_unavailable as usize != max {
        return Err(format!(
            "maxUnavailable resolved to {}, expected {max}",
            plan.max_unavailable
        ));
    }
    let after = &sim.nodes;

    // The planner never takes the fleet past maxUnavailable: its own disruption stays within
    // it, and a step that cordons leaves the whole fleet (others' outages included) within.
    let disrupted = after
        .iter()
        .filter(|node| node.observed.phase.disrupts())
        .count();
    if disrupted > max {
        return Err(format!(
            "{disrupted} nodes cordoned by the rollout, maxUnavailable {max}"
        ));
    }
    let unavailable_now = after
        .iter()
        .filter(|node| unavailable(&node.observed))
        .count();
    let cordons = plan
        .nodes
        .iter()
        .any(|node| node.actions.contains(&Action::Cordon));
    if cordons && unavailable_now > max {
        return Err(format!(
            "a cordon left {unavailable_now} nodes unavailable, maxUnavailable {max}"
        ));
    }

    let started: Vec<&str> = plan
        .nodes
        .iter()
        .filter(|node| node.actions.contains(&Action::Stage))
        .map(|node| node.name.as_str())
        .collect();
    if started != plan.started.iter().map(String::as_str).collect::<Vec<_>>() {
        return Err(format!(
            "started {:?} but nodes staged {started:?}",
            plan.started
        ));
    }
    for name in &started {
        let Some(node) = before.iter().find(|node| node.observed.name == *name) else {
            return Err(format!("started unknown node {name}"));
        };
        let observed = &node.observed;
        if observed.phase != Phase::Pending
            || !observed.ready
            || observed.unschedulable
            || observed.other_owner.is_some()
            || observed.quarantined
        {
            return Err(format!("started a node that may not start: {observed:?}"));
        }
    }
    let failed = after
        .iter()
        .filter(|node| node.observed.phase.failed())
        .count();
    let over_budget = failed > settings.failure_budget as usize;
    if plan.halted != over_budget {
        return Err(format!(
            "halted {} with {failed} failed, budget {}",
            plan.halted, settings.failure_budget
        ));
    }
    if sim.halted_seen && !plan.halted {
        return Err("the rollout un-halted with no person clearing a failure".to_string());
    }
    if !started.is_empty() {
        if settings.paused || !sim.window_open {
            return Err(format!(
                "started {started:?} while paused or outside the window"
            ));
        }
        if plan.halted || sim.halted_seen {
            return Err(format!("started {started:?} after the rollout halted"));
        }
        let reserved = after
            .iter()
            .filter(|node| unavailable(&node.observed) || node.observed.phase.in_flight())
            .count();
        if reserved > max {
            return Err(format!(
                "started {started:?}: {reserved} nodes unavailable or in flight, max {max}"
            ));
        }
        canary_allows(sim, &started)?;
    }

    for (node_plan, node) in plan.nodes.iter().filter_map(|p| {
        before
            .iter()
            .find(|n| n.observed.name == p.name)
            .map(|n| (p, n))
    }) {
        let observed = &node.observed;
        if node_plan.actions.contains(&Action::Uncordon) && !observed.cordoned_by_us {
            return Err(format!(
                "uncordons {}, which the rollout did not cordon",
                observed.name
            ));
        }
        if node_plan.actions.contains(&Action::Cordon) && (!observed.ready || observed.quarantined)
        {
            return Err(format!(
                "cordons {}, which is not ready or quarantined",
                observed.name
            ));
        }
        if node_plan.actions.contains(&Action::Reboot)
            && !(observed.cordoned_by_us && observed.drained)
        {
            return Err(format!(
                "reboots {} before it was cordoned and drained",
                observed.name
            ));
        }
        if node_plan.hold != (node_plan.phase.in_flight() && observed.other_owner.is_none()) {
            return Err(format!(
                "{} holds the lock {} in phase {:?}",
                observed.name, node_plan.hold, node_plan.phase
            ));
        }
        if node_plan.phase.failed() != node_plan.failure.is_some() {
            return Err(format!(
                "{} in {:?} with failure {:?}",
                observed.name, node_plan.phase, node_plan.failure
            ));
        }
    }
    Ok(())
}

/// Canary before waves: until `canary.nodes` nodes are updated no more than that many are
/// updated or in flight, and nothing starts until the soak has passed since the last of them.
fn canary_allows(sim: &Sim, started: &[&str]) -> Result<(), String> {
    let size = (sim.settings.canary.nodes as usize).min(sim.nodes.len());
    if size == 0 {
        return Ok(());
    }
    let mut updated: Vec<u64> = sim
        .nodes
        .iter()
        .filter(|node| node.observed.phase == Phase::Updated)
        .map(|node| node.observed.since.0)
        .collect();
    updated.sort_unstable();
    if updated.len() >= size {
        let soaked_at = updated[size - 1] + sim.settings.canary.soak_seconds;
        if sim.now < soaked_at {
            return Err(format!(
                "started {started:?} during the canary's soak (until {soaked_at})"
            ));
        }
        return Ok(());
    }
    let in_flight = sim
        .nodes
        .iter()
        .filter(|node| node.observed.phase.in_flight())
        .count();
    if updated.len() + in_flight > size {
        return Err(format!(
            "started {started:?} beyond the canary of {size}: {} updated, {in_flight} in flight",
            updated.len()
        ));
    }
    Ok(())
}

/// Every node ends updated, failed or quarantined, or untouched; never cordoned by us, never
/// held; complete unless halted; each failure is the one its fate calls for.
pub fn end(sim: &Sim, plan: &Plan) -> Result<(), String> {
    for node in &sim.nodes {
        let observed = &node.observed;
        let name = &observed.name;
        let untouched = observed.phase == Phase::Pending && !node.started;
        if !(observed.phase.terminal() || untouched) {
            return Err(format!(
                "{name} ends in {:?} (started: {})",
                observed.phase, node.started
            ));
        }
        if observed.cordoned_by_us || node.held {
            return Err(format!(
                "{name} is left cordoned ({}) or held ({}) by the rollout",
                observed.cordoned_by_us, node.held
            ));
        }
        if observed.phase == Phase::Updated
            && (observed.booted_digest.as_deref() != Some(TARGET) || !observed.slot_good)
        {
            return Err(format!(
                "{name} is Updated without running the target on a good slot"
            ));
        }
        if (observed.phase == Phase::Quarantined)
            != (observed.quarantined && !node.initially_quarantined)
        {
            return Err(format!(
                "{name} in {:?} with quarantine label {}",
                observed.phase, observed.quarantined
            ));
        }
        if !sim.halted_seen && untouched && !node.initially_quarantined {
            return Err(format!(
                "{name} was never started though the rollout did not halt"
            ));
        }
        if node.started {
            expected_end(node)?;
        }
    }
    if plan.complete == sim.halted_seen {
        return Err(format!(
            "complete {} but halted {}",
            plan.complete, sim.halted_seen
        ));
    }
    Ok(())
}

/// A started node ends as its fate says (NotReady blips may still make a healthy node miss its
/// verify timeout).
fn expected_end(node: &SimNode) -> Result<(), String> {
    let observed = &node.observed;
    let ok = matches!(
        (node.fate, observed.phase, &observed.failure),
        (Fate::Success, Phase::Updated, None)
            | (
                Fate::Success | Fate::NeverHealthy,
                Phase::Quarantined,
                Some(FailureReason::VerifyTimeout)
            )
            | (
                Fate::StageError,
                Phase::Failed,
                Some(FailureReason::StageFailed { .. })
            )
            | (
                Fate::DrainStuck,
                Phase::Failed,
                Some(FailureReason::DrainTimeout)
            )
            | (
                Fate::RollBack,
                Phase::Quarantined,
                Some(FailureReason::RolledBack)
            )
    );
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} with fate {:?} ends {:?} {:?}",
            observed.name, node.fate, observed.phase, observed.failure
        ))
    }
}
