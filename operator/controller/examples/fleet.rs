//! The fleet benchmark (`scripts/bench-fleet`): one rollout across a simulated fleet on the
//! fake API server, counting the controller's API requests per node and timing the planner.
//!
//! `cargo run --release -p clb-operator --example fleet -- [NODES]` (default 1000).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/sim/mod.rs"]
mod sim;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use clb_rollout_planner::{MaxUnavailable, NodeObservation, Observation, Settings, Timestamp};
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let nodes: usize = std::env::args()
        .nth(1)
        .map_or(1000, |n| n.parse().expect("NODES"));
    let fleet = sim::Fleet::start(nodes).await;
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    let controller = fleet.controller("bench").await;
    fleet
        .create_rollout(
            "bench",
            json!({
                "image": format!("127.0.0.1:5000/os@{}", sim::V2),
                "nodeSelector": {"matchLabels": {"os": "clb"}},
                "canary": {"nodes": 10, "soak": "0s"},
                "maxUnavailable": "10%",
                "failureBudget": 0,
                "healthCheck": {"minReadySeconds": 0},
            }),
        )
        .await;
    let done = fleet
        .wait_rollout("bench", Duration::from_secs(1800), |r| {
            r.status.as_ref().and_then(|s| s.phase)
                == Some(clb_operator_api::RolloutPhase::Complete)
        })
        .await;
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let status = done.status.unwrap();
    assert_eq!(status.counts.updated as usize, nodes, "every node updated");
    controller.stop().await;

    let requests = fleet.operator_requests();
    let mut by_kind: BTreeMap<String, usize> = BTreeMap::new();
    for r in &requests {
        *by_kind
            .entry(kind_of(&r.method, &r.path, &r.query))
            .or_default() += 1;
    }
    let per_node = requests.len() as f64 / nodes as f64;
    let writes_per_node: f64 =
        requests.iter().filter(|r| r.method != "GET").count() as f64 / nodes as f64;
    let (plan_median, plan_max) = plan_timing(nodes);
    println!("| measure | value |");
    println!("|---|---|");
    println!("| nodes | {nodes} |");
    println!("| rollout wall time (s) | {wall:.1} |");
    println!(
        "| CPU time of the whole simulation (s): controller, fake API server, simulated bridges | {cpu:.1} |"
    );
    println!("| controller API requests | {} |", requests.len());
    println!("| controller API requests per node | {per_node:.2} |");
    println!("| of which writes per node | {writes_per_node:.2} |");
    for (kind, count) in &by_kind {
        println!(
            "| — {kind} | {count} ({:.2}/node) |",
            *count as f64 / nodes as f64
        );
    }
    println!(
        "| time to plan {nodes} nodes, median of 21 (ms) | {:.3} |",
        plan_median * 1e3
    );
    println!(
        "| time to plan {nodes} nodes, slowest of 21 (ms) | {:.3} |",
        plan_max * 1e3
    );
}

/// What a request was, for the table.
fn kind_of(method: &str, path: &str, query: &str) -> String {
    let resource = if path.contains("/eviction") {
        "pods/eviction"
    } else if path.contains("/events") {
        "events"
    } else if path.contains("/rollouts") && path.ends_with("/status") {
        "rollouts/status"
    } else if path.contains("/rollouts") {
        "rollouts"
    } else if path.contains("/nodeupdates") {
        "nodeupdates"
    } else if path.contains("/leases") {
        "leases"
    } else if path.contains("/nodes") {
        "nodes"
    } else if path.contains("/pods") {
        "pods"
    } else {
        "other"
    };
    let verb = match method {
        "GET" if query.contains("watch=true") || query.contains("watch=1") => "watch",
        "GET" => "get/list",
        "PATCH" => "patch",
        "POST" => "create",
        "PUT" => "update",
        other => other,
    };
    format!("{verb} {resource}")
}

/// The planner alone on a fleet of `nodes` half-way through a rollout.
fn plan_timing(nodes: usize) -> (f64, f64) {
    let settings = Settings {
        target_digest: sim::V2.into(),
        canary: clb_rollout_planner::Canary {
            nodes: 10,
            soak_seconds: 0,
        },
        max_unavailable: MaxUnavailable::Percent(10),
        failure_budget: 0,
        drain_timeout_seconds: 300,
        health_check: clb_rollout_planner::HealthCheck::default(),
        verify_timeout_seconds: Some(900),
        paused: false,
    };
    let observation = Observation {
        now: Timestamp(10_000),
        window_open: true,
        nodes: (0..nodes)
            .map(|index| {
                let mut node = NodeObservation::new(sim::node_name(index));
                node.booted_digest = Some(if index < nodes / 2 { sim::V2 } else { sim::V1 }.into());
                node.slot_good = true;
                node.phase = if index < nodes / 2 {
                    clb_rollout_planner::Phase::Updated
                } else {
                    clb_rollout_planner::Phase::Pending
                };
                node
            })
            .collect(),
    };
    let mut times: Vec<f64> = (0..21)
        .map(|_| {
            let started = Instant::now();
            let plan = clb_rollout_planner::plan(&settings, &observation);
            let elapsed = started.elapsed().as_secs_f64();
            assert!(!plan.started.is_empty());
            elapsed
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[times.len() / 2], times[times.len() - 1])
}

/// User plus system CPU seconds of this process so far (from /proc/self/stat, in clock ticks
/// of 1/100 s as on every Linux this runs on).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    ticks as f64 / 100.0
}
