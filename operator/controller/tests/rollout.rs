//! The controller against a simulated fleet on the fake API server (see `sim`): whole rollouts
//! with canaries, failures, halts, and a leader that dies mid-rollout.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod sim;

use std::time::Duration;

use clb_operator_api::{
    CORDONED_BY_ANNOTATION, QUARANTINED_LABEL, QUARANTINED_TAINT_KEY, RolloutPhase,
};
use serde_json::json;
use sim::{Fate, Fleet, V1, V2, V3, node_name};

fn spec(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = json!({
        "image": format!("127.0.0.1:5000/os@{V2}"),
        "nodeSelector": {"matchLabels": {"os": "clb"}},
        "canary": {"nodes": 1, "soak": "1s"},
        "maxUnavailable": 2,
        "failureBudget": 0,
        "drain": {"timeout": "3s"},
        "healthCheck": {"minReadySeconds": 1, "timeout": "20s"},
    });
    for (key, value) in extra.as_object().unwrap() {
        spec[key] = value.clone();
    }
    spec
}

fn phase(rollout: &clb_operator_api::Rollout) -> Option<RolloutPhase> {
    rollout.status.as_ref().and_then(|s| s.phase)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_rolls_canary_first_within_max_unavailable_and_every_node_once() {
    let fleet = Fleet::start(6).await;
    // A pod on node-0002 that the drain must evict (a ReplicaSet's), and a DaemonSet's it
    // must leave.
    for (pod, owner) in [("web", "ReplicaSet"), ("agent", "DaemonSet")] {
        fleet
            .server
            .create(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": pod, "namespace": "default", "ownerReferences": [
                    {"apiVersion": "apps/v1", "kind": owner, "name": "x", "uid": "u", "controller": true}]},
                "spec": {"nodeName": node_name(2), "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            }))
            .unwrap();
    }
    let metrics = sim::free_address();
    let controller = fleet
        .controller_with_metrics("replica-a", Some(metrics))
        .await;
    fleet.create_rollout("to-v2", spec(json!({}))).await;
    let done = fleet
        .wait_rollout("to-v2", Duration::from_secs(90), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await;
    let status = done.status.unwrap();
    assert_eq!(status.pinned_digest.as_deref(), Some(V2));
    assert_eq!((status.counts.updated, status.counts.total), (6, 6));
    assert_eq!(status.updated_text.as_deref(), Some("6/6"));
    let complete = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Complete")
        .unwrap();
    assert_eq!(
        (complete.status.as_str(), complete.reason.as_str()),
        ("True", "AllUpdated")
    );
    // The canary (the first node by name) was updated before any other node began.
    let records: std::collections::BTreeMap<_, _> = status
        .nodes
        .iter()
        .map(|r| (r.name.clone(), r.since.clone()))
        .collect();
    let canary_done = records[&node_name(0)].clone();
    for index in 1..6 {
        assert!(
            records[&node_name(index)].0 > canary_done.0,
            "node {index} ended after the canary"
        );
    }
    assert!(
        fleet.max_cordoned() <= 2,
        "never more than maxUnavailable cordoned"
    );
    for update in fleet.updates().await {
        let request = update.spec.request.as_ref().unwrap();
        // One Stage and one Reboot per node: never started twice.
        assert_eq!(request.id, 2, "{:?}", update.metadata.name);
        assert_eq!(
            update.spec.rollout.as_deref(),
            Some("to-v2"),
            "the last claim"
        );
        assert_eq!(update.status.unwrap().booted.unwrap().digest, V2);
    }
    for node in fleet.nodes().await {
        assert_ne!(
            node.spec.and_then(|s| s.unschedulable),
            Some(true),
            "nobody left cordoned"
        );
        let annotations = node.metadata.annotations.unwrap_or_default();
        assert!(!annotations.contains_key(CORDONED_BY_ANNOTATION));
    }
    // Events for the transitions, on the nodes.
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(fleet.client.clone(), "default");
    let events = events.list(&Default::default()).await.unwrap().items;
    for index in 0..6 {
        let mut reasons: Vec<String> = events
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.clone()) == Some(node_name(index)))
            .filter_map(|e| e.reason.clone())
            .collect();
        reasons.sort();
        // Staged is skipped when there is room to cordon at once.
        reasons.retain(|r| r != "Staged");
        assert_eq!(
            reasons,
            ["Draining", "Rebooting", "Staging", "Updated", "Verifying"],
            "node {index}"
        );
    }
    let requests = fleet.operator_requests();
    assert!(requests.iter().all(|r| r.status < 500));
    let evictions: Vec<_> = requests
        .iter()
        .filter(|r| r.path.ends_with("/eviction"))
        .collect();
    assert!(
        !evictions.is_empty() && evictions.iter().all(|r| r.path.contains("/pods/web/")),
        "{evictions:?}"
    );
    let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
        kube::Api::namespaced(fleet.client.clone(), "default");
    let left: Vec<_> = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    assert_eq!(
        left,
        ["agent"],
        "the ReplicaSet's pod was evicted, the DaemonSet's left"
    );
    let scraped = tokio::task::spawn_blocking(move || sim::http_get(metrics, "/metrics"))
        .await
        .unwrap();
    for line in [
        "clb_operator_leader 1",
        "clb_rollout_nodes{rollout=\"to-v2\",phase=\"Updated\"} 6",
        "clb_node_drain_duration_seconds_count 6",
    ] {
        assert!(scraped.lines().any(|l| l == line), "{line} in:\n{scraped}");
    }
    assert_eq!(
        tokio::task::spawn_blocking(move || sim::http_get(metrics, "/healthz"))
            .await
            .unwrap(),
        "ok\n"
    );

    // Rolling back is just another rollout: the finished rollout's claims hold nothing.
    fleet
        .create_rollout(
            "back-to-v1",
            spec(json!({"image": format!("127.0.0.1:5000/os@{V1}"), "canary": {"nodes": 0}, "maxUnavailable": 3})),
        )
        .await;
    let back = fleet
        .wait_rollout("back-to-v1", Duration::from_secs(90), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await;
    assert_eq!(back.status.unwrap().counts.updated, 6);
    for update in fleet.updates().await {
        assert_eq!(update.spec.rollout.as_deref(), Some("back-to-v1"));
        assert_eq!(
            update.spec.request.as_ref().unwrap().id,
            4,
            "one more Stage and Reboot each"
        );
        assert_eq!(update.status.unwrap().booted.unwrap().digest, V1);
    }
    // The first rollout, complete, stays complete: its nodes ended there.
    assert_eq!(
        phase(&fleet.rollout("to-v2").await),
        Some(RolloutPhase::Complete)
    );
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_node_is_quarantined_and_a_failure_beyond_the_budget_halts() {
    let fleet = Fleet::start(5).await;
    fleet.set_fate(&node_name(1), Fate::RollsBack);
    fleet.set_fate(&node_name(2), Fate::StageFails);
    fleet.set_fate(&node_name(3), Fate::RebootRefused);
    let controller = fleet.controller("replica-a").await;
    fleet
        .create_rollout(
            "to-v2",
            spec(json!({"maxUnavailable": 1, "failureBudget": 1})),
        )
        .await;
    let halted = fleet
        .wait_rollout("to-v2", Duration::from_secs(90), |r| {
            phase(r) == Some(RolloutPhase::Halted)
        })
        .await;
    let status = halted.status.unwrap();
    assert_eq!(status.failed_nodes, vec![node_name(1), node_name(2)]);
    assert_eq!((status.counts.quarantined, status.counts.failed), (1, 1));
    let halt = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Halted")
        .unwrap();
    assert_eq!(halt.status, "True");
    assert!(halt.message.contains(&node_name(1)), "{}", halt.message);
    // Give the controller time to (wrongly) start more nodes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let status = fleet.rollout("to-v2").await.status.unwrap();
    assert_eq!(
        status.counts.updated, 1,
        "only the canary; nothing starts after the halt"
    );
    let nodes = fleet.nodes().await;
    let quarantined = nodes
        .iter()
        .find(|n| n.metadata.name.as_deref() == Some(&node_name(1)))
        .unwrap();
    assert_eq!(
        quarantined.metadata.labels.as_ref().unwrap()[QUARANTINED_LABEL],
        "true"
    );
    let taints = quarantined.spec.as_ref().unwrap().taints.clone().unwrap();
    assert!(
        taints
            .iter()
            .any(|t| t.key == QUARANTINED_TAINT_KEY && t.effect == "NoSchedule")
    );
    for node in &nodes {
        assert_ne!(
            node.spec.as_ref().and_then(|s| s.unschedulable),
            Some(true),
            "{:?}",
            node.metadata.name
        );
    }
    for index in 3..5 {
        let update = fleet
            .updates()
            .await
            .into_iter()
            .find(|u| u.metadata.name == Some(node_name(index)))
            .unwrap();
        assert_eq!(update.spec.request, None, "node {index} was never started");
    }

    // A person clears the quarantine: the label goes, the controller removes its taint, and
    // with the failures back within the budget the rollout resumes. node-0003 is first to
    // start (node-0001 only became Pending in that step); its agent refuses the reboot
    // (failed, uncordoned, not quarantined: its image never booted), which halts the rollout
    // again before node-0001 and node-0004 start again.
    let nodes_api: kube::Api<k8s_openapi::api::core::v1::Node> =
        kube::Api::all(fleet.client.clone());
    fleet.set_fate(&node_name(1), Fate::Success);
    nodes_api
        .patch(
            &node_name(1),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {QUARANTINED_LABEL: null}}})),
        )
        .await
        .unwrap();
    let again = fleet
        .wait_rollout("to-v2", Duration::from_secs(90), |r| {
            r.status.as_ref().is_some_and(|s| {
                s.phase == Some(RolloutPhase::Halted) && s.failed_nodes.contains(&node_name(3))
            })
        })
        .await
        .status
        .unwrap();
    assert_eq!(
        (
            again.counts.updated,
            again.counts.failed,
            again.counts.quarantined
        ),
        (1, 2, 0)
    );
    assert!(
        again.nodes.iter().all(|r| r.name != node_name(1)),
        "node-0001 is Pending again (no record) and waits"
    );
    let refused = again.nodes.iter().find(|r| r.name == node_name(3)).unwrap();
    let failure = refused.failure.as_ref().unwrap();
    assert_eq!(
        failure.reason,
        clb_operator_api::FailureReason::RebootFailed
    );
    assert!(
        failure.message.contains("nothing downloaded"),
        "{}",
        failure.message
    );
    fleet
        .assert_nothing_started_on(&node_name(4), "halted again")
        .await;
    for node in fleet.nodes().await {
        assert_ne!(
            node.spec.as_ref().and_then(|s| s.unschedulable),
            Some(true),
            "{:?}",
            node.metadata.name
        );
        let taints = node.spec.and_then(|s| s.taints).unwrap_or_default();
        assert!(
            taints.iter().all(|t| t.key != QUARANTINED_TAINT_KEY),
            "{:?}",
            node.metadata.name
        );
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_resumes_a_rollout_without_starting_a_node_twice() {
    let fleet = Fleet::start(6).await;
    let first = fleet.controller("replica-a").await;
    let second = fleet.controller("replica-b").await;
    fleet
        .create_rollout(
            "to-v2",
            spec(json!({"canary": {"nodes": 0}, "maxUnavailable": 1})),
        )
        .await;
    fleet
        .wait_rollout("to-v2", Duration::from_secs(60), |r| {
            r.status.as_ref().is_some_and(|s| s.counts.updated >= 2)
        })
        .await;
    // Whoever leads dies without releasing the Lease; the other takes over when it runs out.
    let leases: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(fleet.client.clone(), "clb-system");
    let holder = leases
        .get(clb_operator_api::LEADER_LEASE_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity
        .unwrap();
    let survivor = if holder == "replica-a" {
        first.crash();
        second
    } else {
        second.crash();
        first
    };
    let done = fleet
        .wait_rollout("to-v2", Duration::from_secs(90), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await;
    assert_eq!(done.status.unwrap().counts.updated, 6);
    let new_holder = leases
        .get(clb_operator_api::LEADER_LEASE_NAME)
        .await
        .unwrap()
        .spec
        .unwrap()
        .holder_identity;
    assert_ne!(new_holder.as_deref(), Some(holder.as_str()));
    for update in fleet.updates().await {
        assert_eq!(
            update.spec.request.unwrap().id,
            2,
            "{:?}: one Stage, one Reboot",
            update.metadata.name
        );
    }
    survivor.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_window_or_a_pause_starts_nothing_until_it_opens() {
    let fleet = Fleet::start(3).await;
    let controller = fleet.controller("replica-a").await;
    // A window on no day but yesterday's weekday: closed now, whatever the time.
    let yesterday = match k8s_openapi::jiff::Timestamp::now()
        .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
        .weekday()
    {
        k8s_openapi::jiff::civil::Weekday::Monday => "Sun",
        k8s_openapi::jiff::civil::Weekday::Tuesday => "Mon",
        k8s_openapi::jiff::civil::Weekday::Wednesday => "Tue",
        k8s_openapi::jiff::civil::Weekday::Thursday => "Wed",
        k8s_openapi::jiff::civil::Weekday::Friday => "Thu",
        k8s_openapi::jiff::civil::Weekday::Saturday => "Fri",
        k8s_openapi::jiff::civil::Weekday::Sunday => "Sat",
    };
    fleet
        .create_rollout(
            "later",
            spec(json!({"window": {"days": [yesterday], "start": "00:00", "end": "00:01", "timeZone": "UTC"}})),
        )
        .await;
    let waiting = fleet
        .wait_rollout("later", Duration::from_secs(30), |r| {
            r.status
                .as_ref()
                .is_some_and(|s| s.conditions.iter().any(|c| c.reason == "OutsideWindow"))
        })
        .await;
    assert_eq!(phase(&waiting), Some(RolloutPhase::Progressing));
    fleet.assert_nothing_started("outside the window").await;

    // Open the window but pause: still nothing; unpause: it runs.
    let rollouts: kube::Api<clb_operator_api::Rollout> = kube::Api::all(fleet.client.clone());
    let patch = |body: serde_json::Value| {
        let rollouts = rollouts.clone();
        async move {
            rollouts
                .patch(
                    "later",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(body),
                )
                .await
                .unwrap();
        }
    };
    patch(json!({"spec": {"window": null, "paused": true}})).await;
    let paused = fleet
        .wait_rollout("later", Duration::from_secs(30), |r| {
            phase(r) == Some(RolloutPhase::Paused)
        })
        .await;
    let condition = paused
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Paused")
        .unwrap();
    assert_eq!(condition.status, "True");
    fleet.assert_nothing_started("paused").await;
    patch(json!({"spec": {"paused": false}})).await;
    fleet
        .wait_rollout("later", Duration::from_secs(60), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await;
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rollouts_of_the_same_nodes_take_turns_node_by_node() {
    let fleet = Fleet::start(4).await;
    let controller = fleet.controller("replica-a").await;
    let both = json!({"canary": {"nodes": 0}, "maxUnavailable": 4});
    fleet.create_rollout("first", spec(both.clone())).await;
    let mut second = spec(both);
    second["image"] = json!(format!("127.0.0.1:5000/os@{V3}"));
    fleet.create_rollout("second", second).await;
    for name in ["first", "second"] {
        fleet
            .wait_rollout(name, Duration::from_secs(90), |r| {
                phase(r) == Some(RolloutPhase::Complete)
            })
            .await;
    }
    // Each node went through one rollout's Stage and Reboot, then the other's: never one
    // rollout's request while the other's was in progress.
    for index in 0..4 {
        let node = node_name(index);
        let steps: Vec<_> = fleet
            .history()
            .into_iter()
            .filter(|(n, _, _)| *n == node)
            .map(|(_, action, digest)| (action, digest))
            .collect();
        use clb_operator_api::RequestAction::{Reboot, Stage};
        let expected = [
            (Stage, V2.to_string()),
            (Reboot, V2.to_string()),
            (Stage, V3.to_string()),
            (Reboot, V3.to_string()),
        ];
        assert_eq!(steps, expected, "{node}");
    }
    for update in fleet.updates().await {
        assert_eq!(update.status.unwrap().booted.unwrap().digest, V3);
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_let_go_of_mid_drain_are_uncordoned() {
    let fleet = Fleet::start(2).await;
    // Each node runs a pod that a PodDisruptionBudget keeps from being evicted.
    for index in 0..2 {
        fleet
            .server
            .create(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": format!("db-{index}"), "namespace": "default", "labels": {"app": "db"},
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "db", "uid": "u", "controller": true}]},
                "spec": {"nodeName": node_name(index), "containers": [{"name": "c", "image": "x"}]},
                "status": {"phase": "Running", "conditions": [
                    {"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
            }))
            .unwrap();
    }
    fleet
        .server
        .create(json!({
            "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": "db", "namespace": "default"},
            "spec": {"minAvailable": 2, "selector": {"matchLabels": {"app": "db"}}},
        }))
        .unwrap();
    let controller = fleet.controller("replica-a").await;
    fleet
        .create_rollout(
            "stuck",
            spec(json!({"canary": {"nodes": 0}, "drain": {"timeout": "10m"}})),
        )
        .await;
    fleet
        .wait_rollout("stuck", Duration::from_secs(30), |r| {
            r.status.as_ref().is_some_and(|s| s.counts.draining == 2)
        })
        .await;
    let cordoned = |nodes: Vec<k8s_openapi::api::core::v1::Node>, name: String| {
        nodes
            .into_iter()
            .find(|n| n.metadata.name.as_ref() == Some(&name))
            .and_then(|n| n.spec.and_then(|s| s.unschedulable))
            .unwrap_or(false)
    };
    assert!(cordoned(fleet.nodes().await, node_name(0)));
    let nodes: kube::Api<k8s_openapi::api::core::v1::Node> = kube::Api::all(fleet.client.clone());
    let params = kube::api::PatchParams::default();
    // A person takes node-0000 out of the selection: the rollout lets go and uncordons it.
    nodes
        .patch(
            &node_name(0),
            &params,
            &kube::api::Patch::Merge(json!({"metadata": {"labels": {"os": null}}})),
        )
        .await
        .unwrap();
    let status = fleet
        .wait_rollout("stuck", Duration::from_secs(30), |r| {
            r.status.as_ref().is_some_and(|s| s.counts.total == 1)
        })
        .await
        .status
        .unwrap();
    assert!(
        status.nodes.iter().all(|r| r.name != node_name(0)),
        "its record is dropped"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        !cordoned(fleet.nodes().await, node_name(0)),
        "uncordoned when let go"
    );
    assert!(
        cordoned(fleet.nodes().await, node_name(1)),
        "still draining"
    );
    // The rollout is deleted mid-drain: its cordon goes too.
    let rollouts: kube::Api<clb_operator_api::Rollout> = kube::Api::all(fleet.client.clone());
    rollouts.delete("stuck", &Default::default()).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while cordoned(fleet.nodes().await, node_name(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "node-0001 still cordoned by a deleted rollout"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    controller.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_the_image_starts_the_rollout_over() {
    let fleet = Fleet::start(2).await;
    let controller = fleet.controller("replica-a").await;
    fleet
        .create_rollout("os", spec(json!({"canary": {"nodes": 0}})))
        .await;
    fleet
        .wait_rollout("os", Duration::from_secs(60), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await;
    let rollouts: kube::Api<clb_operator_api::Rollout> = kube::Api::all(fleet.client.clone());
    rollouts
        .patch(
            "os",
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(json!({"spec": {"image": format!("127.0.0.1:5000/os@{V3}")}})),
        )
        .await
        .unwrap();
    let again = fleet
        .wait_rollout("os", Duration::from_secs(60), |r| {
            r.status.as_ref().is_some_and(|s| {
                s.pinned_digest.as_deref() == Some(V3) && s.phase == Some(RolloutPhase::Complete)
            })
        })
        .await
        .status
        .unwrap();
    assert_eq!(again.counts.updated, 2);
    for update in fleet.updates().await {
        assert_eq!(update.spec.request.as_ref().unwrap().id, 4, "rolled again");
        assert_eq!(update.status.unwrap().booted.unwrap().digest, V3);
    }
    controller.stop().await;
}

/// Pushes a minimal OCI image (an empty config, one layer) as `repo:tag`; its digest.
fn push_image(registry: &clb_testsupport::Registry, repo: &str, tag: &str, layer: &[u8]) -> String {
    let config = registry.push_blob(repo, b"{}").unwrap();
    let layer_digest = registry.push_blob(repo, layer).unwrap();
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": 2},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": layer_digest, "size": layer.len()}],
    });
    registry
        .push_manifest(
            repo,
            tag,
            "application/vnd.oci.image.manifest.v1+json",
            manifest.to_string().as_bytes(),
        )
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tag_is_resolved_once_and_stays_pinned_when_it_moves() {
    let registry = clb_testsupport::Registry::start_plain();
    let first = push_image(&registry, "os", "stable", b"release one");
    let fleet = Fleet::start(2).await;
    fleet.trust_registry(&registry.addr());
    let controller = fleet.controller("replica-a").await;
    fleet
        .create_rollout(
            "stable",
            spec(json!({"image": registry.image_ref("os:stable"), "canary": {"nodes": 1, "soak": "2s"}})),
        )
        .await;
    fleet
        .wait_rollout("stable", Duration::from_secs(30), |r| {
            r.status.as_ref().is_some_and(|s| s.counts.updated >= 1)
        })
        .await;
    // The tag moves while the canary soaks: the rest of the fleet still gets the first digest.
    let moved = push_image(&registry, "os", "stable", b"release two");
    assert_ne!(moved, first);
    let done = fleet
        .wait_rollout("stable", Duration::from_secs(60), |r| {
            phase(r) == Some(RolloutPhase::Complete)
        })
        .await
        .status
        .unwrap();
    assert_eq!(done.pinned_digest.as_deref(), Some(first.as_str()));
    for update in fleet.updates().await {
        let request = update.spec.request.unwrap();
        assert_eq!(request.digest, first);
        assert_eq!(request.image, format!("{}/os@{first}", registry.addr()));
    }
    controller.stop().await;
}
