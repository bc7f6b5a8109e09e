//! One step of one rollout: pin the image, observe the selected nodes, plan, carry out the
//! plan's actions, record events, write the status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clb_operator_api::{
    NodeRecord, NodeUpdate, QUARANTINED_TAINT_KEY, RequestAction, Rollout, RolloutPhase,
    RolloutStatus,
};
use clb_rollout_planner::{Action, NodePlan, Phase, Plan, Timestamp};
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::act::{ActError, Actuator, node_reference, rollout_reference};
use crate::clock::{Clock, from_kube, to_planner};
use crate::metrics::Metrics;
use crate::observe::{self, NodeView};
use crate::resolve::{self, Resolver};
use crate::world::{Overlay, World};
use crate::{select, status, window};

/// How many nodes' actions run at once.
const PARALLEL_NODES: usize = 16;
/// While a drain runs, evictions are retried this often.
const DRAIN_RECHECK: Duration = Duration::from_secs(5);
/// While the image cannot be resolved, try again this often.
const RESOLVE_RETRY: Duration = Duration::from_secs(30);

/// What the steps share.
pub struct Context {
    pub actuator: Actuator,
    pub resolver: Resolver,
    pub metrics: Arc<Metrics>,
    pub overlay: Overlay,
    pub clock: Box<dyn Clock>,
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Act(#[from] ActError),
    #[error(transparent)]
    Spec(#[from] observe::SpecError),
}

/// When the rollout wants its next step with nothing else changing (`None`: only on a change).
pub type Requeue = Option<Duration>;

pub async fn step(ctx: &Context, world: &World, rollout: &Rollout) -> Result<Requeue, StepError> {
    let name = rollout.metadata.name.clone().unwrap_or_default();
    let generation = rollout.metadata.generation;
    let now_exact = ctx.clock.now();
    let now = to_planner(now_exact);
    let previous = rollout.status.clone().unwrap_or_default();
    let spec = &rollout.spec;

    // Pin: a new image (or none pinned yet) is resolved once and starts the records over.
    let pinned =
        previous.image.as_deref() == Some(spec.image.as_str()) && previous.pinned_digest.is_some();
    let (digest, old_records) = if pinned {
        (
            previous.pinned_digest.clone().unwrap_or_default(),
            previous.nodes.clone(),
        )
    } else {
        match ctx.resolver.digest(&spec.image).await {
            Ok(digest) => {
                tracing::info!(rollout = %name, image = %spec.image, %digest, "pinned the image");
                (digest, Vec::new())
            }
            Err(error) => {
                tracing::warn!(rollout = %name, %error, "cannot pin the image");
                let next = status::unresolved(
                    &previous,
                    generation,
                    "ImageUnresolved",
                    &error.to_string(),
                    now,
                );
                write_status(ctx, rollout, &previous, &next).await?;
                return Ok(Some(RESOLVE_RETRY));
            }
        }
    };
    let settings = observe::settings(spec, &digest)?;
    let window_open = match &spec.window {
        None => true,
        Some(w) => window::is_open(w, now_exact).unwrap_or_else(|error| {
            tracing::warn!(rollout = %name, %error, "the window cannot be evaluated: closed");
            false
        }),
    };

    // Observe.
    let selected: Vec<&Arc<Node>> = world
        .nodes
        .iter()
        .filter(|n| select::matches(&spec.node_selector, n.metadata.labels.as_ref()))
        .collect();
    let records = observe::records(&old_records);
    let records_ref = &records;
    let no_pods = Vec::new();
    let views: Vec<NodeView> = selected
        .iter()
        .map(|node| {
            let node_name = observe::node_name(node);
            let update = world.updates.get(node_name).map(|u| u.as_ref());
            let other_owner = update
                .and_then(|u| u.spec.rollout.clone())
                .filter(|holder| *holder != name && world.holds(holder, node_name));
            NodeView {
                node,
                update,
                pods: world
                    .pods
                    .get(node_name)
                    .unwrap_or(&no_pods)
                    .iter()
                    .map(|p| p.as_ref())
                    .collect(),
                other_owner,
            }
        })
        .collect();
    let observed = views
        .iter()
        .map(|view| {
            let record = records.get(observe::node_name(view.node)).copied();
            observe::node_observation(&name, &settings, spec, view, record)
        })
        .collect();
    let observation = observe::observation(now, window_open, observed);

    // Plan.
    let started = Instant::now();
    let plan = clb_rollout_planner::plan(&settings, &observation);
    let plan_seconds = started.elapsed().as_secs_f64();

    // Act: each node's actions in order, nodes side by side.
    let image = resolve::pinned_reference(&spec.image, &digest);
    let by_name: BTreeMap<&str, &NodeView> = views
        .iter()
        .map(|v| (observe::node_name(v.node), v))
        .collect();
    let work: Vec<(&NodePlan, &NodeView)> = plan
        .nodes
        .iter()
        .filter_map(|p| by_name.get(p.name.as_str()).map(|v| (p, *v)))
        .collect();
    let job = NodeJob {
        ctx,
        rollout: &name,
        spec,
        image: &image,
        digest: &digest,
    };
    // The futures are made first: a stream's `map` closure in a spawned future trips rustc's
    // higher-ranked lifetime check ("FnOnce is not general enough").
    let jobs: Vec<_> = work
        .into_iter()
        .map(|(node_plan, view)| job.carry_out_logged(node_plan, view, records_ref))
        .collect();
    let outcomes: Vec<(String, bool)> = futures_util::stream::iter(jobs)
        .buffer_unordered(PARALLEL_NODES)
        .collect()
        .await;
    let carried_out: BTreeMap<String, bool> = outcomes.into_iter().collect();

    // Nodes that left the selection: never leave them cordoned by us.
    let selected_names: std::collections::BTreeSet<&str> =
        views.iter().map(|v| observe::node_name(v.node)).collect();
    for node in &world.nodes {
        let node_name = observe::node_name(node);
        if !selected_names.contains(node_name) && cordoned_by(node) == Some(name.as_str()) {
            uncordon_orphan(ctx, node, "left the rollout's selection").await;
        }
    }

    // Quarantine taints whose label a person removed.
    for view in &views {
        if !observe::is_quarantined(view.node) && has_quarantine_taint(view.node) {
            match ctx.actuator.clear_quarantine(view.node).await {
                Ok(node) => ctx.overlay.nodes.remember(node),
                Err(error) => tracing::warn!(%error, "quarantine taint not removed"),
            }
        }
    }

    // Record.
    let new_records = status::records(&plan, &records, &carried_out, now);
    observe_drains(ctx, &plan, &records, now);
    let next = status::status(
        &previous,
        generation,
        &spec.image,
        &digest,
        &plan,
        new_records,
        now,
    );
    if next.phase == Some(RolloutPhase::Halted) && previous.phase != Some(RolloutPhase::Halted) {
        ctx.metrics.halted(&name);
        let message = plan
            .conditions
            .iter()
            .find(|c| c.kind == clb_rollout_planner::ConditionKind::Halted)
            .map(|c| c.message.clone())
            .unwrap_or_default();
        ctx.actuator
            .event(rollout_reference(rollout), true, "Halted", "Halt", message)
            .await;
    }
    ctx.metrics
        .set_nodes(&name, &phase_counts(&plan), plan_seconds);
    write_status(ctx, rollout, &previous, &next).await?;

    let all_done = carried_out.values().all(|ok| *ok);
    Ok(requeue(&plan, now, all_done))
}

/// When to look again: the plan's own next check, soon while a drain runs or a step failed.
fn requeue(plan: &Plan, now: Timestamp, all_done: bool) -> Requeue {
    let mut after = plan
        .next_check
        .map(|at| Duration::from_secs(at.0.saturating_sub(now.0).max(1)));
    let draining = plan.nodes.iter().any(|n| n.phase == Phase::Draining);
    if draining || !all_done {
        after = Some(after.map_or(DRAIN_RECHECK, |a| a.min(DRAIN_RECHECK)));
    }
    after
}

async fn write_status(
    ctx: &Context,
    rollout: &Rollout,
    previous: &RolloutStatus,
    next: &RolloutStatus,
) -> Result<(), StepError> {
    if previous == next {
        return Ok(());
    }
    let written = ctx.actuator.write_status(rollout, next).await?;
    ctx.overlay.rollouts.remember(written);
    Ok(())
}

fn has_quarantine_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.key == QUARANTINED_TAINT_KEY))
}

