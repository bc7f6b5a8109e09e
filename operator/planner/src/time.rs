//! Time is an input of the planner, never read from a clock, so a plan is a pure function of
//! what was observed and the same observation always gives the same plan.

use serde::{Deserialize, Serialize};

/// A point in time: whole seconds since the Unix epoch. Kubernetes timestamps have second
/// precision, so finer time would only pretend to be more exact than what is recorded.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// This time plus `seconds`, saturating: a huge timeout means "never", not a wrap to the past.
    pub fn plus(self, seconds: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(seconds))
    }
}

impl std::fmt::Display for Timestamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}s", self.0)
    }
}
