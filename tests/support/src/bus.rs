//! The daemon's test harness: a private dbus-daemon configured like a distribution's system
//! bus (method calls and name ownership denied unless a policy file grants them) that
//! includes the shipped `packaging/dbus/dev.clb.Agent.conf`; a fake logind on it recording
//! `Reboot` calls; `busctl` and `gdbus` as independent clients (as root or as uid 65534 via
//! `setpriv`); `busctl monitor` recording what the daemon emits; the `clb daemon` process;
//! and a throttling TCP proxy in front of the registry.
//!
//! Shared by the agent's daemon tests and the node bridge's tests (feature `bus`). The `clb`
//! binary under test is given to [`SystemBus::start`] (a test names it with
//! `env!("CARGO_BIN_EXE_clb")` in the agent, or finds it in the target directory).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::{COSIGN_PASSWORD as PASSWORD, LoggedChild, require_tool};

/// Runs a shell command, panics with its stderr on failure.
fn sh(cmd: &str) {
    let out = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub const NAME: &str = "dev.clb.Agent";
pub const OBJECT: &str = "/dev/clb/Agent";
pub const IFACE: &str = "dev.clb.Agent1";
/// The policy file packaging installs into /usr/share/dbus-1/system.d: the one under test.
pub const POLICY: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../packaging/dbus/dev.clb.Agent.conf"
);
/// The group the shipped policy lets call the daemon's methods.
pub const POLICY_GROUP: &str = "clb";
/// uid/gid of `nobody` / `nogroup` on Debian.
pub const NOBODY: u32 = 65534;

/// Debian's /usr/share/dbus-1/system.conf, minus forking, activation and syslog: everything
/// is denied unless a policy file punches a hole. logind's own policy (what
/// org.freedesktop.login1.conf grants) lets the fake logind own its name and be called.
const BUS_CONFIG: &str = r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=SOCKET</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Properties"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus" send_member="UpdateActivationEnvironment"/>
    <deny send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Debug.Stats"/>
  </policy>
  <policy user="root">
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus.Monitoring"/>
  </policy>
  <policy user="root">
    <allow own="org.freedesktop.login1"/>
    <allow send_destination="org.freedesktop.login1"/>
  </policy>
  <policy context="default">
    <allow send_destination="org.freedesktop.login1" send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.login1" send_interface="org.freedesktop.DBus.Peer"/>
    <allow send_destination="org.freedesktop.login1" send_interface="org.freedesktop.DBus.Properties" send_member="Get"/>
    <allow send_destination="org.freedesktop.login1" send_interface="org.freedesktop.DBus.Properties" send_member="GetAll"/>
  </policy>
  <include>POLICY</include>
</busconfig>
"#;

/// Who runs a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Root,
    /// uid/gid 65534 with no supplementary group.
    Nobody,
    /// uid/gid 65534 with this supplementary group.
    NobodyIn(u32),
}

impl Caller {
    fn command(self, program: &str) -> Command {
        let ids = [format!("--reuid={NOBODY}"), format!("--regid={NOBODY}")];
        match self {
            Caller::Root => Command::new(program),
            Caller::Nobody => {
                let mut c = Command::new("setpriv");
                c.args(ids).arg("--clear-groups").arg(program);
                c
            }
            Caller::NobodyIn(gid) => {
                let mut c = Command::new("setpriv");
                c.args(ids).arg(format!("--groups={gid}")).arg(program);
                c
            }
        }
    }
}

/// The group's gid, creating it (as a system group) when the machine has none: the shipped
/// policy names it, and dbus-daemon ignores rules for groups that do not exist.
pub fn ensure_group(name: &str) -> u32 {
    let lookup = || {
        let out = Command::new("getent")
            .args(["group", name])
            .output()
            .unwrap();
        let line = String::from_utf8_lossy(&out.stdout).to_string();
        line.split(':').nth(2).and_then(|g| g.trim().parse().ok())
    };
    if let Some(gid) = lookup() {
        return gid;
    }
    require_tool("groupadd");
    // -f: another test process may have created it a moment ago.
    sh(&format!("groupadd -f --system {name}"));
    lookup().unwrap_or_else(|| panic!("group {name} missing after groupadd"))
}

/// A client's answer.
#[derive(Debug)]
pub struct Reply {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Reply {
    /// The D-Bus error name of a failed call: gdbus prints `GDBus.Error:NAME: message`,
    /// busctl (at debug level) logs the error message it got with `error-name=NAME`.
    pub fn error_name(&self) -> Option<String> {
        if let Some(rest) = self.stderr.split("GDBus.Error:").nth(1) {
            return rest.split(':').next().map(|s| s.trim().to_string());
        }
        self.stderr
            .lines()
            .filter(|l| l.contains("type=error"))
            .filter_map(|l| l.split("error-name=").nth(1))
            .filter_map(|r| r.split_whitespace().next())
            .next_back()
            .map(str::to_string)
    }

