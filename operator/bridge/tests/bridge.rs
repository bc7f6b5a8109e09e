//! The real `clb-node-bridge` binary against real parts: a `clb daemon` (built with
//! `cargo build -p clb --bin clb`) on a private dbus-daemon with the shipped policy and a fake
//! logind, a real `docker-registry` on 127.0.0.1 with signed clb images, and the fake API
//! server over HTTP with a kubeconfig. Needs root (the bus policy) and the tools of
//! `scripts/install-test-deps`; a missing prerequisite fails the test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{bridge_command, ok, require_root, workspace_bin};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clb_fake_apiserver::FakeApiServer;
use clb_testsupport::bus::{Daemon, SystemBus, config_dir};
use clb_testsupport::{LoggedChild, Registry};
use serde_json::{Value, json};

const NODE: &str = "node-1";
const TIMEOUT: Duration = Duration::from_secs(60);

/// A registry with signed releases and a state directory with the first one installed.
struct Images {
    /// Kept running for the agent's downloads.
    _reg: Registry,
    work: tempfile::TempDir,
    pubkey: PathBuf,
    /// (pinned reference, digest) by release.
    releases: Vec<(String, String)>,
}

impl Images {
    /// Pushes `names` (each a root tree with its name in /etc/clb-release), signs them
    /// unless `unsigned`, and installs the first into slot a of `state`.
    fn build(bus: &SystemBus, names: &[(&str, bool)]) -> Images {
        let reg = Registry::start_plain();
        let work = tempfile::tempdir().unwrap();
        let prefix = work.path().join("cosign");
        ok(bus.clb(&["keygen", "--output-key-prefix", prefix.to_str().unwrap()]));
        let key = prefix.with_extension("key");
        let mut releases = Vec::new();
        for (name, signed) in names {
            let root = work.path().join(name);
            std::fs::create_dir_all(root.join("etc")).unwrap();
            std::fs::write(root.join("etc/os-release"), "NAME=clb-bridge-test\n").unwrap();
            std::fs::write(root.join("etc/clb-release"), format!("{name}\n")).unwrap();
            std::fs::write(root.join("etc/filler"), name.repeat(50_000)).unwrap();
            let image = reg.image_ref(&format!("os:{name}"));
            let out = ok(bus.clb(&["--json", "push", root.to_str().unwrap(), &image]));
            let pushed: Value = serde_json::from_slice(&out.stdout).unwrap();
            let digest = pushed["digest"].as_str().unwrap().to_string();
            if *signed {
                ok(bus.clb(&["sign", "--key", key.to_str().unwrap(), &image]));
            }
            releases.push((format!("{image}@{digest}"), digest));
        }
        Images {
            _reg: reg,
            pubkey: prefix.with_extension("pub"),
            work,
            releases,
        }
    }

    fn install_first(&self, bus: &SystemBus) -> PathBuf {
        let state = self.work.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        ok(bus.clb(&[
            "--state-dir",
            state.to_str().unwrap(),
            "upgrade",
            "-d",
            &self.releases[0].0,
            "--key",
            self.pubkey.to_str().unwrap(),
        ]));
        state
    }

    fn config(&self) -> PathBuf {
        config_dir(
            &self.work.path().join("etc-clb"),
            &format!("keys: [{}]\nstrategy: coordinated\n", self.pubkey.display()),
        )
    }
}

/// The `clb-node-bridge` process.
struct Bridge(LoggedChild);

impl Bridge {
    fn start(bus: &SystemBus, api: &FakeApiServer, dir: &Path, n: usize) -> Bridge {
        let kubeconfig = dir.join(format!("kubeconfig-{n}"));
        api.kubeconfig_for(&kubeconfig, &format!("bridge-{n}"))
            .unwrap();
        let log = dir.join(format!("bridge-{n}.log"));
        Bridge(LoggedChild::spawn(
            &mut bridge_command(NODE, &bus.address, &kubeconfig),
            log,
        ))
    }

    fn log(&self) -> String {
        self.0.log()
    }

    /// SIGTERM; it must exit 0 within 10 s.
    fn stop(&mut self) {
        self.0.terminate(Duration::from_secs(10));
    }
}

fn node_update(api: &FakeApiServer) -> Option<Value> {
    api.get("clb.dev/v1alpha1", "NodeUpdate", None, NODE)
}

