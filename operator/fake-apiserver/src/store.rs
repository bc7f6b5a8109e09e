//! The object store: generic JSON objects keyed by group/version/resource/namespace/name, one
//! global `resourceVersion`, `generation`, finalizers, the status subresource, and the event
//! history the watches are served from.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedSender;

use crate::selectors::{FieldSelector, LabelSelector};

// Re-exported: the rest of the crate (and tests) reach these through the store.
pub use crate::meta::{meta, meta_mut, meta_str, now, rfc3339};
pub use crate::registry::{ResourceInfo, builtin_resources, crd_resources};

/// The storage key. The version is part of it: this server does no conversion between versions.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub group: String,
    pub version: String,
    pub resource: String,
    pub namespace: Option<String>,
    pub name: String,
}

impl ObjectKey {
    pub fn new(info: &ResourceInfo, namespace: Option<&str>, name: &str) -> Self {
        ObjectKey {
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.resource.clone(),
            namespace: if info.namespaced {
                namespace.map(String::from)
            } else {
                None
            },
            name: name.into(),
        }
    }

    fn same_resource(&self, info: &ResourceInfo) -> bool {
        self.group == info.group && self.version == info.version && self.resource == info.resource
    }
}

/// An error as the API server reports it: an HTTP code and a `Status` object.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub reason: &'static str,
    pub message: String,
    pub details: Option<Value>,
}

impl ApiError {
    pub fn new(code: u16, reason: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            code,
            reason,
            message: message.into(),
            details: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn not_found(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", info.qualified()),
        )
        .with_details(json!({"name": name, "group": info.group, "kind": info.resource}))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message)
    }

    /// The message the real server gives for a stale `resourceVersion`; clients match on the
    /// reason (`Conflict`) and code (409), people on the text.
    pub fn stale(info: &ResourceInfo, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; \
                 please apply your changes to the latest version and try again",
                info.qualified()
            ),
        )
        .with_details(json!({"name": name, "group": info.group, "kind": info.resource}))
    }

    /// The `Status` object (`kind: Status`, `status: Failure`) the body carries.
    pub fn status_body(&self) -> Value {
        let mut status = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "code": self.code,
        });
        if let (Some(details), Some(map)) = (&self.details, status.as_object_mut()) {
            map.insert("details".into(), details.clone());
        }
        status
    }
}

/// A success `Status`, as returned by deletes of some kinds and by the eviction subresource.
pub fn success_status(code: u16) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": code})
}

/// One change, kept in the history for watches that resume from an older `resourceVersion`.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub key: ObjectKey,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
    /// The object before a MODIFIED change: a watch with a selector sees an object that starts
    /// or stops matching as ADDED or DELETED, as on a real server.
    pub old: Option<Value>,
}

/// An open watch: what it selects, and where its newline-delimited JSON goes.
#[derive(Debug)]
pub struct Watcher {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    pub bookmarks: bool,
    pub tx: UnboundedSender<Bytes>,
}

impl Watcher {
    pub fn selects(&self, key: &ObjectKey, object: &Value) -> bool {
        key.same_resource(&self.info)
            && (self.namespace.is_none() || key.namespace == self.namespace)
            && self.labels.matches(object)
            && self.fields.matches(object)
    }

    /// The event type this watch sees for a change, if any.
    pub fn event_for(&self, change: &Change) -> Option<&'static str> {
        let now = self.selects(&change.key, &change.object);
        match (change.kind, &change.old) {
            ("MODIFIED", Some(old)) => match (self.selects(&change.key, old), now) {
                (true, true) => Some("MODIFIED"),
                (true, false) => Some("DELETED"),
                (false, true) => Some("ADDED"),
                (false, false) => None,
            },
            (kind, _) => now.then_some(kind),
        }
    }
}

fn has_finalizers(obj: &Value) -> bool {
    meta(obj)
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// Everything but `metadata` and `status`: what `generation` counts changes of.
fn spec_part(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("metadata");
        map.remove("status");
        map.remove("kind");
        map.remove("apiVersion");
    }
    v
}

/// How a write reached the store; decides which parts of the object it may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Main,
    Status,
}

/// The state of the fake cluster.
#[derive(Debug)]
pub struct Store {
    registry: Vec<ResourceInfo>,
    objects: BTreeMap<ObjectKey, Value>,
    rv: u64,
    history: VecDeque<Change>,
    /// Watches from a `resourceVersion` below this get 410 Gone: the history was cut there.
    history_floor: u64,
    history_limit: usize,
    pub(crate) watchers: Vec<Watcher>,
    uid_counter: u64,
}

