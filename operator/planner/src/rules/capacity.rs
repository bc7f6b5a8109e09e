//! Room within `maxUnavailable`.
//!
//! Two gates keep the fleet within it. Starting a node reserves a place: a node starts only
//! while the nodes unavailable (for any reason, ours or not) plus the nodes in flight stay
//! within the limit, so a wave never stages more nodes than it may take down. Cordoning checks
//! again against what is unavailable now, because other nodes may have gone NotReady or been
//! cordoned while the wave staged: a staged node then waits, never pushing the fleet over.

use crate::observe::NodeObservation;

/// The unavailable and reserved nodes of one step, by index in the name-ordered fleet.
pub(crate) struct Capacity {
    max: usize,
    unavailable: Vec<bool>,
}

impl Capacity {
    pub(crate) fn new(max: usize, nodes: &[&NodeObservation]) -> Capacity {
        Capacity {
            max,
            unavailable: nodes.iter().map(|node| node.unavailable()).collect(),
        }
    }

    pub(crate) fn unavailable(&self) -> usize {
        self.unavailable
            .iter()
            .filter(|unavailable| **unavailable)
            .count()
    }

    /// Cordon node `index` if that keeps the fleet within the limit; tells whether it did.
    pub(crate) fn try_cordon(&mut self, index: usize) -> bool {
        let others = self
            .unavailable()
            .saturating_sub(usize::from(self.unavailable[index]));
        if others + 1 > self.max {
            return false;
        }
        self.unavailable[index] = true;
        true
    }

    /// How many nodes may start, given which nodes are in flight after this step's other
    /// decisions (a node both unavailable and in flight takes one place).
    pub(crate) fn start_room(&self, in_flight: &[bool]) -> usize {
        let reserved = self
            .unavailable
            .iter()
            .zip(in_flight)
            .filter(|(unavailable, in_flight)| **unavailable || **in_flight)
            .count();
        self.max.saturating_sub(reserved)
    }
}
