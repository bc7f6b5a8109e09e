//! Server-side apply and `managedFields`.
//!
//! Simplified from the real field manager: ownership is tracked per *leaf path* (object keys
//! only); lists and scalars are leaves, so every list is atomic (the real server merges lists
//! marked `x-kubernetes-list-type: map/set` per item). A conflict is another manager owning a
//! leaf the apply sets to a *different* value (equal values become shared ownership, as in
//! Kubernetes). Fields a manager stops applying are removed unless someone else owns them.
//! Non-apply writes (PUT, merge/JSON patches) give the leaves they change to their
//! `fieldManager` (an `Update` entry) and take them from everyone else, without conflicts.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

use crate::store::{ApiError, Target, meta, meta_mut, now};

type FieldPath = Vec<String>;

/// The metadata fields a manager can own; the rest of metadata belongs to the server.
const OWNED_METADATA: [&str; 4] = ["labels", "annotations", "finalizers", "ownerReferences"];

fn collect_leaves(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    match v {
        Value::Object(map) if !map.is_empty() => {
            for (k, child) in map {
                prefix.push(k.clone());
                collect_leaves(child, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The leaf paths of an object that a write to `target` can own.
fn owned_leaves(obj: &Value, target: Target) -> BTreeSet<FieldPath> {
    let mut out = BTreeSet::new();
    let Some(map) = obj.as_object() else {
        return out;
    };
    for (k, v) in map {
        let relevant = match target {
            Target::Status => k == "status",
            Target::Main => !matches!(k.as_str(), "status" | "apiVersion" | "kind" | "metadata"),
        };
        if relevant {
            collect_leaves(v, &mut vec![k.clone()], &mut out);
        }
    }
    if target == Target::Main
        && let Some(m) = meta(obj)
    {
        for field in OWNED_METADATA {
            if let Some(v) = m.get(field) {
                collect_leaves(v, &mut vec!["metadata".into(), field.into()], &mut out);
            }
        }
    }
    out
}

fn value_at<'a>(obj: &'a Value, path: &FieldPath) -> Option<&'a Value> {
    path.iter().try_fold(obj, |v, k| v.get(k))
}

/// Removes the field at `path`, and the maps above it that this leaves empty (as a real
/// server does: the manager owned those maps too), keeping the top-level fields.
fn remove_at(obj: &mut Value, path: &[String]) {
    fn go(cur: &mut Value, path: &[String], top: bool) {
        let (Some((first, rest)), Some(map)) = (path.split_first(), cur.as_object_mut()) else {
            return;
        };
        if rest.is_empty() {
            map.remove(first);
            return;
        }
        if let Some(next) = map.get_mut(first) {
            go(next, rest, false);
            if !top && next.as_object().is_some_and(serde_json::Map::is_empty) {
                map.remove(first);
            }
        }
    }
    go(obj, path, true);
}

/// Objects merge recursively; everything else (lists included) replaces.
fn deep_merge(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(t), Value::Object(a)) => {
            for (k, v) in a {
                match t.get_mut(k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        t.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        (t, a) => *t = a.clone(),
    }
}

/// `{"f:spec": {"f:x": {}}}`: the FieldsV1 shape of a set of leaf paths.
fn to_fields_v1(paths: &BTreeSet<FieldPath>) -> Value {
    let mut root = Map::new();
    for path in paths {
        let mut cur = &mut root;
        for k in path {
            let entry = cur.entry(format!("f:{k}")).or_insert_with(|| json!({}));
            if !entry.is_object() {
                *entry = json!({});
            }
            match entry {
                Value::Object(m) => cur = m,
                _ => break,
            }
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut FieldPath, out: &mut BTreeSet<FieldPath>) {
    let children: Vec<(&String, &Value)> = v
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| k.starts_with("f:")).collect())
        .unwrap_or_default();
    if children.is_empty() {
        if !prefix.is_empty() {
            out.insert(prefix.clone());
        }
        return;
    }
    for (k, child) in children {
        prefix.push(k[2..].to_string());
        from_fields_v1(child, prefix, out);
        prefix.pop();
    }
}

/// One `managedFields` entry, decoded.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    subresource: Option<String>,
    time: String,
    paths: BTreeSet<FieldPath>,
}

impl Entry {
    fn target(&self) -> Target {
        if self.subresource.as_deref() == Some("status") {
            Target::Status
        } else {
            Target::Main
        }
    }

    fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.paths),
        });
        if let (Some(sub), Some(map)) = (&self.subresource, v.as_object_mut()) {
            map.insert("subresource".into(), json!(sub));
        }
        v
    }
}