    /// The error message (the text after the name).
    pub fn error_message(&self) -> String {
        if let Some(rest) = self.stderr.split("GDBus.Error:").nth(1) {
            return rest.split_once(": ").map(|x| x.1).unwrap_or("").to_string();
        }
        self.stderr
            .lines()
            .filter(|l| l.contains("type=error"))
            .filter_map(|l| l.split("error-message=").nth(1))
            .next_back()
            .unwrap_or("")
            .to_string()
    }

    #[track_caller]
    pub fn expect_ok(self, what: &str) -> Reply {
        assert!(
            self.ok,
            "{what} failed: {:?}\nstdout: {}\nstderr: {}",
            self.error_name(),
            self.stdout,
            tail(&self.stderr)
        );
        self
    }

    #[track_caller]
    pub fn expect_error(&self, name: &str, what: &str) {
        assert!(
            !self.ok,
            "{what} should fail with {name} but succeeded: {}",
            self.stdout
        );
        assert_eq!(
            self.error_name().as_deref(),
            Some(name),
            "{what}: wrong error; stderr: {}",
            tail(&self.stderr)
        );
    }
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

pub struct FakeLogind {
    calls: Arc<Mutex<Vec<bool>>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl FakeLogind {
    fn reboot(&self, interactive: bool) {
        self.calls.lock().unwrap().push(interactive);
    }
}

/// A private system bus with a fake logind.
pub struct SystemBus {
    pub dir: tempfile::TempDir,
    child: Child,
    pub address: String,
    /// gid of the policy's group.
    pub clb_gid: u32,
    /// The `clb` binary under test.
    clb: PathBuf,
    bin: PathBuf,
    reboots: Arc<Mutex<Vec<bool>>>,
    logind: Option<zbus::Connection>,
    rt: tokio::runtime::Runtime,
}

impl SystemBus {
    /// Starts the bus; `clb` is the binary [`SystemBus::clb`] and [`Daemon::start`] run.
    pub fn start(clb: impl Into<PathBuf>) -> SystemBus {
        let clb = clb.into();
        assert!(clb.is_file(), "the clb binary {} is missing", clb.display());
        for tool in ["dbus-daemon", "busctl", "gdbus", "setpriv", "getent"] {
            require_tool(tool);
        }
        assert!(Path::new(POLICY).is_file(), "{POLICY} missing");
        let clb_gid = ensure_group(POLICY_GROUP);
        let dir = tempfile::Builder::new()
            .prefix("clb-bus-")
            .tempdir()
            .unwrap();
        // uid 65534 must reach the socket.
        sh(&format!("chmod 755 {}", dir.path().display()));
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("system.conf");
        std::fs::write(
            &config,
            BUS_CONFIG
                .replace("SOCKET", socket.to_str().unwrap())
                .replace("POLICY", POLICY),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("dbus-daemon.log")).unwrap();
        let child = Command::new("dbus-daemon")
            .args(["--nofork", "--config-file", config.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "dbus-daemon did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        let address = format!("unix:path={}", socket.display());
        // If the daemon could not reach logind it would run `systemctl reboot` or `reboot`:
        // these stand-ins record the attempt instead of rebooting the test machine.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for name in ["systemctl", "reboot", "shutdown"] {
            let script = bin.join(name);
            std::fs::write(
                &script,
                format!(
                    "#!/bin/sh\necho \"{name} $*\" >> {}\n",
                    dir.path().join("fallback-reboots.log").display()
                ),
            )
            .unwrap();
            sh(&format!("chmod 755 {}", script.display()));
        }
        let reboots = Arc::new(Mutex::new(Vec::new()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let logind = rt.block_on(async {
            zbus::connection::Builder::address(address.as_str())
                .name("org.freedesktop.login1")
                .serve_at(
                    "/org/freedesktop/login1",
                    FakeLogind {
                        calls: reboots.clone(),
                    },
                )
                .build()
                .await
                .expect("the fake logind owns org.freedesktop.login1")
        });
        SystemBus {
            dir,
            child,
            address,
            clb_gid,
            clb,
            bin,
            reboots,
            logind: Some(logind),
            rt,
        }
    }

    /// Points a command at this bus, with the reboot stand-ins first on PATH.
    pub fn env<'a>(&self, cmd: &'a mut Command) -> &'a mut Command {
        let path = format!(
            "{}:{}",
            self.bin.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        cmd.env("DBUS_SYSTEM_BUS_ADDRESS", &self.address)
            .env("PATH", path)
            .env_remove("DBUS_SESSION_BUS_ADDRESS")
    }

    /// The `clb` binary under test.
    pub fn clb_bin(&self) -> &Path {
        &self.clb
    }

    /// `clb ARGS` on this bus (as the agent tests' `common::clb_owned` runs it otherwise).
    pub fn clb(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(&self.clb);
        self.env(&mut cmd)
            .args(args)
            .env("COSIGN_PASSWORD", PASSWORD)
            .env("RUST_LOG", "warn")
            .env_remove("REGISTRY_AUTH_FILE")
            .env("HOME", "/nonexistent-clb-test-home")
            .stdin(Stdio::null())
            .output()
            .expect("running clb")
    }

    /// `clb --no-daemon --json --state-dir STATE status`.
    #[track_caller]
    pub fn status(&self, state: &Path) -> serde_json::Value {
        let out = self.clb(&[
            "--no-daemon",
            "--json",
            "--state-dir",
            state.to_str().unwrap(),
            "status",
        ]);
        assert!(
            out.status.success(),
            "clb status failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }

    fn run(&self, caller: Caller, program: &str, args: &[&str]) -> Reply {
        let mut cmd = caller.command(program);
        self.env(&mut cmd)
            .args(args)
            // busctl logs the error name it got only at debug level.
            .env("SYSTEMD_LOG_LEVEL", "debug")
            .env("SYSTEMD_COLORS", "0")
            .env("SYSTEMD_PAGER", "")
            .stdin(Stdio::null());
        let out = cmd.output().unwrap_or_else(|e| panic!("{program}: {e}"));
        Reply {
            ok: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).to_string(),
        }
    }

    /// `busctl --system ARGS`.
    pub fn busctl(&self, caller: Caller, args: &[&str]) -> Reply {
        let mut all = vec!["--system"];
        all.extend_from_slice(args);
        self.run(caller, "busctl", &all)
    }

    /// `busctl call dev.clb.Agent /dev/clb/Agent dev.clb.Agent1 METHOD [SIGNATURE ARGS…]`.
    pub fn call(&self, caller: Caller, method: &str, args: &[&str]) -> Reply {
        let mut all = vec!["--json=short", "call", NAME, OBJECT, IFACE, method];
        all.extend_from_slice(args);
        self.busctl(caller, &all)
    }

    /// `gdbus call --system … --method dev.clb.Agent1.METHOD [ARGS…]` (GVariant text).
    pub fn gdbus(&self, caller: Caller, method: &str, args: &[&str]) -> Reply {
        let method = format!("{IFACE}.{method}");
        let mut all = vec![
            "call",
            "--system",
            "--dest",
            NAME,
            "--object-path",
            OBJECT,
            "--method",
            &method,
        ];
        all.extend_from_slice(args);
        self.run(caller, "gdbus", &all)
    }

    /// A property as busctl reads it (its `data`); panics when the read fails.
    #[track_caller]
    pub fn property_as(&self, caller: Caller, name: &str) -> serde_json::Value {
        let r = self
            .busctl(
                caller,
                &["--json=short", "get-property", NAME, OBJECT, IFACE, name],
            )
            .expect_ok(&format!("reading {name}"));
        let v: serde_json::Value = serde_json::from_str(r.stdout.trim())
            .unwrap_or_else(|e| panic!("busctl get-property {name}: {e}: {}", r.stdout));
        v["data"].clone()
    }

    #[track_caller]
    pub fn property(&self, name: &str) -> serde_json::Value {
        self.property_as(Caller::Root, name)
    }

    /// Waits until property `name` reads `want`.
    #[track_caller]
    pub fn wait_property(&self, name: &str, want: serde_json::Value, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.property(name);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "property {name} is {got}, not {want}, after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn name_has_owner(&self) -> bool {
        let r = self
            .busctl(
                Caller::Root,
                &[
                    "call",
                    "org.freedesktop.DBus",
                    "/org/freedesktop/DBus",
                    "org.freedesktop.DBus",
                    "NameHasOwner",
                    "s",
                    NAME,
                ],
            )
            .expect_ok("NameHasOwner");
        r.stdout.trim() == "b true"
    }

    /// The interactive flags of every logind `Reboot` call so far.
    pub fn reboots(&self) -> Vec<bool> {
        self.reboots.lock().unwrap().clone()
    }

    /// What reached the `systemctl`/`reboot` stand-ins (the daemon's fallback when logind
    /// cannot be called).
    pub fn fallback_reboots(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fallback-reboots.log")).unwrap_or_default()
    }

    /// Starts `busctl monitor` on the daemon's object.
    pub fn monitor(&self) -> Monitor {
        Monitor::start(self)
    }
}

impl Drop for SystemBus {
    fn drop(&mut self) {
        if let Some(conn) = self.logind.take() {
            self.rt.block_on(async move { drop(conn) });
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the daemon emitted, as `busctl monitor` saw it.
#[derive(Debug, Clone)]
pub enum Event {
    Property {
        name: String,
        value: serde_json::Value,
    },
    Completed(Completed),
}

#[derive(Debug, Clone)]
pub struct Completed {
    pub operation: String,
    pub code: i64,
    pub message: String,
    /// `result_json`, parsed.
    pub result: serde_json::Value,
}

type Events = Arc<(Mutex<Vec<Event>>, Condvar)>;

pub struct Monitor {
    child: Child,
    events: Events,
}

impl Monitor {
    fn start(bus: &SystemBus) -> Monitor {
        let mut cmd = Command::new("busctl");
        bus.env(&mut cmd)
            .args(["--system", "monitor", "--json=short", "--match"])
            .arg(format!("type='signal',path='{OBJECT}'"))
            .env("SYSTEMD_COLORS", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let events: Events = Arc::default();
        let stdout = child.stdout.take().unwrap();
        let sink = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = parse_event(&line);
                let (lock, cvar) = &*sink;
                lock.lock().unwrap().extend(parsed);
                cvar.notify_all();
            }
        });
        // busctl says so once it is a monitor; anything sent later is seen.
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            let mut ready = Some(ready_tx);
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains("Monitoring bus message stream")
                    && let Some(tx) = ready.take()
                {
                    let _ = tx.send(());
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("busctl monitor did not start");
        Monitor { child, events }
    }

    /// Where the record ends now.
    pub fn mark(&self) -> usize {
        self.events.0.lock().unwrap().len()
    }

    pub fn events_since(&self, from: usize) -> Vec<Event> {
        self.events.0.lock().unwrap()[from..].to_vec()
    }

    pub fn completed_since(&self, from: usize) -> Vec<Completed> {
        self.events_since(from)
            .into_iter()
            .filter_map(|e| match e {
                Event::Completed(c) => Some(c),
                Event::Property { .. } => None,
            })
            .collect()
    }

    /// Waits for `Completed` of `operation` after `from`; returns it and its index.
    #[track_caller]
    pub fn wait_completed(
        &self,
        from: usize,
        operation: &str,
        timeout: Duration,
    ) -> (usize, Completed) {
        let deadline = Instant::now() + timeout;
        let (lock, cvar) = &*self.events;
        let mut events = lock.lock().unwrap();
        loop {
            let found = events
                .iter()
                .enumerate()
                .skip(from)
                .find_map(|(i, e)| match e {
                    Event::Completed(c) if c.operation == operation => Some((i, c.clone())),
                    _ => None,
                });
            if let Some(found) = found {
                return found;
            }
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "no Completed({operation}) within {timeout:?}; seen since: {:#?}",
                        &events[from.min(events.len())..]
                    )
                });
            events = cvar.wait_timeout(events, left).unwrap().0;
        }
    }

    /// The `Progress` figures emitted between two marks.
    pub fn progress(&self, from: usize, to: usize) -> Vec<(i64, String)> {
        self.events.0.lock().unwrap()[from..to]
            .iter()
            .filter_map(|e| match e {
                Event::Property { name, value } if name == "Progress" => Some((
                    value[0].as_i64().unwrap_or(-1),
                    value[1].as_str().unwrap_or("").to_string(),
                )),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Monitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn parse_event(line: &str) -> Vec<Event> {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return Vec::new();
    };
    let data = &v["payload"]["data"];
    match v["member"].as_str() {
        Some("PropertiesChanged") if data[0] == IFACE => data[1]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(name, value)| Event::Property {
                name: name.clone(),
                value: value["data"].clone(),
            })
            .collect(),
        Some("Completed") if v["interface"] == IFACE => vec![Event::Completed(Completed {
            operation: data[0].as_str().unwrap_or("").to_string(),
            code: data[1].as_i64().unwrap_or(-1),
            message: data[2].as_str().unwrap_or("").to_string(),
            result: serde_json::from_str(data[3].as_str().unwrap_or("")).unwrap_or_default(),
        })],
        _ => Vec::new(),
    }
}

static DAEMONS: AtomicUsize = AtomicUsize::new(0);

/// `clb --state-dir STATE daemon --config-dir CONFIG [--no-updates] [EXTRA…]` on a
/// [`SystemBus`].
pub struct Daemon {
    process: LoggedChild,
}

impl Daemon {
    /// Starts the daemon and waits until it owns its name.
    pub fn start(bus: &SystemBus, state: &Path, config_dir: &Path, updates: bool) -> Daemon {
        Daemon::start_with(bus, state, config_dir, updates, &[])
    }

    /// [`Daemon::start`] with more arguments of `clb daemon` (such as `--booted-slot`).
    pub fn start_with(
        bus: &SystemBus,
        state: &Path,
        config_dir: &Path,
        updates: bool,
        extra: &[&str],
    ) -> Daemon {
        assert!(!bus.name_has_owner(), "{NAME} already has an owner");
        let n = DAEMONS.fetch_add(1, Ordering::Relaxed);
        let log = bus.dir.path().join(format!("daemon-{n}.log"));
        let mut cmd = Command::new(&bus.clb);
        bus.env(&mut cmd)
            .arg("--state-dir")
            .arg(state)
            .arg("daemon")
            .arg("--config-dir")
            .arg(config_dir)
            .args(extra)
            .env("RUST_LOG", "info")
            .env("HOME", "/nonexistent-clb-test-home")
            .env_remove("REGISTRY_AUTH_FILE")
            .env_remove("NOTIFY_SOCKET");
        if !updates {
            cmd.arg("--no-updates");
        }
        let mut d = Daemon {
            process: LoggedChild::spawn(&mut cmd, log),
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while !bus.name_has_owner() {
            if let Some(status) = d.process.exited() {
                panic!(
                    "clb daemon exited ({status}) before owning {NAME}:\n{}",
                    d.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "clb daemon did not own {NAME} within 15 s:\n{}",
                d.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        d
    }

    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    pub fn signal(&self, signal: &str) {
        sh(&format!("kill -{signal} {}", self.pid()));
    }

    /// Still running?
    pub fn alive(&mut self) -> bool {
        self.process.alive()
    }

    /// SIGTERM, as systemd stops it; waits for the exit and for the name to go.
    pub fn stop(&mut self, bus: &SystemBus) {
        self.process.terminate(Duration::from_secs(15));
        wait_name_gone(bus);
    }

    /// SIGKILL: no cleanup at all, as a power cut or the OOM killer would leave it.
    pub fn kill9(&mut self, bus: &SystemBus) {
        self.process.kill9();
        wait_name_gone(bus);
    }

    pub fn log(&self) -> String {
        self.process.log()
    }
}

fn wait_name_gone(bus: &SystemBus) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while bus.name_has_owner() {
        assert!(Instant::now() < deadline, "{NAME} still owned after exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A TCP proxy in front of the registry that forwards responses at a rate that can change
/// while it runs (0: as fast as they come), so a download is still running when the test
/// acts on it and can be finished quickly afterwards.
pub struct Throttle {
    addr: String,
    rate: Arc<AtomicUsize>,
}

impl Throttle {
    pub fn start(upstream: String, rate: usize) -> Throttle {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let shared = Arc::new(AtomicUsize::new(rate));
        let rate = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(&upstream) else {
                    continue;
                };
                let (mut c_read, mut s_write) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_read, &mut s_write);
                    let _ = s_write.shutdown(std::net::Shutdown::Write);
                });
                let rate = rate.clone();
                let (mut s_read, mut c_write) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = vec![0u8; 64 * 1024];
                    loop {
                        let r = rate.load(Ordering::Relaxed);
                        let chunk = if r == 0 { buf.len() } else { (r / 20).max(1) };
                        let n = match s_read.read(&mut buf[..chunk.min(64 * 1024)]) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => n,
                        };
                        if c_write.write_all(&buf[..n]).is_err() {
                            // The client is gone: let the registry see it at once.
                            let _ = s_read.shutdown(std::net::Shutdown::Both);
                            break;
                        }
                        if r != 0 {
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                    let _ = c_write.shutdown(std::net::Shutdown::Both);
                });
            }
        });
        Throttle { addr, rate: shared }
    }

    /// `127.0.0.1:PORT`: use it as the registry part of an image reference.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Bytes per second from now on; 0: unthrottled.
    pub fn set_rate(&self, rate: usize) {
        self.rate.store(rate, Ordering::Relaxed);
    }
}

/// Writes `DIR/config.yaml` (creating DIR) and returns DIR.
pub fn config_dir(dir: &Path, yaml: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("config.d")).unwrap();
    std::fs::write(dir.join("config.yaml"), yaml).unwrap();
    dir.to_path_buf()
}