/// Waits until the NodeUpdate satisfies `pred`; returns it.
#[track_caller]
fn wait_for(
    api: &FakeApiServer,
    bridge: &Bridge,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(o) = node_update(api)
            && pred(&o)
        {
            return o;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {TIMEOUT:?}; NodeUpdate: {:#}\nbridge log:\n{}",
            node_update(api).unwrap_or_default(),
            bridge.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What the controller does: a server-side apply of `spec.request` as `clb-operator`.
fn request(api: &FakeApiServer, id: i64, action: &str, image: &str, digest: &str) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let client = kube::Client::new(api.client(), "default");
        let nus: kube::Api<clb_operator_api::NodeUpdate> = kube::Api::all(client);
        let body = json!({
            "apiVersion": "clb.dev/v1alpha1",
            "kind": "NodeUpdate",
            "metadata": {"name": NODE},
            "spec": {"request": {"id": id, "action": action, "image": image, "digest": digest}},
        });
        nus.patch(
            NODE,
            &kube::api::PatchParams::apply(clb_operator_api::OPERATOR_MANAGER),
            &kube::api::Patch::Apply(&body),
        )
        .await
        .unwrap_or_else(|e| {
            panic!(
                "applying the request: {e}; stored: {:#}",
                node_update(api).unwrap_or_default()
            )
        });
    });
}

fn request_state(o: &Value, id: i64) -> Option<String> {
    let r = &o["status"]["request"];
    (r["id"] == id).then(|| r["state"].as_str().unwrap_or("").to_string())
}

/// Bridge PATCH requests so far (its status and create writes).
fn writes(api: &FakeApiServer) -> usize {
    api.requests()
        .iter()
        .filter(|r| {
            r.method == "PATCH" && r.token.as_deref().is_some_and(|t| t.starts_with("bridge"))
        })
        .count()
}