impl Default for Store {
    fn default() -> Self {
        Store {
            registry: builtin_resources(),
            objects: BTreeMap::new(),
            // Starts above 1 so that "0" (any version) and "1" are never confused with real ones.
            rv: 100,
            history: VecDeque::new(),
            history_floor: 100,
            history_limit: 1000,
            watchers: Vec::new(),
            uid_counter: 0,
        }
    }
}

impl Store {
    pub fn resource_version(&self) -> u64 {
        self.rv
    }

    /// Registers a resource (a CRD given by the test, or created through the API).
    pub fn register(&mut self, info: ResourceInfo) {
        self.registry.retain(|r| {
            !(r.group == info.group && r.version == info.version && r.resource == info.resource)
        });
        self.registry.push(info);
    }

    pub fn lookup(&self, group: &str, version: &str, resource: &str) -> Option<ResourceInfo> {
        self.registry
            .iter()
            .find(|r| r.group == group && r.version == version && r.resource == resource)
            .cloned()
    }

    pub fn lookup_kind(&self, api_version: &str, kind: &str) -> Option<ResourceInfo> {
        self.registry
            .iter()
            .find(|r| r.api_version() == api_version && r.kind == kind)
            .cloned()
    }

    /// How many changes watches can resume over; older versions get 410 Gone.
    pub fn set_history_limit(&mut self, limit: usize) {
        self.history_limit = limit;
        self.trim_history();
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            if let Some(old) = self.history.pop_front() {
                self.history_floor = old.rv;
            }
        }
    }

    pub fn history_floor(&self) -> u64 {
        self.history_floor
    }

    pub fn history_since(&self, rv: u64) -> impl Iterator<Item = &Change> {
        self.history.iter().filter(move |c| c.rv > rv)
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Value> {
        self.objects.get(key)
    }

    pub fn objects_of<'a>(
        &'a self,
        info: &'a ResourceInfo,
        namespace: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Value)> + 'a {
        // Keys sort by group, version, resource, namespace, name: one resource (and one
        // namespace of it) is a contiguous range, so a list costs what it returns, not the
        // size of the whole store (a simulated fleet holds thousands of pods).
        let start = ObjectKey {
            group: info.group.clone(),
            version: info.version.clone(),
            resource: info.resource.clone(),
            namespace: namespace.map(String::from),
            name: String::new(),
        };
        self.objects.range(start..).take_while(move |(k, _)| {
            k.same_resource(info) && (namespace.is_none() || k.namespace.as_deref() == namespace)
        })
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    /// Records a change and sends it to the watches that select it; closed watches are dropped.
    fn record(&mut self, kind: &'static str, key: ObjectKey, old: Option<Value>, object: Value) {
        let change = Change {
            rv: self.rv,
            key,
            kind,
            object,
            old,
        };
        self.watchers.retain(|w| match w.event_for(&change) {
            Some(kind) => {
                w.tx.send(crate::event::event_line(kind, &change.object))
                    .is_ok()
            }
            None => true,
        });
        self.history.push_back(change);
        self.trim_history();
    }

    /// Sets `kind` and `apiVersion` as the real server does on every response.
    fn typed(info: &ResourceInfo, mut obj: Value) -> Value {
        if let Some(map) = obj.as_object_mut() {
            map.insert("apiVersion".into(), Value::String(info.api_version()));
            map.insert("kind".into(), Value::String(info.kind.clone()));
        }
        obj
    }

    pub fn create(
        &mut self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        body: Value,
    ) -> Result<Value, ApiError> {
        if !body.is_object() {
            return Err(ApiError::bad_request(
                "the body of a create must be a JSON object",
            ));
        }
        let mut obj = Self::typed(info, body);
        let name = match meta_str(&obj, "name") {
            Some(n) if !n.is_empty() => n.to_string(),
            _ => match meta_str(&obj, "generateName") {
                // The real server appends 5 random characters; a counter is as unique and
                // keeps test output stable.
                Some(prefix) => format!("{prefix}{:05x}", self.uid_counter + 1),
                None => {
                    return Err(ApiError::new(
                        422,
                        "Invalid",
                        format!("{} is invalid: metadata.name: Required value", info.kind),
                    ));
                }
            },
        };
        // As on a real server: re-creating an object read earlier is a client bug, not a write.
        if meta_str(&obj, "resourceVersion").is_some_and(|rv| !rv.is_empty()) {
            return Err(ApiError::bad_request(
                "resourceVersion should not be set on objects to be created",
            ));
        }
        if info.namespaced && namespace.is_none() {
            return Err(ApiError::bad_request(
                "the namespace of the provided object is missing",
            ));
        }
        if let (Some(ns), Some(body_ns)) = (namespace, meta_str(&obj, "namespace"))
            && ns != body_ns
        {
            return Err(ApiError::bad_request(
                "the namespace of the provided object does not match the namespace sent on the request",
            ));
        }
        let key = ObjectKey::new(info, namespace, &name);
        if self.objects.contains_key(&key) {
            return Err(ApiError::new(
                409,
                "AlreadyExists",
                format!("{} \"{name}\" already exists", info.qualified()),
            )
            .with_details(json!({"name": name, "group": info.group, "kind": info.resource})));
        }
        self.uid_counter += 1;
        let rv = self.next_rv();
        let uid = format!("00000000-0000-4000-8000-{:012x}", self.uid_counter);
        let m = meta_mut(&mut obj);
        m.insert("name".into(), json!(name));
        if let Some(ns) = key.namespace.as_deref() {
            m.insert("namespace".into(), json!(ns));
        }
        m.insert("uid".into(), json!(uid));
        m.insert("resourceVersion".into(), json!(rv.to_string()));
        m.insert("creationTimestamp".into(), json!(now()));
        m.insert("generation".into(), json!(1));
        m.remove("deletionTimestamp");
        if info.group == "apiextensions.k8s.io" && info.resource == "customresourcedefinitions" {
            for served in crd_resources(&obj) {
                self.register(served);
            }
        }
        self.objects.insert(key.clone(), obj.clone());
        self.record("ADDED", key, None, obj.clone());
        Ok(obj)
    }

    pub fn get_obj(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        self.objects
            .get(&ObjectKey::new(info, namespace, name))
            .cloned()
            .ok_or_else(|| ApiError::not_found(info, name))
    }

    pub fn list(
        &self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        labels: &LabelSelector,
        fields: &FieldSelector,
    ) -> Value {
        let items: Vec<Value> = self
            .objects_of(info, namespace)
            .map(|(_, v)| v)
            .filter(|v| labels.matches(v) && fields.matches(v))
            .cloned()
            .collect();
        json!({
            "kind": format!("{}List", info.kind),
            "apiVersion": info.api_version(),
            "metadata": {"resourceVersion": self.rv.to_string()},
            "items": items,
        })
    }

    /// Writes a new version of an existing object (PUT, and every patch after it is applied).
    ///
    /// `new` is the whole object the client wants; what of it is kept depends on `target`.
    /// A `metadata.resourceVersion` in `new` that differs from the stored one is a stale write
    /// (409); an empty or missing one is an unconditional write, as in Kubernetes.
    pub fn replace(
        &mut self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
        new: Value,
        target: Target,
    ) -> Result<Value, ApiError> {
        let key = ObjectKey::new(info, namespace, name);
        let old = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the body must be a JSON object"));
        }
        let old_rv = meta_str(&old, "resourceVersion")
            .unwrap_or_default()
            .to_string();
        match meta_str(&new, "resourceVersion") {
            Some(rv) if !rv.is_empty() && rv != old_rv => return Err(ApiError::stale(info, name)),
            _ => {}
        }
        if let Some(body_name) = meta_str(&new, "name")
            && body_name != name
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
        let mut result = match target {
            Target::Status => {
                // Only status (and the managedFields an apply to /status computed) changes.
                let mut r = old.clone();
                if let (Some(map), Some(status)) = (r.as_object_mut(), new.get("status")) {
                    map.insert("status".into(), status.clone());
                }
                if let Some(mf) = meta(&new).and_then(|m| m.get("managedFields")) {
                    meta_mut(&mut r).insert("managedFields".into(), mf.clone());
                }
                r
            }
            Target::Main => {
                let mut r = Self::typed(info, new);
                if info.status_subresource
                    && let Some(map) = r.as_object_mut()
                {
                    match old.get("status") {
                        Some(s) => map.insert("status".into(), s.clone()),
                        None => map.remove("status"),
                    };
                }
                // Fields the server owns; a client cannot change them.
                let old_meta = meta(&old).cloned().unwrap_or_default();
                let m = meta_mut(&mut r);
                for field in [
                    "uid",
                    "creationTimestamp",
                    "deletionTimestamp",
                    "generation",
                    "namespace",
                    "name",
                ] {
                    match old_meta.get(field) {
                        Some(v) => m.insert(field.into(), v.clone()),
                        None => m.remove(field),
                    };
                }
                if spec_part(&r) != spec_part(&old) {
                    let generation = old_meta
                        .get("generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    meta_mut(&mut r).insert("generation".into(), json!(generation + 1));
                }
                r
            }
        };
        meta_mut(&mut result).insert("resourceVersion".into(), json!(old_rv));
        if result == old {
            // A no-op write does not bump the resourceVersion nor wake watches (as in Kubernetes);
            // controllers rely on this not to loop on their own writes.
            return Ok(old);
        }
        let rv = self.next_rv();
        meta_mut(&mut result).insert("resourceVersion".into(), json!(rv.to_string()));
        if meta(&result).is_some_and(|m| m.contains_key("deletionTimestamp"))
            && !has_finalizers(&result)
        {
            // The last finalizer is gone: the deletion that was waiting for it completes.
            self.objects.remove(&key);
            self.record("DELETED", key, None, result.clone());
            return Ok(result);
        }
        self.objects.insert(key.clone(), result.clone());
        self.record("MODIFIED", key, Some(old), result.clone());
        Ok(result)
    }

    /// DELETE: with finalizers the object only gets a `deletionTimestamp` and stays until they
    /// are removed; without, it goes at once. Returns the object (as the real server does).
    pub fn delete(
        &mut self,
        info: &ResourceInfo,
        namespace: Option<&str>,
        name: &str,
    ) -> Result<Value, ApiError> {
        let key = ObjectKey::new(info, namespace, name);
        let mut obj = self
            .objects
            .get(&key)
            .cloned()
            .ok_or_else(|| ApiError::not_found(info, name))?;
        if has_finalizers(&obj) {
            if meta(&obj).is_some_and(|m| m.contains_key("deletionTimestamp")) {
                return Ok(obj);
            }
            let old = obj.clone();
            let rv = self.next_rv();
            let m = meta_mut(&mut obj);
            m.insert("deletionTimestamp".into(), json!(now()));
            m.insert("deletionGracePeriodSeconds".into(), json!(0));
            m.insert("resourceVersion".into(), json!(rv.to_string()));
            self.objects.insert(key.clone(), obj.clone());
            self.record("MODIFIED", key, Some(old), obj.clone());
            return Ok(obj);
        }
        let rv = self.next_rv();
        meta_mut(&mut obj).insert("resourceVersion".into(), json!(rv.to_string()));
        self.objects.remove(&key);
        self.record("DELETED", key, None, obj.clone());
        Ok(obj)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn nodes(store: &Store) -> ResourceInfo {
        store
            .lookup("", "v1", "nodes")
            .unwrap_or_else(|| ResourceInfo::new("", "v1", "x", "X", false))
    }

    #[test]
    fn stale_write_conflicts_and_generation_counts_spec_only() {
        let mut store = Store::default();
        let info = nodes(&store);
        let created = store
            .create(&info, None, json!({"metadata": {"name": "a"}}))
            .unwrap();
        assert_eq!(created["metadata"]["generation"], 1);
        let rv = created["metadata"]["resourceVersion"].clone();
        let mut status = created.clone();
        status["status"] = json!({"phase": "x"});
        let s = store
            .replace(&info, None, "a", status, Target::Status)
            .unwrap();
        assert_eq!(s["metadata"]["generation"], 1);
        assert_ne!(s["metadata"]["resourceVersion"], rv);
        let mut stale = created.clone();
        stale["spec"] = json!({"unschedulable": true});
        assert_eq!(
            store
                .replace(&info, None, "a", stale.clone(), Target::Main)
                .unwrap_err()
                .code,
            409
        );
        stale["metadata"]["resourceVersion"] = s["metadata"]["resourceVersion"].clone();
        let u = store
            .replace(&info, None, "a", stale, Target::Main)
            .unwrap();
        assert_eq!(u["metadata"]["generation"], 2);
        // The main resource cannot change status.
        assert_eq!(u["status"], json!({"phase": "x"}));
    }

    #[test]
    fn finalizers_delay_deletion() {
        let mut store = Store::default();
        let info = nodes(&store);
        store
            .create(
                &info,
                None,
                json!({"metadata": {"name": "a", "finalizers": ["x"]}}),
            )
            .unwrap();
        let d = store.delete(&info, None, "a").unwrap();
        assert!(d["metadata"]["deletionTimestamp"].is_string());
        assert!(store.get_obj(&info, None, "a").is_ok());
        let mut cleared = d.clone();
        cleared["metadata"]["finalizers"] = json!([]);
        store
            .replace(&info, None, "a", cleared, Target::Main)
            .unwrap();
        assert_eq!(store.get_obj(&info, None, "a").unwrap_err().code, 404);
    }
}
