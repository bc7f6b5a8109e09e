//! kube's runtime (watcher + reflector, what a `Controller` is built on) against the fake:
//! it lists, watches, follows selector changes, resumes after dropped watches and relists
//! after a 410.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use clb_fake_apiserver::FakeApiServer;
use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

async fn create(nodes: &Api<Node>, name: &str, os: &str) {
    let node: Node =
        serde_json::from_value(json!({"metadata": {"name": name, "labels": {"os": os}}})).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
}

/// Waits until the reflector's cache holds exactly `want` (sorted names).
async fn cache_is(reader: &reflector::Store<Node>, want: &[&str]) {
    let mut names = Vec::new();
    for _ in 0..500 {
        names = reader
            .state()
            .iter()
            .map(|n| n.name_any())
            .collect::<Vec<_>>();
        names.sort();
        if names == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the cache holds {names:?}, expected {want:?}");
}

#[tokio::test]
async fn watcher_and_reflector_follow_the_fake() {
    let s = FakeApiServer::in_process();
    let nodes: Api<Node> = Api::all(Client::new(s.client(), "default"));
    create(&nodes, "a", "clb").await;
    create(&nodes, "other", "debian").await;

    let (reader, writer) = reflector::store::<Node>();
    let config = watcher::Config::default().labels("os=clb");
    let stream = reflector(writer, watcher(nodes.clone(), config))
        .default_backoff()
        .applied_objects();
    let task = tokio::spawn(stream.for_each(|_| async {}));
    cache_is(&reader, &["a"]).await;

    create(&nodes, "b", "clb").await;
    cache_is(&reader, &["a", "b"]).await;
    // Leaving the selector removes the node from the cache.
    let relabel = Patch::Merge(json!({"metadata": {"labels": {"os": "debian"}}}));
    nodes
        .patch("a", &PatchParams::default(), &relabel)
        .await
        .unwrap();
    cache_is(&reader, &["b"]).await;

    // A dropped watch is resumed from the last resourceVersion, without a relist.
    let lists = |s: &FakeApiServer| {
        s.requests()
            .iter()
            .filter(|r| {
                r.method == "GET" && r.path == "/api/v1/nodes" && !r.query.contains("watch=true")
            })
            .count()
    };
    let lists_before = lists(&s);
    assert!(s.drop_watches() >= 1);
    create(&nodes, "c", "clb").await;
    cache_is(&reader, &["b", "c"]).await;
    assert_eq!(lists(&s), lists_before);

    // Changes beyond the history window while no watch is open: 410 on resume, then a relist.
    // The watcher's next request is held back by latency while the store is written directly,
    // so it resumes from a version the history no longer has.
    s.set_history_limit(1);
    s.delay("/api/v1/nodes", Duration::from_millis(500));
    s.drop_watches();
    {
        let mut store = s.store();
        let info = store.lookup("", "v1", "nodes").unwrap();
        for name in ["d", "e"] {
            store
                .create(
                    &info,
                    None,
                    json!({"metadata": {"name": name, "labels": {"os": "clb"}}}),
                )
                .unwrap();
        }
    }
    cache_is(&reader, &["b", "c", "d", "e"]).await;
    s.clear_faults();
    assert!(
        lists(&s) > lists_before,
        "the watcher relisted after the 410"
    );
    task.abort();
}

/// kube's event `Recorder`: the first publish creates an events.k8s.io/v1 Event (in
/// `default` for a cluster-scoped object), a repeat merge-patches its `series`.
#[tokio::test]
async fn the_event_recorder_creates_then_patches_a_series() {
    use k8s_openapi::api::events::v1::Event as K8sEvent;
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};

    let s = FakeApiServer::in_process();
    let client = Client::new(s.client(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    create(&nodes, "node-a", "clb").await;
    let node = nodes.get("node-a").await.unwrap();
    let reporter = Reporter {
        controller: "clb-operator".into(),
        instance: None,
    };
    let recorder = Recorder::new(client.clone(), reporter);
    let event = Event {
        type_: EventType::Normal,
        reason: "Cordoned".into(),
        note: Some("draining for v2".into()),
        action: "Cordon".into(),
        secondary: None,
    };
    recorder
        .publish(&event, &node.object_ref(&()))
        .await
        .unwrap();
    recorder
        .publish(&event, &node.object_ref(&()))
        .await
        .unwrap();

    let events: Api<K8sEvent> = Api::namespaced(client, "default");
    let list = events.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    let stored = &list.items[0];
    assert_eq!(stored.reason.as_deref(), Some("Cordoned"));
    assert_eq!(
        stored.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("node-a")
    );
    assert_eq!(stored.series.as_ref().map(|s| s.count), Some(2));
    let methods: Vec<_> = s
        .requests()
        .iter()
        .filter(|r| {
            r.path
                .starts_with("/apis/events.k8s.io/v1/namespaces/default/events")
        })
        .map(|r| (r.method.clone(), r.content_type.clone()))
        .collect();
    assert_eq!(
        methods,
        [
            ("POST".to_string(), Some("application/json".to_string())),
            (
                "PATCH".to_string(),
                Some("application/merge-patch+json".to_string())
            ),
            ("GET".to_string(), None),
        ]
    );
}
