//! The wire shapes of the calls the operator and the bridge depend on, pinned with a
//! `tower-test` mock between kube's `Client` and the fake: each test captures the exact HTTP
//! request kube sends (method, path and query, content type, body), then forwards it to the
//! fake server so the pinned request is also one the fake accepts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;

use bytes::Bytes;
use clb_fake_apiserver::FakeApiServer;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{
    ApiResource, DynamicObject, EvictParams, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client};
use serde_json::{Value, json};
use tower_service::Service;

/// What kube sent, and what the fake answered.
struct Captured {
    method: http::Method,
    path_and_query: String,
    content_type: Option<String>,
    body: Value,
    status: u16,
}

/// Runs `call` with a client whose only request is captured, then answered by `server`.
async fn capture<F, Fut, T>(server: &FakeApiServer, call: F) -> (Captured, T)
where
    F: FnOnce(Client) -> Fut,
    Fut: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let (mock, mut handle) = tower_test::mock::pair::<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >();
    let task = tokio::spawn(call(Client::new(mock, "default")));
    let (req, respond) = handle.next_request().await.expect("kube sent a request");
    let (parts, body) = req.into_parts();
    let bytes = body.collect().await.unwrap().to_bytes();

    let mut forward = http::Request::builder()
        .method(parts.method.clone())
        .uri(parts.uri.clone());
    for (name, value) in &parts.headers {
        forward = forward.header(name, value);
    }
    let resp = server
        .client()
        .call(forward.body(Full::new(bytes.clone())).unwrap())
        .await
        .unwrap();
    let (rparts, rbody) = resp.into_parts();
    let rbytes: Bytes = rbody.collect().await.unwrap().to_bytes();
    let status = rparts.status.as_u16();
    respond.send_response(http::Response::from_parts(
        rparts,
        kube::client::Body::from(rbytes),
    ));

    let captured = Captured {
        method: parts.method,
        path_and_query: parts
            .uri
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        content_type: parts
            .headers
            .get(http::header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_string()),
        body: if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        },
        status,
    };
    (captured, task.await.unwrap())
}

#[tokio::test]
async fn nodeupdate_status_is_a_forced_server_side_apply() {
    let server = FakeApiServer::in_process();
    let gvk = GroupVersionKind::gvk("clb.dev", "v1alpha1", "NodeUpdate");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "nodeupdates");
    let seed: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate", "metadata": {"name": "node-a"}, "spec": {},
    }))
    .unwrap();
    Api::<DynamicObject>::all_with(Client::new(server.client(), "default"), &ar)
        .create(&PostParams::default(), &seed)
        .await
        .unwrap();

    let status = json!({"apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate", "status": {"phase": "Staged"}});
    let applied = status.clone();
    let (req, result) = capture(&server, move |c| async move {
        Api::<DynamicObject>::all_with(c, &ar)
            .patch_status(
                "node-a",
                &PatchParams::apply("clb-bridge").force(),
                &Patch::Apply(&applied),
            )
            .await
    })
    .await;
    assert_eq!(req.method, http::Method::PATCH);
    assert_eq!(
        req.path_and_query,
        "/apis/clb.dev/v1alpha1/nodeupdates/node-a/status?&force=true&fieldManager=clb-bridge"
    );
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/apply-patch+yaml")
    );
    assert_eq!(req.body, status);
    assert_eq!(req.status, 200);
    assert_eq!(result.unwrap().data["status"]["phase"], "Staged");
}

#[tokio::test]
async fn eviction_is_a_post_of_a_policy_v1_eviction() {
    let server = FakeApiServer::in_process();
    let pod: Pod =
        serde_json::from_value(json!({"metadata": {"name": "web-1"}, "spec": {"containers": []}}))
            .unwrap();
    Api::<Pod>::namespaced(Client::new(server.client(), "default"), "shop")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();

    let (req, result) = capture(&server, |c| async move {
        Api::<Pod>::namespaced(c, "shop")
            .evict("web-1", &EvictParams::default())
            .await
    })
    .await;
    assert_eq!(req.method, http::Method::POST);
    assert_eq!(
        req.path_and_query,
        "/api/v1/namespaces/shop/pods/web-1/eviction?"
    );
    assert_eq!(req.content_type.as_deref(), Some("application/json"));
    // kube 5 sends neither apiVersion nor kind, and its delete options under a snake_case
    // `delete_options` key, which a real API server drops as an unknown field: grace periods
    // or preconditions in `EvictParams::delete_options` never reach the server.
    assert_eq!(
        req.body,
        json!({"delete_options": null, "metadata": {"name": "web-1"}})
    );
    assert_eq!(req.status, 201);
    assert_eq!(result.unwrap().code, 201);
}

#[tokio::test]
async fn cordon_is_a_merge_patch_of_unschedulable() {
    let server = FakeApiServer::in_process();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": "node-a"}})).unwrap();
    Api::<Node>::all(Client::new(server.client(), "default"))
        .create(&PostParams::default(), &node)
        .await
        .unwrap();

    let (req, result) = capture(&server, |c| async move {
        let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
        Api::<Node>::all(c)
            .patch("node-a", &PatchParams::default(), &cordon)
            .await
    })
    .await;
    assert_eq!(req.method, http::Method::PATCH);
    assert_eq!(req.path_and_query, "/api/v1/nodes/node-a?");
    assert_eq!(
        req.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(req.body, json!({"spec": {"unschedulable": true}}));
    assert_eq!(req.status, 200);
    assert_eq!(
        result.unwrap().spec.and_then(|s| s.unschedulable),
        Some(true)
    );
}
