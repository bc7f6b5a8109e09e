//! Carrying out a plan's actions: the controller's writes to the API server. Every write is the
//! smallest patch that does the job, so a rollout costs few requests per node.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clb_operator_api::{
    CORDONED_BY_ANNOTATION, NodeRequest, NodeUpdate, OPERATOR_MANAGER, QUARANTINED_BY_ANNOTATION,
    QUARANTINED_LABEL, QUARANTINED_TAINT_EFFECT, QUARANTINED_TAINT_KEY, QUARANTINED_VALUE,
    RequestAction, Rollout, RolloutStatus,
};
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use kube::api::{Api, EvictParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use serde_json::{Value, json};

use crate::pods::{self, Disposition};

/// A write the API server refused or that did not reach it.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    #[error("{what} {name}: {source}")]
    Api {
        what: &'static str,
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("node {0} has no NodeUpdate (no clb node bridge runs there)")]
    NoBridge(String),
}

/// How often one pod's eviction is retried while a PodDisruptionBudget refuses it.
const EVICTION_RETRY: Duration = Duration::from_secs(5);

/// The controller's hands: a client, the event recorder and what it remembers between steps.
pub struct Actuator {
    client: Client,
    recorder: Recorder,
    /// When each pod's eviction was last tried (by namespace/name), so a refused eviction is
    /// retried with a pause instead of on every step.
    evictions: Mutex<HashMap<String, Instant>>,
}

impl Actuator {
    pub fn new(client: Client, identity: &str) -> Actuator {
        let reporter = Reporter {
            controller: OPERATOR_MANAGER.to_string(),
            instance: Some(identity.to_string()),
        };
        Actuator {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            evictions: Mutex::new(HashMap::new()),
        }
    }

    fn nodes(&self) -> Api<Node> {
        Api::all(self.client.clone())
    }

    fn updates(&self) -> Api<NodeUpdate> {
        Api::all(self.client.clone())
    }

    fn apply_params() -> PatchParams {
        PatchParams::apply(OPERATOR_MANAGER)
    }

    /// Asks the bridge to act: `spec.request` with the next id, and `spec.rollout` (the claim).
    /// A first claim carries the object's `resourceVersion` as a precondition, so two rollouts
    /// can never both claim the node. Returns the object as written.
    pub async fn request(
        &self,
        update: &NodeUpdate,
        rollout: &str,
        action: RequestAction,
        image: &str,
        digest: &str,
    ) -> Result<NodeUpdate, ActError> {
        let name = update.metadata.name.clone().unwrap_or_default();
        let last = update.spec.request.as_ref().map_or(0, |r| r.id);
        let reported = update
            .status
            .as_ref()
            .and_then(|s| s.request.as_ref())
            .map_or(0, |r| r.id);
        let request = NodeRequest {
            id: last.max(reported) + 1,
            action,
            image: image.to_string(),
            digest: digest.to_string(),
        };
        let mut metadata = json!({"name": name});
        if update.spec.rollout.as_deref() != Some(rollout) {
            metadata["resourceVersion"] = json!(update.metadata.resource_version);
        }
        let body = json!({
            "apiVersion": NodeUpdate::api_version(&()),
            "kind": NodeUpdate::kind(&()),
            "metadata": metadata,
            "spec": {"rollout": rollout, "request": request},
        });
        self.updates()
            .patch(&name, &Self::apply_params(), &Patch::Apply(body))
            .await
            .map_err(|source| ActError::Api {
                what: "request on nodeupdate",
                name,
                source,
            })
    }

    async fn patch_node(
        &self,
        name: &str,
        what: &'static str,
        body: Value,
    ) -> Result<Node, ActError> {
        self.nodes()
            .patch(name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(|source| ActError::Api {
                what,
                name: name.to_string(),
                source,
            })
    }

    pub async fn cordon(&self, node: &str, rollout: &str) -> Result<Node, ActError> {
        let body = json!({
            "metadata": {"annotations": {CORDONED_BY_ANNOTATION: rollout}},
            "spec": {"unschedulable": true},
        });
        self.patch_node(node, "cordon of node", body).await
    }

    pub async fn uncordon(&self, node: &str) -> Result<Node, ActError> {
        let body = json!({
            "metadata": {"annotations": {CORDONED_BY_ANNOTATION: null}},
            "spec": {"unschedulable": null},
        });
        self.patch_node(node, "uncordon of node", body).await
    }

    /// Label, annotate and taint the node. The taint list is replaced as a whole (a merge
    /// patch cannot add to a list), so the node's `resourceVersion` guards it against a
    /// concurrent change.
    pub async fn quarantine(
        &self,
        node: &Node,
        rollout: &str,
        why: &str,
    ) -> Result<Node, ActError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let mut taints = taints(node);
        if !taints.iter().any(|t| t["key"] == QUARANTINED_TAINT_KEY) {
            taints.push(json!({"key": QUARANTINED_TAINT_KEY, "effect": QUARANTINED_TAINT_EFFECT}));
        }
        let body = json!({
            "metadata": {
                "resourceVersion": node.metadata.resource_version,
                "labels": {QUARANTINED_LABEL: QUARANTINED_VALUE},
                "annotations": {QUARANTINED_BY_ANNOTATION: format!("{rollout}: {why}")},
            },
            "spec": {"taints": taints},
        });
        self.patch_node(&name, "quarantine of node", body).await
    }

