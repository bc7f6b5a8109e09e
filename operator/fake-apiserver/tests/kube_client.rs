//! A real kube 5 `Client` against the fake: in process (the `tower::Service`) and over HTTP
//! (a kubeconfig). These prove the fake speaks the protocol kube's client expects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use clb_fake_apiserver::FakeApiServer;
use futures_util::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, EvictParams, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

fn client(s: &FakeApiServer) -> Client {
    Client::new(s.client(), "default")
}

fn obj<T: k8s_openapi::serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v).unwrap()
}

/// The code and reason of an API error.
fn api_err<T: std::fmt::Debug>(r: Result<T, kube::Error>) -> (u16, String) {
    match r {
        Err(kube::Error::Api(s)) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn names<K: ResourceExt + Clone>(list: &kube::core::ObjectList<K>) -> Vec<String> {
    list.items.iter().map(|o| o.name_any()).collect()
}

fn nodeupdates(c: Client) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("clb.dev", "v1alpha1", "NodeUpdate");
    Api::all_with(c, &ApiResource::from_gvk_with_plural(&gvk, "nodeupdates"))
}

#[tokio::test]
async fn create_get_list_with_selectors() {
    let s = FakeApiServer::in_process();
    let nodes: Api<Node> = Api::all(client(&s));
    for (name, pool) in [("a", "x"), ("b", "y"), ("c", "x")] {
        let n: Node = obj(json!({"metadata": {"name": name, "labels": {"pool": pool}}}));
        let created = nodes.create(&PostParams::default(), &n).await.unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        assert!(created.metadata.uid.is_some());
    }
    let dup: Node = obj(json!({"metadata": {"name": "a"}}));
    assert_eq!(
        api_err(nodes.create(&PostParams::default(), &dup).await),
        (409, "AlreadyExists".into())
    );
    assert_eq!(api_err(nodes.get("zz").await), (404, "NotFound".into()));
    let mut read = nodes.get("a").await.unwrap();
    read.metadata.name = Some("a2".into());
    assert_eq!(
        api_err(nodes.create(&PostParams::default(), &read).await),
        (400, "BadRequest".into())
    );
    assert_eq!(nodes.get("b").await.unwrap().labels()["pool"], "y");

    let list = |sel: &str| ListParams::default().labels(sel);
    assert_eq!(
        names(&nodes.list(&list("pool=x")).await.unwrap()),
        ["a", "c"]
    );
    assert_eq!(
        names(&nodes.list(&list("pool in (y,z)")).await.unwrap()),
        ["b"]
    );
    assert_eq!(
        names(&nodes.list(&list("pool notin (x)")).await.unwrap()),
        ["b"]
    );
    assert_eq!(
        names(&nodes.list(&list("pool!=x,pool")).await.unwrap()),
        ["b"]
    );
    let by_name = nodes
        .list(&ListParams::default().fields("metadata.name=c"))
        .await
        .unwrap();
    assert_eq!(names(&by_name), ["c"]);
    assert!(
        by_name
            .metadata
            .resource_version
            .is_some_and(|rv| !rv.is_empty())
    );

    let pods: Api<Pod> = Api::namespaced(client(&s), "default");
    for (name, node) in [("p1", "a"), ("p2", "b")] {
        let p: Pod =
            obj(json!({"metadata": {"name": name}, "spec": {"nodeName": node, "containers": []}}));
        pods.create(&PostParams::default(), &p).await.unwrap();
    }
    let all_pods: Api<Pod> = Api::all(client(&s));
    let on_a = all_pods
        .list(&ListParams::default().fields("spec.nodeName=a"))
        .await
        .unwrap();
    assert_eq!(names(&on_a), ["p1"]);
    let elsewhere: Api<Pod> = Api::namespaced(client(&s), "other");
    assert!(
        elsewhere
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

#[tokio::test]
async fn cordon_status_generation_and_stale_writes() {
    let s = FakeApiServer::in_process();
    let nodes: Api<Node> = Api::all(client(&s));
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "n1"}})),
        )
        .await
        .unwrap();
    let cordon = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    let cordoned = nodes
        .patch("n1", &PatchParams::default(), &cordon)
        .await
        .unwrap();
    assert_eq!(
        cordoned.spec.as_ref().and_then(|s| s.unschedulable),
        Some(true)
    );
    assert_eq!(cordoned.metadata.generation, Some(2));

    let ready = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
    let with_status = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Merge(ready))
        .await
        .unwrap();
    assert_eq!(
        with_status.metadata.generation,
        Some(2),
        "status writes do not bump generation"
    );
    assert_ne!(
        with_status.metadata.resource_version,
        cordoned.metadata.resource_version
    );
    // Strategic merge: conditions merge by type.
    let pressure = json!({"status": {"conditions": [{"type": "DiskPressure", "status": "False"}]}});
    let merged = nodes
        .patch_status("n1", &PatchParams::default(), &Patch::Strategic(pressure))
        .await
        .unwrap();
    let types: Vec<_> = merged
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.type_)
        .collect();
    assert_eq!(types, ["Ready", "DiskPressure"]);
    let with_status = merged;
    // The main resource ignores status; the status subresource ignores spec.
    let mut edited = with_status.clone();
    edited.status = None;
    let replaced = nodes
        .replace("n1", &PostParams::default(), &edited)
        .await
        .unwrap();
    assert!(replaced.status.is_some());
    // `cordoned` carries an old resourceVersion: 409.
    assert_eq!(
        api_err(nodes.replace("n1", &PostParams::default(), &cordoned).await),
        (409, "Conflict".into())
    );
    // A no-op patch keeps the resourceVersion.
    let again = nodes
        .patch("n1", &PatchParams::default(), &cordon)
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version,
        replaced.metadata.resource_version
    );
}

