//! The rollout's settings: what the controller maps from the rollout's spec. The image tag is
//! resolved and pinned to a digest before it gets here, and the maintenance window is evaluated
//! by the controller (it needs a time-zone database), so the planner sees neither.

use serde::{Deserialize, Serialize};

/// Everything the planner needs from a rollout's spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// The pinned manifest digest every node is rolled to (`sha256:…`).
    pub target_digest: String,
    pub canary: Canary,
    pub max_unavailable: MaxUnavailable,
    /// How many nodes may fail before the rollout halts: it halts when failed > budget.
    pub failure_budget: u32,
    /// How long a drain may take (evictions refused with 429 are retried until then); past it
    /// the node is uncordoned and marked failed.
    pub drain_timeout_seconds: u64,
    pub health_check: HealthCheck,
    /// How long a node may stay in `Rebooting`, and again in `Verifying`, before it is failed
    /// and quarantined. `None`: wait for ever (a node that never comes back then holds its
    /// place in the wave until a person acts).
    pub verify_timeout_seconds: Option<u64>,
    /// `spec.paused`: no new node starts; nodes in flight finish.
    pub paused: bool,
}

/// The first wave, and how long it must stay healthy before the others start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Canary {
    /// How many nodes form the canary (0: no canary, waves start at once).
    pub nodes: u32,
    /// How long after the last canary became `Updated` the waves wait.
    pub soak_seconds: u64,
}

/// When a rolled node counts as healthy (the node is always required to have booted the target
/// digest and to have its slot marked good by the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Require the Node's `Ready` condition.
    pub node_ready: bool,
    /// Require the node's pods to be ready; `min_ready_seconds` then counts from when they
    /// became ready, otherwise from when the node entered `Verifying`.
    pub pods_ready: bool,
    pub min_ready_seconds: u64,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            node_ready: true,
            pods_ready: true,
            min_ready_seconds: 60,
        }
    }
}

/// `maxUnavailable`: an int or a percent of the selected nodes, as Kubernetes' IntOrString.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MaxUnavailable {
    Count(u32),
    Percent(u32),
}

impl MaxUnavailable {
    /// How many of `fleet` selected nodes may be unavailable at once.
    ///
    /// A percent rounds down, as a Deployment's `maxUnavailable` does, because rounding up
    /// could take down more than the operator allowed. The result is at least 1 for a
    /// non-empty fleet (a `0`, `0%` or a percent of a small fleet that rounds to 0 would
    /// otherwise make a rollout that can never start a node and never says why), and at most
    /// the fleet. An empty fleet gives 0.
    pub fn resolve(self, fleet: usize) -> usize {
        if fleet == 0 {
            return 0;
        }
        let wanted = match self {
            MaxUnavailable::Count(count) => count as usize,
            // u128 so that a huge fleet times a huge percent cannot overflow.
            MaxUnavailable::Percent(percent) => {
                (fleet as u128 * u128::from(percent) / 100) as usize
            }
        };
        wanted.clamp(1, fleet)
    }
}

impl std::str::FromStr for MaxUnavailable {
    type Err = String;

    /// Parses the IntOrString forms `3` and `10%`.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (number, percent) = match text.strip_suffix('%') {
            Some(number) => (number, true),
            None => (text, false),
        };
        let value: u32 = number.parse().map_err(|_| {
            format!("maxUnavailable {text:?}: expected an integer or a percent such as 10%")
        })?;
        Ok(if percent {
            MaxUnavailable::Percent(value)
        } else {
            MaxUnavailable::Count(value)
        })
    }
}

impl std::fmt::Display for MaxUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MaxUnavailable::Count(count) => write!(f, "{count}"),
            MaxUnavailable::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}