#[test]
fn reports_stages_reboots_and_never_runs_a_request_twice() {
    require_root();
    let bus = SystemBus::start(workspace_bin("clb", "cargo build -p clb --bin clb"));
    // v3 is pushed but never downloaded: the wrong digest.
    let images = Images::build(&bus, &[("v1", true), ("v2", true), ("v3", true)]);
    let state = images.install_first(&bus);
    let cfg = images.config();
    let (v1, v2, v3) = (
        &images.releases[0],
        &images.releases[1],
        &images.releases[2],
    );
    let monitor = bus.monitor();
    let mut daemon = Daemon::start_with(&bus, &state, &cfg, false, &["--booted-slot", "active"]);
    let api = FakeApiServer::start_blocking().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(&bus, &api, dir.path(), 1);

    // Created, and reporting the booted slot.
    let o = wait_for(&api, &bridge, "NodeUpdate with the booted slot", |o| {
        o["status"]["booted"]["digest"] == v1.1.as_str()
    });
    assert_eq!(o["spec"]["nodeName"], NODE);
    let st = &o["status"];
    assert_eq!(st["phase"], "Idle", "{o:#}");
    assert_eq!(st["booted"]["slot"], "a");
    assert_eq!(st["booted"]["shortDigest"], v1.1[7..19]);
    assert_eq!(st["strategy"], "coordinated");
    assert_eq!(st["markedGood"], true);
    assert!(st.get("staged").is_none(), "{o:#}");
    assert!(st["lastReported"].is_string());
    let fields = o["metadata"]["managedFields"].to_string();
    assert!(fields.contains("clb-node-bridge"), "{fields}");

    // Quiet: no write while nothing changes (resync 2 s, heartbeat 5 m).
    let before = writes(&api);
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(
        writes(&api),
        before,
        "writes without a change:\n{}",
        bridge.log()
    );

    // Stage v2: downloaded and verified, reported as staged without a slot.
    let m = monitor.mark();
    let before = writes(&api);
    request(&api, 1, "Stage", &v2.0, &v2.1);
    let o = wait_for(&api, &bridge, "Stage succeeded", |o| {
        request_state(o, 1).as_deref() == Some("Succeeded")
    });
    let st = &o["status"];
    assert_eq!(st["request"]["action"], "Stage");
    assert!(st["request"]["startedAt"].is_string() && st["request"]["finishedAt"].is_string());
    assert_eq!(st["staged"]["digest"], v2.1.as_str(), "{o:#}");
    assert!(
        st["staged"].get("slot").is_none(),
        "a download has no slot yet: {o:#}"
    );
    assert_eq!(st["phase"], "Staged");
    assert_eq!(bus.property("DownloadedDigest"), json!(v2.1));
    assert_eq!(
        bus.property("ActiveSlot"),
        json!("a"),
        "Stage moved the boot pointer"
    );
    let done = monitor.completed_since(m);
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!((done[0].operation.as_str(), done[0].code), ("download", 0));
    let stage_writes = writes(&api) - before;
    assert!(
        (2..=4).contains(&stage_writes),
        "{stage_writes} status writes for one Stage (Running first, then the outcome)"
    );

    // Reboot into a digest that is not staged: refused, nothing called.
    let m = monitor.mark();
    request(&api, 2, "Reboot", &v3.0, &v3.1);
    let o = wait_for(&api, &bridge, "wrong-digest Reboot failed", |o| {
        request_state(o, 2).as_deref() == Some("Failed")
    });
    let msg = o["status"]["request"]["message"].as_str().unwrap();
    assert!(
        msg.contains("refused to reboot") && msg.contains(&v2.1[7..19]),
        "{msg}"
    );
    assert!(bus.reboots().is_empty());
    assert!(monitor.completed_since(m).is_empty());

    // Reboot into v2: staged into b, logind asked to reboot; Running until it is back.
    let m = monitor.mark();
    request(&api, 3, "Reboot", &v2.0, &v2.1);
    let o = wait_for(&api, &bridge, "Rebooting", |o| {
        o["status"]["phase"] == "Rebooting"
    });
    assert_eq!(request_state(&o, 3).as_deref(), Some("Running"));
    assert_eq!(o["status"]["staged"]["slot"], "b", "{o:#}");
    assert_eq!(
        bus.reboots(),
        vec![false],
        "logind Reboot(interactive=false)"
    );
    let applies = || {
        monitor
            .completed_since(m)
            .iter()
            .filter(|c| c.operation == "apply")
            .count()
    };
    assert_eq!(applies(), 1);

    // The bridge restarts while the request runs: it does not apply again.
    bridge.stop();
    let mut bridge = Bridge::start(&bus, &api, dir.path(), 2);
    std::thread::sleep(Duration::from_secs(5));
    assert!(
        bridge.log().contains("request found running"),
        "{}",
        bridge.log()
    );
    assert_eq!(applies(), 1, "the request ran twice:\n{}", bridge.log());
    assert_eq!(bus.reboots(), vec![false]);
    let o = node_update(&api).unwrap();
    assert_eq!(request_state(&o, 3).as_deref(), Some("Running"), "{o:#}");
    assert_eq!(o["status"]["phase"], "Rebooting");

    // The node comes back on b: Succeeded.
    daemon.stop(&bus);
    let mut daemon = Daemon::start_with(&bus, &state, &cfg, false, &["--booted-slot", "active"]);
    let o = wait_for(&api, &bridge, "Reboot succeeded", |o| {
        request_state(o, 3).as_deref() == Some("Succeeded")
    });
    let st = &o["status"];
    assert_eq!(st["booted"]["slot"], "b");
    assert_eq!(st["booted"]["digest"], v2.1.as_str());
    assert_eq!(st["phase"], "Idle", "{o:#}");
    assert_eq!(st["rollback"]["digest"], v1.1.as_str());
    assert_eq!(applies(), 1);

    // The agent goes away: Unreachable, the last known slots kept.
    daemon.stop(&bus);
    let o = wait_for(&api, &bridge, "Unreachable", |o| {
        o["status"]["phase"] == "Unreachable"
    });
    assert_eq!(o["status"]["booted"]["digest"], v2.1.as_str());
    bridge.stop();
}

#[test]
fn no_agent_reports_unreachable() {
    require_root();
    let bus = SystemBus::start(workspace_bin("clb", "cargo build -p clb --bin clb"));
    let api = FakeApiServer::start_blocking().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut bridge = Bridge::start(&bus, &api, dir.path(), 1);
    let o = wait_for(&api, &bridge, "Unreachable", |o| {
        o["status"]["phase"] == "Unreachable"
    });
    assert_eq!(o["spec"]["nodeName"], NODE);
    bridge.stop();
}