fn read_entries(obj: &Value) -> Vec<Entry> {
    let s = |e: &Value, k: &str| {
        e.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    meta(obj)
        .and_then(|m| m.get("managedFields"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|e| {
            let mut paths = BTreeSet::new();
            if let Some(f) = e.get("fieldsV1") {
                from_fields_v1(f, &mut Vec::new(), &mut paths);
            }
            Entry {
                manager: s(e, "manager"),
                operation: s(e, "operation"),
                api_version: s(e, "apiVersion"),
                subresource: e
                    .get("subresource")
                    .and_then(Value::as_str)
                    .map(String::from),
                time: s(e, "time"),
                paths,
            }
        })
        .collect()
}

fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.paths.is_empty())
        .map(Entry::to_json)
        .collect();
    let m = meta_mut(obj);
    if list.is_empty() {
        m.remove("managedFields");
    } else {
        m.insert("managedFields".into(), Value::Array(list));
    }
}

fn subresource(target: Target) -> Option<String> {
    (target == Target::Status).then(|| "status".to_string())
}

fn dotted(path: &FieldPath) -> String {
    path.iter().map(|k| format!(".{k}")).collect()
}

/// Two paths overlap when one is a prefix of the other (a leaf replacing a subtree).
fn overlaps(a: &FieldPath, b: &FieldPath) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

/// Drops `null` members: an applied `null` counts as the field not being applied (it is then
/// removed if this manager owned it alone), rather than storing a `null`.
fn without_nulls(v: &Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), without_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A server-side apply of `applied` by `manager` onto `current` (`None`: the object does not
/// exist yet and the apply creates it). Returns the object to store, `managedFields` included.
pub fn apply(
    current: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    target: Target,
    api_version: &str,
) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("an apply patch must be an object"));
    }
    let applied = &without_nulls(applied);
    let empty = json!({});
    let base = current.unwrap_or(&empty);
    let applied_paths = owned_leaves(applied, target);
    let mut entries = read_entries(base);

    // Conflicts: leaves another manager owns (in the same subresource) that would change.
    let mut conflicts: Vec<(String, String, FieldPath)> = Vec::new();
    for e in entries
        .iter_mut()
        .filter(|e| e.manager != manager && e.target() == target)
    {
        let clashing: Vec<FieldPath> = e
            .paths
            .iter()
            .filter(|p| {
                applied_paths
                    .iter()
                    .any(|a| overlaps(a, p) && value_at(applied, a) != value_at(base, a))
            })
            .cloned()
            .collect();
        if force {
            // Forcing takes the fields over: the other manager no longer owns them.
            e.paths.retain(|p| !clashing.contains(p));
        } else {
            conflicts.extend(
                clashing
                    .into_iter()
                    .map(|p| (e.manager.clone(), e.api_version.clone(), p)),
            );
        }
    }
    if !conflicts.is_empty() {
        return Err(conflict_error(&conflicts));
    }

    let mut result = base.clone();
    // Fields this manager applied before but no longer does are removed, unless shared.
    let previous: BTreeSet<FieldPath> = entries
        .iter()
        .filter(|e| e.manager == manager && e.operation == "Apply" && e.target() == target)
        .flat_map(|e| e.paths.iter().cloned())
        .collect();
    for path in previous.difference(&applied_paths) {
        let shared = entries
            .iter()
            .any(|e| (e.manager != manager || e.operation != "Apply") && e.paths.contains(path));
        if !shared {
            remove_at(&mut result, path);
        }
    }
    let mut to_merge = applied.clone();
    if let Some(map) = to_merge.as_object_mut() {
        // Server-owned metadata (resourceVersion, uid, ...) is not the applier's to set; the
        // name stays for a create.
        if let Some(Value::Object(m)) = map.get_mut("metadata") {
            m.retain(|k, _| {
                OWNED_METADATA.contains(&k.as_str()) || k == "name" || k == "namespace"
            });
        }
        match target {
            Target::Status => map.retain(|k, _| k == "status"),
            Target::Main => {
                map.remove("status");
            }
        }
    }
    deep_merge(&mut result, &to_merge);

    entries.retain(|e| !(e.manager == manager && e.operation == "Apply" && e.target() == target));
    entries.push(Entry {
        manager: manager.into(),
        operation: "Apply".into(),
        api_version: api_version.into(),
        subresource: subresource(target),
        time: now(),
        paths: applied_paths,
    });
    write_entries(&mut result, entries);
    Ok(result)
}

/// The 409 the real server returns, with one `FieldManagerConflict` cause per field.
fn conflict_error(conflicts: &[(String, String, FieldPath)]) -> ApiError {
    let n = conflicts.len();
    let mut message = format!(
        "Apply failed with {n} conflict{}: ",
        if n == 1 { "" } else { "s" }
    );
    let managers: BTreeSet<(&String, &String)> = conflicts.iter().map(|(m, v, _)| (m, v)).collect();
    let mut parts = Vec::new();
    for (m, v) in managers {
        let fields: Vec<String> = conflicts
            .iter()
            .filter(|(cm, _, _)| cm == m)
            .map(|(_, _, p)| dotted(p))
            .collect();
        parts.push(if fields.len() == 1 {
            format!("conflict with \"{m}\" using {v}: {}", fields[0])
        } else {
            format!(
                "conflicts with \"{m}\" using {v}:\n- {}",
                fields.join("\n- ")
            )
        });
    }
    message.push_str(&parts.join("\n"));
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|(m, v, p)| {
            json!({"reason": "FieldManagerConflict", "message": format!("conflict with \"{m}\" using {v}"), "field": dotted(p)})
        })
        .collect();
    ApiError::new(409, "Conflict", message).with_details(json!({"causes": causes}))
}

