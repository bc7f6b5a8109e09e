//! The `pods/{name}/eviction` subresource with PodDisruptionBudget semantics.
//!
//! Simplified from the real server (which reads `status.disruptionsAllowed` that the
//! disruption controller keeps up to date): the budget is recomputed at each eviction from
//! the pods in the namespace that its selector matches.
//! - a pod is *healthy* when it has the `Ready` condition `True` and is not being deleted;
//! - expected pods = matching pods not being deleted (there is no controller scale here);
//! - `minAvailable` (count or percent of expected, rounded up) is the desired healthy count;
//!   `maxUnavailable` gives `expected - maxUnavailable` (percent rounded up); neither: 0;
//! - `disruptionsAllowed = max(0, healthy - desired)`; a healthy pod may go if it is > 0, an
//!   unhealthy one if `healthy >= desired` (the default `IfHealthyBudget` policy), or always
//!   with `unhealthyPodEvictionPolicy: AlwaysAllow`;
//! - pods in phase `Pending`, `Succeeded` or `Failed`, or already being deleted, skip the
//!   budget check, as in Kubernetes.
//!
//! The PDB's status (`currentHealthy`, `desiredHealthy`, `expectedPods`, `disruptionsAllowed`,
//! `observedGeneration`) is written at each eviction, before and after the pod goes.

use serde_json::{Value, json};

use crate::selectors::LabelSelector;
use crate::store::{ApiError, ResourceInfo, Store, Target, meta, meta_str, success_status};

fn is_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c.get("type") == Some(&json!("Ready")) && c.get("status") == Some(&json!("True")))
}

fn being_deleted(obj: &Value) -> bool {
    meta(obj).is_some_and(|m| m.contains_key("deletionTimestamp"))
}

fn healthy(pod: &Value) -> bool {
    is_ready(pod) && !being_deleted(pod)
}

/// An `IntOrString` budget value against `expected` pods; percentages round up.
fn scaled(v: &Value, expected: i64) -> Result<i64, ApiError> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("invalid budget value")),
        Value::String(s) => {
            let pct: i64 = s
                .strip_suffix('%')
                .and_then(|p| p.parse().ok())
                .ok_or_else(|| ApiError::bad_request(format!("invalid budget value {s:?}")))?;
            Ok((pct * expected + 99) / 100)
        }
        _ => Err(ApiError::bad_request("invalid budget value")),
    }
}

/// The numbers of one budget: (expected, healthy, desired, disruptions allowed).
fn budget(
    store: &Store,
    pods: &ResourceInfo,
    ns: &str,
    pdb: &Value,
) -> Result<(i64, i64, i64, i64), ApiError> {
    let selector =
        LabelSelector::from_object(pdb.pointer("/spec/selector")).map_err(ApiError::bad_request)?;
    let matching: Vec<&Value> = store
        .objects_of(pods, Some(ns))
        .map(|(_, p)| p)
        .filter(|p| selector.matches(p) && !being_deleted(p))
        .collect();
    let expected = matching.len() as i64;
    let current = matching.iter().filter(|p| healthy(p)).count() as i64;
    let desired = match (
        pdb.pointer("/spec/minAvailable"),
        pdb.pointer("/spec/maxUnavailable"),
    ) {
        (Some(min), _) => scaled(min, expected)?,
        (None, Some(max)) => (expected - scaled(max, expected)?).max(0),
        (None, None) => 0,
    };
    Ok((expected, current, desired, (current - desired).max(0)))
}

fn write_pdb_status(
    store: &mut Store,
    pdbs: &ResourceInfo,
    pods: &ResourceInfo,
    ns: &str,
    pdb: &Value,
) -> Result<(), ApiError> {
    let name = meta_str(pdb, "name").unwrap_or_default().to_string();
    let (expected, current, desired, allowed) = budget(store, pods, ns, pdb)?;
    let mut new = pdb.clone();
    if let Some(map) = new.as_object_mut() {
        let generation = meta(pdb)
            .and_then(|m| m.get("generation"))
            .cloned()
            .unwrap_or(json!(1));
        map.insert(
            "status".into(),
            json!({
                "observedGeneration": generation,
                "currentHealthy": current,
                "desiredHealthy": desired,
                "expectedPods": expected,
                "disruptionsAllowed": allowed,
            }),
        );
    }
    store
        .replace(pdbs, Some(ns), &name, new, Target::Status)
        .map(|_| ())
}

/// POST `/api/v1/namespaces/{ns}/pods/{name}/eviction`. Ok is the (code, body) to answer.
pub fn evict(
    store: &mut Store,
    ns: &str,
    name: &str,
    body: &Value,
) -> Result<(u16, Value), ApiError> {
    let pods = store
        .lookup("", "v1", "pods")
        .ok_or_else(|| ApiError::new(500, "InternalError", "pods are not registered"))?;
    let pdbs = store
        .lookup("policy", "v1", "poddisruptionbudgets")
        .ok_or_else(|| {
            ApiError::new(
                500,
                "InternalError",
                "poddisruptionbudgets are not registered",
            )
        })?;
    if let Some(body_name) = meta_str(body, "name")
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "name in URL does not match name in Eviction object: {name} != {body_name}"
        )));
    }
    let pod = store.get_obj(&pods, Some(ns), name)?;
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("Running");
    let ignores_budget = matches!(phase, "Pending" | "Succeeded" | "Failed") || being_deleted(&pod);

    let matching: Vec<Value> = store
        .objects_of(&pdbs, Some(ns))
        .map(|(_, pdb)| pdb)
        .filter(|pdb| {
            LabelSelector::from_object(pdb.pointer("/spec/selector")).is_ok_and(|s| s.matches(&pod))
        })
        .cloned()
        .collect();
    if !ignores_budget {
        if matching.len() > 1 {
            return Err(ApiError::new(
                500,
                "InternalError",
                "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
            ));
        }
        if let Some(pdb) = matching.first() {
            let (_, current, desired, allowed) = budget(store, &pods, ns, pdb)?;
            let always_unhealthy =
                pdb.pointer("/spec/unhealthyPodEvictionPolicy") == Some(&json!("AlwaysAllow"));
            let ok = if healthy(&pod) {
                allowed > 0
            } else {
                always_unhealthy || current >= desired
            };
            if !ok {
                write_pdb_status(store, &pdbs, &pods, ns, pdb)?;
                let pdb_name = meta_str(pdb, "name").unwrap_or_default();
                return Err(ApiError::new(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                )
                .with_details(json!({"causes": [{
                    "reason": "DisruptionBudget",
                    "message": format!(
                        "The disruption budget {pdb_name} needs {desired} healthy pods and has {current} currently"
                    ),
                }]})));
            }
        }
    }
    store.delete(&pods, Some(ns), name)?;
    for pdb in &matching {
        // Re-read: the PDB's resourceVersion may have moved since it was listed.
        let pdb_name = meta_str(pdb, "name").unwrap_or_default();
        let fresh = store.get_obj(&pdbs, Some(ns), pdb_name)?;
        write_pdb_status(store, &pdbs, &pods, ns, &fresh)?;
    }
    // The real server answers 201 Created with a success Status.
    Ok((201, success_status(201)))
}