    /// Removes the quarantine taint and annotation after a person removed the label.
    pub async fn clear_quarantine(&self, node: &Node) -> Result<Node, ActError> {
        let name = node.metadata.name.clone().unwrap_or_default();
        let taints: Vec<Value> = taints(node)
            .into_iter()
            .filter(|t| t["key"] != QUARANTINED_TAINT_KEY)
            .collect();
        let body = json!({
            "metadata": {
                "resourceVersion": node.metadata.resource_version,
                "annotations": {QUARANTINED_BY_ANNOTATION: null},
            },
            "spec": {"taints": taints},
        });
        self.patch_node(&name, "clearing the quarantine of node", body)
            .await
    }

    /// Evicts the node's pods that a drain must evict. A refusal (429: a
    /// PodDisruptionBudget allows no disruption now) is not an error: the pod is tried again
    /// after a pause, and the planner times the whole drain. Returns the pods the drain cannot
    /// evict under its settings, with why.
    pub async fn drain(
        &self,
        pods: &[&Pod],
        drain: &clb_operator_api::Drain,
    ) -> Result<Vec<String>, ActError> {
        let mut refused = Vec::new();
        for pod in pods {
            let namespace = pod.metadata.namespace.clone().unwrap_or_default();
            let name = pod.metadata.name.clone().unwrap_or_default();
            match pods::disposition(pod, drain) {
                Disposition::Leave => continue,
                Disposition::Refuse(why) => {
                    refused.push(format!("{namespace}/{name}: {why}"));
                    continue;
                }
                Disposition::Evict => {}
            }
            let key = format!("{namespace}/{name}");
            if !self.due(&key) {
                continue;
            }
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &namespace);
            match api.evict(&name, &EvictParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 429) => {
                    tracing::debug!(pod = %key, code = status.code, "eviction not done: {}", status.message);
                }
                Err(kube::Error::Api(status)) if status.code == 500 => {
                    // Several budgets match the pod: the API server refuses; a person must fix it.
                    refused.push(format!("{key}: {}", status.message));
                }
                Err(source) => {
                    return Err(ActError::Api {
                        what: "eviction of pod",
                        name: key,
                        source,
                    });
                }
            }
        }
        Ok(refused)
    }

    fn due(&self, key: &str) -> bool {
        let now = Instant::now();
        // A poisoned lock only means another step panicked mid-insert; the map is still usable.
        let mut tried = self.evictions.lock().unwrap_or_else(|e| e.into_inner());
        tried.retain(|_, at| now.duration_since(*at) < Duration::from_secs(600));
        match tried.get(key) {
            Some(at) if now.duration_since(*at) < EVICTION_RETRY => false,
            _ => {
                tried.insert(key.to_string(), now);
                true
            }
        }
    }

    /// Writes the Rollout's status (a merge patch of the status subresource; the controller is
    /// its only writer). Returns the object as written.
    pub async fn write_status(
        &self,
        rollout: &Rollout,
        status: &RolloutStatus,
    ) -> Result<Rollout, ActError> {
        let name = rollout.metadata.name.clone().unwrap_or_default();
        let api: Api<Rollout> = Api::all(self.client.clone());
        // A merge patch leaves alone what it does not mention, and the status omits empty
        // fields: name each field that is gone as null, or it would stay.
        let mut patch = serde_json::to_value(status).unwrap_or_default();
        if let (Some(patch), Some(Value::Object(before))) = (
            patch.as_object_mut(),
            rollout
                .status
                .as_ref()
                .and_then(|s| serde_json::to_value(s).ok()),
        ) {
            for key in before.keys() {
                patch.entry(key.clone()).or_insert(Value::Null);
            }
        }
        let body = json!({"status": patch});
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(body))
            .await
            .map_err(|source| ActError::Api {
                what: "status of rollout",
                name,
                source,
            })
    }

    /// Records an event about `regarding`. An event that cannot be written is logged, not
    /// an error: events are for people, the status is the record.
    pub async fn event(
        &self,
        regarding: ObjectReference,
        warning: bool,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(error) = self.recorder.publish(&event, &regarding).await {
            tracing::warn!(%error, reason, "could not record an event");
        }
    }
}

fn taints(node: &Node) -> Vec<Value> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                .filter_map(|t| serde_json::to_value(t).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// The reference events about a Node carry.
pub fn node_reference(node: &Node) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Node".into()),
        name: node.metadata.name.clone(),
        uid: node.metadata.uid.clone(),
        ..ObjectReference::default()
    }
}

pub fn rollout_reference(rollout: &Rollout) -> ObjectReference {
    rollout.object_ref(&())
}