#[tokio::test]
async fn server_side_apply_conflicts_and_force() {
    let s = FakeApiServer::in_process();
    let cms: Api<ConfigMap> = Api::namespaced(client(&s), "default");
    let alice = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "1", "b": "2"}});
    let created = cms
        .patch("cm", &PatchParams::apply("alice"), &Patch::Apply(&alice))
        .await
        .unwrap();
    assert_eq!(created.data.as_ref().map(|d| d.len()), Some(2));
    let managed = created.metadata.managed_fields.clone().unwrap_or_default();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("alice"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));

    let bob = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cm"}, "data": {"a": "9"}});
    let conflict = cms
        .patch("cm", &PatchParams::apply("bob"), &Patch::Apply(&bob))
        .await;
    match conflict {
        Err(kube::Error::Api(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"));
            assert!(
                status.message.contains("\"alice\"") && status.message.contains(".data.a"),
                "{}",
                status.message
            );
        }
        other => panic!("expected a conflict, got {other:?}"),
    }
    let forced = cms
        .patch(
            "cm",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&bob),
        )
        .await
        .unwrap();
    let data = forced.data.clone().unwrap_or_default();
    assert_eq!((data["a"].as_str(), data["b"].as_str()), ("9", "2"));
    // An applied object must say what it is.
    let untyped = json!({"metadata": {"name": "cm"}, "data": {"c": "3"}});
    let r = cms
        .patch("cm", &PatchParams::apply("carol"), &Patch::Apply(&untyped))
        .await;
    assert_eq!(api_err(r), (400, "BadRequest".into()));
    // A resourceVersion in the applied object is a precondition.
    let stale = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "resourceVersion": created.metadata.resource_version}});
    let r = cms
        .patch("cm", &PatchParams::apply("carol"), &Patch::Apply(&stale))
        .await;
    assert_eq!(api_err(r), (409, "Conflict".into()));
    // dryRun is refused rather than half-implemented.
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let cm: ConfigMap = obj(json!({"metadata": {"name": "dry"}}));
    assert_eq!(
        api_err(cms.create(&dry, &cm).await),
        (400, "BadRequest".into())
    );
    let managers: Vec<_> = forced
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert_eq!(managers, ["alice", "bob"]);
}

/// Leader election as lease managers do it: a forced apply with the resourceVersion read as
/// precondition, so that of two candidates racing from the same read only one wins.
#[tokio::test]
async fn lease_takeover_is_guarded_by_the_resource_version() {
    let s = FakeApiServer::in_process();
    let leases: Api<Lease> = Api::namespaced(client(&s), "clb-system");
    let claim = |holder: &str, rv: Option<String>| {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "clb-operator", "resourceVersion": rv},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15}})
    };
    let pp = |who: &str| PatchParams::apply(who).force();
    let first = leases
        .patch("clb-operator", &pp("a"), &Patch::Apply(claim("a", None)))
        .await
        .unwrap();
    let rv = first.metadata.resource_version.clone();
    let won = leases
        .patch(
            "clb-operator",
            &pp("b"),
            &Patch::Apply(claim("b", rv.clone())),
        )
        .await
        .unwrap();
    assert_eq!(
        won.spec.and_then(|s| s.holder_identity).as_deref(),
        Some("b")
    );
    let lost = leases
        .patch("clb-operator", &pp("c"), &Patch::Apply(claim("c", rv)))
        .await;
    assert_eq!(api_err(lost), (409, "Conflict".into()));
    // Releasing with an applied null removes the holder.
    let release = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                         "metadata": {"name": "clb-operator"},
                         "spec": {"holderIdentity": null, "leaseDurationSeconds": 15}});
    let released = leases
        .patch("clb-operator", &pp("b"), &Patch::Apply(release))
        .await
        .unwrap();
    assert_eq!(released.spec.and_then(|s| s.holder_identity), None);
}