fn phase_counts(plan: &Plan) -> Vec<(&'static str, u64)> {
    let c = plan.counts;
    vec![
        ("Pending", c.pending.into()),
        ("Skipped", c.skipped.into()),
        ("Staging", c.staging.into()),
        ("Staged", c.staged.into()),
        ("Draining", c.draining.into()),
        ("Rebooting", c.rebooting.into()),
        ("Verifying", c.verifying.into()),
        ("Updated", c.updated.into()),
        ("Failed", c.failed.into()),
        ("Quarantined", c.quarantined.into()),
    ]
}

/// Drains that ended in this step (to the reboot, or by timing out) go into the histogram.
fn observe_drains(
    ctx: &Context,
    plan: &Plan,
    records: &BTreeMap<&str, &NodeRecord>,
    now: Timestamp,
) {
    for node in &plan.nodes {
        let Some(record) = records.get(node.name.as_str()) else {
            continue;
        };
        let was_draining = record.phase == clb_operator_api::NodePhase::Draining;
        let left = matches!(node.phase, Phase::Rebooting | Phase::Failed);
        if was_draining
            && left
            && let Some(began) = &record.drain_started_at
        {
            ctx.metrics
                .drain_took(now.0.saturating_sub(from_kube(began).0) as f64);
        }
    }
}

