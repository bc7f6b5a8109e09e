//! A whole rollout with real host agents: five nodes, each a real `clb daemon` on its own
//! private dbus-daemon (fake logind) with its own state directory, all pulling signed images
//! from one real `docker-registry` on 127.0.0.1; each node's real `clb-node-bridge` process
//! with its own token; two real `clb-operator` replicas (leader election); the fake API server
//! over HTTP holding the Nodes, a Pod and its PodDisruptionBudget.
//!
//! Reboots are simulated: when a node's fake logind records the daemon's reboot call, the test
//! marks the Node NotReady, stops that node's daemon, makes the initrd's boot decision on the
//! node's boot state (the hook's own code: `clb_ondisk::BootState::decide_boot`), does what
//! the booted system would do (`clb mark-good` after boot-complete; for a release that never
//! comes up, nothing, so the boots spend the tries until the initrd falls back to the old slot
//! and records the rollback), starts the daemon again with `--booted-slot active`, and marks
//! the Node Ready.
//!
//! The nodes, in name order (the planner's order; maxUnavailable 1 makes it one at a time):
//! 1. the canary: updated before anything else starts;
//! 2. updated, with the leading operator replica SIGKILLed while it reboots;
//! 3. a Pod whose PodDisruptionBudget allows no disruption: the drain times out (Failed,
//!    DrainTimeout; one failure, within the budget of 1);
//! 4. the new release does not boot good (rolled back): quarantined, the second failure,
//!    beyond the budget: the rollout halts;
//! 5. never started, because of the halt.
//!
//! Needs root (the bus policy), dbus-daemon, busctl, docker-registry (scripts/install-test-deps)
//! and the `clb` and `clb-operator` binaries of this workspace (`cargo build -p clb --bin clb
//! -p clb-operator --bin clb-operator`); a missing prerequisite fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{bridge_command, ok, require_root, workspace_bin};

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use clb_fake_apiserver::FakeApiServer;
use clb_ondisk::bootstate::BootDecision;
use clb_ondisk::{BootState, SlotName, StateLayout};
use clb_testsupport::bus::{Daemon, Monitor, SystemBus, config_dir};
use clb_testsupport::{LoggedChild, Registry};
use serde_json::{Value, json};

const NODES: usize = 5;
const ROLLOUT: &str = "to-v2";
const NAMESPACE: &str = "clb-system";
const TIMEOUT: Duration = Duration::from_secs(150);

/// How a node takes its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Boots the new release and marks it good.
    Good,
    /// Its drain is blocked by a PodDisruptionBudget.
    DrainBlocked,
    /// The new slot never comes up: the initrd falls back to the old one.
    RollsBack,
}

fn node_name(i: usize) -> String {
    format!("node-{}", i + 1)
}

fn fate(i: usize) -> Fate {
    match i {
        2 => Fate::DrainBlocked,
        3 => Fate::RollsBack,
        _ => Fate::Good,
    }
}

fn now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One simulated host: its bus, agent, state and bridge.
struct Node {
    name: String,
    fate: Fate,
    bus: SystemBus,
    monitor: Monitor,
    state: PathBuf,
    daemon: Option<Daemon>,
    bridge: LoggedChild,
    /// Reboot calls already acted on.
    reboots_done: usize,
}

impl Node {
    /// The agent's own view, offline (`clb --no-daemon --json status`).
    fn agent_status(&self) -> Value {
        self.bus.status(&self.state)
    }

    fn completed(&self, operation: &str) -> Vec<i64> {
        self.monitor
            .completed_since(0)
            .iter()
            .filter(|c| c.operation == operation)
            .map(|c| c.code)
            .collect()
    }
}

struct Fleet {
    api: FakeApiServer,
    rt: tokio::runtime::Runtime,
    client: kube::Client,
    nodes: Vec<Node>,
    config: PathBuf,
    dir: tempfile::TempDir,
}

impl Fleet {
    fn node_update(&self, name: &str) -> Option<Value> {
        self.api.get("clb.dev/v1alpha1", "NodeUpdate", None, name)
    }