#[tokio::test]
async fn nodeupdate_status_apply_and_finalizers() {
    let s = FakeApiServer::in_process();
    let nus = nodeupdates(client(&s));
    let nu: DynamicObject = obj(json!({
        "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate",
        "metadata": {"name": "node-a", "finalizers": ["clb.dev/hold"]}, "spec": {"node": "node-a"},
    }));
    nus.create(&PostParams::default(), &nu).await.unwrap();
    let report = json!({"apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate", "status": {"booted": {"slot": "a"}}});
    let applied = nus
        .patch_status(
            "node-a",
            &PatchParams::apply("clb-bridge").force(),
            &Patch::Apply(&report),
        )
        .await
        .unwrap();
    assert_eq!(applied.data["status"]["booted"]["slot"], "a");
    assert_eq!(applied.data["spec"]["node"], "node-a");
    assert_eq!(applied.metadata.generation, Some(1));

    // Custom resources take no strategic merge patches, as on a real server.
    let strategic = Patch::Strategic(json!({"spec": {"node": "x"}}));
    let refused = nus
        .patch("node-a", &PatchParams::default(), &strategic)
        .await;
    assert_eq!(api_err(refused), (415, "UnsupportedMediaType".into()));

    nus.delete("node-a", &DeleteParams::default())
        .await
        .unwrap();
    let held = nus.get("node-a").await.unwrap();
    assert!(held.metadata.deletion_timestamp.is_some());
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    nus.patch("node-a", &PatchParams::default(), &release)
        .await
        .unwrap();
    assert_eq!(api_err(nus.get("node-a").await), (404, "NotFound".into()));
}

#[tokio::test]
async fn seeding_and_inspecting_without_http() {
    let s = FakeApiServer::in_process();
    let seeded = s
        .create(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "ns"}}))
        .unwrap();
    assert_eq!(seeded["metadata"]["generation"], 1);
    let pods: Api<Pod> = Api::namespaced(client(&s), "ns");
    pods.patch(
        "p",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    let stored = s.get("v1", "Pod", Some("ns"), "p").unwrap();
    assert_eq!(stored["metadata"]["labels"]["x"], "y");
    assert!(s.get("v1", "Pod", Some("other"), "p").is_none());
    assert_eq!(
        s.create(json!({"apiVersion": "v9", "kind": "Nope"}))
            .unwrap_err()
            .code,
        400
    );
}

#[tokio::test]
async fn crds_created_through_the_api_are_served() {
    let s = FakeApiServer::in_process();
    let crds: Api<CustomResourceDefinition> = Api::all(client(&s));
    let crd: CustomResourceDefinition = obj(json!({
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object"}}}]},
    }));
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let gvk = GroupVersionKind::gvk("example.com", "v1", "Widget");
    let widgets: Api<DynamicObject> = Api::namespaced_with(
        client(&s),
        "default",
        &ApiResource::from_gvk_with_plural(&gvk, "widgets"),
    );
    let w: DynamicObject =
        obj(json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}}));
    widgets.create(&PostParams::default(), &w).await.unwrap();
    assert_eq!(
        widgets
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .len(),
        1
    );
}

async fn next_event<S, K>(stream: &mut S) -> WatchEvent<K>
where
    S: futures_util::Stream<Item = Result<WatchEvent<K>, kube::Error>> + Unpin,
{
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("an event within 5 s")
        .expect("the stream is open")
        .expect("a decodable event")
}

