//! A FleetLock server on 127.0.0.1, written from Zincati's protocol document (not from clb's
//! client): a counting semaphore per group with owned, recursive slots.
//!
//! - `POST {prefix}/v1/pre-reboot`: RecursiveLock — 200 if the id already holds a slot of its
//!   group or a slot is free (it takes it), else 409 `failed_lock_semaphore_full`.
//! - `POST {prefix}/v1/steady-state`: UnlockIfHeld — 200, releasing the id's slot if held.
//! - Both need the header `fleet-lock-protocol: true` and a JSON body
//!   `{"client_params": {"id": non-empty, "group": ^[a-zA-Z0-9.-]+$}}`; errors are 4xx with
//!   the protocol's `{"kind", "value"}` body.
//!
//! Every request is recorded ([`FleetLockRequest`]) so tests can assert what reached the
//! server. Plain threads, one per connection, `Connection: close` on every answer.

use std::collections::BTreeMap;
use std::net::{TcpListener, TcpStream};

use crate::serve::{Request, accept_loop, read_request, respond};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLockRequest {
    pub method: String,
    /// The request target, prefix included.
    pub path: String,
    /// The `fleet-lock-protocol` header's value, if sent.
    pub protocol_header: Option<String>,
    pub content_type: Option<String>,
    pub id: Option<String>,
    pub group: Option<String>,
    /// What the server answered.
    pub status: u16,
    pub kind: Option<String>,
}

#[derive(Default)]
struct State {
    slots: usize,
    /// group → ids holding a slot.
    holders: BTreeMap<String, Vec<String>>,
    log: Vec<FleetLockRequest>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    prefix: String,
}

pub struct FleetLockServer {
    addr: String,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl FleetLockServer {
    /// Starts a server with `slots` reboot slots per group at the root of its URL.
    pub fn start(slots: usize) -> Self {
        Self::start_with_prefix(slots, "")
    }

    /// As [`FleetLockServer::start`], serving under `prefix` (e.g. `/fleet`), for clients
    /// whose base URL has a path.
    pub fn start_with_prefix(slots: usize, prefix: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the FleetLock server");
        let addr = listener.local_addr().expect("local address").to_string();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                slots,
                ..State::default()
            }),
            changed: Condvar::new(),
            prefix: prefix.trim_end_matches('/').to_owned(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let accept = {
            let shared = shared.clone();
            accept_loop(listener, stop.clone(), move |conn| serve(conn, &shared))
        };
        Self {
            addr,
            shared,
            stop,
            accept: Some(accept),
        }
    }

    /// `http://127.0.0.1:PORT` plus the prefix: what a client is configured with.
    pub fn base_url(&self) -> String {
        format!("http://{}{}", self.addr, self.shared.prefix)
    }

    /// Changes the number of slots per group (0: refuse every new lock). Holders keep theirs.
    pub fn set_slots(&self, slots: usize) {
        self.lock().slots = slots;
    }

    /// Makes `id` hold a slot of `group`, as if another host had locked it.
    pub fn hold(&self, group: &str, id: &str) {
        self.lock()
            .holders
            .entry(group.to_owned())
            .or_default()
            .push(id.to_owned());
    }

    /// Releases `id`'s slot in `group`, as if that host had reported steady state.
    pub fn release(&self, group: &str, id: &str) {
        if let Some(ids) = self.lock().holders.get_mut(group) {
            ids.retain(|held| held != id);
        }
    }

