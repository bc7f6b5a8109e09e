//! A node's pods as a drain and the health check see them (what `kubectl drain` skips, refuses
//! and evicts).

use clb_operator_api::Drain;
use k8s_openapi::api::core::v1::Pod;

use crate::clock::from_kube;

/// What a drain does with one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disposition {
    /// Evict it through the Eviction API.
    Evict,
    /// Leave it: it has finished, is already being deleted, is a static (mirror) pod the
    /// kubelet owns, or belongs to a DaemonSet and `ignoreDaemonSets` is set.
    Leave,
    /// The drain settings forbid evicting it, so the node cannot be drained (the drain then
    /// runs into its timeout, and the reason shows in the node's event).
    Refuse(String),
}

pub fn disposition(pod: &Pod, drain: &Drain) -> Disposition {
    let meta = &pod.metadata;
    if finished(pod) || meta.deletion_timestamp.is_some() {
        return Disposition::Leave;
    }
    let mirror = meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    if mirror {
        return Disposition::Leave;
    }
    let owners = meta.owner_references.as_deref().unwrap_or_default();
    let controller = owners.iter().find(|o| o.controller == Some(true));
    if controller.is_some_and(|o| o.kind == "DaemonSet") {
        return if drain.ignore_daemon_sets {
            Disposition::Leave
        } else {
            Disposition::Refuse("a DaemonSet pod (set drain.ignoreDaemonSets)".into())
        };
    }
    if controller.is_none() && !drain.force {
        return Disposition::Refuse("no controller manages it (set drain.force)".into());
    }
    let empty_dir = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|volumes| volumes.iter().any(|v| v.empty_dir.is_some()));
    if empty_dir && !drain.delete_empty_dir_data {
        return Disposition::Refuse("uses emptyDir data (set drain.deleteEmptyDirData)".into());
    }
    Disposition::Evict
}

fn finished(pod: &Pod) -> bool {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    matches!(phase, Some("Succeeded" | "Failed"))
}

/// The drain is over: no pod left that the drain must evict or refuses to.
pub fn drained<'a>(pods: impl IntoIterator<Item = &'a Pod>, drain: &Drain) -> bool {
    pods.into_iter()
        .all(|pod| disposition(pod, drain) == Disposition::Leave)
}

/// Since when every running pod on the node has been ready (the latest of their `Ready`
/// transitions); `None` while some pod is not ready. A node without pods has been "ready"
/// since forever (the planner never counts from before the node's own phase began).
pub fn ready_since<'a>(
    pods: impl IntoIterator<Item = &'a Pod>,
) -> Option<clb_rollout_planner::Timestamp> {
    let mut latest = clb_rollout_planner::Timestamp(0);
    for pod in pods {
        if finished(pod) || pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let ready = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))?;
        if ready.status != "True" {
            return None;
        }
        if let Some(at) = &ready.last_transition_time {
            latest = latest.max(from_kube(at));
        }
    }
    Some(latest)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn owned_by(kind: &str) -> serde_json::Value {
        json!([{"apiVersion": "apps/v1", "kind": kind, "name": "x", "uid": "u", "controller": true}])
    }

    #[test]
    fn what_a_drain_evicts_leaves_and_refuses() {
        let drain = Drain::default();
        let replica =
            pod(json!({"metadata": {"name": "web", "ownerReferences": owned_by("ReplicaSet")}}));
        assert_eq!(disposition(&replica, &drain), Disposition::Evict);
        let daemon =
            pod(json!({"metadata": {"name": "ds", "ownerReferences": owned_by("DaemonSet")}}));
        assert_eq!(disposition(&daemon, &drain), Disposition::Leave);
        let strict = Drain {
            ignore_daemon_sets: false,
            ..Drain::default()
        };
        assert!(matches!(
            disposition(&daemon, &strict),
            Disposition::Refuse(_)
        ));
        let bare = pod(json!({"metadata": {"name": "bare"}}));
        assert!(matches!(disposition(&bare, &drain), Disposition::Refuse(_)));
        let forced = Drain {
            force: true,
            ..Drain::default()
        };
        assert_eq!(disposition(&bare, &forced), Disposition::Evict);
        let scratch = pod(
            json!({"metadata": {"name": "s", "ownerReferences": owned_by("ReplicaSet")},
            "spec": {"containers": [], "volumes": [{"name": "tmp", "emptyDir": {}}]}}),
        );
        assert!(matches!(
            disposition(&scratch, &drain),
            Disposition::Refuse(_)
        ));
        let mirror = pod(
            json!({"metadata": {"name": "m", "annotations": {"kubernetes.io/config.mirror": "x"}}}),
        );
        assert_eq!(disposition(&mirror, &drain), Disposition::Leave);
        let done = pod(json!({"metadata": {"name": "job"}, "status": {"phase": "Succeeded"}}));
        assert_eq!(disposition(&done, &drain), Disposition::Leave);
        assert!(drained([&daemon, &mirror, &done], &drain));
        assert!(!drained([&daemon, &replica], &drain));
    }

    #[test]
    fn pods_are_ready_since_the_last_of_them_became_ready() {
        let ready = |name: &str, at: &str| {
            pod(
                json!({"metadata": {"name": name}, "status": {"phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": at}]}}),
            )
        };
        let a = ready("a", "2026-12-01T10:00:00Z");
        let b = ready("b", "2026-12-01T10:05:00Z");
        let since = ready_since([&a, &b]).unwrap();
        let expected: jiff::Timestamp = "2026-12-01T10:05:00Z".parse().unwrap();
        assert_eq!(since, crate::clock::to_planner(expected));
        let waiting = pod(
            json!({"metadata": {"name": "c"}, "status": {"phase": "Pending",
            "conditions": [{"type": "Ready", "status": "False"}]}}),
        );
        assert_eq!(ready_since([&a, &waiting]), None);
        assert_eq!(ready_since([]), Some(clb_rollout_planner::Timestamp(0)));
    }
}
