//! A small pure simulator of a fleet under a rollout: the controller (carries out each plan's
//! actions and records phases exactly as the plan says) and the nodes (staging, drains,
//! reboots with random durations and fates, NotReady blips, others' cordons, other rollouts'
//! locks, pause and window toggles). Disturbances stop at `calm_at`, so that every run must
//! then reach an end; the checks in `checks` run on every step and at the end.

pub mod checks;

use std::collections::HashSet;

use clb_rollout_planner::{
    Action, Canary, HealthCheck, MaxUnavailable, NodeObservation, Observation, Phase, Plan,
    Settings, Timestamp, WaitReason, plan,
};

pub const TARGET: &str = "sha256:target";
pub const OLD: &str = "sha256:old";
/// Seconds between two observations.
pub const TICK: u64 = 30;
/// Steps after calm before a run that has not ended counts as stuck.
pub const MAX_STEPS_AFTER_CALM: u64 = 6000;

/// What happens to a node once started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Success,
    /// The agent fails to stage (a signature that does not verify).
    StageError,
    /// A PodDisruptionBudget never lets the drain finish.
    DrainStuck,
    /// The initrd falls back to the previous slot.
    RollBack,
    /// Boots the target but never gets its slot marked good.
    NeverHealthy,
}

/// A node as generated: its state when the rollout begins, and its fate.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub ready: bool,
    pub cordoned_by_others: bool,
    pub held_by_other_rollout: bool,
    pub quarantined: bool,
    pub on_target: bool,
    pub fate: Fate,
}

/// The generated settings, before the simulator's pause toggling.
#[derive(Debug, Clone)]
pub struct SettingsSpec {
    pub canary_nodes: u32,
    pub soak_seconds: u64,
    pub max_unavailable: MaxUnavailable,
    pub failure_budget: u32,
    pub drain_timeout_seconds: u64,
    pub min_ready_seconds: u64,
    pub pods_ready: bool,
    pub verify_timeout_seconds: Option<u64>,
    pub paused: bool,
}

impl SettingsSpec {
    pub fn settings(&self) -> Settings {
        Settings {
            target_digest: TARGET.to_string(),
            canary: Canary {
                nodes: self.canary_nodes,
                soak_seconds: self.soak_seconds,
            },
            max_unavailable: self.max_unavailable,
            failure_budget: self.failure_budget,
            drain_timeout_seconds: self.drain_timeout_seconds,
            health_check: HealthCheck {
                node_ready: true,
                pods_ready: self.pods_ready,
                min_ready_seconds: self.min_ready_seconds,
            },
            verify_timeout_seconds: self.verify_timeout_seconds,
            paused: self.paused,
        }
    }
}

/// One simulated node: what the controller would observe, plus what only the simulator knows.
#[derive(Debug, Clone)]
pub struct SimNode {
    pub observed: NodeObservation,
    pub fate: Fate,
    /// Ever started by the rollout.
    pub started: bool,
    /// The rollout holds the node's lock.
    pub held: bool,
    pub initially_quarantined: bool,
    stage_done_at: Option<u64>,
    drain_done_at: Option<u64>,
    back_at: Option<u64>,
    blip_until: Option<u64>,
    outside_cordon_until: Option<u64>,
}

/// A deterministic generator (xorshift64*) for the simulator's events; proptest draws the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }

    pub fn below(&mut self, bound: u64) -> u64 {
        self.next() % bound.max(1)
    }

    /// A duration of 1 to 5 ticks.
    pub fn duration(&mut self) -> u64 {
        (1 + self.below(5)) * TICK
    }
}

pub struct Sim {
    pub settings: Settings,
    pub now: u64,
    pub step: u64,
    pub calm_at: u64,
    pub window_open: bool,
    pub nodes: Vec<SimNode>,
    pub rng: Rng,
    /// A plan said halted on some step.
    pub halted_seen: bool,
    /// What the run went through, to show that the generated runs reach the interesting cases.
    pub coverage: Coverage,
}

/// What runs went through.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub wait_reasons: HashSet<WaitReason>,
    /// Steps on which the rollout's own cordoned nodes filled maxUnavailable (max > 1).
    pub full_waves: u64,
    pub halted_runs: u64,
    pub complete_runs: u64,
    pub completed_with_failures: u64,
}

impl Coverage {
    pub fn merge(&mut self, other: &Coverage) {
        self.wait_reasons.extend(other.wait_reasons.iter().copied());
        self.full_waves += other.full_waves;
        self.halted_runs += other.halted_runs;
        self.complete_runs += other.complete_runs;
        self.completed_with_failures += other.completed_with_failures;
    }
}

/// How a run ended.
pub struct Outcome {
    pub last_plan: Plan,
}

