//! The canary: the first nodes to start, alone, and then a soak before the waves.
//!
//! The planner keeps no memory between steps, so the canary is read from the recorded phases:
//! while fewer than the canary's size are `Updated`, only enough nodes start to make up that
//! size; a canary that fails is replaced by the next node (the failure budget, not the canary,
//! decides when to stop). The soak counts from the time the canary-size-th node became
//! `Updated`, which later updates never move, so once done the canary stays done unless an
//! updated node fails (it then counts no more, and the canary must be made up again).

use crate::plan::CanaryState;
use crate::settings::Settings;
use crate::time::Timestamp;

/// The canary's size: never more than the fleet.
pub(crate) fn size(settings: &Settings, fleet: usize) -> usize {
    (settings.canary.nodes as usize).min(fleet)
}

/// `updated_since`: when each `Updated` node became so.
pub(crate) fn state(
    settings: &Settings,
    fleet: usize,
    now: Timestamp,
    mut updated_since: Vec<Timestamp>,
) -> CanaryState {
    let size = size(settings, fleet);
    if size == 0 {
        return CanaryState::Done;
    }
    if updated_since.len() < size {
        return CanaryState::Running;
    }
    updated_since.sort_unstable();
    let until = updated_since[size - 1].plus(settings.canary.soak_seconds);
    if now >= until {
        CanaryState::Done
    } else {
        CanaryState::Soaking { until }
    }
}

/// How many more nodes the canary lets start, given the nodes updated and in flight.
pub(crate) fn room(
    settings: &Settings,
    fleet: usize,
    state: CanaryState,
    updated: usize,
    in_flight: usize,
) -> usize {
    match state {
        CanaryState::Running => size(settings, fleet).saturating_sub(updated + in_flight),
        CanaryState::Soaking { .. } => 0,
        CanaryState::Done => usize::MAX,
    }
}