#[tokio::test]
async fn watch_events_bookmarks_410_and_drop() {
    let s = FakeApiServer::in_process();
    let nodes: Api<Node> = Api::all(client(&s));
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "a"}})),
        )
        .await
        .unwrap();
    let rv = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();

    let wp = WatchParams::default().labels("!ignored");
    let mut stream = nodes.watch(&wp, &rv).await.unwrap().boxed();
    assert!(
        matches!(next_event(&mut stream).await, WatchEvent::Bookmark(_)),
        "bookmark after the replay"
    );
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "b"}})),
        )
        .await
        .unwrap();
    let ignored: Node = obj(json!({"metadata": {"name": "c", "labels": {"ignored": "yes"}}}));
    nodes
        .create(&PostParams::default(), &ignored)
        .await
        .unwrap();
    nodes
        .patch(
            "a",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"unschedulable": true}})),
        )
        .await
        .unwrap();
    nodes.delete("b", &DeleteParams::default()).await.unwrap();
    // Leaving and entering the selector: DELETED and ADDED for this watch.
    let label = |v: Value| Patch::Merge(json!({"metadata": {"labels": {"ignored": v}}}));
    nodes
        .patch("a", &PatchParams::default(), &label(json!("yes")))
        .await
        .unwrap();
    nodes
        .patch("c", &PatchParams::default(), &label(Value::Null))
        .await
        .unwrap();
    s.send_bookmarks();
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(match next_event(&mut stream).await {
            WatchEvent::Added(n) => format!("ADDED {}", n.name_any()),
            WatchEvent::Modified(n) => format!("MODIFIED {}", n.name_any()),
            WatchEvent::Deleted(n) => format!("DELETED {}", n.name_any()),
            WatchEvent::Bookmark(b) => format!("BOOKMARK {}", b.metadata.resource_version),
            WatchEvent::Error(e) => format!("ERROR {}", e.code),
        });
    }
    let now = nodes
        .list(&ListParams::default())
        .await
        .unwrap()
        .metadata
        .resource_version
        .unwrap();
    assert_eq!(
        seen,
        [
            "ADDED b",
            "MODIFIED a",
            "DELETED b",
            "DELETED a",
            "ADDED c",
            &format!("BOOKMARK {now}")
        ]
    );

    // From "0": the current state first, as synthetic ADDED events.
    let mut from_zero = nodes
        .watch(&WatchParams::default().disable_bookmarks(), "0")
        .await
        .unwrap()
        .boxed();
    let mut initial = Vec::new();
    for _ in 0..2 {
        if let WatchEvent::Added(n) = next_event(&mut from_zero).await {
            initial.push(n.name_any());
        }
    }
    assert_eq!(initial, ["a", "c"]);

    // Streaming lists: the current state, then a bookmark marking its end.
    let mut streaming = nodes
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let mut streamed = Vec::new();
    loop {
        match next_event(&mut streaming).await {
            WatchEvent::Added(n) => streamed.push(n.name_any()),
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(streamed, ["a", "c"]);

    assert_eq!(s.drop_watches(), 3);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .unwrap();
    assert!(end.is_none(), "a dropped watch ends the stream");

    // Versions older than the history window: 410 Gone, as an ERROR event.
    s.set_history_limit(1);
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "d"}})),
        )
        .await
        .unwrap();
    let mut expired = nodes
        .watch(&WatchParams::default(), &rv)
        .await
        .unwrap()
        .boxed();
    match next_event(&mut expired).await {
        WatchEvent::Error(e) => assert_eq!((e.code, e.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
}

fn ready_pod(name: &str, app: &str) -> Pod {
    obj(json!({
        "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"containers": []},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
}

#[tokio::test]
async fn eviction_with_disruption_budgets() {
    let s = FakeApiServer::in_process();
    let pods: Api<Pod> = Api::namespaced(client(&s), "default");
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(client(&s), "default");
    for (name, app) in [("w1", "web"), ("w2", "web"), ("solo", "other")] {
        pods.create(&PostParams::default(), &ready_pod(name, app))
            .await
            .unwrap();
    }
    let pdb = |name: &str, min: i32| -> PodDisruptionBudget {
        obj(
            json!({"metadata": {"name": name}, "spec": {"minAvailable": min, "selector": {"matchLabels": {"app": "web"}}}}),
        )
    };
    pdbs.create(&PostParams::default(), &pdb("web", 2))
        .await
        .unwrap();

    match pods.evict("w1", &EvictParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(
                (status.code, status.reason.as_str()),
                (429, "TooManyRequests")
            );
            assert_eq!(
                status.message,
                "Cannot evict pod as it would violate the pod's disruption budget."
            );
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let st = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (
            st.current_healthy,
            st.desired_healthy,
            st.disruptions_allowed,
            st.expected_pods
        ),
        (2, 2, 0, 2)
    );
    assert!(pods.get("w1").await.is_ok());

    let relax = Patch::Merge(json!({"spec": {"minAvailable": 1}}));
    pdbs.patch("web", &PatchParams::default(), &relax)
        .await
        .unwrap();
    let ok = pods.evict("w1", &EvictParams::default()).await.unwrap();
    assert_eq!(ok.code, 201);
    assert_eq!(api_err(pods.get("w1").await), (404, "NotFound".into()));
    let st = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!((st.current_healthy, st.disruptions_allowed), (1, 0));

    // An unready pod may go when the budget is met, or always with AlwaysAllow.
    let unready: Pod = obj(
        json!({"metadata": {"name": "w3", "labels": {"app": "web"}}, "spec": {"containers": []},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "False"}]}}),
    );
    pods.create(&PostParams::default(), &unready).await.unwrap();
    pdbs.patch(
        "web",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"minAvailable": 2}})),
    )
    .await
    .unwrap();
    assert_eq!(
        api_err(pods.evict("w3", &EvictParams::default()).await),
        (429, "TooManyRequests".into())
    );
    let always = Patch::Merge(json!({"spec": {"unhealthyPodEvictionPolicy": "AlwaysAllow"}}));
    pdbs.patch("web", &PatchParams::default(), &always)
        .await
        .unwrap();
    pods.evict("w3", &EvictParams::default()).await.unwrap();

    // A pod no budget covers goes at once; one that two budgets cover cannot be evicted.
    pods.evict("solo", &EvictParams::default()).await.unwrap();
    pdbs.create(&PostParams::default(), &pdb("web-too", 0))
        .await
        .unwrap();
    assert_eq!(
        api_err(pods.evict("w2", &EvictParams::default()).await),
        (500, "InternalError".into())
    );
    assert_eq!(
        api_err(pods.evict("gone", &EvictParams::default()).await),
        (404, "NotFound".into())
    );
}

