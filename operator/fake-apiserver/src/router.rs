//! From an HTTP request to a store operation: the REST paths of the Kubernetes API, without
//! discovery (`/api/v1/...` and `/apis/{group}/{version}/...`, namespaced as
//! `.../namespaces/{ns}/{resource}/{name}/{subresource}`).

use std::collections::HashMap;

use bytes::Bytes;
use http::Method;
use serde_json::{Value, json};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::apply::{apply, record_update};
use crate::patch::{json_patch, merge_patch, strategic_merge_patch};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::store::{ApiError, ResourceInfo, Store, Target};
use crate::watch::{self, WatchRequest};

/// What to answer.
#[derive(Debug)]
pub enum Reply {
    Json(u16, Value),
    Watch(UnboundedReceiver<Bytes>),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Json(e.code, e.status_body())
    }
}

/// `%XX` and `+` decoding of one query component (selectors arrive encoded: `app%3Dweb`).
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(query: &str) -> HashMap<String, String> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// A parsed resource path.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub info: ResourceInfo,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

pub fn parse_path(store: &Store, path: &str) -> Result<Route, ApiError> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let not_found = || {
        ApiError::new(
            404,
            "NotFound",
            "the server could not find the requested resource",
        )
    };
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found()),
    };
    // `namespaces/{ns}/{resource}...` unless it is the namespace object itself
    // (`namespaces/{ns}` or its `status` / `finalize` subresources).
    let (namespace, rest) = match rest {
        ["namespaces", ns, resource, tail @ ..]
            if !(group.is_empty() && matches!(*resource, "status" | "finalize")) =>
        {
            (Some(ns.to_string()), {
                let mut r = vec![*resource];
                r.extend_from_slice(tail);
                r
            })
        }
        other => (None, other.to_vec()),
    };
    let (resource, name, subresource) = match rest.as_slice() {
        [resource] => (*resource, None, None),
        [resource, name] => (*resource, Some(name.to_string()), None),
        [resource, name, sub] => (*resource, Some(name.to_string()), Some(sub.to_string())),
        _ => return Err(not_found()),
    };
    let info = store
        .lookup(group, version, resource)
        .ok_or_else(not_found)?;
    if info.namespaced && namespace.is_none() && name.is_some() {
        return Err(not_found());
    }
    if !info.namespaced && namespace.is_some() {
        return Err(not_found());
    }
    Ok(Route {
        info,
        namespace,
        name,
        subresource,
    })
}