    pub fn holders(&self, group: &str) -> Vec<String> {
        self.lock().holders.get(group).cloned().unwrap_or_default()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<FleetLockRequest> {
        self.lock().log.clone()
    }

    /// Waits until at least `n` requests have arrived and returns them all; panics after
    /// `timeout`.
    pub fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<FleetLockRequest> {
        let deadline = Instant::now() + timeout;
        let mut state = self.lock();
        while state.log.len() < n {
            let left = deadline
                .checked_duration_since(Instant::now())
                .unwrap_or_else(|| {
                    panic!(
                        "FleetLock server: {} requests after {timeout:?}, wanted {n}: {:?}",
                        state.log.len(),
                        state.log
                    )
                });
            state = self.shared.changed.wait_timeout(state, left).unwrap().0;
        }
        state.log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().expect("FleetLock state lock")
    }
}

impl Drop for FleetLockServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(&self.addr);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
    }
}

fn serve(conn: TcpStream, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(10)));
    let Some(req) = read_request(&conn) else {
        return;
    };
    // Applied and logged under one lock, before answering: the log's order is the order the
    // semaphore saw, and a client that got its answer finds its request in the log.
    let (status, body) = {
        let mut state = shared.state.lock().expect("FleetLock state lock");
        let (status, body, entry) = handle(&req, &shared.prefix, &mut state);
        state.log.push(entry);
        shared.changed.notify_all();
        (status, body)
    };
    respond(
        conn,
        status,
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
}

/// Applies one request to the semaphore: (status, JSON body, log entry).
fn handle(req: &Request, prefix: &str, state: &mut State) -> (u16, String, FleetLockRequest) {
    let json: Option<serde_json::Value> = serde_json::from_slice(&req.body).ok();
    let param = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get("client_params"))
            .and_then(|p| p.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let (id, group) = (param("id"), param("group"));
    let mut entry = FleetLockRequest {
        method: req.method.clone(),
        path: req.path.clone(),
        protocol_header: req.header("fleet-lock-protocol"),
        content_type: req.header("content-type"),
        id: id.clone(),
        group: group.clone(),
        status: 0,
        kind: None,
    };
    let route = req.path.strip_prefix(prefix).unwrap_or("");
    let outcome = match (req.method.as_str(), route) {
        ("POST", "/v1/pre-reboot" | "/v1/steady-state") => {
            if entry.protocol_header.as_deref() != Some("true") {
                Err((
                    400,
                    "missing_protocol_header",
                    "fleet-lock-protocol: true is required",
                ))
            } else {
                match (id, group) {
                    (Some(id), Some(group)) if !id.is_empty() && valid_group(&group) => {
                        if route == "/v1/pre-reboot" {
                            lock(state, &group, &id)
                        } else {
                            unlock(state, &group, &id)
                        }
                    }
                    _ => Err((
                        400,
                        "invalid_client_params",
                        "client_params.id/group invalid",
                    )),
                }
            }
        }
        (_, "/v1/pre-reboot" | "/v1/steady-state") => {
            Err((405, "method_not_allowed", "only POST is allowed"))
        }
        _ => Err((404, "not_found", "no such endpoint")),
    };
    let (status, body) = match outcome {
        Ok(()) => (200, "{}".to_owned()),
        Err((status, kind, value)) => {
            entry.kind = Some(kind.to_owned());
            let body = serde_json::json!({ "kind": kind, "value": value });
            (status, body.to_string())
        }
    };
    entry.status = status;
    (status, body, entry)
}

type Outcome = Result<(), (u16, &'static str, &'static str)>;

fn lock(state: &mut State, group: &str, id: &str) -> Outcome {
    let slots = state.slots;
    let ids = state.holders.entry(group.to_owned()).or_default();
    if ids.iter().any(|held| held == id) {
        return Ok(());
    }
    if ids.len() >= slots {
        return Err((
            409,
            "failed_lock_semaphore_full",
            "semaphore currently full, all slots are locked already",
        ));
    }
    ids.push(id.to_owned());
    Ok(())
}

fn unlock(state: &mut State, group: &str, id: &str) -> Outcome {
    if let Some(ids) = state.holders.get_mut(group) {
        ids.retain(|held| held != id);
    }
    Ok(())
}

fn valid_group(group: &str) -> bool {
    !group.is_empty()
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
}