/// One node's share of a step.
struct NodeJob<'a> {
    ctx: &'a Context,
    rollout: &'a str,
    spec: &'a clb_operator_api::RolloutSpec,
    image: &'a str,
    digest: &'a str,
}

impl NodeJob<'_> {
    /// Carries out the node's actions; a failure is logged and reported as `false`.
    async fn carry_out_logged(
        &self,
        plan: &NodePlan,
        view: &NodeView<'_>,
        records: &BTreeMap<&str, &NodeRecord>,
    ) -> (String, bool) {
        let previous = records
            .get(plan.name.as_str())
            .map(|r| observe::phase_from_api(r.phase));
        let ok = match self.carry_out(plan, view, previous).await {
            Ok(()) => true,
            Err(error) => {
                tracing::warn!(rollout = %self.rollout, node = %plan.name, %error, "step not carried out; it is repeated");
                false
            }
        };
        (plan.name.clone(), ok)
    }

    async fn carry_out(
        &self,
        plan: &NodePlan,
        view: &NodeView<'_>,
        previous: Option<Phase>,
    ) -> Result<(), ActError> {
        let actuator = &self.ctx.actuator;
        let overlay = &self.ctx.overlay;
        let node_name = plan.name.as_str();
        let mut update: Option<NodeUpdate> = view.update.cloned();
        let mut node: Node = view.node.clone();
        let mut refused = Vec::new();
        for action in &plan.actions {
            match action {
                Action::Stage | Action::Reboot => {
                    let current = update
                        .as_ref()
                        .ok_or_else(|| ActError::NoBridge(node_name.to_string()))?;
                    let kind = if *action == Action::Stage {
                        RequestAction::Stage
                    } else {
                        RequestAction::Reboot
                    };
                    let written = actuator
                        .request(current, self.rollout, kind, self.image, self.digest)
                        .await?;
                    overlay.updates.remember(written.clone());
                    update = Some(written);
                }
                Action::Cordon => {
                    node = actuator.cordon(node_name, self.rollout).await?;
                    overlay.nodes.remember(node.clone());
                }
                Action::Uncordon => {
                    node = actuator.uncordon(node_name).await?;
                    overlay.nodes.remember(node.clone());
                }
                Action::Drain => {
                    let pods: Vec<&Pod> = view.pods.to_vec();
                    refused = actuator.drain(&pods, &self.spec.drain).await?;
                }
                Action::Quarantine => {
                    let why = plan
                        .failure
                        .as_ref()
                        .map(|f| f.reason())
                        .unwrap_or("failed");
                    node = actuator.quarantine(&node, self.rollout, why).await?;
                    overlay.nodes.remember(node.clone());
                }
                Action::MarkFailed { .. } | Action::Wait { .. } => {}
            }
        }
        if previous.unwrap_or(Phase::Pending) != plan.phase {
            self.transition_event(plan, &node, &refused).await;
        }
        Ok(())
    }

    async fn transition_event(&self, plan: &NodePlan, node: &Node, refused: &[String]) {
        let digest = clb_operator_api::short_digest(self.digest);
        let (warning, note) = match (&plan.phase, &plan.failure) {
            (Phase::Staging, _) => (
                false,
                format!(
                    "rollout {}: staging {digest} ({})",
                    self.rollout, self.image
                ),
            ),
            (Phase::Staged, _) => (
                false,
                format!(
                    "rollout {}: {digest} staged, waiting for room to cordon",
                    self.rollout
                ),
            ),
            (Phase::Draining, _) if !refused.is_empty() => (
                true,
                format!(
                    "rollout {}: cordoned; cannot evict {}",
                    self.rollout,
                    refused.join("; ")
                ),
            ),
            (Phase::Draining, _) => (
                false,
                format!("rollout {}: cordoned, evicting pods", self.rollout),
            ),
            (Phase::Rebooting, _) => (
                false,
                format!("rollout {}: drained, rebooting into {digest}", self.rollout),
            ),
            (Phase::Verifying, _) => (
                false,
                format!("rollout {}: booted {digest}, checking health", self.rollout),
            ),
            (Phase::Updated, _) => (
                false,
                format!("rollout {}: updated to {digest}", self.rollout),
            ),
            (Phase::Failed | Phase::Quarantined, Some(failure)) => {
                (true, format!("rollout {}: {failure}", self.rollout))
            }
            (phase, _) => (
                false,
                format!("rollout {}: {}", self.rollout, phase.as_str()),
            ),
        };
        let reason = match (&plan.phase, &plan.failure) {
            (Phase::Failed | Phase::Quarantined, Some(failure)) => {
                format!("{}{}", plan.phase.as_str(), failure.reason())
            }
            (phase, _) => phase.as_str().to_string(),
        };
        self.ctx
            .actuator
            .event(
                node_reference(node),
                warning,
                &reason,
                plan.phase.as_str(),
                note,
            )
            .await;
    }
}

/// The rollout whose cordon the node carries, if it is cordoned by a rollout.
fn cordoned_by(node: &Node) -> Option<&str> {
    observe::is_unschedulable(node)
        .then(|| observe::annotation(node, clb_operator_api::CORDONED_BY_ANNOTATION))
        .flatten()
}

async fn uncordon_orphan(ctx: &Context, node: &Node, why: &str) {
    let name = observe::node_name(node);
    match ctx.actuator.uncordon(name).await {
        Ok(written) => {
            tracing::info!(node = %name, why, "uncordoned a node a rollout had cordoned");
            ctx.overlay.nodes.remember(written);
        }
        Err(error) => tracing::warn!(node = %name, %error, "could not uncordon"),
    }
}

/// Undoes cordons whose rollout no longer exists (deleted mid-flight): nobody else would.
pub async fn release_orphaned_cordons(ctx: &Context, world: &World) {
    for node in &world.nodes {
        if let Some(owner) = cordoned_by(node)
            && !world
                .rollouts
                .iter()
                .any(|r| r.metadata.name.as_deref() == Some(owner))
        {
            uncordon_orphan(ctx, node, "its rollout was deleted").await;
        }
    }
}