    /// Every NodeUpdate by node name, read at one instant.
    fn node_updates(&self) -> Vec<(String, Value)> {
        let store = self.api.store();
        let info = store.lookup_kind("clb.dev/v1alpha1", "NodeUpdate").unwrap();
        self.nodes
            .iter()
            .filter_map(|n| {
                let o = store.get_obj(&info, None, &n.name).ok()?;
                Some((n.name.clone(), o))
            })
            .collect()
    }

    /// The cordoned Nodes.
    fn cordoned(&self) -> Vec<String> {
        let store = self.api.store();
        let info = store.lookup_kind("v1", "Node").unwrap();
        self.nodes
            .iter()
            .filter(|n| {
                store
                    .get_obj(&info, None, &n.name)
                    .is_ok_and(|o| o["spec"]["unschedulable"] == true)
            })
            .map(|n| n.name.clone())
            .collect()
    }

    fn k8s_node(&self, name: &str) -> Value {
        self.api.get("v1", "Node", None, name).unwrap()
    }

    fn rollout(&self) -> Value {
        self.api
            .get("clb.dev/v1alpha1", "Rollout", None, ROLLOUT)
            .unwrap()
    }

    fn set_ready(&self, name: &str, ready: bool) {
        let nodes: kube::Api<k8s_openapi::api::core::v1::Node> =
            kube::Api::all(self.client.clone());
        let patch = json!({"status": {"conditions": [{
            "type": "Ready", "status": if ready { "True" } else { "False" },
            "reason": if ready { "KubeletReady" } else { "NodeStatusUnknown" },
            "lastTransitionTime": now(), "lastHeartbeatTime": now(),
        }]}});
        self.rt
            .block_on(nodes.patch_status(
                name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(&patch),
            ))
            .unwrap();
    }

    /// Acts on every reboot the agents asked their (fake) logind for since the last call.
    fn handle_reboots(&mut self) {
        for i in 0..self.nodes.len() {
            let seen = self.nodes[i].bus.reboots().len();
            if seen <= self.nodes[i].reboots_done {
                continue;
            }
            assert_eq!(seen, 1, "{}: asked to reboot twice", self.nodes[i].name);
            self.nodes[i].reboots_done = seen;
            let name = self.nodes[i].name.clone();
            self.set_ready(&name, false);
            let node = &mut self.nodes[i];
            // logind's Reboot returns at once and systemd stops the daemon only later: the
            // daemon answers the Apply that asked for the reboot first. Power off once it has,
            // not while its answer may still be on the way.
            node.monitor
                .wait_completed(0, "apply", Duration::from_secs(30));
            node.daemon.as_mut().unwrap().stop(&node.bus);
            node.daemon = None;
            let state = node.state.to_str().unwrap();
            match node.fate {
                Fate::Good => {
                    // The initrd boots the new slot (a try spent); it reaches boot-complete
                    // and clb-mark-good.service marks it good.
                    assert_eq!(initrd_boot(&node.state), SlotName::B, "{name}");
                    ok(node
                        .bus
                        .clb(&["--no-daemon", "--state-dir", state, "mark-good"]));
                }
                Fate::RollsBack => {
                    // The new slot never comes up (nothing marks it good): every boot spends a
                    // try until the initrd falls back to the old slot and records it.
                    let mut boots = 0;
                    while initrd_boot(&node.state) == SlotName::B {
                        boots += 1;
                        assert!(boots < 10, "{name}: the initrd never fell back");
                    }
                    assert!(boots >= 1, "{name}: fell back without trying the new slot");
                }
                Fate::DrainBlocked => panic!("{name}: rebooted although its drain is blocked"),
            }
            node.daemon = Some(Daemon::start_with(
                &node.bus,
                &node.state,
                &self.config,
                false,
                &["--booted-slot", "active"],
            ));
            self.set_ready(&name, true);
        }
    }

    fn logs(&self) -> String {
        let mut out = String::new();
        for n in &self.nodes {
            out.push_str(&format!(
                "\n===== {} bridge:\n{}",
                n.name,
                tail(&n.bridge.log(), 40)
            ));
            if let Some(d) = &n.daemon {
                out.push_str(&format!(
                    "\n===== {} daemon:\n{}",
                    n.name,
                    tail(&d.log(), 20)
                ));
            }
        }
        out
    }
}

