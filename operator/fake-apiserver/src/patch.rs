//! PATCH bodies: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and strategic merge patch.
//!
//! Strategic merge patch is a merge patch whose lists may merge instead of being replaced. A
//! real server takes each list's strategy from the Go types; this fake goes by the field's
//! name, for the lists of the built-in kinds the operator touches: `conditions` and
//! `addresses` (by `type`), `containers`, `initContainers`, `volumes`, `env` (by `name`),
//! `ownerReferences` (by `uid`) merge by key, with `{"$patch": "delete"}` items removing;
//! `finalizers` merges as a set, with `$deleteFromPrimitiveList/finalizers`. Every other list
//! (taints, tolerations, ...) is replaced, as in Kubernetes for lists without a strategy.
//! `$retainKeys` and `$setElementOrder` are ignored. Custom resources refuse strategic
//! patches (415, as on a real server).

use serde_json::Value;

use crate::store::ApiError;

/// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    if let Value::Object(target_map) = target {
        for (k, v) in patch_map {
            if v.is_null() {
                target_map.remove(k);
            } else {
                merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The lists merged by a key (field name → merge key).
const MERGE_KEYS: [(&str, &str); 7] = [
    ("conditions", "type"),
    ("addresses", "type"),
    ("containers", "name"),
    ("initContainers", "name"),
    ("volumes", "name"),
    ("env", "name"),
    ("ownerReferences", "uid"),
];

/// The lists of scalars merged as sets.
const SET_LISTS: [&str; 1] = ["finalizers"];

/// Kubernetes' strategic merge patch, within the limits the module doc lists.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch_map) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Value::Object(target_map) = target else {
        return;
    };
    for (k, v) in patch_map {
        if let Some(list) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) =
                (target_map.get_mut(list), v.as_array())
            {
                items.retain(|i| !remove.contains(i));
            }
            continue;
        }
        if k.starts_with('$') {
            continue;
        }
        let merge_key = MERGE_KEYS.iter().find(|(f, _)| f == k).map(|(_, key)| *key);
        match (v, target_map.get_mut(k)) {
            (Value::Null, _) => {
                target_map.remove(k);
            }
            (Value::Array(items), Some(Value::Array(existing)))
                if SET_LISTS.contains(&k.as_str()) =>
            {
                for item in items {
                    if !existing.contains(item) {
                        existing.push(item.clone());
                    }
                }
            }
            (Value::Array(items), Some(Value::Array(existing))) if merge_key.is_some() => {
                let key = merge_key.unwrap_or_default();
                for item in items {
                    let id = item.get(key);
                    let pos = existing
                        .iter()
                        .position(|e| id.is_some() && e.get(key) == id);
                    let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                    match (pos, delete) {
                        (Some(i), true) => {
                            existing.remove(i);
                        }
                        (Some(i), false) => strategic_merge_patch(&mut existing[i], item),
                        (None, true) => {}
                        (None, false) => {
                            let mut fresh = Value::Null;
                            strategic_merge_patch(&mut fresh, item);
                            existing.push(fresh);
                        }
                    }
                }
            }
            (Value::Object(_), Some(existing)) if existing.is_object() => {
                strategic_merge_patch(existing, v)
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_merge_patch(&mut fresh, v);
                target_map.insert(k.clone(), fresh);
            }
        }
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Splits a JSON pointer into the parent pointer and the last (unescaped) token.
fn split_pointer(path: &str) -> Result<(&str, String), ApiError> {
    let idx = path
        .rfind('/')
        .ok_or_else(|| ApiError::bad_request(format!("invalid JSON pointer {path:?}")))?;
    Ok((&path[..idx], unescape(&path[idx + 1..])))
}

fn invalid(msg: String) -> ApiError {
    ApiError::new(422, "Invalid", msg)
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), ApiError> {
    if path.is_empty() {
        *doc = value;
        return Ok(());
    }
    let (parent, token) = split_pointer(path)?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => {
            map.insert(token, value);
            Ok(())
        }
        Some(Value::Array(list)) => {
            let idx = if token == "-" {
                list.len()
            } else {
                token
                    .parse::<usize>()
                    .map_err(|_| invalid(format!("bad array index in {path}")))?
            };
            if idx > list.len() {
                return Err(invalid(format!("array index out of range in {path}")));
            }
            list.insert(idx, value);
            Ok(())
        }
        _ => Err(invalid(format!("doc is missing path: {path:?}"))),
    }
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, ApiError> {
    let (parent, token) = split_pointer(path)?;
    let missing = || invalid(format!("doc is missing path: {path:?}"));
    match doc.pointer_mut(parent) {
        Some(Value::Object(map)) => map.remove(&token).ok_or_else(missing),
        Some(Value::Array(list)) => match token.parse::<usize>() {
            Ok(i) if i < list.len() => Ok(list.remove(i)),
            _ => Err(missing()),
        },
        _ => Err(missing()),
    }
}

