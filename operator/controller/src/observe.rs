//! From Kubernetes objects to what the planner decides from: the rollout's [`Settings`] and the
//! [`Observation`] of every selected node. Pure: the controller hands in what its caches hold.

use std::collections::BTreeMap;

use clb_operator_api::{
    CORDONED_BY_ANNOTATION, NodeFailure, NodePhase, NodeRecord, NodeUpdate, QUARANTINED_LABEL,
    QUARANTINED_VALUE, RequestAction, RequestState, RolloutSpec,
};
use clb_rollout_planner::{
    Canary, FailureReason, HealthCheck, MaxUnavailable, NodeObservation, Observation, Phase,
    Settings, Timestamp,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::clock::from_kube;
use crate::pods;

/// A spec the planner cannot use (the CRD's schema makes these unlikely, not impossible: a
/// server without the schema, or an edit that skipped validation).
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("spec.maxUnavailable: {0}")]
    MaxUnavailable(String),
}

pub fn settings(spec: &RolloutSpec, target_digest: &str) -> Result<Settings, SpecError> {
    let max_unavailable = match &spec.max_unavailable {
        IntOrString::Int(count) => MaxUnavailable::Count(u32::try_from(*count).unwrap_or(0)),
        IntOrString::String(text) => text.parse().map_err(SpecError::MaxUnavailable)?,
    };
    let non_negative = |value: i32| u32::try_from(value).unwrap_or(0);
    Ok(Settings {
        target_digest: target_digest.to_string(),
        canary: Canary {
            nodes: non_negative(spec.canary.nodes),
            soak_seconds: spec.canary.soak.as_secs(),
        },
        max_unavailable,
        failure_budget: non_negative(spec.failure_budget),
        drain_timeout_seconds: spec.drain.timeout.as_secs(),
        health_check: HealthCheck {
            node_ready: spec.health_check.node_ready,
            pods_ready: spec.health_check.pods_ready,
            min_ready_seconds: u64::from(non_negative(spec.health_check.min_ready_seconds)),
        },
        verify_timeout_seconds: spec.health_check.timeout.map(|t| t.as_secs()),
        paused: spec.paused,
    })
}

/// One selected node as the controller's caches hold it.
pub struct NodeView<'a> {
    pub node: &'a Node,
    pub update: Option<&'a NodeUpdate>,
    pub pods: Vec<&'a Pod>,
    /// The rollout that holds the node, if it is another live rollout (a holder that no longer
    /// exists holds nothing).
    pub other_owner: Option<String>,
}

pub fn node_name(node: &Node) -> &str {
    node.metadata.name.as_deref().unwrap_or_default()
}

pub fn is_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}

pub fn is_unschedulable(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.unschedulable)
        .unwrap_or(false)
}

pub fn annotation<'a>(node: &'a Node, key: &str) -> Option<&'a str> {
    node.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub fn is_quarantined(node: &Node) -> bool {
    node.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(QUARANTINED_LABEL))
        .is_some_and(|v| v == QUARANTINED_VALUE)
}

/// The observation of one node for the rollout `rollout` rolling to `settings.target_digest`,
/// with the rollout's record of it (`None`: never touched, `Pending`).
pub fn node_observation(
    rollout: &str,
    settings: &Settings,
    spec: &RolloutSpec,
    view: &NodeView,
    record: Option<&NodeRecord>,
) -> NodeObservation {
    let node = view.node;
    let mut observed = NodeObservation::new(node_name(node));
    observed.ready = is_ready(node);
    observed.unschedulable = is_unschedulable(node);
    observed.cordoned_by_us =
        observed.unschedulable && annotation(node, CORDONED_BY_ANNOTATION) == Some(rollout);
    observed.other_owner = view.other_owner.clone();
    observed.quarantined = is_quarantined(node);
    observed.has_bridge = view.update.is_some();
    if let Some(record) = record {
        observed.phase = phase_from_api(record.phase);
        observed.since = from_kube(&record.since);
        observed.failure = record.failure.as_ref().map(failure_from_api);
        observed.drain_started_at = record.drain_started_at.as_ref().map(from_kube);
    }
    let target = settings.target_digest.as_str();
    if let Some(status) = view.update.and_then(|u| u.status.as_ref()) {
        observed.booted_digest = status.booted.as_ref().map(|s| s.digest.clone());
        observed.staged_digest = status.staged.as_ref().map(|s| s.digest.clone());
        observed.slot_good = status.marked_good;
        observed.rolled_back = view.update.is_some_and(|u| reboot_reported(u, target))
            && status.rolled_back
            && status
                .rolled_back_from
                .as_ref()
                .is_some_and(|from| from.digest == target);
    }
    observed.agent_error = view
        .update
        .and_then(|u| request_error(u, target))
        .filter(|_| !observed.rolled_back);
    observed.drained = pods::drained(view.pods.iter().copied(), &spec.drain);
    observed.pods_ready_since = pods::ready_since(view.pods.iter().copied());
    observed
}

