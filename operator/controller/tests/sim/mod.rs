//! A simulated fleet for the controller's tests and the fleet benchmark: the fake API server,
//! Nodes, and one simulated node bridge per node that answers the controller's requests the
//! way the real bridge and host agent do (stage; reboot: NotReady, back on the new digest, slot
//! marked good) — or fail in the ways real nodes fail. The controller runs as in production,
//! over HTTP with its own token, so the request log tells its calls from the simulation's.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clb_fake_apiserver::FakeApiServer;
use clb_operator_api::{NodeUpdate, RequestAction, Rollout};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};

pub const V1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
pub const V2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
pub const V3: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
pub const OPERATOR_TOKEN: &str = "clb-operator";

/// How a node takes its update.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    Success,
    /// The agent cannot stage the image (say, a signature that does not verify).
    StageFails,
    /// The new slot does not boot; the initrd falls back to the old one.
    RollsBack,
    /// The agent refuses the reboot (say, the staged image was removed meanwhile).
    RebootRefused,
}

/// What the simulated bridges were told and saw.
#[derive(Default)]
struct Seen {
    fates: Mutex<BTreeMap<String, Fate>>,
    max_cordoned: Mutex<usize>,
    history: Mutex<Vec<(String, RequestAction, String)>>,
}

pub struct Fleet {
    pub server: FakeApiServer,
    /// The simulation's own client (in process, no token).
    pub client: Client,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
    seen: Arc<Seen>,
    /// Registries the controllers resolve tags from over plain HTTP.
    insecure_registries: Mutex<Vec<String>>,
    stop: tokio::sync::watch::Sender<bool>,
}

pub fn node_name(index: usize) -> String {
    format!("node-{index:04}")
}