/// One boot's decision, as the initrd hook makes it (initrd-hook/src/plan.rs `decide`): read
/// the boot state, decide (a try spent, or the fallback once none is left, recorded as a
/// rollback), write it back; returns the slot that boots.
fn initrd_boot(state: &std::path::Path) -> SlotName {
    let path = StateLayout::new(state).bootstate();
    let mut boot = BootState::parse(&std::fs::read(&path).unwrap()).unwrap();
    let decision = boot.decide_boot();
    clb_ondisk::atomic::write_atomic(&path, &boot.to_block().unwrap()).unwrap();
    match decision {
        BootDecision::Boot(slot) => slot,
        BootDecision::Recovery => panic!("{}: the initrd would boot recovery", state.display()),
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn record<'a>(rollout: &'a Value, node: &str) -> Option<&'a Value> {
    rollout["status"]["nodes"]
        .as_array()?
        .iter()
        .find(|r| r["name"] == node)
}

fn record_phase(rollout: &Value, node: &str) -> String {
    record(rollout, node)
        .and_then(|r| r["phase"].as_str())
        .unwrap_or("")
        .to_string()
}

fn lease_holder(api: &FakeApiServer) -> Option<String> {
    api.get(
        "coordination.k8s.io/v1",
        "Lease",
        Some(NAMESPACE),
        clb_operator_api::LEADER_LEASE_NAME,
    )
    .and_then(|l| l["spec"]["holderIdentity"].as_str().map(String::from))
}

fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn rollout_with_real_agents_canary_drain_timeout_rollback_halt_and_leader_crash() {
    let started = Instant::now();
    require_root();
    for tool in ["dbus-daemon", "busctl", "docker-registry"] {
        clb_testsupport::require_tool(tool);
    }
    let clb = workspace_bin("clb", "cargo build -p clb --bin clb");
    let operator_bin = workspace_bin(
        "clb-operator",
        "cargo build -p clb-operator --bin clb-operator",
    );
    let dir = tempfile::tempdir().unwrap();

    // One registry with signed v1 and v2.
    let buses: Vec<SystemBus> = (0..NODES).map(|_| SystemBus::start(&clb)).collect();
    let reg = Registry::start_plain();
    let prefix = dir.path().join("cosign");
    ok(buses[0].clb(&["keygen", "--output-key-prefix", prefix.to_str().unwrap()]));
    let key = prefix.with_extension("key");
    let pubkey = prefix.with_extension("pub");
    let mut digests = BTreeMap::new();
    for name in ["v1", "v2"] {
        let root = dir.path().join(name);
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/os-release"), "NAME=clb-e2e\n").unwrap();
        std::fs::write(root.join("etc/clb-release"), format!("{name}\n")).unwrap();
        std::fs::write(root.join("etc/filler"), name.repeat(50_000)).unwrap();
        let image = reg.image_ref(&format!("os:{name}"));
        let out = ok(buses[0].clb(&["--json", "push", root.to_str().unwrap(), &image]));
        let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
        ok(buses[0].clb(&["sign", "--key", key.to_str().unwrap(), &image]));
        digests.insert(name, pushed["digest"].as_str().unwrap().to_string());
    }
    let (v1, v2) = (digests["v1"].clone(), digests["v2"].clone());
    let config = config_dir(
        &dir.path().join("etc-clb"),
        &format!("keys: [{}]\nstrategy: coordinated\n", pubkey.display()),
    );

    // The API server: the namespaces, five Ready nodes, a Pod on node-3 that only a
    // PodDisruptionBudget keeps there.
    let api = FakeApiServer::start_blocking().unwrap();
    for ns in [NAMESPACE, "default"] {
        api.create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}))
            .ok();
    }
    for i in 0..NODES {
        api.create(json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": node_name(i), "labels": {"os": "clb"}},
            "status": {"conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}]},
        }))
        .unwrap();
    }
    let blocked = (0..NODES).find(|&i| fate(i) == Fate::DrainBlocked).unwrap();
    api.create(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-0", "namespace": "default", "labels": {"app": "web"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                                          "name": "web", "uid": "5f0c7a1e-0000-4000-8000-000000000001",
                                          "controller": true}]},
        "spec": {"nodeName": node_name(blocked), "containers": [{"name": "web", "image": "web"}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    .unwrap();
    // One matching pod, minAvailable 1: no disruption allowed (the fake server recomputes
    // this at each eviction; the status says the same).
    api.create(json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": "web", "namespace": "default"},
        "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "web"}}},
        "status": {"disruptionsAllowed": 0, "currentHealthy": 1, "desiredHealthy": 1,
                   "expectedPods": 1},
    }))
    .unwrap();

    // Each node: v1 installed and good, its daemon on its bus, its bridge.
    let mut nodes = Vec::new();
    for (i, bus) in buses.into_iter().enumerate() {
        let name = node_name(i);
        let state = dir.path().join(format!("state-{name}"));
        std::fs::create_dir_all(&state).unwrap();
        ok(bus.clb(&[
            "--state-dir",
            state.to_str().unwrap(),
            "upgrade",
            "-d",
            &reg.image_ref(&format!("os@{v1}")),
            "--key",
            pubkey.to_str().unwrap(),
        ]));
        let monitor = bus.monitor();
        let daemon = Daemon::start_with(&bus, &state, &config, false, &["--booted-slot", "active"]);
        let kubeconfig = dir.path().join(format!("kubeconfig-{name}"));
        api.kubeconfig_for(&kubeconfig, &format!("bridge-{name}"))
            .unwrap();
        let bridge = LoggedChild::spawn(
            &mut bridge_command(&name, &bus.address, &kubeconfig),
            dir.path().join(format!("bridge-{name}.log")),
        );
        nodes.push(Node {
            name,
            fate: fate(i),
            bus,
            monitor,
            state,
            daemon: Some(daemon),
            bridge,
            reboots_done: 0,
        });
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = rt.block_on(async { kube::Client::new(api.client(), "default") });
    let mut fleet = Fleet {
        api,
        rt,
        client,
        nodes,
        config,
        dir,
    };

    // Every bridge reports its node on v1 before the rollout exists.
    let deadline = Instant::now() + Duration::from_secs(60);
    for n in &fleet.nodes {
        loop {
            let nu = fleet.node_update(&n.name);
            if nu.as_ref().is_some_and(|o| {
                o["status"]["booted"]["digest"] == v1.as_str() && o["status"]["phase"] == "Idle"
            }) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no NodeUpdate on v1: {nu:#?}\n{}",
                n.name,
                fleet.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Two controller replicas.
    let registry_host = reg.addr();
    let mut operators: BTreeMap<String, (LoggedChild, String)> = BTreeMap::new();
    for identity in ["replica-a", "replica-b"] {
        let kubeconfig = fleet.dir.path().join(format!("kubeconfig-{identity}"));
        fleet
            .api
            .kubeconfig_for(&kubeconfig, &format!("operator-{identity}"))
            .unwrap();
        let metrics = format!("127.0.0.1:{}", free_port());
        let mut cmd = Command::new(&operator_bin);
        cmd.args(["--identity", identity, "--namespace", NAMESPACE])
            .args(["--lease-seconds", "3", "--resync-seconds", "2"])
            .args(["--insecure-registry", &registry_host])
            .args(["--metrics-address", &metrics])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "info,clb_operator=debug")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE");
        let log = fleet.dir.path().join(format!("{identity}.log"));
        operators.insert(
            identity.to_string(),
            (LoggedChild::spawn(&mut cmd, log), metrics),
        );
    }
    let setup = started.elapsed();

    fleet
        .api
        .create(json!({
            "apiVersion": "clb.dev/v1alpha1", "kind": "Rollout",
            "metadata": {"name": ROLLOUT},
            "spec": {
                "image": reg.image_ref("os:v2"),
                "nodeSelector": {"matchLabels": {"os": "clb"}},
                "canary": {"nodes": 1, "soak": "2s"},
                "maxUnavailable": 1,
                "failureBudget": 1,
                "drain": {"timeout": "5s"},
                "healthCheck": {"minReadySeconds": 1, "timeout": "60s"},
            },
        }))
        .unwrap();
    let rollout_started = Instant::now();

    // Drive the reboots until the rollout halted with nothing in flight. On the way: the
    // canary is Updated before any other node starts, and never more than one node is
    // cordoned at once (maxUnavailable 1).
    let ends = ["Updated", "Failed", "Quarantined"];
    let mut started_order: Vec<String> = Vec::new();
    let mut max_cordoned = 0;
    let mut killed: Option<String> = None;
    // How many API requests had been made when the leader died.
    let mut killed_at_request = 0;
    let mut halted_at: Option<Instant> = None;
    let deadline = Instant::now() + TIMEOUT;
    loop {
        // The leader dies while node-2 reboots (before the test brings it back).
        if killed.is_none() && !fleet.nodes[1].bus.reboots().is_empty() {
            let holder = lease_holder(&fleet.api).expect("a leader");
            let (proc, _) = operators.get_mut(&holder).unwrap();
            assert!(proc.alive(), "{holder} died on its own:\n{}", proc.log());
            proc.kill9();
            killed_at_request = fleet.api.requests().len();
            killed = Some(holder);
        }
        fleet.handle_reboots();
        let updates = fleet.node_updates();
        let cordoned = fleet.cordoned();
        max_cordoned = max_cordoned.max(cordoned.len());
        assert!(cordoned.len() <= 1, "cordoned at once: {cordoned:?}");
        for (name, o) in &updates {
            if started_order.contains(name) || o["spec"]["request"].is_null() {
                continue;
            }
            assert!(
                halted_at.is_none(),
                "{name} started after the rollout halted: {:#}",
                fleet.rollout()["status"]
            );
            if started_order.len() == 1 {
                let canary = record_phase(&fleet.rollout(), &started_order[0]);
                assert_eq!(
                    canary, "Updated",
                    "{name} started before the canary was updated"
                );
            }
            started_order.push(name.clone());
        }
        let rollout = fleet.rollout();
        let status = &rollout["status"];
        if status["phase"] == "Halted" && halted_at.is_none() {
            halted_at = Some(Instant::now());
        }
        let in_flight = started_order
            .iter()
            .any(|n| !ends.contains(&record_phase(&rollout, n).as_str()));
        if let Some(at) = halted_at
            && !in_flight
            && at.elapsed() > Duration::from_secs(5)
        {
            // Halted, settled, and nothing started for more than two resyncs.
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the rollout did not halt within {TIMEOUT:?}: {status:#}\n{}\noperator requests:\n{}\noperators:\n{}",
            fleet.logs(),
            fleet
                .api
                .requests()
                .iter()
                .filter(|r| r
                    .token
                    .as_deref()
                    .is_some_and(|t| t.starts_with("operator")))
                .map(|r| format!(
                    "{:?} {} {}?{} {}",
                    r.token, r.method, r.path, r.query, r.status
                ))
                .collect::<Vec<_>>()
                .join("\n"),
            operators
                .values()
                .map(|(p, _)| tail(&p.log(), 60))
                .collect::<Vec<_>>()
                .join("\n-----\n")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(max_cordoned, 1, "the drains cordoned");
    let rollout_time = rollout_started.elapsed();

    // The order: the canary, then one at a time; node-5 never started.
    let names: Vec<String> = (0..NODES).map(node_name).collect();
    assert_eq!(started_order, names[..4].to_vec());

    let rollout = fleet.rollout();
    let status = &rollout["status"];
    assert_eq!(status["phase"], "Halted", "{status:#}");
    assert_eq!(status["pinnedDigest"], v2.as_str(), "{status:#}");
    let counts = &status["counts"];
    assert_eq!(
        (
            &counts["total"],
            &counts["updated"],
            &counts["failed"],
            &counts["quarantined"],
            &counts["pending"]
        ),
        (&json!(5), &json!(2), &json!(1), &json!(1), &json!(1)),
        "{status:#}"
    );
    let halted = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Halted")
        .unwrap_or_else(|| panic!("no Halted condition: {status:#}"));
    assert_eq!(halted["status"], "True", "{halted:#}");
    let message = halted["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("node-3") && message.contains("node-4"),
        "the Halted condition names the failed nodes: {halted:#}"
    );
    let failure = |node: &str| record(&rollout, node).unwrap()["failure"]["reason"].clone();
    assert_eq!(record_phase(&rollout, "node-3"), "Failed");
    assert_eq!(failure("node-3"), "DrainTimeout", "{status:#}");
    assert_eq!(record_phase(&rollout, "node-4"), "Quarantined");
    assert_eq!(failure("node-4"), "RolledBack", "{status:#}");
    for node in ["node-1", "node-2"] {
        assert_eq!(record_phase(&rollout, node), "Updated", "{status:#}");
    }

    // Each node's end, from its agent, its NodeUpdate and its Node.
    for n in &fleet.nodes {
        let name = n.name.as_str();
        let nu = fleet.node_update(name).unwrap();
        let k8s = fleet.k8s_node(name);
        let agent = n.agent_status();
        let ctx = format!(
            "{name}: NodeUpdate {nu:#}\nNode {k8s:#}\nagent {agent:#}\n{}",
            tail(&n.bridge.log(), 30)
        );
        assert_ne!(k8s["spec"]["unschedulable"], true, "left cordoned: {ctx}");
        assert!(
            k8s["metadata"]["annotations"][clb_operator_api::CORDONED_BY_ANNOTATION].is_null(),
            "{ctx}"
        );
        // The claim stays (the last rollout that claimed the node); it holds no more, since
        // the rollout's record of the node is at an end (checked above).
        let claim = if name == "node-5" {
            json!(null)
        } else {
            json!(ROLLOUT)
        };
        assert_eq!(nu["spec"]["rollout"], claim, "{ctx}");
        let booted = n.bus.property("BootedSlot");
        let reboots = n.bus.reboots().len();
        let downloads = n.completed("download");
        let applies = n.completed("apply");
        match name {
            "node-1" | "node-2" => {
                // Stage (1) and Reboot (2): each asked once, the new leader asked nothing again.
                assert_eq!(nu["spec"]["request"]["id"], 2, "{ctx}");
                assert_eq!(nu["status"]["request"]["id"], 2, "{ctx}");
                assert_eq!(nu["status"]["request"]["state"], "Succeeded", "{ctx}");
                assert_eq!(nu["status"]["booted"]["digest"], v2.as_str(), "{ctx}");
                assert_eq!(agent["active"], "b", "{ctx}");
                assert_eq!(agent["good"], true, "{ctx}");
                assert_eq!(agent["rolled_back"], false, "{ctx}");
                assert_eq!(agent["slots"]["b"]["digest"], v2.as_str(), "{ctx}");
                assert_eq!(booted, json!("b"), "{ctx}");
                assert_eq!(
                    (downloads, applies, reboots),
                    (vec![0], vec![0], 1),
                    "{ctx}"
                );
            }
            "node-3" => {
                // Staged (downloaded only), never drained, never asked to reboot.
                assert_eq!(nu["spec"]["request"]["id"], 1, "{ctx}");
                assert_eq!(nu["spec"]["request"]["action"], "Stage", "{ctx}");
                assert_eq!(nu["status"]["booted"]["digest"], v1.as_str(), "{ctx}");
                assert_eq!(agent["active"], "a", "{ctx}");
                assert_eq!(agent["slots"]["a"]["digest"], v1.as_str(), "{ctx}");
                assert_eq!(booted, json!("a"), "{ctx}");
                assert_eq!((downloads, applies, reboots), (vec![0], vec![], 0), "{ctx}");
                assert!(k8s["metadata"]["labels"][clb_operator_api::QUARANTINED_LABEL].is_null());
                assert!(
                    fleet
                        .api
                        .get("v1", "Pod", Some("default"), "web-0")
                        .is_some(),
                    "the PDB-protected pod was evicted"
                );
            }
            "node-4" => {
                assert_eq!(nu["spec"]["request"]["id"], 2, "{ctx}");
                assert_eq!(nu["status"]["request"]["state"], "Failed", "{ctx}");
                assert_eq!(nu["status"]["rolledBack"], true, "{ctx}");
                assert_eq!(nu["status"]["booted"]["digest"], v1.as_str(), "{ctx}");
                assert_eq!(agent["active"], "a", "{ctx}");
                assert_eq!(agent["rolled_back"], true, "{ctx}");
                assert_eq!(agent["failed_slot"], "b", "{ctx}");
                assert_eq!(booted, json!("a"), "{ctx}");
                assert_eq!(
                    (downloads, applies, reboots),
                    (vec![0], vec![0], 1),
                    "{ctx}"
                );
                assert_eq!(
                    k8s["metadata"]["labels"][clb_operator_api::QUARANTINED_LABEL],
                    clb_operator_api::QUARANTINED_VALUE,
                    "{ctx}"
                );
                let taints = k8s["spec"]["taints"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default();
                assert!(
                    taints
                        .iter()
                        .any(|t| t["key"] == clb_operator_api::QUARANTINED_TAINT_KEY
                            && t["effect"] == clb_operator_api::QUARANTINED_TAINT_EFFECT),
                    "{ctx}"
                );
            }
            _ => {
                // node-5: never started.
                assert!(nu["spec"]["request"].is_null(), "{ctx}");
                assert_eq!(nu["status"]["booted"]["digest"], v1.as_str(), "{ctx}");
                assert_eq!(agent["active"], "a", "{ctx}");
                assert_eq!((downloads, applies, reboots), (vec![], vec![], 0), "{ctx}");
            }
        }
    }

    // The leader crash: the other replica holds the Lease now and did the rest.
    let killed = killed.expect("node-2 rebooted, so the leader was killed");
    let survivor = lease_holder(&fleet.api).unwrap();
    assert_ne!(survivor, killed);
    let (survivor_proc, metrics) = operators.get_mut(&survivor).unwrap();
    assert!(survivor_proc.alive(), "{}", survivor_proc.log());
    let requests = fleet.api.requests();
    let by = |identity: &str| format!("operator-{identity}");
    assert!(
        requests[killed_at_request..]
            .iter()
            .all(|r| r.token.as_deref() != Some(&by(&killed))),
        "{killed} made requests after its SIGKILL"
    );
    // Each node's NodeUpdate was written by the operators exactly once per request (a Stage,
    // then a Reboot), across both replicas: the new leader started nothing again.
    let operator_writes = |node: &str, identity: Option<&str>| {
        requests
            .iter()
            .filter(|r| {
                r.token.as_deref().is_some_and(|t| match identity {
                    Some(i) => t == by(i),
                    None => t.starts_with("operator-"),
                })
            })
            .filter(|r| {
                r.method == "PATCH"
                    && r.path == format!("/apis/clb.dev/v1alpha1/nodeupdates/{node}")
            })
            .count()
    };
    for (node, writes) in [
        ("node-1", 2),
        ("node-2", 2),
        ("node-3", 1),
        ("node-4", 2),
        ("node-5", 0),
    ] {
        assert_eq!(
            operator_writes(node, None),
            writes,
            "requests written for {node}"
        );
    }
    // The requests after the crash (node-3's and node-4's) came from the survivor.
    assert_eq!(operator_writes("node-3", Some(&survivor)), 1);
    assert_eq!(operator_writes("node-4", Some(&survivor)), 2);
    // The drain tried to evict the pod; the budget refused it (429) until the timeout.
    let evictions: Vec<u16> = requests
        .iter()
        .filter(|r| r.path == "/api/v1/namespaces/default/pods/web-0/eviction")
        .map(|r| r.status)
        .collect();
    assert!(
        !evictions.is_empty() && evictions.iter().all(|s| *s == 429),
        "evictions of web-0: {evictions:?}"
    );
    assert!(
        requests.iter().all(|r| r.status < 500),
        "server errors: {:?}",
        requests
            .iter()
            .filter(|r| r.status >= 500)
            .collect::<Vec<_>>()
    );

    // The survivor's metrics.
    let scraped = http_get(metrics, "/metrics");
    assert!(scraped.starts_with("HTTP/1.1 200"), "{scraped}");
    for (phase, count) in [
        ("Updated", 2),
        ("Failed", 1),
        ("Quarantined", 1),
        ("Pending", 1),
    ] {
        let line =
            format!("clb_rollout_nodes{{rollout=\"{ROLLOUT}\",phase=\"{phase}\"}} {count}\n");
        assert!(
            scraped.contains(&line),
            "no {line:?} in /metrics:\n{scraped}"
        );
    }
    eprintln!(
        "set-up {setup:?}, rollout {rollout_time:?}, total {:?}; started {started_order:?}; \
         killed {killed}, survivor {survivor}",
        started.elapsed()
    );
    drop(reg);
}