/// The bridge has finished our latest request, a `Reboot` into `target`. A fallback from
/// `target` counts only then: the agent keeps reporting an earlier attempt's fallback until
/// the next reboot, and a node whose quarantine a person cleared must not fail again on the
/// old report.
fn reboot_reported(update: &NodeUpdate, target: &str) -> bool {
    let Some(request) = update.spec.request.as_ref() else {
        return false;
    };
    let Some(outcome) = update.status.as_ref().and_then(|s| s.request.as_ref()) else {
        return false;
    };
    request.action == RequestAction::Reboot
        && request.digest == target
        && outcome.id == request.id
        && outcome.state != RequestState::Running
}

/// The bridge's failure of our latest request for `target` (a `Stage`, or a `Reboot` the agent
/// refused or failed), if that is how it ended.
fn request_error(update: &NodeUpdate, target: &str) -> Option<String> {
    let request = update.spec.request.as_ref()?;
    let outcome = update.status.as_ref()?.request.as_ref()?;
    let ours = request.digest == target
        && outcome.id == request.id
        && outcome.state == RequestState::Failed;
    ours.then(|| {
        let class = update
            .status
            .as_ref()
            .and_then(|s| s.last_error.as_ref())
            .map(|e| format!(" ({})", e.class))
            .unwrap_or_default();
        format!("{}{class}", outcome.message)
    })
}

pub fn observation(now: Timestamp, window_open: bool, nodes: Vec<NodeObservation>) -> Observation {
    Observation {
        now,
        window_open,
        nodes,
    }
}

/// The records of a rollout by node name.
pub fn records(nodes: &[NodeRecord]) -> BTreeMap<&str, &NodeRecord> {
    nodes.iter().map(|r| (r.name.as_str(), r)).collect()
}

pub fn phase_from_api(phase: NodePhase) -> Phase {
    match phase {
        NodePhase::Pending => Phase::Pending,
        NodePhase::Staging => Phase::Staging,
        NodePhase::Staged => Phase::Staged,
        NodePhase::Draining => Phase::Draining,
        NodePhase::Rebooting => Phase::Rebooting,
        NodePhase::Verifying => Phase::Verifying,
        NodePhase::Updated => Phase::Updated,
        NodePhase::Failed => Phase::Failed,
        NodePhase::Quarantined => Phase::Quarantined,
    }
}

pub fn phase_to_api(phase: Phase) -> NodePhase {
    match phase {
        Phase::Pending => NodePhase::Pending,
        Phase::Staging => NodePhase::Staging,
        Phase::Staged => NodePhase::Staged,
        Phase::Draining => NodePhase::Draining,
        Phase::Rebooting => NodePhase::Rebooting,
        Phase::Verifying => NodePhase::Verifying,
        Phase::Updated => NodePhase::Updated,
        Phase::Failed => NodePhase::Failed,
        Phase::Quarantined => NodePhase::Quarantined,
    }
}

pub fn failure_from_api(failure: &NodeFailure) -> FailureReason {
    use clb_operator_api::FailureReason as Api;
    match failure.reason {
        Api::StageFailed => FailureReason::StageFailed {
            message: failure.message.clone(),
        },
        Api::DrainTimeout => FailureReason::DrainTimeout,
        Api::RebootFailed => FailureReason::RebootFailed {
            message: failure.message.clone(),
        },
        Api::RolledBack => FailureReason::RolledBack,
        Api::VerifyTimeout => FailureReason::VerifyTimeout,
    }
}

pub fn failure_to_api(failure: &FailureReason) -> NodeFailure {
    use clb_operator_api::FailureReason as Api;
    let reason = match failure {
        FailureReason::StageFailed { .. } => Api::StageFailed,
        FailureReason::DrainTimeout => Api::DrainTimeout,
        FailureReason::RebootFailed { .. } => Api::RebootFailed,
        FailureReason::RolledBack => Api::RolledBack,
        FailureReason::VerifyTimeout => Api::VerifyTimeout,
    };
    NodeFailure {
        reason,
        message: failure.to_string(),
    }
}