impl Sim {
    pub fn new(settings: SettingsSpec, nodes: &[NodeSpec], seed: u64, calm_at: u64) -> Sim {
        let settings = settings.settings();
        let nodes = nodes
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                let mut observed = NodeObservation::new(format!("node-{index:02}"));
                observed.ready = spec.ready;
                observed.unschedulable = spec.cordoned_by_others;
                observed.other_owner = spec
                    .held_by_other_rollout
                    .then(|| "other-rollout".to_string());
                observed.quarantined = spec.quarantined;
                observed.booted_digest =
                    Some(if spec.on_target { TARGET } else { OLD }.to_string());
                observed.slot_good = true;
                observed.pods_ready_since = spec.ready.then_some(Timestamp(0));
                // Without a verify timeout a never-healthy node would wait for ever: that is
                // the documented behaviour, not something a run can finish.
                let fate = match (spec.fate, settings.verify_timeout_seconds) {
                    (Fate::NeverHealthy, None) => Fate::Success,
                    (fate, _) => fate,
                };
                SimNode {
                    observed,
                    fate,
                    started: false,
                    held: false,
                    initially_quarantined: spec.quarantined,
                    stage_done_at: None,
                    drain_done_at: None,
                    back_at: None,
                    // Initial outages last until calm at the latest.
                    blip_until: (!spec.ready).then_some(u64::MAX),
                    outside_cordon_until: spec.cordoned_by_others.then_some(u64::MAX),
                }
            })
            .collect();
        Sim {
            settings,
            now: 1_000_000,
            step: 0,
            calm_at,
            window_open: true,
            nodes,
            rng: Rng::new(seed),
            halted_seen: false,
            coverage: Coverage::default(),
        }
    }

    fn calm(&self) -> bool {
        self.step >= self.calm_at
    }

    /// The observation, in a shuffled order: the planner must not depend on it.
    pub fn observation(&mut self) -> Observation {
        let mut nodes: Vec<NodeObservation> = self
            .nodes
            .iter()
            .map(|node| node.observed.clone())
            .collect();
        if !nodes.is_empty() {
            let shift = self.rng.below(nodes.len() as u64) as usize;
            nodes.rotate_left(shift);
        }
        Observation {
            now: Timestamp(self.now),
            window_open: self.window_open,
            nodes,
        }
    }

    /// Runs to the end, checking every step; `Err` says which check failed where.
    pub fn run(&mut self) -> Result<Outcome, String> {
        loop {
            let observation = self.observation();
            let plan = plan(&self.settings, &observation);
            let before: Vec<SimNode> = self.nodes.clone();
            self.apply(&plan)?;
            checks::step(self, &before, &plan).map_err(|error| {
                format!(
                    "step {} (t={}): {error}\nplan: {plan:#?}",
                    self.step, self.now
                )
            })?;
            if plan.halted {
                self.halted_seen = true;
            }
            self.cover(&plan);
            if self.calm() && ended(&plan) {
                checks::end(self, &plan)
                    .map_err(|error| format!("at the end (step {}): {error}", self.step))?;
                return Ok(Outcome { last_plan: plan });
            }
            if self.step > self.calm_at + MAX_STEPS_AFTER_CALM {
                return Err(format!(
                    "no end {MAX_STEPS_AFTER_CALM} steps after calm: {plan:#?}"
                ));
            }
            self.advance();
        }
    }

    fn cover(&mut self, plan: &Plan) {
        let calm = self.calm();
        let coverage = &mut self.coverage;
        coverage
            .wait_reasons
            .extend(plan.nodes.iter().filter_map(|node| node.wait_reason()));
        let disrupted = self
            .nodes
            .iter()
            .filter(|node| node.observed.phase.disrupts())
            .count();
        if plan.max_unavailable > 1 && disrupted == plan.max_unavailable as usize {
            coverage.full_waves += 1;
        }
        if calm && ended(plan) {
            coverage.halted_runs += u64::from(plan.halted);
            coverage.complete_runs += u64::from(plan.complete);
            let failures = plan.counts.failed + plan.counts.quarantined > 0;
            coverage.completed_with_failures += u64::from(plan.complete && failures);
        }
    }

    /// The controller: carries out each node's actions in order, records the phase.
    pub fn apply(&mut self, plan: &Plan) -> Result<(), String> {
        let now = self.now;
        for node_plan in &plan.nodes {
            let Some(node) = self
                .nodes
                .iter_mut()
                .find(|node| node.observed.name == node_plan.name)
            else {
                return Err(format!("the plan names an unknown node {}", node_plan.name));
            };
            for action in &node_plan.actions {
                let observed = &mut node.observed;
                match action {
                    Action::Stage => {
                        node.started = true;
                        node.stage_done_at = Some(now + self.rng.duration());
                        observed.staged_digest = None;
                        observed.agent_error = None;
                    }
                    Action::Cordon => {
                        observed.unschedulable = true;
                        observed.cordoned_by_us = true;
                    }
                    Action::Drain => {
                        observed.drain_started_at.get_or_insert(Timestamp(now));
                        if node.drain_done_at.is_none() && node.fate != Fate::DrainStuck {
                            node.drain_done_at = Some(now + self.rng.duration());
                        }
                    }
                    Action::Reboot => {
                        node.back_at = Some(now + self.rng.duration());
                        observed.ready = false;
                        observed.pods_ready_since = None;
                    }
                    Action::Uncordon => {
                        observed.unschedulable = false;
                        observed.cordoned_by_us = false;
                    }
                    Action::Quarantine => observed.quarantined = true,
                    Action::MarkFailed { .. } | Action::Wait { .. } => {}
                }
            }
            if node_plan.phase != node.observed.phase {
                node.observed.phase = node_plan.phase;
                node.observed.since = Timestamp(now);
            }
            node.observed.failure = node_plan.failure.clone();
            node.held = node_plan.hold;
        }
        Ok(())
    }

    /// Time passes: the nodes progress, and (before calm) things go wrong around the rollout.
    fn advance(&mut self) {
        self.step += 1;
        self.now += TICK;
        let now = self.now;
        let calm = self.calm();
        if calm {
            self.settings.paused = false;
            self.window_open = true;
        } else {
            if self.rng.chance(4) {
                self.settings.paused = !self.settings.paused;
            }
            if self.rng.chance(4) {
                self.window_open = !self.window_open;
            }
        }
        for index in 0..self.nodes.len() {
            let blip = !calm && self.rng.chance(1);
            let blip_length = self.rng.duration();
            let cordon = !calm && self.rng.chance(1);
            let cordon_length = self.rng.duration() * 2;
            let release = calm || self.rng.chance(3);
            let node = &mut self.nodes[index];
            progress(node, now, calm);
            if blip && node.back_at.is_none() {
                node.blip_until = Some(now + blip_length);
            }
            if cordon && !node.observed.unschedulable {
                node.observed.unschedulable = true;
                node.outside_cordon_until = Some(now + cordon_length);
            }
            if release {
                node.observed.other_owner = None;
            }
            node.observed.ready = reached(node.back_at, now) && reached(node.blip_until, now);
            if node.observed.ready && node.observed.pods_ready_since.is_none() && healthy(node) {
                node.observed.pods_ready_since = Some(Timestamp(now));
            }
            if !node.observed.ready {
                node.observed.pods_ready_since = None;
            }
        }
    }
}