impl Fleet {
    /// `count` Ready nodes labelled `os=clb`, each with a bridge reporting `V1` booted.
    pub async fn start(count: usize) -> Fleet {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("clb_operator=info")),
            )
            .with_test_writer()
            .try_init();
        let server = FakeApiServer::start().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("operator.kubeconfig");
        server.kubeconfig_for(&kubeconfig, OPERATOR_TOKEN).unwrap();
        let client = Client::new(server.client(), "default");
        server
            .create(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "clb-system"}}))
            .ok();
        for index in 0..count {
            let name = node_name(index);
            server
                .create(json!({
                    "apiVersion": "v1", "kind": "Node",
                    "metadata": {"name": name, "labels": {"os": "clb"}},
                    "status": {"conditions": [ready_condition(true)]},
                }))
                .unwrap();
            server
                .create(json!({
                    "apiVersion": "clb.dev/v1alpha1", "kind": "NodeUpdate",
                    "metadata": {"name": name},
                    "spec": {"nodeName": name},
                    "status": {
                        "phase": "Idle", "markedGood": true, "rolledBack": false,
                        "booted": slot("a", V1), "strategy": "coordinated",
                    },
                }))
                .unwrap();
        }
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let fleet = Fleet {
            server,
            client,
            kubeconfig,
            _dir: dir,
            seen: Arc::default(),
            insecure_registries: Mutex::default(),
            stop,
        };
        tokio::spawn(bridges(fleet.client.clone(), fleet.seen.clone(), stopped));
        fleet
    }

    /// Controllers started from now on resolve tags from `registry` over plain HTTP.
    pub fn trust_registry(&self, registry: &str) {
        self.insecure_registries
            .lock()
            .unwrap()
            .push(registry.to_string());
    }

    pub fn set_fate(&self, node: &str, fate: Fate) {
        self.seen
            .fates
            .lock()
            .unwrap()
            .insert(node.to_string(), fate);
    }

    /// The most nodes the simulation ever saw cordoned at once.
    pub fn max_cordoned(&self) -> usize {
        *self.seen.max_cordoned.lock().unwrap()
    }

    /// Every request the simulated bridges carried out, in order: (node, action, digest).
    pub fn history(&self) -> Vec<(String, RequestAction, String)> {
        self.seen.history.lock().unwrap().clone()
    }

    /// A kube client of the controller (over HTTP, with the operator's token).
    pub async fn operator_client(&self) -> Client {
        let kubeconfig = kube::config::Kubeconfig::read_from(&self.kubeconfig).unwrap();
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .unwrap();
        clb_operator::client(config).unwrap()
    }

    /// Starts a controller replica; it runs until the returned handle is stopped.
    pub async fn controller(&self, identity: &str) -> Controller {
        self.controller_with_metrics(identity, None).await
    }

    /// A controller replica that serves `/metrics` at `metrics`.
    pub async fn controller_with_metrics(
        &self,
        identity: &str,
        metrics: Option<std::net::SocketAddr>,
    ) -> Controller {
        let client = self.operator_client().await;
        let options = clb_operator::Options {
            namespace: "clb-system".into(),
            identity: identity.into(),
            lease_name: clb_operator_api::LEADER_LEASE_NAME.into(),
            lease_seconds: 3,
            metrics_address: metrics,
            insecure_registries: self.insecure_registries.lock().unwrap().clone(),
            resync: Duration::from_secs(2),
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            clb_operator::run(client, options, async {
                let _ = stopped.await;
            })
            .await
        });
        Controller {
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn create_rollout(&self, name: &str, spec: Value) {
        self.server
            .create(json!({
                "apiVersion": "clb.dev/v1alpha1", "kind": "Rollout",
                "metadata": {"name": name}, "spec": spec,
            }))
            .unwrap();
    }

    pub async fn rollout(&self, name: &str) -> Rollout {
        Api::<Rollout>::all(self.client.clone())
            .get(name)
            .await
            .unwrap()
    }

    pub async fn nodes(&self) -> Vec<Node> {
        self.list().await
    }

    pub async fn updates(&self) -> Vec<NodeUpdate> {
        self.list().await
    }

    async fn list<K>(&self) -> Vec<K>
    where
        K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        Api::<K>::all(self.client.clone())
            .list(&Default::default())
            .await
            .unwrap()
            .items
    }

    /// Waits a while and checks that no node was asked to do anything.
    pub async fn assert_nothing_started(&self, why: &str) {
        self.assert_not_started(|_| true, why).await;
    }

    /// Waits a while and checks that `node` was never asked to do anything.
    pub async fn assert_nothing_started_on(&self, node: &str, why: &str) {
        self.assert_not_started(|name| name == node, why).await;
    }

    async fn assert_not_started(&self, watched: impl Fn(&str) -> bool, why: &str) {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let started: Vec<_> = self
            .updates()
            .await
            .into_iter()
            .filter(|u| u.spec.request.is_some())
            .filter_map(|u| u.metadata.name)
            .filter(|name| watched(name))
            .collect();
        assert!(started.is_empty(), "{why}, yet started: {started:?}");
    }

    /// Waits until `done` holds for the rollout, or panics after `timeout` with its status.
    pub async fn wait_rollout(
        &self,
        name: &str,
        timeout: Duration,
        done: impl Fn(&Rollout) -> bool,
    ) -> Rollout {
        let deadline = Instant::now() + timeout;
        loop {
            let rollout = self.rollout(name).await;
            if done(&rollout) {
                return rollout;
            }
            if Instant::now() > deadline {
                panic!(
                    "rollout {name} did not get there within {timeout:?}: {}",
                    serde_json::to_string_pretty(&rollout.status).unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The controller's API requests (by its token), by method and path.
    pub fn operator_requests(&self) -> Vec<clb_fake_apiserver::LoggedRequest> {
        self.server
            .requests()
            .into_iter()
            .filter(|r| r.token.as_deref() == Some(OPERATOR_TOKEN))
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

pub struct Controller {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), clb_operator::RunError>>>,
}

impl Controller {
    /// A clean stop: the Lease is released.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.unwrap().unwrap();
        }
    }

    /// A crash: the task is gone mid-step; its Lease runs out instead of being released.
    pub fn crash(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        // The stop sender is dropped without sending: nothing releases the Lease.
        std::mem::forget(self.stop.take());
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

pub fn ready_condition(ready: bool) -> Value {
    json!({"type": "Ready", "status": if ready { "True" } else { "False" },
           "lastTransitionTime": "2026-01-01T00:00:00Z"})
}

pub fn slot(name: &str, digest: &str) -> Value {
    json!({"slot": name, "image": "127.0.0.1:5000/os", "digest": digest,
           "shortDigest": clb_operator_api::short_digest(digest)})
}

/// Every node's simulated bridge: polls the NodeUpdates (in process, no request log noise for
/// the controller's counts) and carries out new requests.
async fn bridges(client: Client, seen: Arc<Seen>, mut stopped: tokio::sync::watch::Receiver<bool>) {
    let updates: Api<NodeUpdate> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    // Reboots in progress: node → when it comes back.
    let mut rebooting: BTreeMap<String, (Instant, i64, String)> = BTreeMap::new();
    loop {
        if *stopped.borrow() {
            return;
        }
        let Ok(list) = updates.list(&Default::default()).await else {
            return;
        };
        if let Ok(node_list) = nodes.list(&Default::default()).await {
            let cordoned = node_list
                .items
                .iter()
                .filter(|n| {
                    n.spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false)
                })
                .count();
            let mut max = seen.max_cordoned.lock().unwrap();
            *max = (*max).max(cordoned);
        }
        for update in list.items {
            let name = update.metadata.name.clone().unwrap();
            let fate = fate_of(&seen.fates, &name);
            let Some(request) = update.spec.request.clone() else {
                continue;
            };
            let handled = update
                .status
                .as_ref()
                .and_then(|s| s.request.as_ref())
                .map_or(0, |r| r.id);
            if request.id <= handled || rebooting.contains_key(&name) {
                continue;
            }
            let now = jiff_now();
            seen.history.lock().unwrap().push((
                name.clone(),
                request.action,
                request.digest.clone(),
            ));
            match request.action {
                clb_operator_api::RequestAction::Stage => {
                    let (state, message, staged) = match fate {
                        Fate::StageFails => ("Failed", "signature does not verify", Value::Null),
                        _ => (
                            "Succeeded",
                            "",
                            json!({"image": request.image, "digest": request.digest,
                                 "shortDigest": clb_operator_api::short_digest(&request.digest)}),
                        ),
                    };
                    let mut status = json!({
                        "phase": if staged.is_null() { "Idle" } else { "Staged" },
                        "staged": staged,
                        "request": {"id": request.id, "action": "Stage", "state": state,
                                    "message": message, "startedAt": now, "finishedAt": now},
                    });
                    if fate == Fate::StageFails {
                        status["lastError"] =
                            json!({"code": 9, "class": "verification-failed", "message": message});
                    }
                    patch_status(&updates, &name, status).await;
                }
                clb_operator_api::RequestAction::Reboot if fate == Fate::RebootRefused => {
                    patch_status(
                        &updates,
                        &name,
                        json!({"phase": "Idle", "staged": null,
                               "lastError": {"code": 11, "class": "state", "message": "nothing downloaded"},
                               "request": {"id": request.id, "action": "Reboot", "state": "Failed",
                                           "message": "nothing downloaded", "finishedAt": now}}),
                    )
                    .await;
                }
                clb_operator_api::RequestAction::Reboot => {
                    patch_status(&updates, &name, json!({"phase": "Rebooting",
                        "request": {"id": request.id, "action": "Reboot", "state": "Running", "startedAt": now}})).await;
                    set_ready(&nodes, &name, false).await;
                    rebooting.insert(
                        name,
                        (
                            Instant::now() + Duration::from_millis(300),
                            request.id,
                            request.digest,
                        ),
                    );
                }
            }
        }
        // Nodes coming back from their reboot.
        let back: Vec<String> = rebooting
            .iter()
            .filter(|(_, (at, _, _))| Instant::now() >= *at)
            .map(|(name, _)| name.clone())
            .collect();
        for name in back {
            let (_, id, digest) = rebooting.remove(&name).unwrap();
            let fate = fate_of(&seen.fates, &name);
            let now = jiff_now();
            let status = if fate == Fate::RollsBack {
                json!({"phase": "Idle", "booted": slot("a", V1), "staged": null, "markedGood": true,
                       "rolledBack": true, "rolledBackFrom": slot("b", &digest),
                       "request": {"id": id, "action": "Reboot", "state": "Failed",
                                   "message": "the node fell back to slot a", "finishedAt": now}})
            } else {
                json!({"phase": "Idle", "booted": slot("b", &digest), "staged": null, "markedGood": true,
                       "rolledBack": false, "rollback": slot("a", V1),
                       "request": {"id": id, "action": "Reboot", "state": "Succeeded", "finishedAt": now}})
            };
            patch_status(&updates, &name, status).await;
            set_ready(&nodes, &name, true).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            _ = stopped.changed() => return,
        }
    }
}

fn jiff_now() -> String {
    k8s_openapi::jiff::Timestamp::now().to_string()
}

async fn patch_status(updates: &Api<NodeUpdate>, name: &str, mut status: Value) {
    status["lastReported"] = json!(jiff_now());
    updates
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
}

async fn set_ready(nodes: &Api<Node>, name: &str, ready: bool) {
    let mut condition = ready_condition(ready);
    condition["lastTransitionTime"] = json!(jiff_now());
    nodes
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"conditions": [condition]}})),
        )
        .await
        .unwrap();
}

/// A free port on 127.0.0.1 (bound and released; the controller binds it right after).
pub fn free_address() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// `GET path` over plain HTTP/1.1; the body.
pub fn http_get(address: std::net::SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default()
}

fn fate_of(fates: &Mutex<BTreeMap<String, Fate>>, node: &str) -> Fate {
    fates
        .lock()
        .unwrap()
        .get(node)
        .copied()
        .unwrap_or(Fate::Success)
}