#[tokio::test]
async fn faults_latency_and_request_log() {
    let s = FakeApiServer::in_process();
    let nodes: Api<Node> = Api::all(client(&s));
    s.fail_next("/api/v1/nodes", Some("GET"), 1, 503);
    assert_eq!(
        api_err(nodes.list(&ListParams::default()).await),
        (503, "ServiceUnavailable".into())
    );
    nodes
        .list(&ListParams::default().labels("a=b"))
        .await
        .unwrap();
    let log = s.requests();
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.method.as_str(), r.path.as_str(), r.status))
        .collect();
    assert_eq!(
        seen,
        [("GET", "/api/v1/nodes", 503), ("GET", "/api/v1/nodes", 200)]
    );
    assert!(
        log[1].query.contains("labelSelector=a%3Db"),
        "{}",
        log[1].query
    );

    s.delay("/api/v1/nodes", Duration::from_millis(200));
    let start = Instant::now();
    nodes.list(&ListParams::default()).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn served_over_http_with_a_kubeconfig() {
    let s = FakeApiServer::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kubeconfig");
    s.kubeconfig_for(&path, "bridge-node-a").unwrap();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    assert_eq!(config.default_namespace, "default");
    let c = Client::try_from(config).unwrap();
    let nodes: Api<Node> = Api::all(c);
    nodes
        .create(
            &PostParams::default(),
            &obj(json!({"metadata": {"name": "a"}})),
        )
        .await
        .unwrap();
    let mut stream = nodes
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Added(_)
    ));
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Bookmark(_)
    ));
    nodes.delete("a", &DeleteParams::default()).await.unwrap();
    assert!(matches!(
        next_event(&mut stream).await,
        WatchEvent::Deleted(_)
    ));
    s.drop_watches();
    let rest: Vec<_> = tokio::time::timeout(Duration::from_secs(5), stream.try_collect::<Vec<_>>())
        .await
        .unwrap()
        .unwrap_or_default();
    assert!(rest.is_empty());
    let log = s.requests();
    assert!(
        log.iter()
            .any(|r| r.method == "DELETE" && r.path == "/api/v1/nodes/a")
    );
    assert!(
        log.iter()
            .all(|r| r.token.as_deref() == Some("bridge-node-a")),
        "{log:?}"
    );
}
