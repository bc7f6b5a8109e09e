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