fn parse_body(body: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

fn selectors(q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((labels, fields))
}

fn target(route: &Route) -> Result<Target, ApiError> {
    match route.subresource.as_deref() {
        None => Ok(Target::Main),
        Some("status") if route.info.status_subresource => Ok(Target::Status),
        Some(other) => Err(ApiError::new(
            404,
            "NotFound",
            format!("{} has no subresource {other:?}", route.info.qualified()),
        )),
    }
}

/// Handles one request against the store. Never fails: errors become `Status` replies.
pub fn route(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Reply {
    if path == "/version" {
        // Clients (kubectl, some kube calls) ask; a fixed answer in the real shape.
        return Reply::Json(
            200,
            json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-fake", "platform": "linux/amd64"}),
        );
    }
    match dispatch(store, method, path, query, content_type, body) {
        Ok(reply) => reply,
        Err(e) => e.into(),
    }
}

fn dispatch(
    store: &mut Store,
    method: &Method,
    path: &str,
    query: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Reply, ApiError> {
    let route = parse_path(store, path)?;
    let q = parse_query(query);
    let ns = route.namespace.as_deref();
    let info = &route.info;
    let manager = q.get("fieldManager").cloned();
    if q.contains_key("dryRun") && method != Method::GET {
        // Failing loudly beats mutating the state of a request meant to change nothing.
        return Err(ApiError::bad_request(
            "dryRun is not implemented by the fake API server",
        ));
    }
    let api_version = info.api_version();
    match (method, route.name.as_deref()) {
        (&Method::GET, None) => {
            let (labels, fields) = selectors(&q)?;
            if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) {
                let rx = watch::open(
                    store,
                    WatchRequest {
                        info: info.clone(),
                        namespace: route.namespace.clone(),
                        labels,
                        fields,
                        resource_version: q.get("resourceVersion").cloned(),
                        bookmarks: q.get("allowWatchBookmarks").is_some_and(|v| v == "true"),
                        send_initial_events: q
                            .get("sendInitialEvents")
                            .is_some_and(|v| v == "true"),
                    },
                )?;
                return Ok(Reply::Watch(rx));
            }
            Ok(Reply::Json(200, store.list(info, ns, &labels, &fields)))
        }
        (&Method::GET, Some(name)) => {
            target(&route)?;
            Ok(Reply::Json(200, store.get_obj(info, ns, name)?))
        }
        (&Method::POST, None) => {
            let mut obj = parse_body(body)?;
            if let Some(m) = manager.as_deref() {
                record_update(&json!({}), &mut obj, m, Target::Main, &api_version);
            }
            Ok(Reply::Json(201, store.create(info, ns, obj)?))
        }
        (&Method::POST, Some(name)) => match (
            info.group.as_str(),
            info.resource.as_str(),
            route.subresource.as_deref(),
        ) {
            ("", "pods", Some("eviction")) => {
                let (code, status) = crate::eviction::evict(
                    store,
                    ns.unwrap_or_default(),
                    name,
                    &parse_body(body)?,
                )?;
                Ok(Reply::Json(code, status))
            }
            _ => Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "POST is not supported on this path",
            )),
        },
        (&Method::PUT, Some(name)) => {
            let t = target(&route)?;
            let old = store.get_obj(info, ns, name)?;
            let mut new = parse_body(body)?;
            record_update(
                &old,
                &mut new,
                manager.as_deref().unwrap_or("unknown"),
                t,
                &api_version,
            );
            Ok(Reply::Json(200, store.replace(info, ns, name, new, t)?))
        }
        (&Method::PATCH, Some(name)) => {
            let t = target(&route)?;
            let patch = parse_body(body)?;
            let ct = content_type
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if ct == "application/apply-patch+yaml" {
                // The body is parsed as JSON, which is YAML; clients (kube, client-go) send JSON.
                let m = manager.ok_or_else(|| {
                    ApiError::new(422, "Invalid", "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch")
                })?;
                // An applied configuration names its type; a real server rejects one that does
                // not (or names another), so a client bug here must fail in tests too.
                let field = |f: &str| patch.get(f).and_then(Value::as_str).unwrap_or_default();
                if field("apiVersion") != api_version || field("kind") != info.kind {
                    return Err(ApiError::bad_request(format!(
                        "an apply patch must set apiVersion {api_version:?} and kind {:?}, got {:?} and {:?}",
                        info.kind,
                        field("apiVersion"),
                        field("kind")
                    )));
                }
                let force = q.get("force").is_some_and(|v| v == "true");
                return match store.get_obj(info, ns, name) {
                    Ok(old) => {
                        // A resourceVersion in the applied object is a precondition.
                        let wanted = crate::store::meta_str(&patch, "resourceVersion");
                        if wanted.is_some_and(|rv| {
                            !rv.is_empty()
                                && Some(rv) != crate::store::meta_str(&old, "resourceVersion")
                        }) {
                            return Err(ApiError::stale(info, name));
                        }
                        let new = apply(Some(&old), &patch, &m, force, t, &api_version)?;
                        Ok(Reply::Json(200, store.replace(info, ns, name, new, t)?))
                    }
                    Err(e) if e.code == 404 && t == Target::Main => {
                        let mut new = apply(None, &patch, &m, force, t, &api_version)?;
                        crate::store::meta_mut(&mut new).insert("name".into(), json!(name));
                        Ok(Reply::Json(201, store.create(info, ns, new)?))
                    }
                    Err(e) => Err(e),
                };
            }
            let old = store.get_obj(info, ns, name)?;
            let mut new = old.clone();
            match ct {
                "application/strategic-merge-patch+json" if info.custom => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                    ));
                }
                "application/strategic-merge-patch+json" => strategic_merge_patch(&mut new, &patch),
                "application/merge-patch+json" => merge_patch(&mut new, &patch),
                "application/json-patch+json" => json_patch(&mut new, &patch)?,
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!(
                            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json; got {other:?}"
                        ),
                    ));
                }
            }
            record_update(
                &old,
                &mut new,
                manager.as_deref().unwrap_or("unknown"),
                t,
                &api_version,
            );
            Ok(Reply::Json(200, store.replace(info, ns, name, new, t)?))
        }
        (&Method::DELETE, Some(name)) => {
            target(&route)?;
            Ok(Reply::Json(200, store.delete(info, ns, name)?))
        }
        (&Method::DELETE, None) => {
            // deletecollection: every selected object, each as a single delete would.
            let (labels, fields) = selectors(&q)?;
            let list = store.list(info, ns, &labels, &fields);
            for item in list["items"].as_array().into_iter().flatten() {
                let name = crate::store::meta_str(item, "name").unwrap_or_default();
                let item_ns = crate::store::meta_str(item, "namespace");
                store.delete(info, item_ns, name)?;
            }
            Ok(Reply::Json(200, list))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported on {path}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn paths_and_queries() {
        let store = Store::default();
        let r = parse_path(&store, "/api/v1/namespaces/ns/pods/p/eviction").unwrap();
        assert_eq!(
            (
                r.info.resource.as_str(),
                r.namespace.as_deref(),
                r.name.as_deref(),
                r.subresource.as_deref()
            ),
            ("pods", Some("ns"), Some("p"), Some("eviction"))
        );
        let r = parse_path(&store, "/apis/clb.dev/v1alpha1/nodeupdates/n1/status").unwrap();
        assert_eq!(
            (r.info.kind.as_str(), r.namespace, r.subresource.as_deref()),
            ("NodeUpdate", None, Some("status"))
        );
        let r = parse_path(&store, "/api/v1/namespaces/kube-system").unwrap();
        assert_eq!(
            (r.info.resource.as_str(), r.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let r = parse_path(&store, "/api/v1/pods").unwrap();
        assert_eq!((r.namespace, r.name), (None, None));
        assert_eq!(
            parse_path(&store, "/apis/nope/v1/things").unwrap_err().code,
            404
        );
        assert_eq!(
            parse_path(&store, "/api/v1/namespaces/ns/nodes/a")
                .unwrap_err()
                .code,
            404
        );
        let q = parse_query("labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29&watch=true&x=%zz");
        assert_eq!(q["labelSelector"], "app=web,tier in (a,b)");
        assert_eq!(q["watch"], "true");
        assert_eq!(q["x"], "%zz");
    }
}