/// A node's own progress: staging, draining, coming back from its reboot, outages ending.
fn progress(node: &mut SimNode, now: u64, calm: bool) {
    let observed = &mut node.observed;
    if calm {
        node.blip_until = node.blip_until.filter(|until| *until != u64::MAX);
        if node.outside_cordon_until == Some(u64::MAX) {
            node.outside_cordon_until = Some(now);
        }
    }
    if node.stage_done_at.is_some_and(|at| now >= at) {
        node.stage_done_at = None;
        if node.fate == Fate::StageError {
            observed.agent_error = Some("signature does not verify".to_string());
        } else {
            observed.staged_digest = Some(TARGET.to_string());
        }
    }
    if node.drain_done_at.is_some_and(|at| now >= at) {
        node.drain_done_at = None;
        observed.drained = true;
    }
    if node.back_at.is_some_and(|at| now >= at) {
        node.back_at = None;
        if node.fate == Fate::RollBack {
            observed.rolled_back = true;
            observed.slot_good = true;
        } else {
            observed.booted_digest = Some(TARGET.to_string());
            observed.slot_good = node.fate != Fate::NeverHealthy;
        }
    }
    if node.outside_cordon_until.is_some_and(|until| now >= until) {
        node.outside_cordon_until = None;
        if !observed.cordoned_by_us {
            observed.unschedulable = false;
        }
    }
}

/// Whether a node's pods become ready when it is: not after booting a never-healthy target.
fn healthy(node: &SimNode) -> bool {
    node.observed.booted_digest.as_deref() != Some(TARGET) || node.fate != Fate::NeverHealthy
}

fn reached(until: Option<u64>, now: u64) -> bool {
    until.is_none_or(|until| now >= until)
}

/// The run is over: complete, or halted with nothing in flight and nothing left to do.
fn ended(plan: &Plan) -> bool {
    let idle = plan.nodes.iter().all(|node| {
        node.actions
            .iter()
            .all(|action| matches!(action, Action::Wait { .. }))
    });
    plan.complete || (plan.halted && plan.wave.is_empty() && idle)
}

/// `maxUnavailable` as the issue defines it, computed independently of the planner.
pub fn max_unavailable(settings: &Settings, fleet: usize) -> usize {
    if fleet == 0 {
        return 0;
    }
    let wanted = match settings.max_unavailable {
        MaxUnavailable::Count(count) => count as usize,
        MaxUnavailable::Percent(percent) => fleet * percent as usize / 100,
    };
    wanted.max(1).min(fleet)
}

/// Unavailable as the issue defines it.
pub fn unavailable(node: &NodeObservation) -> bool {
    matches!(
        node.phase,
        Phase::Draining | Phase::Rebooting | Phase::Verifying
    ) || !node.ready
        || node.unschedulable
}