/// Ownership after a non-apply write (PUT or a merge/JSON/strategic patch) by `manager`: the
/// leaves it changed become its own (`Update`), everyone else loses them; leaves that no
/// longer exist are owned by nobody.
pub fn record_update(
    old: &Value,
    new: &mut Value,
    manager: &str,
    target: Target,
    api_version: &str,
) {
    let before = owned_leaves(old, target);
    let after = owned_leaves(new, target);
    let changed: BTreeSet<FieldPath> = after
        .iter()
        .filter(|p| !before.contains(*p) || value_at(old, p) != value_at(new, p))
        .cloned()
        .collect();
    let mut entries = read_entries(old);
    for e in entries.iter_mut().filter(|e| e.target() == target) {
        e.paths
            .retain(|p| after.contains(p) && !changed.iter().any(|c| overlaps(c, p)));
    }
    if !changed.is_empty() {
        match entries
            .iter_mut()
            .find(|e| e.manager == manager && e.operation == "Update" && e.target() == target)
        {
            Some(e) => {
                e.paths.extend(changed);
                e.time = now();
            }
            None => entries.push(Entry {
                manager: manager.into(),
                operation: "Update".into(),
                api_version: api_version.into(),
                subresource: subresource(target),
                time: now(),
                paths: changed,
            }),
        }
    }
    write_entries(new, entries);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fields_of(obj: &Value, manager: &str) -> Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
            .map(|e| e["fieldsV1"].clone())
            .unwrap_or(Value::Null)
    }

    #[test]
    fn apply_tracks_fields_conflicts_and_force() {
        let a = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "labels": {"l": "1"}}, "data": {"a": "1", "b": "2"}});
        let obj = apply(None, &a, "alice", false, Target::Main, "v1").unwrap();
        assert_eq!(
            fields_of(&obj, "alice"),
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:l": {}}}})
        );
        // Same value: shared ownership, no conflict.
        let b = json!({"data": {"a": "1"}});
        let obj = apply(Some(&obj), &b, "bob", false, Target::Main, "v1").unwrap();
        // Different value: conflict naming alice's field.
        let b2 = json!({"data": {"a": "9"}});
        let err = apply(Some(&obj), &b2, "bob", false, Target::Main, "v1").unwrap_err();
        assert_eq!(err.code, 409);
        assert_eq!(
            err.message,
            "Apply failed with 1 conflict: conflict with \"alice\" using v1: .data.a"
        );
        let forced = apply(Some(&obj), &b2, "bob", true, Target::Main, "v1").unwrap();
        assert_eq!(forced["data"], json!({"a": "9", "b": "2"}));
        assert_eq!(
            fields_of(&forced, "alice"),
            json!({"f:data": {"f:b": {}}, "f:metadata": {"f:labels": {"f:l": {}}}})
        );
        // Alice stops applying b: it is removed (nobody else owns it).
        let a2 = json!({"metadata": {"labels": {"l": "1"}}});
        let obj = apply(Some(&forced), &a2, "alice", false, Target::Main, "v1").unwrap();
        assert_eq!(obj["data"], json!({"a": "9"}));
    }

    #[test]
    fn a_map_whose_fields_all_went_goes_too() {
        let first = json!({"spec": {"phase": "Busy", "progress": {"percent": 5, "message": "x"}}});
        let obj = apply(None, &first, "bridge", false, Target::Main, "v1").unwrap();
        let second = json!({"spec": {"phase": "Idle"}});
        let obj = apply(Some(&obj), &second, "bridge", false, Target::Main, "v1").unwrap();
        assert_eq!(
            obj["spec"],
            json!({"phase": "Idle"}),
            "no empty progress left"
        );
        let none = json!({"metadata": {"name": "x"}});
        let obj = apply(Some(&obj), &none, "bridge", false, Target::Main, "v1").unwrap();
        assert!(obj.get("spec").is_some(), "top-level fields stay");
    }

    #[test]
    fn updates_take_fields_without_conflict() {
        let a = json!({"metadata": {"name": "x"}, "spec": {"replicas": 1}});
        let old = apply(None, &a, "alice", false, Target::Main, "v1").unwrap();
        let mut new = old.clone();
        new["spec"]["replicas"] = json!(3);
        record_update(&old, &mut new, "kubectl-edit", Target::Main, "v1");
        assert_eq!(
            fields_of(&new, "kubectl-edit"),
            json!({"f:spec": {"f:replicas": {}}})
        );
        assert_eq!(fields_of(&new, "alice"), Value::Null);
        // Now alice's apply with her old value conflicts with the editor.
        let err = apply(Some(&new), &a, "alice", false, Target::Main, "v1").unwrap_err();
        assert!(err.message.contains("kubectl-edit"), "{}", err.message);
    }
}