/// RFC 6902: add, remove, replace, move, copy, test. Atomic: an error leaves `doc` unchanged.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), ApiError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| ApiError::bad_request("a JSON patch must be an array of operations"))?;
    let mut work = doc.clone();
    for op in ops {
        let field = |name: &str| op.get(name).and_then(Value::as_str);
        let path =
            field("path").ok_or_else(|| ApiError::bad_request("operation without a path"))?;
        let value = || {
            op.get("value")
                .cloned()
                .ok_or_else(|| ApiError::bad_request(format!("operation on {path} needs a value")))
        };
        let from = || field("from").ok_or_else(|| ApiError::bad_request("operation needs from"));
        match field("op") {
            Some("add") => add(&mut work, path, value()?)?,
            Some("remove") => {
                remove(&mut work, path)?;
            }
            Some("replace") => {
                remove(&mut work, path)?;
                add(&mut work, path, value()?)?;
            }
            Some("move") => {
                let v = remove(&mut work, from()?)?;
                add(&mut work, path, v)?;
            }
            Some("copy") => {
                let v = work
                    .pointer(from()?)
                    .cloned()
                    .ok_or_else(|| invalid(format!("doc is missing from path: {path:?}")))?;
                add(&mut work, path, v)?;
            }
            Some("test") => {
                if work.pointer(path) != Some(&value()?) {
                    return Err(invalid(format!("testing value {path} failed")));
                }
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown JSON patch op {other:?}"
                )));
            }
        }
    }
    *doc = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_rfc7386_examples() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "l": [1, 2]});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}, "l": [3]}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "l": [3]}));
        let mut doc = json!({"spec": {}});
        merge_patch(&mut doc, &json!({"spec": {"unschedulable": true}}));
        assert_eq!(doc, json!({"spec": {"unschedulable": true}}));
    }

    #[test]
    fn strategic_merge_patch_lists() {
        let mut node = json!({
            "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
            "spec": {"taints": [{"key": "t1", "effect": "NoSchedule"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "DiskPressure", "status": "False"}]},
        });
        strategic_merge_patch(
            &mut node,
            &json!({
                "metadata": {"finalizers": ["b", "a"], "labels": {"x": null, "y": "2"}},
                "spec": {"taints": [{"key": "t2", "effect": "NoExecute"}], "unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "$patch": "delete"}, {"type": "New", "status": "True"}]},
            }),
        );
        assert_eq!(
            node,
            json!({
                "metadata": {"finalizers": ["a", "b"], "labels": {"y": "2"}},
                "spec": {"taints": [{"key": "t2", "effect": "NoExecute"}], "unschedulable": true},
                "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "New", "status": "True"}]},
            })
        );
        strategic_merge_patch(
            &mut node,
            &json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(node["metadata"]["finalizers"], json!(["b"]));
    }

    #[test]
    fn json_patch_ops() {
        let mut doc = json!({"metadata": {"labels": {"a/b": "1"}}, "list": [1, 3]});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/metadata/labels/a~1b", "value": "1"},
                {"op": "add", "path": "/list/1", "value": 2},
                {"op": "add", "path": "/list/-", "value": 4},
                {"op": "replace", "path": "/metadata/labels/a~1b", "value": "2"},
                {"op": "copy", "from": "/list/0", "path": "/first"},
                {"op": "move", "from": "/first", "path": "/moved"},
                {"op": "remove", "path": "/list/0"},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"metadata": {"labels": {"a/b": "2"}}, "list": [2, 3, 4], "moved": 1})
        );
        // A failing test leaves the document as it was.
        let before = doc.clone();
        let err = json_patch(
            &mut doc,
            &json!([{"op": "remove", "path": "/moved"}, {"op": "test", "path": "/list/0", "value": 9}]),
        )
        .unwrap_err();
        assert_eq!(err.code, 422);
        assert_eq!(doc, before);
        assert!(
            json_patch(
                &mut doc,
                &json!([{"op": "replace", "path": "/nope", "value": 1}])
            )
            .is_err()
        );
    }
}
